//! No injection through `translate --to nft`: a hostile name in the input is either refused
//! with its file:line, or becomes a script that `nft -c -f` accepts and that, loaded in a
//! throwaway namespace, holds only the tables and chains the input named (and no more rules).

use std::collections::{BTreeMap, BTreeSet};

use nftbalance_testns::Netns;
use nftbalance_translate::{to_nft, Input};
use proptest::prelude::*;
use serde_json::Value;

/// What a loaded ruleset holds: tables, (table, chain) pairs, sets and the number of rules.
#[derive(Debug, Default)]
struct Objects {
    tables: BTreeSet<String>,
    chains: BTreeSet<(String, String)>,
    sets: BTreeSet<String>,
    rules: usize,
}

fn listed(ns: &Netns) -> Objects {
    let json: Value = serde_json::from_str(&ns.ok("nft", &["-j", "list", "ruleset"])).unwrap();
    let mut o = Objects::default();
    for item in json["nftables"].as_array().unwrap() {
        let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
        if let Some(t) = item.get("table") {
            o.tables.insert(s(t, "name"));
        } else if let Some(c) = item.get("chain") {
            o.chains.insert((s(c, "table"), s(c, "name")));
        } else if let Some(set) = item.get("set") {
            o.sets.insert(s(set, "name"));
        } else if item.get("rule").is_some() {
            o.rules += 1;
        }
    }
    o
}

/// The nft text passes `nft -c -f`, then loads; the namespace then holds only `chains` (and
/// their tables), no sets, and at most `rules` rules.
fn assert_loads_only(ns: &Netns, nft: &str, chains: &BTreeSet<(String, String)>, rules: usize) {
    let check = ns.exec("nft", &["-c", "-f", "-"], Some(nft.as_bytes()));
    assert!(
        check.status.success(),
        "nft -c refused the translation:\n{nft}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    ns.ok("nft", &["flush", "ruleset"]);
    let load = ns.exec("nft", &["-f", "-"], Some(nft.as_bytes()));
    assert!(load.status.success(), "nft -f refused:\n{nft}");
    let got = listed(ns);
    let tables: BTreeSet<String> = chains.iter().map(|(t, _)| t.clone()).collect();
    assert!(got.tables.is_subset(&tables), "{got:?} from\n{nft}");
    assert!(got.chains.is_subset(chains), "{got:?} from\n{nft}");
    assert!(got.sets.is_empty(), "{got:?} from\n{nft}");
    assert!(got.rules <= rules, "{got:?} from\n{nft}");
}

/// Translates `text` (named `in`) both ways; each refuses at `in:LINE:` or loads only `chains`.
fn refused_or_contained(ns: &Netns, text: &str, chains: &[(&str, &str)], rules: usize) {
    let chains: BTreeSet<(String, String)> = chains
        .iter()
        .map(|(t, c)| (t.to_string(), c.to_string()))
        .collect();
    let input = [Input { name: "in", text }];
    for literal in [false, true] {
        match to_nft(&input, &BTreeMap::new(), literal) {
            Ok((nft, _)) => assert_loads_only(ns, &nft, &chains, rules),
            Err(e) => assert!(
                e.to_string().starts_with("in:"),
                "refusal without a line: {e}"
            ),
        }
    }
}

#[test]
fn interface_with_quote_cannot_flush_the_ruleset() {
    let ns = Netns::new("trinj");
    let text = "iptables -t mangle -A PREROUTING -i 'x\" accept; flush ruleset; add table ip pwned; add table ip mangle; add chain ip mangle PREROUTING; add rule ip mangle PREROUTING iifname \"y' -j MARK --set-mark 1\n";
    refused_or_contained(&ns, text, &[("mangle", "PREROUTING")], 1);
    let e = to_nft(&[Input { name: "in", text }], &BTreeMap::new(), true).unwrap_err();
    assert!(e.to_string().starts_with("in:1: -i"), "{e}");
}

#[test]
fn jump_target_cannot_add_a_table() {
    let ns = Netns::new("trinj");
    let text = "iptables -t mangle -N 'C; add table ip x'\n\
                iptables -t mangle -A PREROUTING -j 'C; add table ip x'\n";
    refused_or_contained(&ns, text, &[("mangle", "PREROUTING")], 1);
    let e = to_nft(&[Input { name: "in", text }], &BTreeMap::new(), true).unwrap_err();
    assert!(e.to_string().starts_with("in:1: -N"), "{e}");
}

#[test]
fn comment_log_prefix_policy_and_values_cannot_inject() {
    let ns = Netns::new("trinj");
    let pre = [("mangle", "PREROUTING")];
    let cases = [
        "iptables -t mangle -A PREROUTING -m comment --comment 'a\" ; flush ruleset; add table ip y comment \"b' -j ACCEPT\n",
        "iptables -t mangle -A PREROUTING -m comment --comment 'a\nb' -j ACCEPT\n",
        "iptables -t mangle -A PREROUTING -j LOG --log-prefix 'p $x; flush ruleset'\n",
        "iptables -t mangle -A PREROUTING -j LOG --log-prefix 'p\" ; flush ruleset; add table ip z'\n",
        "iptables -t mangle -A PREROUTING -p 'tcp; flush ruleset; add table ip p' -j ACCEPT\n",
        "iptables -t mangle -A PREROUTING -m recent --name 'n; add set ip mangle s { type ipv4_addr; }' --set -j ACCEPT\n",
    ];
    for text in cases {
        refused_or_contained(&ns, text, &pre, 1);
    }
    let nat = [("nat", "POSTROUTING")];
    refused_or_contained(
        &ns,
        "iptables -t nat -A POSTROUTING -j SNAT --to-source '1.2.3.4; flush ruleset'\n",
        &nat,
        1,
    );
    refused_or_contained(
        &ns,
        "iptables -t nat -A POSTROUTING -j MASQUERADE --to-ports '1; flush ruleset'\n",
        &nat,
        1,
    );
    let input = [("filter", "INPUT")];
    refused_or_contained(
        &ns,
        "iptables -P INPUT 'DROP; }; flush ruleset; add table ip q { '\n",
        &input,
        0,
    );
    refused_or_contained(&ns, "*filter\n:INPUT DROP;flush [0:0]\nCOMMIT\n", &input, 0);
    refused_or_contained(
        &ns,
        "*filter\n:C;flush - [0:0]\n-A INPUT -j C;flush\nCOMMIT\n",
        &input,
        1,
    );
}

/// Names as an attacker writes them: quotes, separators, braces, backslashes, '#', '$',
/// newlines, unicode, nft keywords, iptables wildcards, and overlong ones.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.@+*/:;#$'\"{}\\\\ \n\té-]{0,24}",
        "[A-Za-z][A-Za-z0-9_-]{0,12}",
        "[a-z]{2,8}",
        Just("mark".to_string()),
        Just("ppp+".to_string()),
        "[a-zA-Z]{14,300}",
    ]
}

