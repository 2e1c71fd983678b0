//! What apply, restore and flush must change, decided from what the kernel holds: plan ×
//! owned state × links → a list of [`Op`]s, and the checks that the kernel converged. Pure:
//! no I/O and no logging; `live` sends the ops and handles the kernel's answers.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::rule::RuleMessage;
use netlink_packet_route::RouteNetlinkMessage;

use crate::error::Error;
use crate::links::Links;
use crate::message::{
    describe_route, describe_rule, is_owned_route, route_delete, route_message, route_readd,
    rule_message, same_slot, OwnedState, RouteId, RouteKey, RuleId, RuleKey,
};
use crate::plan::{Route, RoutingPlan, Rule, Warning};

/// One change to the owned rules and routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Delete a rule as dumped.
    DeleteRule(RuleMessage),
    /// Add a planned rule.
    AddRule(Rule),
    /// Add a snapshot's rule back.
    RestoreRule(RuleMessage),
    /// Put a planned route on the interface with index `oif`, replacing the default route of
    /// its table (atomic for traffic).
    ReplaceRoute { route: Route, oif: u32 },
    /// Add a snapshot's route back; fails if an identical one is there.
    RestoreRoute(RouteMessage),
    /// Delete a route as dumped.
    DeleteRoute(RouteMessage),
}

impl Op {
    /// The request that makes the change, and its netlink flags.
    pub(crate) fn request(&self) -> (RouteNetlinkMessage, u16) {
        match self {
            Op::DeleteRule(msg) => (RouteNetlinkMessage::DelRule(msg.clone()), 0),
            Op::AddRule(rule) => (
                RouteNetlinkMessage::NewRule(rule_message(rule)),
                NLM_F_CREATE,
            ),
            Op::RestoreRule(msg) => (RouteNetlinkMessage::NewRule(msg.clone()), NLM_F_CREATE),
            Op::ReplaceRoute { route, oif } => (
                RouteNetlinkMessage::NewRoute(route_message(route, *oif)),
                NLM_F_CREATE | NLM_F_REPLACE,
            ),
            Op::RestoreRoute(msg) => (
                RouteNetlinkMessage::NewRoute(route_readd(msg)),
                NLM_F_CREATE | NLM_F_EXCL,
            ),
            Op::DeleteRoute(msg) => (RouteNetlinkMessage::DelRoute(route_delete(msg)), 0),
        }
    }

    /// What the change does, for messages ("adding …", "replacing …", "deleting …").
    pub(crate) fn describe(&self) -> String {
        match self {
            Op::DeleteRule(msg) => format!("deleting {}", describe_rule(msg)),
            Op::AddRule(rule) => format!("adding {rule}"),
            Op::RestoreRule(msg) => format!("adding {}", describe_rule(msg)),
            Op::ReplaceRoute { route, .. } => format!("replacing {route}"),
            Op::RestoreRoute(msg) => format!("adding {}", describe_route(msg)),
            Op::DeleteRoute(msg) => format!("deleting {}", describe_route(msg)),
        }
    }

    /// Whether it deletes something (a delete of what is gone already succeeded).
    pub(crate) fn deletes(&self) -> bool {
        matches!(self, Op::DeleteRule(_) | Op::DeleteRoute(_))
    }

    /// Whether it adds a route (which the kernel refuses while its link is not ready).
    pub(crate) fn adds_route(&self) -> bool {
        matches!(self, Op::ReplaceRoute { .. } | Op::RestoreRoute(_))
    }
}

/// Whether owned rules and routes the plan does not have are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stale {
    Delete,
    Keep,
}

/// The first part of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reconciled {
    /// Stale rules deleted (only for [`Stale::Delete`]), then missing rules added, then routes
    /// that differ replaced.
    pub(crate) ops: Vec<Op>,
    /// The routes skipped because their interface is missing or down.
    pub(crate) warnings: Vec<Warning>,
    /// The planned routes the kernel holds already.
    pub(crate) present: Vec<RouteKey>,
}

