//! The acceptance of policy routing, against the real kernel in throwaway namespaces.

mod common;

use common::{netns, spec, RoutingNs};
use nftbalance_routing::{plan, Error, OwnedState, SkipReason};
use nftbalance_testns::golden::line_diff;
use nftbalance_testns::Netns;

/// Two IPv4 uplinks with next hops, the second also with IPv6 (link-local next hop), and a
/// point-to-point LTE uplink without `via` (dev-only).
const DUAL: &str = r#"{
  "mark_mask": "0xff00",
  "gateways": [
    { "name": "isp1", "interface": "ppp0", "mark": "0x100", "route_table": 101,
      "address": "100.0.1.1", "via": "100.0.1.254" },
    { "name": "isp2", "interface": "eth2", "mark": "0x200", "route_table": 102,
      "address": "203.0.113.10", "via": "203.0.113.1",
      "address6": "2001:db8:2::10", "via6": "fe80::1" },
    { "name": "lte", "interface": "wwan0", "mark": "0x300", "route_table": 103 }
  ]
}"#;

fn dual_ns(tag: &str) -> Netns {
    let ns = netns(tag);
    ns.gateway_ifaces(&spec(DUAL));
    ns
}

#[test]
fn apply_installs_exactly_the_owned_rules_and_routes() {
    let ns = dual_ns("exact");
    let report = ns.apply(&plan(&spec(DUAL))).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    assert_eq!(
        ns.ip(&["rule", "show"]),
        "0:\tfrom all lookup local\n\
         1000:\tfrom all lookup main suppress_prefixlength 0 proto 110\n\
         1001:\tfrom all fwmark 0x100/0xff00 lookup 101 proto 110\n\
         1002:\tfrom all fwmark 0x200/0xff00 lookup 102 proto 110\n\
         1003:\tfrom all fwmark 0x300/0xff00 lookup 103 proto 110\n\
         1101:\tfrom 100.0.1.1 lookup 101 proto 110\n\
         1102:\tfrom 203.0.113.10 lookup 102 proto 110\n\
         32766:\tfrom all lookup main\n\
         32767:\tfrom all lookup default\n"
    );
    assert_eq!(
        ns.ip(&["-6", "rule", "show"]),
        "0:\tfrom all lookup local\n\
         1000:\tfrom all lookup main suppress_prefixlength 0 proto 110\n\
         1002:\tfrom all fwmark 0x200/0xff00 lookup 102 proto 110\n\
         1102:\tfrom 2001:db8:2::10 lookup 102 proto 110\n\
         32766:\tfrom all lookup main\n"
    );
    assert_eq!(
        ns.ip(&["route", "show", "table", "101"]),
        "default via 100.0.1.254 dev ppp0 proto 110 \n"
    );
    assert_eq!(
        ns.ip(&["route", "show", "table", "102"]),
        "default via 203.0.113.1 dev eth2 proto 110 \n"
    );
    assert_eq!(
        ns.ip(&["route", "show", "table", "103"]),
        "default dev wwan0 proto 110 scope link \n",
        "dev-only route of a point-to-point uplink"
    );
    assert_eq!(
        ns.ip(&["-6", "route", "show", "table", "102"]),
        "default via fe80::1 dev eth2 proto 110 metric 1024 pref medium\n"
    );
    // IPv6 only where the gateway configures it.
    assert_eq!(
        ns.ip(&["-6", "route", "show", "table", "all", "proto", "110"]),
        "default via fe80::1 dev eth2 table 102 metric 1024 pref medium\n"
    );
    assert_eq!(
        ns.ip(&["-4", "route", "show", "table", "all", "proto", "110"])
            .lines()
            .count(),
        3
    );
}

#[test]
fn apply_twice_changes_nothing() {
    let ns = dual_ns("twice");
    let p = plan(&spec(DUAL));
    let first = ns.apply(&p).unwrap();
    assert!(!first.unchanged());
    let after_first = ns.routing();
    let second = ns.apply(&p).unwrap();
    assert!(
        second.unchanged(),
        "second apply changed things: {second:?}"
    );
    assert_eq!(ns.routing(), after_first);
}

/// Foreign rules and routes, in both families, some next to or inside the tool's tables.
fn add_foreign(ns: &Netns) {
    ns.iface("lan0", &["192.168.1.1/24", "fd00:1::1/64"]);
    ns.ip(&[
        "rule",
        "add",
        "priority",
        "500",
        "from",
        "192.168.1.0/24",
        "lookup",
        "50",
    ]);
    ns.ip(&[
        "rule", "add", "priority", "2000", "fwmark", "0x9", "lookup", "60",
    ]);
    ns.ip(&[
        "rule", "add", "priority", "999", "iif", "lan0", "lookup", "main",
    ]);
    ns.ip(&[
        "-6",
        "rule",
        "add",
        "priority",
        "1200",
        "from",
        "fd00:1::/64",
        "lookup",
        "50",
    ]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "192.168.1.254",
        "table",
        "50",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.99.0.0/16",
        "via",
        "192.168.1.254",
        "table",
        "101",
    ]);
    ns.ip(&["route", "add", "default", "via", "192.168.1.254"]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fd00:1::fe",
        "table",
        "50",
    ]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:99::/48",
        "via",
        "fd00:1::fe",
        "table",
        "102",
    ]);
}

