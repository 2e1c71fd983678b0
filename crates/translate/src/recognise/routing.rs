//! The network side of the balancer: SNAT per gateway interface (nat POSTROUTING) and each
//! gateway's routing table, next hop and address (`ip rule` / `ip route` lines).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::error::Loc;
use crate::iptables::{Neg, Rule, Target};
use crate::report::{Report, What};
use crate::script::{LineKind, RuleAt, Script, Table};

use super::{Gw, RuleId};

/// Rules of `chain` with unconditional jumps into user chains followed: (chain, index) of
/// every rule reached, and the jumps themselves.
fn flatten(
    table: &Table,
    chain: &str,
    out: &mut Vec<(String, usize)>,
    hooks: &mut Vec<(String, usize)>,
    depth: usize,
) {
    let Some(c) = table.chain(chain) else { return };
    for (i, r) in c.rules.iter().enumerate() {
        let rule = &r.rule;
        let plain = unconditional_but_oif(rule) && rule.oif.is_none();
        if let (true, Some(Target::Jump(t))) = (plain, &rule.target) {
            if depth < 4 && table.chain(t).is_some_and(|c| !c.builtin) {
                hooks.push((chain.to_string(), i));
                flatten(table, t, out, hooks, depth + 1);
                continue;
            }
        }
        out.push((chain.to_string(), i));
    }
}

/// A rule with no condition but perhaps `-o`, and nothing unreadable.
fn unconditional_but_oif(rule: &Rule) -> bool {
    rule.protocol.is_none()
        && rule.src.is_none()
        && rule.dst.is_none()
        && rule.iif.is_none()
        && rule.unsupported.is_none()
        && rule.other_matches().next().is_none()
        && rule.states().is_none()
}

/// SNAT or MASQUERADE per gateway interface: whether the spec's `snat` is on; fills addresses.
pub fn snat(
    script: &Script,
    gws: &mut [Gw],
    report: &mut Report,
    consumed: &mut BTreeSet<RuleId>,
) -> bool {
    let id = |t: &str, c: &str, i: usize| (t.to_string(), c.to_string(), i);
    let rule_at =
        |t: &Table, c: &str, i: usize| -> RuleAt { t.chain(c).expect("chain").rules[i].clone() };
    let mut snat = false;
    if let Some(nat) = script.table("nat") {
        let mut refs = Vec::new();
        let mut nat_hooks = Vec::new();
        flatten(nat, "POSTROUTING", &mut refs, &mut nat_hooks, 0);
        let mut nat_used = false;
        for (c, i) in &refs {
            let r = rule_at(nat, c, *i);
            let rule = &r.rule;
            let plain = unconditional_but_oif(rule);
            let Some(Neg {
                neg: false,
                value: oif,
            }) = &rule.oif
            else {
                continue;
            };
            let Some(g) = gws
                .iter_mut()
                .find(|g| g.interface.as_deref() == Some(oif.as_str()))
            else {
                continue;
            };
            if !plain {
                continue;
            }
            match &rule.target {
                Some(Target::Snat(to)) => {
                    let Ok(a) = to.parse::<Ipv4Addr>() else {
                        continue;
                    };
                    if g.address.is_some_and(|x| x != a) {
                        report.note(format!(
                            "{}: SNAT to {a} but the header says {}",
                            r.loc,
                            g.address.unwrap_or(a)
                        ));
                    }
                    g.address = Some(a);
                    report.add(
                        &r.loc,
                        What::Spec(format!("snat: {oif} to {a} (its gateway's address)")),
                    );
                }
                Some(Target::Masquerade(None)) => {
                    report.add(
                        &r.loc,
                        What::Spec(format!(
                            "snat: masquerade on {oif} (its gateway has no address)"
                        )),
                    );
                }
                _ => continue,
            }
            snat = true;
            nat_used = true;
            consumed.insert(id("nat", c, *i));
        }
        if nat_used {
            for (c, i) in &nat_hooks {
                let r = rule_at(nat, c, *i);
                report.add(
                    &r.loc,
                    What::Spec("jump from the built-in chain (structure)".into()),
                );
                consumed.insert(id("nat", c, *i));
            }
        }
    }

    snat
}

