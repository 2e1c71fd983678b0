//! The pure part: what a spec's policy routing is, and its `ip -batch` rendering.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::net::IpAddr;

use nftbalance_spec::{Gateway, Spec};

use crate::learned::Learned;
use crate::links::Links;
use crate::{MAIN_TABLE, PRIORITY_FROM, PRIORITY_FWMARK, PRIORITY_SUPPRESS, ROUTE_PROTOCOL};

/// An address family of rules and routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    pub fn of(addr: &IpAddr) -> IpFamily {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// `IPv4` / `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    /// Prefix length of a host address.
    pub fn host_len(self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleSelector {
    /// Every packet; the lookup ignores routes with a prefix length of 0 (the main table's
    /// default route): `lookup main suppress_prefixlength 0`.
    SuppressDefault,
    /// `fwmark MARK/MASK`.
    FwMark { mark: u32, mask: u32 },
    /// `from ADDRESS` (a host).
    From(IpAddr),
}

/// One owned ip rule: `priority P SELECTOR lookup TABLE protocol 110`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub family: IpFamily,
    pub priority: u32,
    pub selector: RuleSelector,
    pub table: u32,
    /// The gateway the rule is for (`None` for the suppress rule). Documentation only: not
    /// part of what the kernel holds.
    pub gateway: Option<String>,
}

impl Rule {
    /// The rule as `ip rule add` arguments (without `ip rule add`).
    pub fn ip_args(&self) -> String {
        let mut s = format!("priority {}", self.priority);
        match self.selector {
            RuleSelector::SuppressDefault => {}
            RuleSelector::FwMark { mark, mask } => {
                let _ = write!(s, " fwmark {mark:#x}/{mask:#x}");
            }
            RuleSelector::From(addr) => {
                let _ = write!(s, " from {addr}");
            }
        }
        let _ = write!(s, " lookup {}", table_name(self.table));
        if self.selector == RuleSelector::SuppressDefault {
            s.push_str(" suppress_prefixlength 0");
        }
        let _ = write!(s, " protocol {ROUTE_PROTOCOL}");
        s
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rule {}", self.family, self.ip_args())
    }
}

/// How a default route reaches the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NextHop {
    /// `via ADDRESS dev IFACE`.
    Via(IpAddr),
    /// `dev IFACE` alone: a point-to-point link (PPP, LTE, a tunnel) without `via`.
    Direct,
}

/// One owned route: the default route of a gateway's table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub family: IpFamily,
    pub table: u32,
    pub next_hop: NextHop,
    pub interface: String,
    pub protocol: u8,
    /// The gateway whose route this is.
    pub gateway: String,
}

impl Route {
    /// The route as `ip route replace` arguments (without `ip route replace`). `default` is
    /// `0.0.0.0/0` or `::/0` by the family `ip` runs with (`ip -6 -batch` for IPv6).
    pub fn ip_args(&self) -> String {
        let mut s = String::from("default");
        if let NextHop::Via(addr) = self.next_hop {
            let _ = write!(s, " via {addr}");
        }
        let _ = write!(
            s,
            " dev {} table {} proto {}",
            self.interface, self.table, self.protocol
        );
        s
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} route {}", self.family, self.ip_args())
    }
}

/// Everything nftbalance's routing owns for one spec, in a deterministic order: IPv4 before
/// IPv6; in each family the suppress rule, the fwmark rules and the from rules in ascending
/// priority, and the routes in gateway order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutingPlan {
    pub rules: Vec<Rule>,
    pub routes: Vec<Route>,
}

impl RoutingPlan {
    /// The families the plan has rules or routes in.
    pub fn families(&self) -> Vec<IpFamily> {
        IpFamily::ALL
            .into_iter()
            .filter(|f| self.rules.iter().any(|r| r.family == *f))
            .collect()
    }

