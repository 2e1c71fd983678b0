//! Learning a gateway's address and next hop from its interface, against the real kernel:
//! a DHCP-like uplink (an address and a main-table default route that a client installed) and
//! a PPP-like one (a point-to-point address), each turned into the plan's `from` rule and `via`.

mod common;

use common::{netns, spec, RoutingNs};
use nftbalance_routing::{plan_learned, Learned, Links, NextHop, RuleSelector, Socket};

const LEARNING: &str = r#"{
  "gateways": [
    { "name": "dhcp", "interface": "eth1", "mark": 1, "route_table": 101 },
    { "name": "ppp", "interface": "ppp0", "mark": 2, "route_table": 102 },
    { "name": "fixed", "interface": "eth2", "mark": 3, "route_table": 103,
      "address": "192.0.2.7", "via": "192.0.2.1" }
  ]
}"#;

#[test]
fn addresses_and_next_hops_are_learned_from_the_interfaces() {
    let ns = netns("learn");
    ns.iface("eth1", &["10.9.0.2/24", "10.9.0.3/24"]);
    ns.ip(&[
        "route", "add", "default", "via", "10.9.0.1", "dev", "eth1", "metric", "100",
    ]);
    ns.ip(&[
        "route", "add", "default", "via", "10.9.0.9", "dev", "eth1", "metric", "200",
    ]);
    ns.iface("ppp0", &[]);
    ns.ip(&[
        "addr",
        "add",
        "100.64.0.5",
        "peer",
        "100.64.0.1/32",
        "dev",
        "ppp0",
    ]);
    ns.iface("eth2", &["192.0.2.7/24", "192.0.2.8/24"]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "192.0.2.99",
        "dev",
        "eth2",
        "metric",
        "300",
    ]);
    let learned = ns.run(|| {
        let sock = Socket::open().unwrap();
        let links = Links::read(&sock).unwrap();
        Learned::read(&sock, &links).unwrap()
    });
    let spec = spec(LEARNING);
    let plan = plan_learned(&spec, &learned);
    let from: Vec<String> = plan
        .rules
        .iter()
        .filter_map(|r| match r.selector {
            RuleSelector::From(a) => Some(format!("{} {a}", r.table)),
            _ => None,
        })
        .collect();
    // The primary address (not the secondary one); the spec's own address wins.
    assert_eq!(from, ["101 10.9.0.2", "102 100.64.0.5", "103 192.0.2.7"]);
    let via: Vec<String> = plan
        .routes
        .iter()
        .map(|r| match r.next_hop {
            NextHop::Via(a) => format!("{} via {a}", r.table),
            NextHop::Direct => format!("{} dev-only", r.table),
        })
        .collect();
    // The lowest-metric default route; the point-to-point peer; the spec's next hop.
    assert_eq!(
        via,
        [
            "101 via 10.9.0.1",
            "102 via 100.64.0.1",
            "103 via 192.0.2.1"
        ]
    );
    assert_eq!(
        learned.describe(&spec.gateways),
        [
            "dhcp: address 10.9.0.2, via 10.9.0.1 (learned from eth1)",
            "ppp: address 100.64.0.5, via 100.64.0.1 (learned from ppp0)"
        ]
    );
    // Installed as planned.
    ns.apply(&plan).unwrap();
    assert!(ns
        .ip(&["route", "show", "table", "102"])
        .contains("default via 100.64.0.1 dev ppp0"));
}
