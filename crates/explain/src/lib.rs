//! `explain` and `simulate`: what the ruleset in force does with a new connection, and what
//! the policies' shares become when gateways go down. Pure: the decision is the compiled model
//! walked rule by rule ([`walk`]), the policies are the ones the compiler uses
//! (`ruleset::policy`), routes come from routing's plan. Live facts (which gateways are in
//! force, conntrack entries, the kernel's route) are gathered by the caller.

mod jhash;
pub mod simulate;
pub mod walk;

use std::net::IpAddr;

use nftbalance_routing::{self as routing, NextHop, RoutingPlan, RuleSelector};
use nftbalance_ruleset::policy::{in_use, InUse};
use nftbalance_ruleset::{self as ruleset, names, Availability, Ruleset, SelectorRef};
use nftbalance_spec::{PolicyKey, Protocol, SelectorKind, Spec};
use serde::Serialize;

pub use walk::Nat;
use walk::{Branch, End, Packet, SplitKind};

/// The connection to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub to: IpAddr,
    pub port: Option<u16>,
    pub from: Option<IpAddr>,
    pub protocol: Protocol,
    pub origin: Origin,
}

/// Where the connection starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Arrives on this interface: forwarded from the LAN, or inbound from an uplink.
    Interface(String),
    /// Opened by the router itself.
    Local,
}

/// Everything `explain` says about one new connection.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The connection, in words.
    pub connection: String,
    /// The base chain its first packet walks: `prerouting` or `output`.
    pub hook: String,
    /// The spec selector that matches (`balance.forward[0]`), if any.
    pub selector: Option<String>,
    /// The policy it follows, with its tier and members now.
    pub policy: Option<PolicyUse>,
    pub decision: Decision,
    /// One entry per way the connection can go (several for a split), with its share.
    pub outcomes: Vec<Outcome>,
    /// The rules that matched, in order (of the first outcome).
    pub rules: Vec<walk::Step>,
    pub notes: Vec<String>,
}

/// What decides the connection's uplink.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Decision {
    /// Arrived on a gateway's uplink: marked for it, answered through it.
    Inbound { gateway: String },
    /// The destination is excluded (`balance.exclude`): main table, no mark.
    Excluded { prefix: String },
    /// No selector matches: main table, no mark.
    NotSelected,
    /// One gateway takes it (a pin, or a tier with one member).
    Gateway { gateway: String },
    /// Split over these members by `method`; each outcome is one member. `chosen`: the
    /// member a `source-hash` split gives this source, when the source is known.
    Split {
        method: String,
        members: Vec<String>,
        chosen: Option<String>,
    },
    /// The policy has no usable member and its last resort is the main table.
    LastResortMainTable,
    /// Refused at once (last resort `unreachable`).
    Refused,
}

/// A policy as it stands under the availability in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyUse {
    /// `(default)`, `(pin:NAME)` or the policy's name.
    pub name: String,
    pub method: String,
    pub tier: Option<u8>,
    /// The members taking new connections, with shares in percent.
    pub members: Vec<Share>,
    /// `main-table`, `unreachable` or `keep-last` when no member is usable.
    pub last_resort: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    pub gateway: String,
    pub percent: f64,
}

/// One way the connection goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The gateway whose mark it gets; None: no mark, the main table.
    pub gateway: Option<String>,
    pub interface: Option<String>,
    /// Share of such new connections taking this way, percent.
    pub percent: f64,
    /// The connection mark (the tool's bits).
    pub mark: u32,
    pub route: Route,
    /// The source address the far end sees.
    pub source: Source,
}

/// How the packet is routed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Route {
    /// The gateway's table via its fwmark rule (a more specific route of the main table wins:
    /// the rule at priority 1000 consults it first).
    Table {
        rule_priority: u32,
        table: u32,
        via: Option<IpAddr>,
        dev: String,
    },
    /// The main table; `dev`/`via` when the kernel was asked.
    Main {
        dev: Option<String>,
        via: Option<IpAddr>,
    },
}

/// The source address the far end sees.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// Source NAT by the table's postrouting chain.
    Nat { nat: Nat },
    /// An inbound connection: replies come from the address it was sent to.
    Destination { address: IpAddr },
    /// Leaves by the main table's route, unknown without asking the kernel.
    Unknown,
}

impl Query {
    fn packet(&self) -> Packet {
        Packet {
            iif: match &self.origin {
                Origin::Interface(i) => Some(i.clone()),
                Origin::Local => None,
            },
            oif: None,
            saddr: self.from,
            daddr: self.to,
            protocol: self.protocol,
            dport: self.port,
        }
    }