#[test]
fn foreign_rules_and_routes_are_untouched_and_flush_restores_the_namespace() {
    let ns = dual_ns("foreign");
    add_foreign(&ns);
    let before = ns.routing();
    let foreign_rules = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.contains("proto 110"))
            .map(String::from)
            .collect()
    };

    ns.apply(&plan(&spec(DUAL))).unwrap();
    let applied = ns.routing();
    assert_ne!(applied, before);
    assert_eq!(
        foreign_rules(&applied),
        foreign_rules(&before),
        "foreign entries changed:\n{}",
        line_diff(&before, &applied)
    );
    // The foreign route inside an owned table stays next to the owned default route.
    assert_eq!(
        ns.ip(&["route", "show", "table", "101"]),
        "default via 100.0.1.254 dev ppp0 proto 110 \n10.99.0.0/16 via 192.168.1.254 dev lan0 \n"
    );

    assert_eq!(ns.flush().unwrap(), (9, 4));
    assert_eq!(
        ns.routing(),
        before,
        "{}",
        line_diff(&before, &ns.routing())
    );
    assert_eq!(ns.flush().unwrap(), (0, 0), "flush twice is fine");
    assert_eq!(ns.routing(), before);
}

#[test]
fn flush_of_a_clean_namespace_leaves_it_as_it_was() {
    let ns = dual_ns("clean");
    let before = ns.routing();
    ns.apply(&plan(&spec(DUAL))).unwrap();
    ns.apply(&plan(&spec(DUAL))).unwrap();
    ns.flush().unwrap();
    assert_eq!(
        ns.routing(),
        before,
        "{}",
        line_diff(&before, &ns.routing())
    );
}

#[test]
fn restore_after_a_failing_later_step_leaves_everything_as_it_was() {
    // First apply from nothing, then a later step (the nftables transaction) fails.
    let ns = dual_ns("rollback");
    add_foreign(&ns);
    let before = ns.routing();
    let snapshot = ns.read_owned();
    assert!(snapshot.is_empty());
    ns.apply(&plan(&spec(DUAL))).unwrap();
    ns.restore(&snapshot).unwrap();
    assert_eq!(
        ns.routing(),
        before,
        "{}",
        line_diff(&before, &ns.routing())
    );

    // Re-apply of a changed spec over an installed one, then the later step fails: the
    // previous owned state comes back exactly.
    ns.apply(&plan(&spec(DUAL))).unwrap();
    let snapshot = ns.read_owned();
    assert_eq!(snapshot.len(), (9, 4));
    ns.ip(&["route", "add", "203.0.113.2/32", "dev", "eth2"]);
    let installed = ns.routing();
    let changed = DUAL
        .replace("\"0x200\"", "\"0x400\"")
        .replace("203.0.113.1\"", "203.0.113.2\"")
        .replace("\"via6\": \"fe80::1\"", "\"via6\": \"fe80::2\"")
        .replace(
            r#"{ "name": "lte", "interface": "wwan0", "mark": "0x300", "route_table": 103 }"#,
            r#"{ "name": "lte", "interface": "wwan0", "mark": "0x300", "route_table": 104 }"#,
        );
    let report = ns.apply(&plan(&spec(&changed))).unwrap();
    assert_eq!(report.rules_added, 3, "{report:?}"); // fwmark v4, v6, lte's table
    assert_eq!(report.rules_deleted, 3, "{report:?}");
    assert_eq!(report.routes_replaced, 3, "{report:?}"); // isp2 v4 and v6, lte's new table
    assert_eq!(report.routes_deleted, 1, "{report:?}"); // lte's old table
    assert_ne!(ns.routing(), installed);
    // Through its wire form, as apply's journal keeps it across a crash.
    let (rules, routes) = snapshot.to_wire();
    let snapshot = OwnedState::from_wire(&rules, &routes).unwrap();
    ns.restore(&snapshot).unwrap();
    assert_eq!(
        ns.routing(),
        installed,
        "{}",
        line_diff(&installed, &ns.routing())
    );
    // Restoring the state that is there already changes nothing.
    ns.restore(&snapshot).unwrap();
    assert_eq!(ns.routing(), installed);
}

