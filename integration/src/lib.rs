//! The kernel-facing tests' topologies, traffic and the `nftbalance` binary, on top of the
//! shared test-support crate (`nftbalance_testns`: namespaces, `ip`/`nft` inside them,
//! fixtures). Nothing here touches the root namespace's ruleset, routes or rules.

pub mod cli;
pub mod conntrack_fill;
pub mod legacy_gen;
pub mod netns;
pub mod pair;
pub mod peers;
pub mod topology;
pub mod uplinks;
pub mod watch;

pub use nftbalance_testns::golden::fixture_files;
pub use nftbalance_testns::repo_root;

/// The `index`-th of a run of disjoint /30 exclusion prefixes in 10.0.0.0/8 (JSON-quoted),
/// for large specs: `"10.0.0.0/30"`, `"10.0.0.8/30"`, ... (`offset` shifts it by 4 addresses
/// per unit, into the gap between two prefixes).
pub fn slash30(index: u32, offset: u32) -> String {
    let a = index * 8 + offset * 4;
    format!(
        "\"10.{}.{}.{}/30\"",
        (a >> 16) & 255,
        (a >> 8) & 255,
        a & 255
    )
}

/// The benchmarks' spec: two gateways, a UDP forward selector and `n` disjoint /30
/// exclusion prefixes (one hash set), with or without SNAT.
pub fn bench_spec(n: u32, snat: bool) -> String {
    let prefixes: Vec<String> = (0..n).map(|i| slash30(i, 0)).collect();
    format!(
        r#"{{ "gateways": [
            {{ "name": "isp1", "interface": "ppp0", "mark": 1, "address": "100.0.1.1", "via": "100.0.1.254", "route_table": 101 }},
            {{ "name": "isp2", "interface": "ppp1", "mark": 2, "address": "100.0.2.1", "via": "100.0.2.254", "route_table": 102 }} ],
          "balance": {{ "forward": [ {{ "iif": "eth0", "protocol": "udp" }} ],
                        "exclude": [ {} ] }},
          "snat": {snat} }}"#,
        prefixes.join(",")
    )
}

/// A binary of this workspace, built next to the running program (`target/<profile>/NAME`).
pub fn target_binary(name: &str) -> String {
    let exe = std::env::current_exe().expect("executable path");
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let mut dir = exe.parent().expect("executable directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target/<profile>");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`, which `make test` does)",
        path.display()
    );
    path.to_str().expect("UTF-8 path").to_string()
}
