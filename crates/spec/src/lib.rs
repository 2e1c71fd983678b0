//! The nftbalance spec: the JSON a user writes, parsed and validated into typed values.
//!
//! Pure: parsing touches no host state, so every error it reports depends on the input alone.

pub mod lists;
mod model;
pub mod name;
mod nft_keywords;
mod parse;
mod policy;
mod schema;
mod target;

pub use model::{
    format_duration, AllDown, Balance, Family, Gateway, Ha, HaNode, Health, HealthTarget, Hooks,
    Member, Method, Policy, PolicyKey, PortRange, Protocol, QueryTarget, Selector, SelectorKind,
    Spec, Sticky, VrrpInstance, Watch, DEFAULT_HASH_SEED, DEFAULT_MARK_MASK, DEFAULT_TABLE,
    MAX_TIER, MAX_WEIGHT,
};
pub use parse::{objects_read, ObjectRead, SpecError, SpecErrors};
pub use schema::json_schema;
