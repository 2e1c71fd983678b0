//! No injection through `dump --format iptables`: specs whose names use every character the
//! spec allows render to text that `iptables-legacy-restore --test` accepts (in a throwaway
//! namespace) with only the tool's chains; names outside those sets never reach the renderer.

use nftbalance_legacy::{render, CHAIN_PREFIX};
use nftbalance_spec::Spec;
use nftbalance_testns::Netns;
use proptest::prelude::*;

fn spec_json(table: &str, names: &[(String, String)], iif: &str, sticky: bool) -> String {
    let gateways: Vec<serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, (name, interface))| {
            serde_json::json!({ "name": name, "interface": interface, "mark": i + 1,
                                "route_table": 101 + i, "address": format!("192.0.2.{}", i + 1) })
        })
        .collect();
    let mut balance =
        serde_json::json!({ "forward": [ { "iif": iif, "protocol": "tcp", "dports": [443] } ] });
    if sticky {
        balance["sticky"] = serde_json::json!({ "timeout": "10m" });
    }
    serde_json::json!({ "table": table, "family": "ip", "gateways": gateways, "balance": balance })
        .to_string()
}

/// Every chain the text declares or appends to is the tool's or a built-in one.
fn only_our_chains(text: &str) {
    for l in text.lines() {
        let chain = l.strip_prefix(':').or_else(|| l.strip_prefix("-A "));
        if let Some(c) = chain.and_then(|c| c.split_whitespace().next()) {
            let builtin = matches!(c, "PREROUTING" | "OUTPUT" | "POSTROUTING");
            assert!(builtin || c.starts_with(CHAIN_PREFIX), "{c} in\n{text}");
        }
    }
}

#[test]
fn valid_names_render_to_text_iptables_restore_accepts() {
    let ns = Netns::new("lgprop");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let name = "[A-Za-z][A-Za-z0-9_-]{0,31}";
    let interface = "[A-Za-z0-9._@-]{1,15}";
    let strategy = (
        "[A-Za-z][A-Za-z0-9_-]{0,63}",
        prop::collection::vec((name, interface), 1..4),
        interface,
        any::<bool>(),
    );
    runner
        .run(&strategy, |(table, gws, iif, sticky)| {
            let json = spec_json(&table, &gws, &iif, sticky);
            // Duplicates and nft keywords are refused by the spec; that is not this test.
            let Ok(spec) = Spec::from_json(&json) else {
                return Ok(());
            };
            let text = render(&spec).unwrap();
            only_our_chains(&text);
            let out = ns.exec(
                "iptables-legacy-restore",
                &["--test"],
                Some(text.as_bytes()),
            );
            assert!(
                out.status.success(),
                "iptables-legacy-restore --test refused:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn hostile_names_never_reach_the_renderer() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let hostile = "[a-z]{0,3}[\"' ;\n#$\\\\{}/:*+é\t][a-z0-9\"' ;\n#]{0,20}";
    let which = 0..3usize;
    runner
        .run(&(hostile, which), |(bad, which)| {
            let ok = ("isp1".to_string(), "eth1".to_string());
            let json = match which {
                0 => spec_json("nftbalance", &[(bad.clone(), "eth1".into())], "eth0", true),
                1 => spec_json("nftbalance", std::slice::from_ref(&ok), &bad, false),
                _ => spec_json(&bad, &[ok], "eth0", true),
            };
            let errors = Spec::from_json(&json).expect_err(&json).to_string();
            prop_assert!(errors.contains("is not"), "{errors}");
            Ok(())
        })
        .unwrap();
}
