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