/// What an apply of `plan` changes in `owned`. `routes` is the whole route dump: a default
/// route that someone else put in the slot a planned route would replace is an
/// [`Error::ForeignDefault`], and nothing is changed.
///
/// Owned routes the plan does not have are not here: a replace takes over the slot of the
/// route it replaces, so which ones are left is known only after the replaces; see
/// [`extra_routes`].
pub(crate) fn reconcile(
    plan: &RoutingPlan,
    links: &Links,
    owned: &OwnedState,
    routes: &[RouteMessage],
    stale: Stale,
) -> Result<Reconciled, Error> {
    let ready = ready_routes(plan, links);
    refuse_foreign_defaults(&ready, routes)?;
    let mut ops = rule_ops(plan, owned, stale);
    let mut present = Vec::new();
    for (route, oif) in ready {
        let key = RouteKey::of(route, oif);
        if owned
            .routes
            .iter()
            .any(|m| RouteKey::parse(m).as_ref() == Some(&key))
        {
            present.push(key);
        } else {
            ops.push(Op::ReplaceRoute {
                route: route.clone(),
                oif,
            });
        }
    }
    Ok(Reconciled {
        ops,
        warnings: plan.skipped(links),
        present,
    })
}

/// The planned routes whose interface is there and up, with its index.
fn ready_routes<'a>(plan: &'a RoutingPlan, links: &Links) -> Vec<(&'a Route, u32)> {
    plan.routes
        .iter()
        .filter_map(|r| {
            links
                .get(&r.interface)
                .filter(|l| l.up)
                .map(|l| (r, l.index))
        })
        .collect()
}

/// Never replace a default route someone else put in a gateway's table.
fn refuse_foreign_defaults(ready: &[(&Route, u32)], routes: &[RouteMessage]) -> Result<(), Error> {
    for (route, _) in ready {
        if let Some(foreign) = routes
            .iter()
            .find(|m| !is_owned_route(m) && same_slot(m, route.family, route.table))
        {
            return Err(Error::ForeignDefault {
                gateway: route.gateway.clone(),
                family: route.family,
                table: route.table,
                route: describe_route(foreign),
            });
        }
    }
    Ok(())
}

/// Rules cannot be replaced in place: delete the owned rules the plan does not have (or has
/// once fewer), then add the missing ones.
fn rule_ops(plan: &RoutingPlan, owned: &OwnedState, stale: Stale) -> Vec<Op> {
    let wanted: Vec<Option<RuleKey>> = plan.rules.iter().map(|r| Some(RuleKey::of(r))).collect();
    let have: Vec<Option<RuleKey>> = owned.rules.iter().map(RuleKey::parse).collect();
    // An unrecognised rule (no key) matches no planned rule.
    let (missing, extra) = unmatched(&wanted, &have, |a, b| a.is_some() && a == b);
    let mut ops: Vec<Op> = match stale {
        Stale::Delete => extra
            .map(|i| Op::DeleteRule(owned.rules[i].clone()))
            .collect(),
        Stale::Keep => Vec::new(),
    };
    ops.extend(missing.map(|i| Op::AddRule(plan.rules[i].clone())));
    ops
}

/// The owned routes of a dump taken after the replaces that are not `installed` (the planned
/// routes present before and those replaced): an apply deletes them.
pub(crate) fn extra_routes(installed: &[RouteKey], routes: &[RouteMessage]) -> Vec<Op> {
    routes
        .iter()
        .filter(|m| is_owned_route(m))
        .filter(|m| !RouteKey::parse(m).is_some_and(|k| installed.contains(&k)))
        .map(|m| Op::DeleteRoute(m.clone()))
        .collect()
}

/// After an install: every planned rule is in (stale ones may be there too).
pub(crate) fn check_rules_installed(plan: &RoutingPlan, after: &OwnedState) -> Result<(), Error> {
    let have: Vec<RuleKey> = after.rules.iter().filter_map(RuleKey::parse).collect();
    match plan
        .rules
        .iter()
        .map(RuleKey::of)
        .find(|k| !have.contains(k))
    {
        Some(missing) => Err(Error::NotConverged {
            detail: format!("rule {missing:?} missing: {}", after.lines().join("; ")),
        }),
        None => Ok(()),
    }
}