    fn describe(&self) -> String {
        let to = match (self.port, self.to) {
            (Some(p), IpAddr::V6(a)) => format!("[{a}]:{p}"),
            (Some(p), a) => format!("{a}:{p}"),
            (None, a) => a.to_string(),
        };
        let from = self
            .from
            .map_or_else(|| "any source".into(), |a| a.to_string());
        let origin = match &self.origin {
            Origin::Interface(i) => format!("arriving on {i}"),
            Origin::Local => "opened by the router".into(),
        };
        format!("{} {from} -> {to}, {origin}", self.protocol.as_str())
    }
}

/// Explains a new connection under `availability` (what the ruleset in force was compiled
/// for): the ruleset is compiled exactly as `apply` and `watch` compile it, then walked.
pub fn explain(spec: &Spec, availability: &Availability, q: &Query) -> Explanation {
    let rs = ruleset::compile_with(spec, availability);
    let plan = routing::plan(spec);
    let hook = match q.origin {
        Origin::Interface(_) => names::PREROUTING,
        Origin::Local => names::OUTPUT,
    };
    let mut notes = Vec::new();
    let handled = match q.to {
        IpAddr::V4(_) => spec.family.has_ipv4(),
        IpAddr::V6(_) => spec.family.has_ipv6(),
    };
    let branches = if handled {
        walk::walk(&rs, hook, &q.packet())
    } else {
        notes.push(format!(
            "a {} table does not see this family's packets",
            spec.family.as_str()
        ));
        Vec::new()
    };
    let first = branches.first().cloned();
    let selector = first.as_ref().and_then(|b| b.selector);
    let policy = selector.map(|s| policy_use(spec, availability, s));
    let outcomes: Vec<Outcome> = merge(&branches)
        .iter()
        .map(|b| outcome(spec, &rs, &plan, q, b))
        .collect();
    let mut decision = decision(spec, q, &branches, &outcomes);
    if let (
        Decision::Split {
            members, chosen, ..
        },
        Some(p),
    ) = (&mut decision, &policy)
    {
        // The split's members are the policy's in use; a known source's hash picks one.
        if let [only] = members.as_slice() {
            *chosen = Some(only.clone());
        }
        *members = p.members.iter().map(|m| m.gateway.clone()).collect();
    }
    if branches.iter().any(|b| b.sticky) {
        notes.push(
            "sticky: a source with a recent connection keeps that connection's uplink; this \
             is the choice for a source without one"
                .into(),
        );
    }
    if branches
        .iter()
        .any(|b| b.split == Some(SplitKind::SourceHash))
    {
        notes.push(
            "source-hash: every connection of one source takes the same member, chosen by \
             a hash of its address"
                .into(),
        );
    }
    if q.from.is_none() && mentions_source(spec) {
        notes.push("no --from: selectors on source addresses were taken as not matching".into());
    }
    Explanation {
        connection: q.describe(),
        hook: hook.to_string(),
        selector: selector.map(selector_path),
        policy,
        decision,
        outcomes,
        rules: first.map(|b| b.steps).unwrap_or_default(),
        notes,
    }
}

fn mentions_source(spec: &Spec) -> bool {
    let b = &spec.balance;
    (b.forward.iter().chain(&b.local)).any(|s| !s.saddr.is_empty())
}

/// `balance.forward[0]`.
pub fn selector_path(s: SelectorRef) -> String {
    let kind = match s.kind {
        SelectorKind::Forward => "forward",
        SelectorKind::Local => "local",
    };
    format!("balance.{kind}[{}]", s.index)
}

fn policy_use(spec: &Spec, availability: &Availability, s: SelectorRef) -> PolicyUse {
    let list = match s.kind {
        SelectorKind::Forward => &spec.balance.forward,
        SelectorKind::Local => &spec.balance.local,
    };
    let key = list
        .get(s.index)
        .map_or(PolicyKey::Default, |sel| spec.policy_of(sel));
    let name = match &key {
        PolicyKey::Named(n) => n.as_str(),
        _ => "",
    };
    match spec.resolve_policy(&key) {
        Some(policy) => {
            let used = in_use(name, &policy, availability);
            policy_shares(&key, policy.method.as_str(), &used)
        }
        None => PolicyUse {
            name: key.to_string(),
            method: spec.balance.method.as_str().into(),
            tier: None,
            members: Vec::new(),
            last_resort: None,
        },
    }
}

/// A policy's members and shares as `in_use` gives them.
pub fn policy_shares(key: &PolicyKey, method: &str, used: &InUse) -> PolicyUse {
    let total: u32 = used.members().iter().map(|m| m.weight).sum();
    PolicyUse {
        name: key.to_string(),
        method: method.to_string(),
        tier: used.tier(),
        members: (used.members().iter())
            .map(|m| Share {
                gateway: m.gateway.clone(),
                percent: percent(f64::from(m.weight), f64::from(total)),
            })
            .collect(),
        last_resort: match used {
            InUse::Tier { .. } => None,
            InUse::Kept { .. } => Some("keep-last".into()),
            InUse::LastResort(r) => Some(r.as_str().into()),
        },
    }
}

