//! What the wire-layer root tests share besides `nftbalance_testns` (every test works in
//! namespaces it creates itself, deleted on drop, also when the test panics): the seed
//! ruleset. Tests fail loudly when they cannot create a namespace (they need root); they
//! never skip.

pub mod seed;