    /// The routes that cannot be installed with these links (interface missing or down), one
    /// warning per gateway. Pure: the same decision [`crate::apply`] takes, for callers that
    /// want it before touching anything (to leave such gateways out of the balancing).
    pub fn skipped(&self, links: &Links) -> Vec<Warning> {
        let mut out: Vec<Warning> = Vec::new();
        for route in &self.routes {
            let reason = match links.get(&route.interface) {
                None => SkipReason::Missing,
                Some(link) if !link.up => SkipReason::Down,
                Some(_) => continue,
            };
            match out
                .iter_mut()
                .find(|w| w.gateway == route.gateway && w.reason == reason)
            {
                Some(w) => w.routes.push(route.clone()),
                None => out.push(Warning {
                    gateway: route.gateway.clone(),
                    interface: route.interface.clone(),
                    reason,
                    routes: vec![route.clone()],
                }),
            }
        }
        out
    }

    /// Gateways with at least one route that cannot be installed with these links.
    pub fn unroutable_gateways(&self, links: &Links) -> BTreeSet<String> {
        self.skipped(links).into_iter().map(|w| w.gateway).collect()
    }
}

/// Why a gateway's route was not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// No interface of that name (a PPP or LTE link not dialled yet).
    Missing,
    /// The interface exists but is administratively down.
    Down,
    /// The kernel refused the route (for example the next hop is not on the link yet); the
    /// text is its explanation.
    Refused(String),
}

/// A gateway whose routes were skipped. Not an error: uplinks come and go, and re-running
/// `apply` once the interface is up installs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub gateway: String,
    pub interface: String,
    pub reason: SkipReason,
    pub routes: Vec<Route>,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.reason {
            SkipReason::Missing => format!("interface {} does not exist", self.interface),
            SkipReason::Down => format!("interface {} is down", self.interface),
            SkipReason::Refused(why) => {
                format!("the kernel refused it on {}: {why}", self.interface)
            }
        };
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|r| format!("{} table {}", r.family, r.table))
            .collect();
        write!(
            f,
            "gateway {}: {what}; its default route ({}) is not installed and it receives no \
             balanced connections; run apply again once {} is up",
            self.gateway,
            routes.join(", "),
            self.interface
        )
    }
}

/// The policy routing of a spec. Pure and deterministic.
///
/// IPv4 for every gateway when the spec's family has IPv4 (`inet`, `ip`); IPv6 for the
/// gateways with `via6` or `address6` in an `inet` spec, and for every gateway in an `ip6`
/// spec. A gateway's fwmark rule is `PRIORITY_FWMARK + index`, its from rule
/// `PRIORITY_FROM + index` (the index in the spec, the same in both families).
pub fn plan(spec: &Spec) -> RoutingPlan {
    plan_learned(spec, &Learned::default())
}

/// [`plan`] with the values the spec leaves out learned from the interfaces (see
/// `learned`): a learned address gets its from rule, a learned next hop its `via`.
pub fn plan_learned(spec: &Spec, learned: &Learned) -> RoutingPlan {
    let mut out = RoutingPlan::default();
    for family in IpFamily::ALL {
        let gateways: Vec<(u32, &Gateway)> = spec
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| (i as u32, g))
            .filter(|(_, g)| routes_family(spec, g, family))
            .collect();
        if gateways.is_empty() {
            continue;
        }
        out.rules.push(Rule {
            family,
            priority: PRIORITY_SUPPRESS,
            selector: RuleSelector::SuppressDefault,
            table: MAIN_TABLE,
            gateway: None,
        });
        for &(i, g) in &gateways {
            out.rules.push(Rule {
                family,
                priority: PRIORITY_FWMARK + i,
                selector: RuleSelector::FwMark {
                    mark: g.mark,
                    mask: spec.mark_mask,
                },
                table: g.route_table,
                gateway: Some(g.name.clone()),
            });
        }
        for &(i, g) in &gateways {
            let address = match family {
                IpFamily::V4 => learned.address(g).map(IpAddr::V4),
                IpFamily::V6 => g.address6.map(IpAddr::V6),
            };
            if let Some(addr) = address {
                out.rules.push(Rule {
                    family,
                    priority: PRIORITY_FROM + i,
                    selector: RuleSelector::From(addr),
                    table: g.route_table,
                    gateway: Some(g.name.clone()),
                });
            }
        }
        for &(_, g) in &gateways {
            let via = match family {
                IpFamily::V4 => learned.via(g).map(IpAddr::V4),
                IpFamily::V6 => g.via6.map(IpAddr::V6),
            };
            out.routes.push(Route {
                family,
                table: g.route_table,
                next_hop: via.map_or(NextHop::Direct, NextHop::Via),
                interface: g.interface.clone(),
                protocol: ROUTE_PROTOCOL,
                gateway: g.name.clone(),
            });
        }
    }
    out
}

