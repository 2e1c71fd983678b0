//! The balancer as iptables-legacy chains: the classic CONNMARK/statistic recipe, generated
//! from the same spec, for routers whose kernel has no nftables.
//!
//! `render` is pure: it reads no host state. `load` runs `iptables-legacy-restore
//! --noflush`, the legacy tables' stable interface, and is the crate's only effect.

pub mod load;
mod render;

pub use render::{chains, render, render_with, LegacyError, CHAIN_PREFIX};