/// A snapshot route whose link went away meanwhile cannot come back: restore skips it with a
/// warning and puts back everything else.
#[test]
fn restore_skips_the_routes_of_a_link_that_went_away() {
    let ns = dual_ns("gone");
    ns.apply(&plan(&spec(DUAL))).unwrap();
    let snapshot = ns.read_owned();
    ns.flush().unwrap();
    ns.ip(&["link", "del", "wwan0"]);
    let skipped = ns.restore(&snapshot).unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].starts_with("restoring: adding IPv4 route default oif "),
        "{skipped:?}"
    );
    assert!(skipped[0].contains("table 103"), "{skipped:?}");
    assert_eq!(ns.read_owned().len(), (9, 3), "{}", ns.owned());
}

#[test]
fn a_missing_interface_skips_its_routes_with_a_warning_until_it_appears() {
    let ns = netns("missing");
    let s = spec(DUAL);
    // Everything but the LTE modem, which is not dialled yet.
    ns.iface("ppp0", &["100.0.1.1/32"]);
    ns.ip(&["route", "add", "100.0.1.254/32", "dev", "ppp0"]);
    ns.iface("eth2", &["203.0.113.10/24", "2001:db8:2::10/128"]);
    let p = plan(&s);
    assert_eq!(
        p.unroutable_gateways(&ns.links()),
        ["lte".to_string()].into()
    );

    let report = ns.apply(&p).unwrap();
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    let w = &report.warnings[0];
    assert_eq!((w.gateway.as_str(), w.interface.as_str()), ("lte", "wwan0"));
    assert_eq!(w.reason, SkipReason::Missing);
    let text = w.to_string();
    assert!(
        text.contains("gateway lte") && text.contains("wwan0"),
        "{text}"
    );
    assert_eq!(report.unrouted_gateways(), ["lte".to_string()].into());
    // The others' routes are there, and lte's rules are installed all the same.
    assert_eq!(
        ns.ip(&["-4", "route", "show", "table", "all", "proto", "110"]),
        "default via 100.0.1.254 dev ppp0 table 101 \n\
         default via 203.0.113.1 dev eth2 table 102 \n"
    );
    assert_eq!(
        ns.ip(&["-6", "route", "show", "table", "all", "proto", "110"]),
        "default via fe80::1 dev eth2 table 102 metric 1024 pref medium\n"
    );
    assert!(ns
        .ip(&["rule"])
        .contains("1003:\tfrom all fwmark 0x300/0xff00 lookup 103 proto 110"));

    // Applying again while it is still missing changes nothing and warns again.
    let again = ns.apply(&p).unwrap();
    assert!(again.unchanged(), "{again:?}");
    assert_eq!(again.warnings.len(), 1);

    // Dialled but not up yet: still skipped, as "down".
    ns.ip(&[
        "link", "add", "wwan0", "type", "veth", "peer", "name", "wwan0p",
    ]);
    let down = ns.apply(&p).unwrap();
    assert_eq!(down.warnings.len(), 1);
    assert_eq!(down.warnings[0].reason, SkipReason::Down);
    assert!(down.warnings[0].to_string().contains("wwan0 is down"));

    // Up: the interface-up hook's apply installs the route.
    ns.ip(&["link", "set", "wwan0p", "up"]);
    ns.ip(&["link", "set", "wwan0", "up"]);
    let up = ns.apply(&p).unwrap();
    assert!(up.warnings.is_empty(), "{:?}", up.warnings);
    assert_eq!(up.routes_replaced, 1);
    assert_eq!(
        ns.ip(&["route", "show", "table", "103"]),
        "default dev wwan0 proto 110 scope link \n"
    );
    assert!(ns.apply(&p).unwrap().unchanged());
}

#[test]
fn an_unreachable_next_hop_is_a_warning_not_a_failure() {
    let ns = netns("nexthop");
    let s = spec(DUAL);
    // isp1's link is up but has no route to its next hop yet (PPP still negotiating).
    ns.iface("ppp0", &[]);
    ns.iface("eth2", &["203.0.113.10/24"]);
    ns.iface("wwan0", &[]);
    let report = ns.apply(&plan(&s)).unwrap();
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    let w = &report.warnings[0];
    assert_eq!(w.gateway, "isp1");
    assert!(matches!(w.reason, SkipReason::Refused(_)), "{w:?}");
    assert!(w.to_string().contains("ppp0"), "{w}");
    // isp2 (IPv4 and IPv6) and lte are installed.
    assert_eq!(
        ns.ip(&["-4", "route", "show", "table", "all", "proto", "110"]),
        "default via 203.0.113.1 dev eth2 table 102 \ndefault dev wwan0 table 103 scope link \n"
    );
    assert_eq!(
        ns.ip(&["-6", "route", "show", "table", "all", "proto", "110"])
            .lines()
            .count(),
        1
    );
    // Once the next hop is reachable, apply installs it.
    ns.ip(&["route", "add", "100.0.1.254/32", "dev", "ppp0"]);
    let report = ns.apply(&plan(&s)).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(
        ns.ip(&["route", "show", "table", "101"]),
        "default via 100.0.1.254 dev ppp0 proto 110 \n"
    );
}