/// Whether a gateway is routed in a family.
fn routes_family(spec: &Spec, g: &Gateway, family: IpFamily) -> bool {
    match family {
        IpFamily::V4 => spec.family.has_ipv4(),
        IpFamily::V6 => {
            spec.family.has_ipv6()
                && (!spec.family.has_ipv4() || g.via6.is_some() || g.address6.is_some())
        }
    }
}

fn table_name(table: u32) -> String {
    match table {
        MAIN_TABLE => "main".into(),
        t => t.to_string(),
    }
}

/// The lines of one family, for `ip -batch` (IPv4) or `ip -6 -batch` (IPv6): `rule add` for
/// each rule and `route replace` for each route, with a comment per gateway. Empty when the
/// plan has nothing in that family.
///
/// The family has to come from the command line: iproute2's `ip rule add` takes the family of
/// a rule only from `-4`/`-6` (not from its `from` address, and a batch line cannot carry
/// options), so one batch cannot hold both families.
pub fn render_ip_batch_family(plan: &RoutingPlan, family: IpFamily) -> String {
    let mut out = String::new();
    let rules: Vec<&Rule> = plan.rules.iter().filter(|r| r.family == family).collect();
    let routes: Vec<&Route> = plan.routes.iter().filter(|r| r.family == family).collect();
    for rule in &rules {
        match &rule.gateway {
            None => {
                out.push_str("# local destinations: the main table without its default route\n")
            }
            Some(g) => match rule.selector {
                RuleSelector::FwMark { .. } => {
                    let _ = writeln!(out, "# {g}: connections marked for it");
                }
                _ => {
                    let _ = writeln!(out, "# {g}: connections bound to its address");
                }
            },
        }
        let _ = writeln!(out, "rule add {}", rule.ip_args());
    }
    for route in &routes {
        let _ = writeln!(out, "# {}: its table", route.gateway);
        let _ = writeln!(out, "route replace {}", route.ip_args());
    }
    out
}

/// The header line that starts the IPv6 part of [`render_ip_batch`].
pub const IPV6_SECTION: &str = "# --- IPv6: ip -6 -batch ---";
/// The header line that starts the IPv4 part of [`render_ip_batch`].
pub const IPV4_SECTION: &str = "# --- IPv4: ip -batch ---";

