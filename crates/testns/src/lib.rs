//! The test-support crate of the workspace, a dev-dependency only (and a dependency of the
//! `integration` test crate): [`Netns`], a network namespace that exists for the life of a
//! value and is deleted on drop, also when the test panics, with the real tools (`ip`, `nft`)
//! run inside it; and [`golden`], the golden files under `fixtures/` and `make bless`.
//! Nothing here touches the root namespace's ruleset, routes or rules.

pub mod golden;
mod netns;

use std::path::{Path, PathBuf};

pub use netns::{Netns, PATH};

/// The repository root (the workspace directory that holds `crates/` and `fixtures/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testns sits two levels below the repository root")
        .to_path_buf()
}