fn percent(part: f64, total: f64) -> f64 {
    if total == 0.0 {
        0.0
    } else {
        // One decimal: shares are for reading, not for summing exactly.
        (1000.0 * part / total).round() / 10.0
    }
}

/// Branches that end alike (same mark, same end) as one, their shares added.
fn merge(branches: &[Branch]) -> Vec<Branch> {
    let mut out: Vec<Branch> = Vec::new();
    for b in branches {
        match out
            .iter_mut()
            .find(|o| o.ct_mark == b.ct_mark && o.end == b.end)
        {
            Some(o) => o.share += b.share,
            None => out.push(b.clone()),
        }
    }
    out
}

fn decision(spec: &Spec, q: &Query, branches: &[Branch], outcomes: &[Outcome]) -> Decision {
    let Some(b) = branches.first() else {
        return Decision::NotSelected;
    };
    let gateways: Vec<String> = outcomes.iter().filter_map(|o| o.gateway.clone()).collect();
    if b.end == End::Refused {
        return Decision::Refused;
    }
    if b.inbound {
        if let Some(g) = gateways.first() {
            return Decision::Inbound { gateway: g.clone() };
        }
    }
    if let Some(set) = &b.excluded_by {
        return Decision::Excluded {
            prefix: excluded_prefix(spec, set, q.to),
        };
    }
    match (b.selector, gateways.len(), b.split) {
        (None, _, _) => Decision::NotSelected,
        (Some(_), 0, _) => Decision::LastResortMainTable,
        (Some(_), 1, None) => Decision::Gateway {
            gateway: gateways[0].clone(),
        },
        (Some(_), _, split) => Decision::Split {
            method: match split {
                Some(SplitKind::Random) => "random",
                Some(SplitKind::SourceHash) => "source-hash",
                _ => "round-robin",
            }
            .into(),
            members: gateways,
            chosen: None,
        },
    }
}

/// The `balance.exclude` prefix that holds the destination; the set that found it if the
/// prefixes were merged into a larger one.
fn excluded_prefix(spec: &Spec, set: &str, to: IpAddr) -> String {
    (spec.balance.exclude.iter())
        .find(|n| n.contains(&to))
        .map_or_else(|| format!("@{set}"), |n| n.to_string())
}

fn outcome(spec: &Spec, rs: &Ruleset, plan: &RoutingPlan, q: &Query, b: &Branch) -> Outcome {
    let mark = b.ct_mark & spec.mark_mask;
    let gateway = (mark != 0)
        .then(|| spec.gateways.iter().find(|g| g.mark == mark))
        .flatten();
    let v6 = q.to.is_ipv6();
    let route = match gateway {
        Some(g) => table_route(plan, mark, spec.mark_mask, v6).unwrap_or(Route::Table {
            rule_priority: 0,
            table: g.route_table,
            via: None,
            dev: g.interface.clone(),
        }),
        None => Route::Main {
            dev: None,
            via: None,
        },
    };
    let source = match (gateway, b.inbound) {
        (Some(_), true) => Source::Destination { address: q.to },
        (Some(g), false) => Source::Nat {
            nat: walk::source_nat(rs, &g.interface, v6),
        },
        (None, _) => Source::Unknown,
    };
    Outcome {
        gateway: gateway.map(|g| g.name.clone()),
        interface: gateway.map(|g| g.interface.clone()),
        percent: (1000.0 * b.share).round() / 10.0,
        mark,
        route,
        source,
    }
}

/// The fwmark rule for `mark` and the default route of its table, from routing's plan.
fn table_route(plan: &RoutingPlan, mark: u32, mask: u32, v6: bool) -> Option<Route> {
    let family = if v6 {
        routing::IpFamily::V6
    } else {
        routing::IpFamily::V4
    };
    let rule = plan
        .rules
        .iter()
        .find(|r| r.family == family && r.selector == RuleSelector::FwMark { mark, mask })?;
    let route = plan
        .routes
        .iter()
        .find(|r| r.family == family && r.table == rule.table)?;
    Some(Route::Table {
        rule_priority: rule.priority,
        table: rule.table,
        via: match route.next_hop {
            NextHop::Via(a) => Some(a),
            NextHop::Direct => None,
        },
        dev: route.interface.clone(),
    })
}

