//! Reliability: concurrent applies never mix, reloads under load disturb no connection.

use std::process::{Command, Stdio};

use nftbalance_integration::netns::{Netns, PATH};
use nftbalance_integration::target_binary;
use nftbalance_integration::topology::{Topology, Which, SERVER};
use nftbalance_integration::uplinks::add_uplinks;

/// Two specs that differ in every part: marks, route tables, weights, exclusions.
fn spec(variant: u32) -> String {
    let (m1, m2, t1, t2, w1) = if variant == 0 {
        (1, 2, 101, 102, 1)
    } else {
        (16, 32, 201, 202, 3)
    };
    format!(
        r#"{{ "gateways": [
            {{ "name": "isp1", "interface": "ppp0", "mark": {m1}, "weight": {w1}, "address": "100.0.1.1", "via": "100.0.1.254", "route_table": {t1} }},
            {{ "name": "isp2", "interface": "ppp1", "mark": {m2}, "address": "100.0.2.1", "via": "100.0.2.254", "route_table": {t2} }} ],
          "balance": {{ "forward": [ {{ "iif": "eth0" }} ], "exclude": [ "10.{variant}.0.0/16" ] }} }}"#
    )
}

#[test]
fn concurrent_applies_leave_exactly_one_spec() {
    let ns = Netns::new("race");
    add_uplinks(&ns, &spec(0));
    let dir = std::env::temp_dir();
    let files: Vec<std::path::PathBuf> = (0..2)
        .map(|v| {
            let p = dir.join(format!("nbt-race-{}-{v}.json", std::process::id()));
            std::fs::write(&p, spec(v)).unwrap();
            p
        })
        .collect();
    let bin = target_binary("nftbalance");
    for round in 0..100 {
        let children: Vec<_> = files
            .iter()
            .map(|f| {
                Command::new("ip")
                    .args(["netns", "exec", ns.name(), &bin, "apply"])
                    .arg(f)
                    .env("PATH", PATH)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            // Applies wait for each other; one that gives up says why.
            assert!(
                out.status.success() || err.contains("another nftbalance"),
                "round {round}: {err}"
            );
        }
        let clean: Vec<usize> = (0..2)
            .filter(|v| {
                let out = ns.exec(&bin, &["diff", files[*v].to_str().unwrap()], None);
                out.status.code() == Some(0)
            })
            .collect();
        assert_eq!(
            clean.len(),
            1,
            "round {round}: the ruleset matches {clean:?}"
        );
        let winner = clean[0];
        let rules = ns.ok("ip", &["rule"]);
        let (want, other) = if winner == 0 {
            ("lookup 101", "lookup 201")
        } else {
            ("lookup 201", "lookup 101")
        };
        assert!(
            rules.contains(want) && !rules.contains(other),
            "round {round}: routing is not spec {winner}'s:\n{rules}"
        );
    }
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn reapplying_with_new_weights_under_load_disturbs_no_connection() {
    let mut topo = Topology::new(2);
    let weights = |w1: u32, w2: u32| {
        spec(0)
            .replace(r#""weight": 1,"#, &format!(r#""weight": {w1},"#))
            .replace(r#""mark": 2, "#, &format!(r#""mark": 2, "weight": {w2}, "#))
    };
    topo.apply(&weights(1, 1));
    topo.serve(Which::Server, &format!("{SERVER}:443"), false);
    let streams = topo.spawn_traffic(
        Which::Lan,
        &[
            "stream",
            &format!("{SERVER}:443"),
            "--count",
            "50",
            "--seconds",
            "12",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    for i in 0..100u32 {
        topo.apply(&weights(1 + i % 3, 1 + (i + 1) % 4));
    }
    let results = streams.finish();
    assert_eq!(results.len(), 50);
    for r in &results {
        assert_eq!(r["ok"], true, "a stream broke: {r}");
        assert!(r["bytes"].as_u64().unwrap() > 0, "{r}");
        assert!(topo.uplink_of(r["seen"].as_str().unwrap()).is_some());
    }
    assert_eq!(topo.ingress_drops(), [0, 0], "a connection switched uplink");
}

/// Exclusion prefixes of the kill -9 test: 10k in `make test` (every round is verified with a
/// full `diff`, which debug builds make slow), 100k in `make stress`.
fn kill_test_prefixes() -> u32 {
    std::env::var("NFTBALANCE_STRESS_PREFIXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// The seed spec with many exclusion prefixes; `variant` changes the weights and the last
/// thousand prefixes, so a half-loaded set or split cannot pass for either spec.
fn large_spec(variant: u32) -> String {
    let n = kill_test_prefixes();
    let prefixes: Vec<String> = (0..n)
        .map(|i| {
            let a = if i + 1000 >= n {
                i * 8 + variant * 4
            } else {
                i * 8
            };
            format!(
                "\"10.{}.{}.{}/30\"",
                (a >> 16) & 255,
                (a >> 8) & 255,
                a & 255
            )
        })
        .collect();
    let w = 1 + variant * 2;
    format!(
        r#"{{ "gateways": [
            {{ "name": "isp1", "interface": "ppp0", "mark": 1, "weight": {w}, "address": "100.0.1.1", "via": "100.0.1.254", "route_table": 101 }},
            {{ "name": "isp2", "interface": "ppp1", "mark": 2, "address": "100.0.2.1", "via": "100.0.2.254", "route_table": 102 }} ],
          "balance": {{ "forward": [ {{ "iif": "eth0" }} ], "exclude": [ {} ] }} }}"#,
        prefixes.join(",")
    )
}

#[test]
fn kill_9_during_apply_leaves_the_old_or_the_new_ruleset() {
    let ns = Netns::new("kill9");
    add_uplinks(&ns, &spec(0));
    let dir = std::env::temp_dir();
    let files: Vec<std::path::PathBuf> = (0..2)
        .map(|v| {
            let p = dir.join(format!("nbt-kill9-{}-{v}.json", std::process::id()));
            std::fs::write(&p, large_spec(v)).unwrap();
            p
        })
        .collect();
    let bin = target_binary("nftbalance");
    let path = |v: usize| files[v].to_str().unwrap().to_string();
    let out = ns.exec(&bin, &["apply", &path(0)], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Rules, and the routes nftbalance owns (protocol 110): what a half-done apply would leave.
    let routing = |ns: &Netns| {
        ns.ok("ip", &["rule"])
            + &ns.ok("ip", &["-6", "rule"])
            + &ns.ok("ip", &["route", "show", "table", "all", "proto", "110"])
            + &ns.ok(
                "ip",
                &["-6", "route", "show", "table", "all", "proto", "110"],
            )
    };
    let routing_before = routing(&ns);
    // How long an apply takes here: the kill delays spread over it.
    let started = std::time::Instant::now();
    let out = ns.exec(&bin, &["apply", &path(1)], None);
    assert!(out.status.success());
    let span = started.elapsed().as_micros() as u64 * 11 / 10;
    let out = ns.exec(&bin, &["apply", &path(0)], None);
    assert!(out.status.success());
    // A cheap pseudo-random sequence of kill delays over the whole apply.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut current = 0usize;
    let (mut old, mut new) = (0, 0);
    for round in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = std::time::Duration::from_micros(x % span);
        let target = 1 - current;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), &bin, "apply", &path(target)])
            .env("PATH", PATH)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // The balance chain says which spec is in force; diff then checks all of it.
        let balance = ns.ok("nft", &["list", "chain", "inet", "nftbalance", "balance"]);
        // Spec 0 splits 1:1 (mod 2), spec 1 splits 3:1 (mod 4).
        let now = usize::from(balance.contains("numgen inc mod 4 "));
        let out = ns.exec(&bin, &["diff", &path(now)], None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round} (kill after {delay:?}): neither the old nor the new ruleset:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let after = routing(&ns);
        if after != routing_before {
            let gone: Vec<&str> = routing_before
                .lines()
                .filter(|l| !after.contains(l))
                .collect();
            let new: Vec<&str> = after
                .lines()
                .filter(|l| !routing_before.contains(l))
                .collect();
            panic!(
                "round {round} (kill after {delay:?}): routing changed: gone {gone:?}, new {new:?}"
            );
        }
        if now == current {
            old += 1;
        } else {
            new += 1;
        }
        current = now;
    }
    eprintln!("kill -9: {old} rounds left the old ruleset, {new} the new one");
    assert!(
        old > 0 && new > 0,
        "the kills did not cover the whole apply ({old} old, {new} new)"
    );
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}
