//! Throwaway network namespaces: the shared test-support crate.

pub use nftbalance_testns::{Netns, PATH};