/// The source the far end sees for a connection that leaves by `dev` through the main table.
pub fn main_table_source(spec: &Spec, availability: &Availability, dev: &str, v6: bool) -> Source {
    let rs = ruleset::compile_with(spec, availability);
    Source::Nat {
        nat: walk::source_nat(&rs, dev, v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> Spec {
        let path = format!(
            "{}/../../fixtures/specs/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        Spec::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn forward(iif: &str, from: Option<&str>, to: &str, port: u16, protocol: Protocol) -> Query {
        Query {
            to: to.parse().unwrap(),
            port: Some(port),
            from: from.map(|f| f.parse().unwrap()),
            protocol,
            origin: Origin::Interface(iif.into()),
        }
    }

    fn down(names: &[&str]) -> Availability {
        Availability::without(names.iter().map(|n| n.to_string()).collect())
    }

    fn gateways(e: &Explanation) -> Vec<(Option<&str>, f64, u32)> {
        (e.outcomes.iter())
            .map(|o| (o.gateway.as_deref(), o.percent, o.mark))
            .collect()
    }

    #[test]
    fn a_balanced_connection_takes_part_in_the_split() {
        let s = spec("seed");
        let q = forward(
            "eth0",
            Some("192.168.1.10"),
            "198.51.100.10",
            80,
            Protocol::Tcp,
        );
        let e = explain(&s, &Availability::default(), &q);
        assert_eq!(e.selector.as_deref(), Some("balance.forward[0]"));
        assert_eq!(
            gateways(&e),
            [(Some("isp1"), 50.0, 1), (Some("isp2"), 50.0, 2)]
        );
        let nat: Vec<String> = (e.outcomes.iter())
            .map(|o| match &o.source {
                Source::Nat {
                    nat: Nat::To { address },
                } => address.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(nat, ["100.0.1.1", "100.0.2.1"]);
        assert_eq!(
            e.outcomes[1].route,
            Route::Table {
                rule_priority: 1002,
                table: 102,
                via: Some("100.0.2.254".parse().unwrap()),
                dev: "ppp1".into()
            }
        );
    }

    #[test]
    fn each_kind_of_connection_gets_its_decision() {
        let s = spec("seed");
        let all = Availability::default();
        let tcp = |iif, to, port| forward(iif, None, to, port, Protocol::Tcp);
        let d = |q: &Query, a: &Availability| explain(&s, a, q).decision;
        assert_eq!(
            d(&tcp("eth0", "10.1.2.3", 443), &all),
            Decision::Excluded {
                prefix: "10.0.0.0/8".into()
            }
        );
        assert_eq!(
            d(&tcp("ppp1", "100.0.2.1", 8000), &all),
            Decision::Inbound {
                gateway: "isp2".into()
            }
        );
        assert_eq!(
            d(&tcp("eth0", "198.51.100.10", 8080), &all),
            Decision::NotSelected
        );
        assert_eq!(
            d(&tcp("eth0", "198.51.100.10", 80), &down(&["isp1"])),
            Decision::Gateway {
                gateway: "isp2".into()
            }
        );
        let local = Query {
            origin: Origin::Local,
            ..tcp("eth0", "198.51.100.10", 80)
        };
        assert_eq!(
            explain(&s, &all, &local).selector.as_deref(),
            Some("balance.local[0]")
        );
    }

    #[test]
    fn policies_show_their_tier_and_last_resort() {
        let s = spec("policies-last-resort");
        let voip = forward("eth0", None, "198.51.100.10", 5060, Protocol::Udp);
        let e = explain(&s, &down(&["dsl"]), &voip);
        let p = e.policy.clone().unwrap();
        assert_eq!((p.name.as_str(), p.tier), ("voip", Some(2)));
        assert_eq!(gateways(&e), [(Some("fibre"), 100.0, 1)]);
        let e = explain(&s, &down(&["dsl", "fibre"]), &voip);
        assert_eq!(e.decision, Decision::Refused);
        // web: source-hash over fibre 3 and dsl 1; a known source gets one member.
        let web = forward(
            "eth0",
            Some("192.168.1.10"),
            "198.51.100.10",
            443,
            Protocol::Tcp,
        );
        let e = explain(&s, &Availability::default(), &web);
        match &e.decision {
            Decision::Split {
                method,
                members,
                chosen,
            } => {
                assert_eq!(method, "source-hash");
                assert_eq!(members, &["fibre", "dsl"]);
                assert!(chosen.is_some());
            }
            other => panic!("{other:?}"),
        }
        let e = explain(&s, &down(&["fibre", "dsl", "lte"]), &web);
        assert_eq!(e.decision, Decision::LastResortMainTable);
    }

    #[test]
    fn a_narrow_mark_mask_marks_inside_it() {
        let s = spec("mark-mask");
        let g = &s.gateways[0];
        let q = Query {
            to: "198.51.100.10".parse().unwrap(),
            port: None,
            from: None,
            protocol: Protocol::Tcp,
            origin: Origin::Interface(g.interface.clone()),
        };
        let e = explain(&s, &Availability::default(), &q);
        assert_eq!(
            e.decision,
            Decision::Inbound {
                gateway: g.name.clone()
            }
        );
        assert_eq!(e.outcomes[0].mark, g.mark);
    }
}