/// The whole plan for review (`dump --format ip`): a header, then the IPv4 part (for
/// `ip -batch`) and the IPv6 part (for `ip -6 -batch`), each under its section line. Both parts
/// are exactly [`render_ip_batch_family`]. The lines add to a namespace without nftbalance's
/// rules (`rule add` of an existing rule fails); `apply` is what replaces.
pub fn render_ip_batch(plan: &RoutingPlan) -> String {
    let mut out = String::new();
    out.push_str("# nftbalance policy routing, as iproute2 batch input.\n");
    let _ = writeln!(
        out,
        "# Owned: rules with priority {}-{}, routes with proto {}.",
        crate::OWNED_PRIORITIES.start(),
        crate::OWNED_PRIORITIES.end(),
        ROUTE_PROTOCOL
    );
    out.push_str("# ip takes a rule's family only from -6, so each family is its own batch.\n");
    for family in plan.families() {
        out.push_str(match family {
            IpFamily::V4 => IPV4_SECTION,
            IpFamily::V6 => IPV6_SECTION,
        });
        out.push('\n');
        out.push_str(&render_ip_batch_family(plan, family));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Link;

    fn spec(json: &str) -> Spec {
        Spec::from_json(json).unwrap()
    }

    const SEED: &str = r#"{
      "gateways": [
        { "name": "isp1", "interface": "ppp0", "mark": 1, "address": "100.0.1.1",
          "via": "100.0.1.254", "route_table": 101 },
        { "name": "isp2", "interface": "ppp1", "mark": 2, "address": "100.0.2.1",
          "via": "100.0.2.254", "route_table": 102 }
      ]
    }"#;

    #[test]
    fn seed_matches_the_readme_recipe() {
        let p = plan(&spec(SEED));
        let rules: Vec<String> = p.rules.iter().map(|r| r.ip_args()).collect();
        assert_eq!(
            rules,
            [
                "priority 1000 lookup main suppress_prefixlength 0 protocol 110",
                "priority 1001 fwmark 0x1/0xffffffff lookup 101 protocol 110",
                "priority 1002 fwmark 0x2/0xffffffff lookup 102 protocol 110",
                "priority 1101 from 100.0.1.1 lookup 101 protocol 110",
                "priority 1102 from 100.0.2.1 lookup 102 protocol 110",
            ]
        );
        let routes: Vec<String> = p.routes.iter().map(|r| r.ip_args()).collect();
        assert_eq!(
            routes,
            [
                "default via 100.0.1.254 dev ppp0 table 101 proto 110",
                "default via 100.0.2.254 dev ppp1 table 102 proto 110",
            ]
        );
        assert_eq!(p.families(), [IpFamily::V4]);
    }

    #[test]
    fn fwmark_rules_come_before_from_rules_and_after_suppress() {
        let p = plan(&spec(SEED));
        let max_fwmark = p
            .rules
            .iter()
            .filter(|r| matches!(r.selector, RuleSelector::FwMark { .. }))
            .map(|r| r.priority)
            .max()
            .unwrap();
        let min_from = p
            .rules
            .iter()
            .filter(|r| matches!(r.selector, RuleSelector::From(_)))
            .map(|r| r.priority)
            .min()
            .unwrap();
        assert!(max_fwmark < min_from);
        for r in &p.rules {
            assert!(crate::OWNED_PRIORITIES.contains(&r.priority));
        }
    }

    #[test]
    fn mark_mask_is_the_fwmark_mask() {
        let p = plan(&spec(
            r#"{ "mark_mask": "0xff00", "gateways": [
              { "name": "a", "interface": "ppp0", "mark": "0x100", "route_table": 7 } ] }"#,
        ));
        assert_eq!(
            p.rules[1].selector,
            RuleSelector::FwMark {
                mark: 0x100,
                mask: 0xff00
            }
        );
        assert_eq!(
            p.rules[1].ip_args(),
            "priority 1001 fwmark 0x100/0xff00 lookup 7 protocol 110"
        );
        // No address: no from rule; no via: dev-only route.
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.routes[0].next_hop, NextHop::Direct);
        assert_eq!(p.routes[0].ip_args(), "default dev ppp0 table 7 proto 110");
    }

    #[test]
    fn ipv6_only_for_gateways_that_configure_it() {
        let p = plan(&spec(
            r#"{ "gateways": [
              { "name": "a", "interface": "eth1", "mark": 1, "route_table": 101,
                "address": "192.0.2.10", "via": "192.0.2.1",
                "address6": "2001:db8:1::10", "via6": "2001:db8:1::1" },
              { "name": "b", "interface": "eth2", "mark": 2, "route_table": 102, "via6": "fe80::1" },
              { "name": "c", "interface": "eth3", "mark": 3, "route_table": 103 },
              { "name": "d", "interface": "ppp0", "mark": 4, "route_table": 104,
                "address6": "2001:db8:4::1" } ] }"#,
        ));
        let v6: Vec<String> = p
            .rules
            .iter()
            .filter(|r| r.family == IpFamily::V6)
            .map(|r| r.ip_args())
            .collect();
        assert_eq!(
            v6,
            [
                "priority 1000 lookup main suppress_prefixlength 0 protocol 110",
                "priority 1001 fwmark 0x1/0xffffffff lookup 101 protocol 110",
                "priority 1002 fwmark 0x2/0xffffffff lookup 102 protocol 110",
                "priority 1004 fwmark 0x4/0xffffffff lookup 104 protocol 110",
                "priority 1101 from 2001:db8:1::10 lookup 101 protocol 110",
                "priority 1104 from 2001:db8:4::1 lookup 104 protocol 110",
            ]
        );
        let v6_routes: Vec<String> = p
            .routes
            .iter()
            .filter(|r| r.family == IpFamily::V6)
            .map(|r| r.ip_args())
            .collect();
        assert_eq!(
            v6_routes,
            [
                "default via 2001:db8:1::1 dev eth1 table 101 proto 110",
                "default via fe80::1 dev eth2 table 102 proto 110",
                "default dev ppp0 table 104 proto 110",
            ]
        );
        // Every gateway has IPv4 in an inet spec.
        assert_eq!(
            p.routes.iter().filter(|r| r.family == IpFamily::V4).count(),
            4
        );
        assert_eq!(p.families(), [IpFamily::V4, IpFamily::V6]);
    }

    #[test]
    fn family_ip_has_no_ipv6_and_ip6_no_ipv4() {
        let p = plan(&spec(
            r#"{ "family": "ip", "gateways": [
              { "name": "a", "interface": "ppp0", "mark": 1, "route_table": 101 } ] }"#,
        ));
        assert!(p.rules.iter().all(|r| r.family == IpFamily::V4));
        assert!(p.routes.iter().all(|r| r.family == IpFamily::V4));
        let p = plan(&spec(
            r#"{ "family": "ip6", "gateways": [
              { "name": "a", "interface": "ppp0", "mark": 1, "route_table": 101 },
              { "name": "b", "interface": "ppp1", "mark": 2, "route_table": 102,
                "via6": "fe80::1" } ] }"#,
        ));
        assert!(p.rules.iter().all(|r| r.family == IpFamily::V6));
        // In an ip6 spec every gateway routes IPv6 (dev-only without via6).
        assert_eq!(p.routes.len(), 2);
        assert_eq!(p.routes[0].next_hop, NextHop::Direct);
        assert_eq!(p.families(), [IpFamily::V6]);
    }

    #[test]
    fn render_is_sectioned_by_family() {
        let p = plan(&spec(
            r#"{ "gateways": [
              { "name": "a", "interface": "eth1", "mark": 1, "route_table": 101,
                "via": "192.0.2.1", "via6": "fe80::1" } ] }"#,
        ));
        let text = render_ip_batch(&p);
        let v4 = render_ip_batch_family(&p, IpFamily::V4);
        let v6 = render_ip_batch_family(&p, IpFamily::V6);
        assert!(text.ends_with(&format!("{IPV4_SECTION}\n{v4}{IPV6_SECTION}\n{v6}")));
        assert!(v4.contains("route replace default via 192.0.2.1 dev eth1 table 101 proto 110\n"));
        assert!(v6.contains("route replace default via fe80::1 dev eth1 table 101 proto 110\n"));
        assert!(
            v6.contains("rule add priority 1001 fwmark 0x1/0xffffffff lookup 101 protocol 110\n")
        );
        assert_eq!(render_ip_batch(&p), text, "deterministic");
    }

    #[test]
    fn skipped_names_gateway_and_interface() {
        let p = plan(&spec(
            r#"{ "gateways": [
              { "name": "isp1", "interface": "ppp0", "mark": 1, "route_table": 101,
                "via": "192.0.2.1", "via6": "fe80::1" },
              { "name": "isp2", "interface": "ppp1", "mark": 2, "route_table": 102 },
              { "name": "isp3", "interface": "ppp2", "mark": 3, "route_table": 103 } ] }"#,
        ));
        let mut links = Links::default();
        links.insert(
            "ppp1",
            Link {
                index: 5,
                up: false,
            },
        );
        links.insert("ppp2", Link { index: 6, up: true });
        let w = p.skipped(&links);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].gateway, "isp1");
        assert_eq!(w[0].reason, SkipReason::Missing);
        assert_eq!(w[0].routes.len(), 2, "one warning for both families");
        let text = w[0].to_string();
        assert!(
            text.contains("gateway isp1") && text.contains("ppp0"),
            "{text}"
        );
        assert!(text.contains("IPv4 table 101, IPv6 table 101"), "{text}");
        assert_eq!(w[1].gateway, "isp2");
        assert_eq!(w[1].reason, SkipReason::Down);
        assert_eq!(
            p.unroutable_gateways(&links),
            BTreeSet::from(["isp1".to_string(), "isp2".to_string()])
        );
    }
}
