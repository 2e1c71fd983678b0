//! Root test: `diff` of a table with 20k selector rules finishes well within a generous bound
//! and reports exactly the rules that differ (issue 22 item 6: it was quadratic in rules,
//! minutes and gigabytes at 20k).

use std::sync::mpsc;
use std::time::Duration;

use nftbalance_netlink::read::{self, Difference};
use nftbalance_netlink::{lower, transaction, Commit, Socket};
use nftbalance_ruleset::{compile, Ruleset};
use nftbalance_spec::Spec;
use nftbalance_testns::Netns;

const SELECTORS: u32 = 20_000;
/// Far above the second or two a linear diff takes even on a busy machine; today's code
/// took minutes.
const BOUND: Duration = Duration::from_secs(30);

/// The seed's gateways with one forward selector per source address 10.0.0.1, 10.0.0.2, ...
/// (`edit` replaces a selector's JSON by index; `None` drops it).
fn ruleset(edit: impl Fn(u32) -> Option<String>) -> Ruleset {
    let selectors: Vec<String> = (1..=SELECTORS).filter_map(edit).collect();
    let json = format!(
        r#"{{ "gateways": [
            {{ "name": "isp1", "interface": "ppp0", "mark": 1, "address": "100.0.1.1", "via": "100.0.1.254", "route_table": 101 }},
            {{ "name": "isp2", "interface": "ppp1", "mark": 2, "address": "100.0.2.1", "via": "100.0.2.254", "route_table": 102 }} ],
          "balance": {{ "forward": [ {} ], "exclude": [ "192.168.0.0/16" ] }},
          "snat": true }}"#,
        selectors.join(",")
    );
    compile(&Spec::from_json(&json).expect("generated spec is valid"))
}

fn selector(i: u32) -> String {
    format!(
        r#"{{ "iif": "eth0", "saddr": ["10.{}.{}.{}/32"] }}"#,
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255
    )
}

/// `diff` against `rs` in the namespace, or `None` when it takes longer than `BOUND` (the
/// work is left running on its own thread; the test fails either way).
fn diff_within_bound(ns: &Netns, rs: &Ruleset) -> Option<Vec<Difference>> {
    let rs = rs.clone();
    ns.run(move || {
        let (tx, rx) = mpsc::channel();
        // A thread started here is in the namespace too.
        std::thread::spawn(move || {
            let socket = Socket::open().expect("socket");
            let _ = tx.send(read::diff(&socket, &rs).expect("diff"));
        });
        rx.recv_timeout(BOUND).ok()
    })
}

#[test]
fn twenty_thousand_selectors_diff_in_linear_time() {
    let ns = Netns::new("diffscale");
    let applied = ruleset(|i| Some(selector(i)));
    let rs = applied.clone();
    ns.run(move || {
        let socket = Socket::open().expect("socket");
        transaction::run(&socket, Commit::Yes, || lower::replace_batch(&rs))
            .unwrap_or_else(|e| panic!("apply: {e}"));
    });

    let same = diff_within_bound(&ns, &applied).expect("diff of 20k rules within 30 s");
    assert!(same.is_empty(), "{same:?}");

    // Two selectors changed: each is one rule missing and one not in the spec, nothing else.
    // (A dropped selector would move the first rule of every later selector chain along.)
    let edited = ruleset(|i| match i {
        10_000 => Some(r#"{ "iif": "eth0", "saddr": ["10.200.0.1/32"] }"#.to_string()),
        15_000 => Some(r#"{ "iif": "eth0", "saddr": ["10.200.0.2/32"] }"#.to_string()),
        _ => Some(selector(i)),
    });
    let report = diff_within_bound(&ns, &edited).expect("diff of 20k rules within 30 s");
    let lines: Vec<String> = report.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let missing: Vec<&String> = lines.iter().filter(|l| l.ends_with(": missing")).collect();
    assert_eq!(missing.len(), 2, "{lines:#?}");
    for addr in ["10.200.0.1", "10.200.0.2"] {
        assert!(missing.iter().any(|l| l.contains(addr)), "{lines:#?}");
    }
    let extra = lines.iter().filter(|l| l.ends_with(": not in the spec"));
    assert_eq!(extra.count(), 2, "{lines:#?}");
}