/// After an apply: the owned rules are exactly the plan's and the owned routes exactly the
/// `installed` ones; otherwise someone else is changing them too.
pub(crate) fn check_converged(
    plan: &RoutingPlan,
    installed: &[RouteKey],
    after: &OwnedState,
) -> Result<(), Error> {
    let mut wanted: Vec<RuleKey> = plan.rules.iter().map(RuleKey::of).collect();
    let mut have: Vec<Option<RuleKey>> = after.rules.iter().map(RuleKey::parse).collect();
    wanted.sort();
    have.sort();
    if have.into_iter().collect::<Option<Vec<_>>>() != Some(wanted) {
        return Err(Error::NotConverged {
            detail: format!("rules: {}", after.lines().join("; ")),
        });
    }
    let mut wanted = installed.to_vec();
    let mut have: Vec<Option<RouteKey>> = after.routes.iter().map(RouteKey::parse).collect();
    wanted.sort();
    have.sort();
    if have.into_iter().collect::<Option<Vec<_>>>() != Some(wanted) {
        return Err(Error::NotConverged {
            detail: format!("routes: {}", after.lines().join("; ")),
        });
    }
    Ok(())
}

/// What puts the owned rules and routes back to `snapshot` from `now`: delete the rules the
/// snapshot does not have, add back its missing ones, then the same for routes. Entries are
/// compared whole ([`RuleId`], [`RouteId`]), as many times as they occur.
pub(crate) fn restore_ops(snapshot: &OwnedState, now: &OwnedState) -> Vec<Op> {
    let (gone, extra) = unmatched(&snapshot.rules, &now.rules, |a, b| RuleId(a) == RuleId(b));
    let mut ops: Vec<Op> = extra
        .map(|i| Op::DeleteRule(now.rules[i].clone()))
        .collect();
    ops.extend(gone.map(|i| Op::RestoreRule(snapshot.rules[i].clone())));
    let (gone, extra) = unmatched(&snapshot.routes, &now.routes, |a, b| {
        RouteId::of(a) == RouteId::of(b)
    });
    ops.extend(extra.map(|i| Op::DeleteRoute(now.routes[i].clone())));
    ops.extend(gone.map(|i| Op::RestoreRoute(snapshot.routes[i].clone())));
    ops
}

/// Pairs equal entries of `want` and `have` one to one; returns the positions of the entries
/// of `want` left over (missing) and of those of `have` left over (extra), in order.
fn unmatched<T>(
    want: &[T],
    have: &[T],
    same: impl Fn(&T, &T) -> bool,
) -> (impl Iterator<Item = usize>, impl Iterator<Item = usize>) {
    let mut matched = vec![false; want.len()];
    let mut extra = Vec::new();
    for (j, h) in have.iter().enumerate() {
        match (0..want.len()).find(|&i| !matched[i] && same(&want[i], h)) {
            Some(i) => matched[i] = true,
            None => extra.push(j),
        }
    }
    let missing = (0..want.len()).filter(move |&i| !matched[i]);
    (missing, extra.into_iter())
}

/// Deleting every owned rule and route.
pub(crate) fn flush_ops(now: &OwnedState) -> Vec<Op> {
    let rules = now.rules.iter().map(|m| Op::DeleteRule(m.clone()));
    rules
        .chain(now.routes.iter().map(|m| Op::DeleteRoute(m.clone())))
        .collect()
}