/// Each gateway's table, next hop and address from the ip lines; every other ip line is
/// outside the model.
pub fn routing(script: &Script, gws: &mut [Gw], report: &mut Report) {
    let mut used_ip: BTreeSet<Loc> = BTreeSet::new();
    for g in gws.iter_mut() {
        if let Some(r) = script.ip_rules.iter().find(|r| {
            r.fwmark
                .is_some_and(|(m, k)| m & k == g.mark & k && m == g.mark)
        }) {
            if g.route_table.is_some_and(|t| t != r.table) {
                report.note(format!(
                    "{}: mark {:#x} looks up table {} but the header says {}",
                    r.loc,
                    g.mark,
                    r.table,
                    g.route_table.unwrap_or(0)
                ));
            }
            g.route_table = Some(r.table);
            report.add(
                &r.loc,
                What::Spec(format!(
                    "route_table {} of the gateway with mark {:#x}",
                    r.table, g.mark
                )),
            );
            used_ip.insert(r.loc.clone());
        }
    }
    for g in gws.iter_mut() {
        if let (Some(a), None) = (g.address, g.route_table) {
            if let Some(r) = script
                .ip_rules
                .iter()
                .find(|r| r.from.is_some_and(|f| f.contains(&a)))
            {
                g.route_table = Some(r.table);
            }
        }
        if g.route_table.is_none() {
            if let Some(r) = script
                .ip_routes
                .iter()
                .find(|r| r.table != 254 && r.dev.is_some() && r.dev == g.interface)
            {
                g.route_table = Some(r.table);
            }
        }
    }
    for g in gws.iter_mut() {
        let Some(t) = g.route_table else { continue };
        if let Some(a) = g.address {
            for r in script
                .ip_rules
                .iter()
                .filter(|r| r.table == t && r.from.is_some_and(|f| f.contains(&a)))
            {
                report.add(&r.loc, What::Spec(format!("traffic from {a} uses table {t} (the gateway's address; nftbalance's routing adds this rule)")));
                used_ip.insert(r.loc.clone());
            }
        }
        for r in script.ip_routes.iter().filter(|r| r.table == t) {
            if r.default {
                if let Some(v) = r.via {
                    g.via = Some(v);
                    report.add(
                        &r.loc,
                        What::Spec(format!("via {v} (default route of table {t})")),
                    );
                    used_ip.insert(r.loc.clone());
                }
            } else if r.dev.is_some() && r.dev == g.interface {
                if g.address.is_none() {
                    g.address = r.src;
                }
                report.add(
                    &r.loc,
                    What::Redundant(format!(
                        "the route to the next hop in table {t} (nftbalance's routing derives it)"
                    )),
                );
                used_ip.insert(r.loc.clone());
            }
        }
    }
    for l in &script.lines {
        if matches!(l.kind, LineKind::IpRule | LineKind::IpRoute) && !used_ip.contains(&l.loc) {
            report.add(
                &l.loc,
                What::Outside("ip rule/route the spec has no field for".into()),
            );
        }
    }
    let mut taken: BTreeSet<u32> = gws.iter().filter_map(|g| g.route_table).collect();
    for (i, g) in gws.iter_mut().enumerate() {
        if g.route_table.is_none() {
            let mut t = 101 + i as u32;
            while taken.contains(&t) {
                t += 1;
            }
            taken.insert(t);
            g.route_table = Some(t);
            report.note(format!(
                "gateway {}: the input has no ip rule for mark {:#x}; route_table {t} (101 for the first gateway, 102 for the second, ...)",
                i + 1,
                g.mark
            ));
        }
    }
    if gws.iter().any(|g| g.via.is_none())
        && script.ip_routes.is_empty()
        && script.header_gateways.is_empty()
    {
        report.note("the input has no `ip route` lines: no gateway has `via` (give the script's ip lines as another FILE to fill it)".into());
    }
}

/// The interface a mark routes by: `ip rule fwmark M lookup T` and a route of table T with
/// a device.
pub fn interface_of_mark(script: &Script, mark: u32) -> Option<String> {
    let rule = script.ip_rules.iter().find(|r| {
        r.fwmark
            .is_some_and(|(m, k)| m & k == mark & k && m == mark)
    })?;
    script
        .ip_routes
        .iter()
        .filter(|r| r.table == rule.table)
        .find_map(|r| r.dev.clone())
}

/// Marks routed by the main table (`ip rule fwmark M/K lookup main`, mwan3's "default"):
/// connections with them behave as unmarked ones.
pub fn main_table_marks(script: &Script) -> Vec<(u32, u32)> {
    script
        .ip_rules
        .iter()
        .filter(|r| r.table == 254)
        .filter_map(|r| r.fwmark)
        .map(|(m, k)| (m & k, k))
        .collect()
}
