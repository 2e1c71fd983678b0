//! The test-support crate of the workspace, a dev-dependency only (and a dependency of the
//! `integration` test crate): [`Netns`], a network namespace that exists for the life of a
//! value and is deleted on drop, also when the test panics, with the real tools (`ip`, `nft`)
//! run inside it; [`golden`], the golden files under `fixtures/` and `make bless`; and
//! [`assert_same_ruleset`], the comparison of two `nft -j list ruleset` listings.
//! Nothing here touches the root namespace's ruleset, routes or rules.

pub mod golden;
mod netns;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use netns::{Netns, PATH};

/// The repository root (the workspace directory that holds `crates/` and `fixtures/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testns sits two levels below the repository root")
        .to_path_buf()
}

/// Asserts two JSON rulesets (`nft -j list ruleset`, e.g. [`Netns::ruleset_json`]) are equal,
/// printing both pretty and the first differing line on mismatch.
pub fn assert_same_ruleset(ours: &Value, nft: &Value) {
    if ours != nft {
        let a = serde_json::to_string_pretty(ours).unwrap();
        let b = serde_json::to_string_pretty(nft).unwrap();
        let first_diff = a
            .lines()
            .zip(b.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(0);
        panic!(
            "rulesets differ (first differing line {first_diff}):\n--- ours ---\n{a}\n--- nft ---\n{b}"
        );
    }
}