/// How the owned rules and routes differ from the plan, one line each; empty when they are
/// the same. Routes of links that are missing or down are not expected (apply skips them).
pub(crate) fn compare(plan: &RoutingPlan, links: &Links, owned: &OwnedState) -> Vec<String> {
    let wanted: Vec<Option<RuleKey>> = plan.rules.iter().map(|r| Some(RuleKey::of(r))).collect();
    let have: Vec<Option<RuleKey>> = owned.rules.iter().map(RuleKey::parse).collect();
    let (missing, extra) = unmatched(&wanted, &have, |a, b| a == b);
    let mut out: Vec<String> = missing
        .map(|i| format!("ip rule missing: {}", plan.rules[i]))
        .collect();
    out.extend(extra.map(|i| {
        format!(
            "ip rule not in the spec: {}",
            describe_rule(&owned.rules[i])
        )
    }));
    let ready = ready_routes(plan, links);
    let wanted: Vec<Option<RouteKey>> = ready
        .iter()
        .map(|(r, i)| Some(RouteKey::of(r, *i)))
        .collect();
    let have: Vec<Option<RouteKey>> = owned.routes.iter().map(RouteKey::parse).collect();
    let (missing, extra) = unmatched(&wanted, &have, |a, b| a == b);
    out.extend(missing.map(|i| format!("route missing: {}", ready[i].0)));
    out.extend(extra.map(|i| {
        format!(
            "route not in the spec: {}",
            describe_route(&owned.routes[i])
        )
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::{kernel_route, seed_plan};
    use crate::message::{route_message, IPV6_DEFAULT_METRIC};
    use crate::plan::{IpFamily, SkipReason};
    use crate::Link;
    use netlink_packet_route::route::{RouteAttribute, RouteProtocol};
    use netlink_packet_route::rule::RuleAttribute;

    fn links(list: &[(&str, u32, bool)]) -> Links {
        let mut links = Links::default();
        for &(name, index, up) in list {
            links.insert(name, Link { index, up });
        }
        links
    }

    /// ppp0 (isp1) has index 7, ppp1 (isp2) index 8.
    fn up() -> Links {
        links(&[("ppp0", 7, true), ("ppp1", 8, true)])
    }

    fn oif(route: &Route) -> u32 {
        if route.interface == "ppp0" {
            7
        } else {
            8
        }
    }

    fn rule(plan: &RoutingPlan, family: IpFamily, priority: u32) -> Rule {
        let found = plan
            .rules
            .iter()
            .find(|r| r.family == family && r.priority == priority);
        found.unwrap().clone()
    }

    fn route(plan: &RoutingPlan, family: IpFamily, table: u32) -> Route {
        let found = plan
            .routes
            .iter()
            .find(|r| r.family == family && r.table == table);
        found.unwrap().clone()
    }

    /// What the kernel holds after an apply of the seed plan with [`up`].
    fn applied(plan: &RoutingPlan) -> OwnedState {
        OwnedState {
            rules: plan.rules.iter().map(rule_message).collect(),
            routes: plan
                .routes
                .iter()
                .map(|r| kernel_route(r, oif(r)))
                .collect(),
        }
    }

    fn without_rule(mut owned: OwnedState, rule: &Rule) -> OwnedState {
        owned.rules.retain(|m| *m != rule_message(rule));
        owned
    }

    fn with_rule(mut owned: OwnedState, msg: RuleMessage) -> OwnedState {
        owned.rules.push(msg);
        owned
    }

    fn replace(route: Route, oif: u32) -> Op {
        Op::ReplaceRoute { route, oif }
    }

    /// A foreign (`proto boot`) default route in a table.
    fn foreign(family: IpFamily, table: u32, metric: Option<u32>) -> RouteMessage {
        let plan = seed_plan();
        let mut msg = route_message(&route(&plan, family, 101), 3);
        msg.header.protocol = RouteProtocol::Boot;
        msg.attributes
            .retain(|a| !matches!(a, RouteAttribute::Table(_)));
        msg.attributes.push(RouteAttribute::Table(table));
        msg.attributes.extend(metric.map(RouteAttribute::Priority));
        msg
    }

    #[test]
    fn reconcile_decides_the_ops_of_apply_and_install() {
        use IpFamily::{V4, V6};
        let p = seed_plan();
        let stale_mark = {
            let mut r = rule(&p, V4, 1002);
            r.priority = 1003;
            rule_message(&r)
        };
        let odd = {
            let mut m = rule_message(&rule(&p, V4, 1001));
            m.attributes.push(RuleAttribute::Iifname("eth0".into()));
            m
        };
        let all_added: Vec<Op> = p.rules.iter().map(|r| Op::AddRule(r.clone())).collect();
        let all_replaced = p.routes.iter().map(|r| replace(r.clone(), oif(r)));
        #[rustfmt::skip]
        let cases: Vec<(&str, OwnedState, Links, Stale, Vec<Op>)> = vec![
            ("an empty kernel gets every rule, then every route",
             OwnedState::default(), up(), Stale::Delete,
             all_added.iter().cloned().chain(all_replaced).collect()),
            ("the plan held already changes nothing",
             applied(&p), up(), Stale::Delete, vec![]),
            ("a stale rule is deleted before the missing one is added",
             with_rule(without_rule(applied(&p), &rule(&p, V4, 1101)), stale_mark.clone()),
             up(), Stale::Delete,
             vec![Op::DeleteRule(stale_mark.clone()), Op::AddRule(rule(&p, V4, 1101))]),
            ("install keeps the stale rule",
             with_rule(without_rule(applied(&p), &rule(&p, V4, 1101)), stale_mark.clone()),
             up(), Stale::Keep,
             vec![Op::AddRule(rule(&p, V4, 1101))]),
            ("a rule held twice is deleted once",
             with_rule(applied(&p), rule_message(&rule(&p, V6, 1000))), up(), Stale::Delete,
             vec![Op::DeleteRule(rule_message(&rule(&p, V6, 1000)))]),
            ("an unrecognised owned rule is deleted and the planned one added",
             with_rule(without_rule(applied(&p), &rule(&p, V4, 1001)), odd.clone()),
             up(), Stale::Delete,
             vec![Op::DeleteRule(odd), Op::AddRule(rule(&p, V4, 1001))]),
            ("a link with a new index gets its routes replaced",
             applied(&p), links(&[("ppp0", 9, true), ("ppp1", 8, true)]), Stale::Delete,
             vec![replace(route(&p, V4, 101), 9), replace(route(&p, V6, 101), 9)]),
            ("a missing link's routes are skipped, its rules added",
             OwnedState::default(), links(&[("ppp0", 7, true)]), Stale::Delete,
             all_added.iter().cloned()
                 .chain([replace(route(&p, V4, 101), 7), replace(route(&p, V6, 101), 7)])
                 .collect()),
            ("a down link's routes are skipped",
             applied(&p), links(&[("ppp0", 7, false), ("ppp1", 8, true)]), Stale::Delete,
             vec![]),
        ];
        for (name, owned, links, stale, ops) in cases {
            let got = reconcile(&p, &links, &owned, &owned.routes, stale).unwrap();
            assert_eq!(got.ops, ops, "{name}");
            assert_eq!(got.warnings, p.skipped(&links), "{name}");
        }
    }

    #[test]
    fn reconcile_names_the_planned_routes_present() {
        let p = seed_plan();
        let owned = applied(&p);
        let got = reconcile(&p, &up(), &owned, &owned.routes, Stale::Delete).unwrap();
        let keys: Vec<RouteKey> = p.routes.iter().map(|r| RouteKey::of(r, oif(r))).collect();
        assert_eq!(got.present, keys);
        let down = links(&[("ppp0", 7, false), ("ppp1", 8, true)]);
        let got = reconcile(&p, &down, &owned, &owned.routes, Stale::Delete).unwrap();
        assert_eq!(got.present, keys[1..2], "only isp2's v4 route is ready");
        assert_eq!(got.warnings[0].reason, SkipReason::Down);
    }

    /// The gateway, family and table a foreign-default refusal names.
    type Refused = (&'static str, IpFamily, u32);

    #[test]
    fn a_foreign_default_route_in_a_ready_gateways_slot_is_refused() {
        use IpFamily::{V4, V6};
        let p = seed_plan();
        let ppp1_missing = links(&[("ppp0", 7, true)]);
        #[rustfmt::skip]
        let cases: Vec<(&str, RouteMessage, Links, Option<Refused>)> = vec![
            ("IPv4 default of table 101", foreign(V4, 101, None), up(), Some(("isp1", V4, 101))),
            ("IPv6 default of table 101",
             foreign(V6, 101, Some(IPV6_DEFAULT_METRIC)), up(), Some(("isp1", V6, 101))),
            ("table 1000 above the header's range", foreign(V4, 1000, None), up(),
             Some(("isp2", V4, 1000))),
            ("another metric is another slot", foreign(V4, 101, Some(50)), up(), None),
            ("a table no gateway uses", foreign(V4, 102, None), up(), None),
            ("the gateway's link is missing", foreign(V4, 1000, None), ppp1_missing, None),
        ];
        for (name, msg, links, want) in cases {
            let got = reconcile(&p, &links, &OwnedState::default(), &[msg], Stale::Delete);
            match (got, want) {
                (Ok(_), None) => {}
                (
                    Err(Error::ForeignDefault {
                        gateway,
                        family,
                        table,
                        ..
                    }),
                    Some(w),
                ) => {
                    assert_eq!((gateway.as_str(), family, table), w, "{name}");
                }
                (got, want) => panic!("{name}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn extra_routes_are_the_owned_ones_not_installed() {
        let p = seed_plan();
        let v4 = route(&p, IpFamily::V4, 101);
        let installed = vec![RouteKey::of(&v4, 7)];
        let old_index = kernel_route(&v4, 3);
        let mut odd = kernel_route(&v4, 7);
        odd.attributes.push(RouteAttribute::Priority(50));
        let foreign = foreign(IpFamily::V4, 102, None);
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<RouteMessage>, Vec<Op>)> = vec![
            ("installed stays", vec![kernel_route(&v4, 7)], vec![]),
            ("foreign stays", vec![foreign.clone()], vec![]),
            ("owned on another link goes", vec![kernel_route(&v4, 7), old_index.clone()],
             vec![Op::DeleteRoute(old_index)]),
            ("owned unrecognised goes", vec![odd.clone(), foreign], vec![Op::DeleteRoute(odd)]),
        ];
        for (name, dump, ops) in cases {
            assert_eq!(extra_routes(&installed, &dump), ops, "{name}");
        }
    }

    #[test]
    fn convergence_checks_compare_keys_not_order() {
        let p = seed_plan();
        let mut owned = applied(&p);
        owned.rules.reverse();
        let installed: Vec<RouteKey> = p.routes.iter().map(|r| RouteKey::of(r, oif(r))).collect();
        assert!(check_converged(&p, &installed, &owned).is_ok());
        assert!(check_rules_installed(&p, &owned).is_ok());
        let refused = &installed[1..];
        assert!(matches!(
            check_converged(&p, refused, &owned),
            Err(Error::NotConverged { .. })
        ));
        let extra = with_rule(owned.clone(), rule_message(&p.rules[0]));
        assert!(check_converged(&p, &installed, &extra).is_err());
        assert!(
            check_rules_installed(&p, &extra).is_ok(),
            "install keeps extras"
        );
        let missing = without_rule(owned, &p.rules[0]);
        assert!(check_rules_installed(&p, &missing).is_err());
    }

    #[test]
    fn restore_ops_put_the_snapshot_back() {
        let p = seed_plan();
        let snap = applied(&p);
        let mut reordered = snap.clone();
        reordered.rules.reverse();
        reordered.rules[0].attributes.reverse();
        reordered.routes[0]
            .attributes
            .insert(0, RouteAttribute::Expires(10));
        let empty = OwnedState::default();
        let stale_rule = rule_message(&rule(&p, IpFamily::V4, 1000));
        let mut stale_route = kernel_route(&p.routes[0], 3);
        stale_route.attributes.push(RouteAttribute::Priority(5));
        let mut changed = with_rule(snap.clone(), stale_rule.clone());
        changed.rules.remove(1);
        changed.routes.push(stale_route.clone());
        changed.routes.remove(0);
        #[rustfmt::skip]
        let cases: Vec<(&str, &OwnedState, &OwnedState, Vec<Op>)> = vec![
            ("nothing changed", &snap, &snap, vec![]),
            ("order and kernel-only attributes are not changes", &snap, &reordered, vec![]),
            ("from nothing", &snap, &empty,
             snap.rules.iter().map(|m| Op::RestoreRule(m.clone()))
                 .chain(snap.routes.iter().map(|m| Op::RestoreRoute(m.clone()))).collect()),
            ("to nothing", &empty, &snap, flush_ops(&snap)),
            ("rule deletes, rule adds, route deletes, route adds", &snap, &changed,
             vec![Op::DeleteRule(stale_rule), Op::RestoreRule(snap.rules[1].clone()),
                  Op::DeleteRoute(stale_route), Op::RestoreRoute(snap.routes[0].clone())]),
        ];
        for (name, snapshot, now, ops) in cases {
            assert_eq!(restore_ops(snapshot, now), ops, "{name}");
        }
    }

    /// Issue 22.9: diff compares routing too.
    #[test]
    fn routing_differences_name_missing_and_extra_entries() {
        let plan = seed_plan();
        let mut links = Links::default();
        links.insert("ppp0", crate::Link { index: 7, up: true });
        let v4 = |r: &&Route| r.family == IpFamily::V4;
        let route = |r: &Route| kernel_route(r, 7);
        let exact = OwnedState {
            rules: plan.rules.iter().map(rule_message).collect(),
            routes: plan
                .routes
                .iter()
                .filter(|r| r.interface == "ppp0")
                .map(route)
                .collect(),
        };
        assert_eq!(compare(&plan, &links, &exact), Vec::<String>::new());

        let mut changed = exact.clone();
        changed.rules.remove(1);
        changed.rules.push(rule_message(&plan.rules[0]));
        changed
            .routes
            .retain(|m| m.header.address_family != netlink_packet_route::AddressFamily::Inet);
        let d = compare(&plan, &links, &changed);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("ip rule missing: "), "{d:?}");
        assert!(d[1].starts_with("ip rule not in the spec: "), "{d:?}");
        let missing = plan.routes.iter().find(v4).unwrap();
        assert_eq!(d[2], format!("route missing: {missing}"));
    }
}