#[test]
fn a_foreign_default_route_in_a_gateway_table_is_an_error_and_changes_nothing() {
    let ns = dual_ns("conflict");
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "100.0.1.254",
        "table",
        "101",
    ]);
    let before = ns.routing();
    let err = ns.apply(&plan(&spec(DUAL))).unwrap_err();
    assert!(
        matches!(err, Error::ForeignDefault { table: 101, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("gateway isp1") && text.contains("table 101"),
        "{text}"
    );
    assert_eq!(ns.routing(), before);
}

#[test]
fn a_refused_step_rolls_back_what_apply_had_changed() {
    let ns = dual_ns("refused");
    let p = plan(&spec(DUAL));
    ns.apply(&p).unwrap();
    let installed = ns.routing();
    // A changed mark (an owned rule deleted and one added), then a rule the kernel refuses
    // (an IPv6 source in an IPv4 rule: EINVAL): the changes before it must be undone.
    let mut bad = plan(&spec(&DUAL.replace("\"0x100\"", "\"0x500\"")));
    bad.rules.push(nftbalance_routing::Rule {
        family: nftbalance_routing::IpFamily::V4,
        priority: 1150,
        selector: nftbalance_routing::RuleSelector::From("2001:db8::1".parse().unwrap()),
        table: 101,
        gateway: None,
    });
    let err = ns.apply(&bad).unwrap_err();
    assert!(
        matches!(err, Error::RolledBack { .. }),
        "expected a rollback, got {err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("adding IPv4 rule priority 1150 from 2001:db8::1 lookup 101")
            && text.contains("Invalid argument")
            && text.contains("restored"),
        "{text}"
    );
    assert_eq!(
        ns.routing(),
        installed,
        "{}",
        line_diff(&installed, &ns.routing())
    );
}

#[test]
fn hand_written_recipe_rules_are_taken_over() {
    // The README's manual recipe (no protocol) in the owned range: apply replaces it.
    let ns = dual_ns("takeover");
    ns.ip(&[
        "rule",
        "add",
        "priority",
        "1000",
        "lookup",
        "main",
        "suppress_prefixlength",
        "0",
    ]);
    ns.ip(&[
        "rule", "add", "priority", "1001", "fwmark", "0x1", "lookup", "101",
    ]);
    let report = ns.apply(&plan(&spec(DUAL))).unwrap();
    assert_eq!(report.rules_deleted, 2);
    let fresh = dual_ns("takeover-ref");
    fresh.apply(&plan(&spec(DUAL))).unwrap();
    assert_eq!(ns.owned(), fresh.owned());
}

#[test]
fn install_keeps_the_old_rules_and_routes_until_apply() {
    let ns = dual_ns("mbb");
    ns.apply(&plan(&spec(DUAL))).unwrap();
    let old = ns.routing();
    let changed = DUAL.replace("\"0x200\"", "\"0x400\"").replace(
        r#"{ "name": "lte", "interface": "wwan0", "mark": "0x300", "route_table": 103 }"#,
        r#"{ "name": "lte", "interface": "wwan0", "mark": "0x300", "route_table": 104 }"#,
    );
    let report = ns.install(&plan(&spec(&changed))).unwrap();
    assert_eq!(
        (report.rules_deleted, report.routes_deleted),
        (0, 0),
        "{report:?}"
    );
    assert!(
        report.rules_added > 0 && report.routes_replaced > 0,
        "{report:?}"
    );
    let both = ns.routing();
    let gone: Vec<&str> = old.lines().filter(|l| !both.contains(l)).collect();
    assert!(gone.is_empty(), "install removed {gone:?}");
    // Installing again changes nothing; apply then removes exactly what the plan lacks.
    let again = ns.install(&plan(&spec(&changed))).unwrap();
    assert!(again.unchanged(), "{again:?}");
    let report = ns.apply(&plan(&spec(&changed))).unwrap();
    assert_eq!(report.rules_added + report.routes_replaced, 0, "{report:?}");
    assert!(
        report.rules_deleted > 0 && report.routes_deleted > 0,
        "{report:?}"
    );
    // The same as a plain apply in a fresh namespace (link-local addresses aside).
    let fresh = dual_ns("mbbfresh");
    fresh.apply(&plan(&spec(&changed))).unwrap();
    let comparable = |text: String| -> String {
        text.lines()
            .filter(|l| !l.contains("table local"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let (want, got) = (comparable(fresh.routing()), comparable(ns.routing()));
    assert_eq!(got, want, "{}", line_diff(&want, &got));
}
