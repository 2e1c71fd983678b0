//! What the netlink root tests share besides `nftbalance_testns::Netns` (every test works in
//! namespaces it creates itself, deleted on drop, also when the test panics): the seed
//! ruleset and the comparison of two rulesets. Tests fail loudly when they cannot create a
//! namespace (they need root); they never skip.
#![allow(dead_code)]

use serde_json::Value;

pub mod seed;

/// Asserts two JSON rulesets are equal, printing both pretty on mismatch.
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
