//! Network-namespace sandbox for the root tests. Every test works in namespaces it creates
//! itself (`nbt-<tag>-<pid>-<n>`, the shared `nftbalance-testns` guard) and deletes on drop, also when the test panics. Tests fail
//! loudly when they cannot create a namespace (they need root); they never skip.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::process::Output;

use serde_json::Value;

pub mod seed;

/// A network namespace created for this test; deleted on drop (by the shared guard).
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    guard: nftbalance_testns::Netns,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let guard = nftbalance_testns::Netns::new(tag);
        Netns {
            name: guard.name().to_string(),
            guard,
        }
    }

    /// Runs `f` on a fresh thread that has entered this namespace (sockets opened there stay
    /// bound to it). Panics inside `f` are propagated.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.guard.run(f)
    }

    pub fn nft_output(&self, args: &[&str]) -> Output {
        self.guard.exec("nft", args, None)
    }

    /// Runs nft in the namespace and returns stdout; panics on failure.
    pub fn nft(&self, args: &[&str]) -> String {
        self.guard.ok("nft", args)
    }

    /// `nft -f` of the given text (via a temporary file).
    pub fn load(&self, text: &str) {
        let path = std::env::temp_dir().join(format!("{}.nft", self.name));
        File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write nft file");
        self.nft(&["-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(path);
    }

    /// `nft list ruleset` text.
    pub fn ruleset_text(&self) -> String {
        self.nft(&["list", "ruleset"])
    }

    /// `nft -j list ruleset` with the metainfo object and all "handle" keys removed.
    pub fn ruleset_json(&self) -> Value {
        let text = self.nft(&["-j", "list", "ruleset"]);
        let mut v: Value = serde_json::from_str(&text).expect("nft -j output is JSON");
        normalize(&mut v);
        v
    }
}

fn normalize(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("handle");
            for (_, x) in map.iter_mut() {
                normalize(x);
            }
        }
        Value::Array(items) => {
            items.retain(|x| !x.as_object().is_some_and(|o| o.contains_key("metainfo")));
            for x in items.iter_mut() {
                normalize(x);
            }
        }
        _ => {}
    }
}

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
