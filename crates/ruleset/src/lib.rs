//! The nftables ruleset of a balancer: a typed model, the compiler that builds it from a spec,
//! and renderers to nft text and libnftables JSON.
//!
//! Pure: nothing here reads or changes host state, so equal specs give byte-equal output.

mod compile;
pub mod json;
mod model;
pub mod nft;
mod pair;
pub mod policy;

pub use compile::{compile, compile_with, names, Availability, SELECTORS_PER_CHAIN};
pub use model::*;