/// A word in single quotes, as a shell script would hold any string.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn hostile_names_are_refused_or_contained() {
    let ns = Netns::new("trprop");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    // Mostly names a check should let through (with every character it allows), so that
    // the nft side is exercised, and hostile ones in between.
    let names = (
        prop_oneof![4 => "[A-Za-z][A-Za-z0-9_-]{0,27}", 1 => hostile()],
        prop_oneof![4 => "[A-Za-z0-9._@-]{1,14}[+]?", 1 => hostile()],
        prop_oneof![4 => "[a-zA-Z0-9 #;{}'é.,:*!?()<>=+-]{0,140}", 1 => hostile()],
        prop_oneof![4 => "[a-zA-Z0-9 #;{}'é:.*-]{0,14}", 1 => hostile()],
    );
    runner
        .run(&names, |(chain, iface, comment, prefix)| {
            let text = format!(
                "iptables -t mangle -N {c}\n\
                 iptables -t mangle -A PREROUTING -i {i} -m comment --comment {m} -j {c}\n\
                 iptables -t mangle -A {c} -o {i} -j LOG --log-prefix {p}\n",
                c = sh(&chain),
                i = sh(&iface),
                m = sh(&comment),
                p = sh(&prefix),
            );
            let chains = [("mangle", "PREROUTING"), ("mangle", chain.as_str())];
            refused_or_contained(&ns, &text, &chains, 2);
            Ok(())
        })
        .unwrap();
}
