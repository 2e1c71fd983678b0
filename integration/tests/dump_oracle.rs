//! The golden dumps against the real nft and kernel, each test in its own namespace.

use std::path::Path;

use nftbalance_integration::netns::Netns;
use nftbalance_integration::{fixture_files, repo_root};
use serde_json::{json, Value};

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_nft_golden_passes_nft_check() {
    let ns = Netns::new("check");
    for file in fixture_files("dump", "nft") {
        let out = ns.exec("nft", &["-c", "-f", path_str(&file)], None);
        assert!(
            out.status.success(),
            "nft -c -f {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // -c changed nothing.
    assert_eq!(ns.ruleset_json(), json!({ "nftables": [] }));
}

#[test]
fn every_json_golden_passes_nft_json_check() {
    let ns = Netns::new("jcheck");
    for file in fixture_files("dump", "json") {
        let out = ns.exec("nft", &["-j", "-c", "-f", path_str(&file)], None);
        assert!(
            out.status.success(),
            "nft -j -c -f {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn nft_and_json_goldens_program_the_same_ruleset() {
    let text_ns = Netns::new("text");
    let json_ns = Netns::new("json");
    for file in fixture_files("dump", "nft") {
        let json_file = file.with_extension("json");
        text_ns.ok("nft", &["-f", path_str(&file)]);
        json_ns.ok("nft", &["-j", "-f", path_str(&json_file)]);
        assert_eq!(
            text_ns.ruleset_json(),
            json_ns.ruleset_json(),
            "{} and its JSON program different rulesets",
            file.display()
        );
        text_ns.ok("nft", &["flush", "ruleset"]);
        json_ns.ok("nft", &["flush", "ruleset"]);
    }
}

#[test]
fn loading_a_dump_twice_leaves_one_copy_and_foreign_tables_alone() {
    let ns = Netns::new("twice");
    let foreign = "table inet filter {\n chain input { type filter hook input priority 0; tcp dport 22 accept; }\n}\n\
                   table ip nat {\n chain post { type nat hook postrouting priority 100; oifname \"eth9\" masquerade; }\n}\n";
    ns.load_nft(foreign);
    let before = ns.ruleset_json();
    for file in fixture_files("dump", "nft") {
        ns.ok("nft", &["-f", path_str(&file)]);
        let once = ns.ruleset_json();
        ns.ok("nft", &["-f", path_str(&file)]);
        assert_eq!(
            once,
            ns.ruleset_json(),
            "{}: second load changed the ruleset",
            file.display()
        );
        // Drop the tool's table again; what is left is exactly the foreign state.
        let table = tool_table(&once).expect("a tool table");
        ns.ok("nft", &["delete", "table", &table.0, &table.1]);
        assert_eq!(
            before,
            ns.ruleset_json(),
            "{}: foreign tables changed",
            file.display()
        );
    }
}

/// The (family, name) of the first table that is not one of the foreign ones.
fn tool_table(doc: &Value) -> Option<(String, String)> {
    doc["nftables"].as_array()?.iter().find_map(|o| {
        let t = o.get("table")?;
        let name = t["name"].as_str()?;
        (name != "filter" && name != "nat")
            .then(|| (t["family"].as_str().unwrap().to_string(), name.to_string()))
    })
}

/// The anonymous map of the rule that sets the connection mark from numgen, as
/// (low, high, mark) triples.
fn split_ranges(ns: &Netns, table: &str) -> Vec<(u64, u64, u64)> {
    let text = ns.ok("nft", &["-j", "list", "chain", "inet", table, "balance"]);
    let doc: Value = serde_json::from_str(&text).unwrap();
    let rules = doc["nftables"].as_array().unwrap();
    let map = rules
        .iter()
        .filter_map(|o| o.get("rule"))
        .flat_map(|r| r["expr"].as_array().unwrap())
        .filter_map(|e| e.get("mangle"))
        .find(|m| {
            m["key"] == json!({ "ct": { "key": "mark" } })
                && m["value"]["map"]["key"].get("numgen").is_some()
        })
        .map(|m| m["value"]["map"]["data"]["set"].as_array().unwrap().clone())
        .expect("a ct mark set numgen ... map rule");
    map.iter()
        .map(|entry| {
            let (k, v) = (&entry[0], entry[1].as_u64().unwrap());
            match k.get("range") {
                Some(r) => (r[0].as_u64().unwrap(), r[1].as_u64().unwrap(), v),
                None => (k.as_u64().unwrap(), k.as_u64().unwrap(), v),
            }
        })
        .collect()
}

#[test]
fn split_map_lists_back_with_the_weight_ranges() {
    let ns = Netns::new("split");
    let dump = repo_root().join("fixtures/dump");
    ns.ok("nft", &["-f", path_str(&dump.join("seed.nft"))]);
    assert_eq!(split_ranges(&ns, "nftbalance"), [(0, 0, 1), (1, 1, 2)]);
    let listing = ns.ok("nft", &["list", "chain", "inet", "nftbalance", "balance"]);
    assert!(
        listing.contains("ct mark set numgen inc mod 2 map { 0 : 0x00000001, 1 : 0x00000002 }"),
        "{listing}"
    );

    ns.ok("nft", &["-f", path_str(&dump.join("weighted-3-2-1.nft"))]);
    assert_eq!(
        split_ranges(&ns, "nftbalance"),
        [(0, 2, 1), (3, 4, 2), (5, 5, 3)]
    );
    let listing = ns.ok("nft", &["list", "chain", "inet", "nftbalance", "balance"]);
    assert!(
        listing.contains("ct mark set numgen inc mod 6 map { 0-2 : 0x00000001, 3-4 : 0x00000002, 5 : 0x00000003 }"),
        "{listing}"
    );
}
