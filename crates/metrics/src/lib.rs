//! nftbalance's Prometheus metrics: [`render`] turns `status`'s data into the text exposition
//! format (pure), [`serve`] answers `GET /metrics` on a listening socket (I/O only).

mod render;
mod serve;

pub use render::{render, CONTENT_TYPE};
pub use serve::serve;
