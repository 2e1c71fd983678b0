//! The balancer in legacy rules, whatever its shape, as a `Spec`: which rule is which part.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nftbalance_spec::{Spec, DEFAULT_MARK_MASK};
use serde_json::{json, Map, Value};

use crate::error::{Loc, TranslateError};
use crate::iptables::{CtState, Dir, Match, Neg, Ports, Rule, Target};
use crate::report::{Report, What};
use crate::script::{LineKind, RuleAt, Script, Table};
use crate::sim::{self, Outcome};

/// (table, chain, index): one rule of the final ruleset.
pub type RuleId = (String, String, usize);

/// The recognised balancer and what each rule was.
#[derive(Debug, Clone)]
pub struct Recognition {
    pub spec: Spec,
    /// Rules that became the spec (or were redundant with it): not translated literally.
    pub consumed: BTreeSet<RuleId>,
}

/// A decision chain: where selection rules jump.
#[derive(Debug, Clone)]
struct Decision {
    excludes: Vec<(Ipv4Net, Loc)>,
    split: Split,
    rules: BTreeSet<(String, usize)>,
    sticky: Option<u32>,
    guard_rules: Vec<(usize, &'static str)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Split {
    Pin(u32),
    RoundRobin(Vec<u32>),
    Random(Vec<(u32, f64)>),
    Hash { slots: Vec<(u32, f64)>, seed: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sel {
    iif: Option<String>,
    protocol: Option<String>,
    dports: Vec<Ports>,
    saddr: Option<Ipv4Net>,
    daddr: Option<Ipv4Net>,
}

#[derive(Debug, Clone)]
enum Role {
    Restore(u32),
    LocalRoute(u32),
    Ingress { iif: String, mark: u32, mask: u32 },
    Select { sel: Sel, chain: String },
    Pin { sel: Sel, mark: u32 },
    RouteChoice { mark: u32, mask: u32 },
    Save(u32),
}

fn full_mask_only(r: &Rule) -> bool {
    r.protocol.is_none() && r.src.is_none() && r.dst.is_none() && r.iif.is_none() && r.oif.is_none()
}

/// Rules flattened through unconditional jumps into user chains (`-A PREROUTING -j MINE`).
fn flatten(
    table: &Table,
    chain: &str,
    decisions: &BTreeMap<String, Decision>,
    out: &mut Vec<(String, usize)>,
    hooks: &mut Vec<(String, usize)>,
    depth: usize,
) {
    let Some(c) = table.chain(chain) else { return };
    for (i, r) in c.rules.iter().enumerate() {
        let rule = &r.rule;
        let plain = full_mask_only(rule)
            && rule.unsupported.is_none()
            && rule.matches.iter().all(|m| matches!(m, Match::Comment(_)));
        if let (true, Some(Target::Jump(t))) = (plain, &rule.target) {
            if depth < 4 && !decisions.contains_key(t) && table.chain(t).is_some_and(|c| !c.builtin)
            {
                hooks.push((chain.to_string(), i));
                flatten(table, t, decisions, out, hooks, depth + 1);
                continue;
            }
        }
        out.push((chain.to_string(), i));
    }
}

fn is_est_rel(states: &Option<Vec<CtState>>) -> bool {
    matches!(states, Some(s) if s.contains(&CtState::Established) && !s.contains(&CtState::New))
}

fn new_only(states: &Option<Vec<CtState>>) -> bool {
    matches!(states, Some(s) if s.as_slice() == [CtState::New])
}

/// The leading guards of a decision chain, then its split simulated.
fn decision(table: &Table, name: &str) -> Option<Decision> {
    let chain = table.chain(name)?;
    if chain.builtin {
        return None;
    }
    let mut excludes = Vec::new();
    let mut guard_rules = Vec::new();
    let mut skip = 0;
    for (i, r) in chain.rules.iter().enumerate() {
        let rule = &r.rule;
        if rule.target != Some(Target::Return) || rule.unsupported.is_some() {
            break;
        }
        let others: Vec<&Match> = rule.other_matches().collect();
        let states = rule.states();
        if let (Some(Neg { neg: false, value }), true, true) =
            (&rule.dst, others.is_empty(), states.is_none())
        {
            if rule.src.is_none()
                && rule.iif.is_none()
                && rule.oif.is_none()
                && rule.protocol.is_none()
            {
                excludes.push((*value, r.loc.clone()));
                skip = i + 1;
                continue;
            }
        }
        if !full_mask_only(rule) {
            break;
        }
        if matches!(
            others.as_slice(),
            [Match::Connmark {
                neg: true,
                value: 0,
                ..
            }] | [Match::Mark {
                neg: true,
                value: 0,
                ..
            }]
        ) && states.is_none()
        {
            guard_rules.push((i, "marked connections return"));
        } else if others.is_empty() && is_est_rel(&states) {
            guard_rules.push((
                i,
                "established connections return (redundant: only new connections jump here)",
            ));
        } else {
            break;
        }
        skip = i + 1;
    }
    let s = sim::simulate(table, name, skip)?;
    let split = match (&s.outcome, s.hmark) {
        (Outcome::Sequence(seq), _) if seq.iter().all(|m| *m == seq[0]) => {
            if seq[0] == 0 || s.nth {
                if seq[0] == 0 {
                    return None;
                }
                Split::RoundRobin(seq.clone())
            } else {
                Split::Pin(seq[0])
            }
        }
        (Outcome::Sequence(seq), _) => Split::RoundRobin(seq.clone()),
        (Outcome::Distribution(d), Some((_, rnd, _))) if !s.random => Split::Hash {
            slots: d.clone(),
            seed: rnd,
        },
        (Outcome::Distribution(d), None) => Split::Random(d.clone()),
        _ => return None,
    };
    let mut rules = s.rules;
    // Every rule of the chains the split reads belongs to it.
    for c in &s.chains {
        if let Some(ch) = table.chain(c) {
            for i in 0..ch.rules.len() {
                if c != name || i >= skip {
                    rules.insert((c.clone(), i));
                }
            }
        }
    }
    Some(Decision {
        excludes,
        split,
        rules,
        sticky: s.sticky_seconds,
        guard_rules,
    })
}

fn selector(rule: &Rule, forward: bool) -> Option<Sel> {
    if rule.unsupported.is_some() || rule.oif.is_some() {
        return None;
    }
    let states = rule.states();
    if !(states.is_none() || new_only(&states)) {
        return None;
    }
    let iif = match &rule.iif {
        None => None,
        Some(Neg { neg: false, value }) if forward && !value.ends_with('+') => Some(value.clone()),
        _ => return None,
    };
    let protocol = match &rule.protocol {
        None => None,
        Some(Neg { neg: false, value }) if value == "tcp" || value == "udp" => Some(value.clone()),
        _ => return None,
    };
    let mut dports = Vec::new();
    for m in rule.other_matches() {
        match m {
            Match::Ports {
                dir: Dir::Dst,
                neg: false,
                ports,
                ..
            } if protocol.is_some() => dports.extend(ports.iter().copied()),
            _ => return None,
        }
    }
    let net = |n: &Option<Neg<Ipv4Net>>| match n {
        None => Some(None),
        Some(Neg { neg: false, value }) => Some(Some(*value)),
        _ => None,
    };
    Some(Sel {
        iif,
        protocol,
        dports,
        saddr: net(&rule.src)?,
        daddr: net(&rule.dst)?,
    })
}

fn classify(rule: &Rule, forward: bool, decisions: &BTreeMap<String, Decision>) -> Option<Role> {
    if rule.unsupported.is_some() {
        return None;
    }
    let states = rule.states();
    let others: Vec<&Match> = rule.other_matches().collect();
    match &rule.target {
        Some(Target::RestoreMark { nfmask, ctmask })
            if nfmask == ctmask && full_mask_only(rule) =>
        {
            if others.is_empty() && is_est_rel(&states) {
                return Some(Role::Restore(*ctmask));
            }
            if !forward
                && new_only(&states)
                && matches!(others.as_slice(), [Match::Connmark { neg: true, value: 0, mask }] if mask == ctmask)
            {
                return Some(Role::LocalRoute(*ctmask));
            }
            None
        }
        Some(Target::SetConnmark { value, mask }) if *value != 0 && value & !mask == 0 => {
            let only_iif = forward
                && others.is_empty()
                && new_only(&states)
                && rule.src.is_none()
                && rule.dst.is_none()
                && rule.protocol.is_none()
                && rule.oif.is_none()
                && matches!(&rule.iif, Some(Neg { neg: false, value }) if !value.ends_with('+'));
            if only_iif {
                let iif = rule
                    .iif
                    .as_ref()
                    .map(|n| n.value.clone())
                    .unwrap_or_default();
                return Some(Role::Ingress {
                    iif,
                    mark: *value,
                    mask: *mask,
                });
            }
            if !new_only(&states) {
                return None;
            }
            selector(rule, forward).map(|sel| Role::Pin { sel, mark: *value })
        }
        Some(Target::SetMark { value, mask })
            if forward && full_mask_only(rule) && states.is_none() =>
        {
            match others.as_slice() {
                [Match::Connmark {
                    neg: false,
                    value: v,
                    mask: m,
                }] if v == value && m == mask && *value != 0 => Some(Role::RouteChoice {
                    mark: *value,
                    mask: *mask,
                }),
                _ => None,
            }
        }
        Some(Target::SaveMark { nfmask, ctmask })
            if forward && nfmask == ctmask && full_mask_only(rule) =>
        {
            let guard_ok = match others.as_slice() {
                [] => true,
                [Match::Connmark {
                    neg: true,
                    value: 0,
                    mask,
                }] => mask == ctmask,
                _ => false,
            };
            (guard_ok && (states.is_none() || new_only(&states))).then_some(Role::Save(*ctmask))
        }
        Some(Target::Jump(c)) if decisions.contains_key(c) => {
            selector(rule, forward).map(|sel| Role::Select {
                sel,
                chain: c.clone(),
            })
        }
        _ => None,
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Smallest integer weights (at most 1000 in total) whose shares match `shares` within 1e-6.
fn weights_of(shares: &[f64]) -> Option<Vec<u32>> {
    for total in 1..=1000u32 {
        let w: Vec<u32> = shares
            .iter()
            .map(|s| (s * f64::from(total)).round() as u32)
            .collect();
        if w.iter().all(|x| *x >= 1)
            && w.iter().sum::<u32>() == total
            && w.iter()
                .zip(shares)
                .all(|(x, s)| (f64::from(*x) / f64::from(total) - s).abs() < 1e-6)
        {
            return Some(w);
        }
    }
    None
}

#[derive(Debug, Clone, Default)]
struct Gw {
    name: Option<String>,
    interface: Option<String>,
    mark: u32,
    weight: Option<u32>,
    address: Option<Ipv4Addr>,
    via: Option<Ipv4Addr>,
    route_table: Option<u32>,
}

pub fn recognise(script: &Script, report: &mut Report) -> Result<Recognition, TranslateError> {
    let mangle = script
        .table("mangle")
        .ok_or_else(|| TranslateError::NoBalancer("the input has no mangle rules".into()))?;
    let mut decisions: BTreeMap<String, Decision> = BTreeMap::new();
    for c in &mangle.chains {
        if let Some(d) = decision(mangle, &c.name) {
            decisions.insert(c.name.clone(), d);
        }
    }
    let mut consumed: BTreeSet<RuleId> = BTreeSet::new();
    let id = |t: &str, c: &str, i: usize| (t.to_string(), c.to_string(), i);
    let rule_at =
        |t: &Table, c: &str, i: usize| -> RuleAt { t.chain(c).expect("chain").rules[i].clone() };

    // Contexts.
    let mut contexts: Vec<(bool, Vec<(String, usize)>)> = Vec::new();
    let mut hooks = Vec::new();
    for (forward, chain) in [(true, "PREROUTING"), (false, "OUTPUT")] {
        let mut out = Vec::new();
        flatten(mangle, chain, &decisions, &mut out, &mut hooks, 0);
        contexts.push((forward, out));
    }
    // Roles.
    let mut roles: Vec<(bool, (String, usize), Role)> = Vec::new();
    for (forward, refs) in &contexts {
        for (c, i) in refs {
            let r = rule_at(mangle, c, *i);
            if let Some(role) = classify(&r.rule, *forward, &decisions) {
                roles.push((*forward, (c.clone(), *i), role));
            }
        }
    }
    // A `-i LAN` CONNMARK rule on an interface that selection rules use is a pin, not ingress.
    let lan: BTreeSet<String> = roles
        .iter()
        .filter_map(|(_, _, r)| match r {
            Role::Select { sel, .. } | Role::Pin { sel, .. } => sel.iif.clone(),
            _ => None,
        })
        .collect();
    for (_, rid, role) in &mut roles {
        if let Role::Ingress { iif, mark, .. } = role {
            if lan.contains(iif.as_str()) {
                let r = rule_at(mangle, &rid.0, rid.1);
                if let Some(sel) = selector(&r.rule, true) {
                    *role = Role::Pin { sel, mark: *mark };
                }
            }
        }
    }

    // Gateways: header order if the input has one, else ingress order, then split marks.
    let mut gws: Vec<Gw> = script
        .header_gateways
        .iter()
        .map(|h| Gw {
            name: Some(h.name.clone()),
            interface: Some(h.interface.clone()),
            mark: h.mark,
            weight: Some(h.weight),
            address: h.address,
            via: h.via,
            route_table: Some(h.route_table),
        })
        .collect();
    for h in &script.header_gateways {
        report.add(
            &h.loc,
            What::Spec(format!(
                "gateway {} (the header written by nftbalance)",
                h.name
            )),
        );
    }
    let mut masks: BTreeSet<u32> = BTreeSet::new();
    let mut gw_of_mark: BTreeMap<u32, usize> =
        gws.iter().enumerate().map(|(i, g)| (g.mark, i)).collect();
    for (_, (c, i), role) in &roles {
        if let Role::Ingress { iif, mark, mask } = role {
            masks.insert(*mask);
            let r = rule_at(mangle, c, *i);
            consumed.insert(id("mangle", c, *i));
            match gw_of_mark.get(mark) {
                Some(&g)
                    if gws[g].interface.as_deref() == Some(iif.as_str())
                        && gws[g].name.is_none() =>
                {
                    report.add(
                        &r.loc,
                        What::Redundant(format!("the same ingress mark again for {iif}")),
                    );
                }
                Some(&g) if gws[g].interface.as_deref().is_some_and(|x| x != iif) => {
                    report.add(&r.loc, What::Outside(format!("a second interface ({iif}) for mark {mark:#x}: a gateway has one interface")));
                    consumed.remove(&id("mangle", c, *i));
                }
                Some(&g) => {
                    gws[g].interface = Some(iif.clone());
                    report.add(&r.loc, What::Spec(format!("gateway with mark {mark:#x}: interface {iif}, inbound connections marked")));
                }
                None => {
                    gw_of_mark.insert(*mark, gws.len());
                    gws.push(Gw {
                        interface: Some(iif.clone()),
                        mark: *mark,
                        ..Gw::default()
                    });
                    report.add(&r.loc, What::Spec(format!("gateway with mark {mark:#x}: interface {iif}, inbound connections marked")));
                }
            }
        }
    }

    // Which decision chains are used, and by what.
    let mut used: BTreeSet<String> = BTreeSet::new();
    for (_, _, role) in &roles {
        if let Role::Select { chain, .. } = role {
            used.insert(chain.clone());
        }
    }
    // With one gateway, a chain that always sets its mark is the whole balance, not a pin.
    let pin_marks: BTreeSet<u32> = used
        .iter()
        .filter_map(|c| match decisions[c].split {
            Split::Pin(m) => Some(m),
            _ => None,
        })
        .collect();
    let only_pins = used
        .iter()
        .all(|c| matches!(decisions[c].split, Split::Pin(_)));
    if only_pins && pin_marks.len() == 1 && gws.iter().all(|g| pin_marks.contains(&g.mark)) {
        for c in &used {
            if let Some(d) = decisions.get_mut(c) {
                if let Split::Pin(m) = d.split {
                    d.split = Split::RoundRobin(vec![m]);
                }
            }
        }
    }
    let balance: Vec<&String> = used
        .iter()
        .filter(|c| !matches!(decisions[*c].split, Split::Pin(_)))
        .collect();
    let mut split: Option<Split> = None;
    let mut exclude: Vec<Ipv4Net> = Vec::new();
    let mut sticky = None;
    for c in &balance {
        let d = &decisions[*c];
        let sim_sticky = d.sticky;
        match &split {
            None => {
                split = Some(d.split.clone());
                exclude = d.excludes.iter().map(|(n, _)| *n).collect();
                sticky = sim_sticky;
            }
            Some(s)
                if *s == d.split
                    && exclude == d.excludes.iter().map(|(n, _)| *n).collect::<Vec<_>>() => {}
            Some(_) => {
                return Err(TranslateError::NoBalancer(format!(
                    "chains {} and {c} split connections differently; a spec has one split",
                    balance[0]
                )))
            }
        }
    }
    for (c, d) in &decisions {
        if !used.contains(c) {
            continue;
        }
        let ch = mangle.chain(c).expect("chain");
        let is_pin = matches!(d.split, Split::Pin(_));
        for (n, loc) in &d.excludes {
            let covered = exclude.iter().position(|e| e.contains(n));
            let first = exclude.iter().position(|e| e == n);
            let text = if is_pin && split.is_some() {
                What::Redundant(format!("exclusion {n} of the pin chain {c} (the spec excludes the balance's destinations from pins too)"))
            } else if covered.is_some() && covered != first {
                What::Redundant(format!("exclusion {n} is inside another excluded prefix"))
            } else {
                What::Spec(format!("balance.exclude: {n}"))
            };
            report.add(loc, text);
        }
        if is_pin && split.is_none() {
            for (n, _) in &d.excludes {
                if !exclude.contains(n) {
                    exclude.push(*n);
                }
            }
        }
        for i in 0..ch.rules.len() {
            consumed.insert(id("mangle", c, i));
        }
        for (i, why) in &d.guard_rules {
            let loc = &ch.rules[*i].loc;
            if why.contains("redundant") {
                report.add(loc, What::Redundant(format!("{c}: {why}")));
            } else {
                report.add(loc, What::Spec(format!("{c}: {why} (part of the split)")));
            }
        }
        for (sc, i) in &d.rules {
            consumed.insert(id("mangle", sc, *i));
            let r = &mangle.chain(sc).expect("chain").rules[*i];
            let what = if is_pin {
                format!("pin chain {c}: sets the pinned gateway's mark")
            } else {
                format!("balance: the split ({})", split_name(&d.split))
            };
            report.add(&r.loc, What::Spec(what));
        }
    }
    // Marks from the split that no ingress rule named.
    let mut split_marks: Vec<u32> = Vec::new();
    match &split {
        Some(Split::RoundRobin(seq)) => {
            for m in seq {
                if !split_marks.contains(m) {
                    split_marks.push(*m);
                }
            }
        }
        Some(Split::Random(d) | Split::Hash { slots: d, .. }) => {
            split_marks.extend(d.iter().map(|(m, _)| *m))
        }
        _ => {}
    }
    if split_marks.contains(&0) {
        return Err(TranslateError::NoBalancer(
            "the split leaves some new connections unmarked; a spec balances all selected connections".into(),
        ));
    }
    for m in &split_marks {
        if !gw_of_mark.contains_key(m) {
            gw_of_mark.insert(*m, gws.len());
            gws.push(Gw {
                mark: *m,
                ..Gw::default()
            });
        }
    }
    if gws.is_empty() {
        return Err(TranslateError::NoBalancer(
            "no gateway: no per-interface ingress marks and no split".into(),
        ));
    }
    // Weights and method.
    let mut method = "round-robin";
    let mut hash_seed = None;
    match &split {
        Some(Split::RoundRobin(seq)) => {
            let counts: Vec<u32> = gws
                .iter()
                .map(|g| seq.iter().filter(|m| **m == g.mark).count() as u32)
                .collect();
            let g = counts.iter().fold(0, |a, b| gcd(a, *b)).max(1);
            let reduced: Vec<u32> = counts.iter().map(|c| c / g).collect();
            set_weights(&mut gws, &reduced, report);
            // The order within one cycle: nftbalance's counter gives each gateway its slots in
            // gateway order.
            let total: u32 = reduced.iter().sum();
            let ours: Vec<u32> = gws
                .iter()
                .zip(&reduced)
                .flat_map(|(g, w)| std::iter::repeat_n(g.mark, *w as usize))
                .collect();
            let theirs: Vec<u32> = seq.iter().take(total as usize).copied().collect();
            if seq.len() % (total.max(1) as usize) != 0
                || ours
                    .iter()
                    .cycle()
                    .take(seq.len())
                    .copied()
                    .collect::<Vec<_>>()
                    != *seq
            {
                report.note(format!(
                    "round robin: the input's rules give new connections the marks {} in turn, the spec's counter {}: the same shares in another order",
                    marks_text(&theirs),
                    marks_text(&ours)
                ));
            }
        }
        Some(Split::Random(d)) | Some(Split::Hash { slots: d, .. }) => {
            if let Some(Split::Hash { seed, .. }) = &split {
                method = "source-hash";
                hash_seed = Some(*seed);
                report.note("source-hash: HMARK's hash is not nft's jhash, so with the same seed hosts map to uplinks differently (the shares are the same)".to_string());
            } else {
                method = "random";
            }
            let shares: Vec<f64> = gws
                .iter()
                .map(|g| d.iter().filter(|(m, _)| *m == g.mark).map(|(_, p)| p).sum())
                .collect();
            let w = weights_of(&shares).ok_or_else(|| {
                TranslateError::NoBalancer(format!(
                    "the split's shares {shares:?} are not a ratio of weights up to 1000"
                ))
            })?;
            set_weights(&mut gws, &w, report);
        }
        _ => {}
    }

    // Selection, restore, route choice, save.
    let mut forward_sels: Vec<(Sel, Option<u32>, Loc)> = Vec::new();
    let mut local_sels: Vec<(Sel, Option<u32>, Loc)> = Vec::new();
    let mut route_choice: BTreeSet<u32> = BTreeSet::new();
    let mut saw_restore = [false, false];
    for (forward, (c, i), role) in &roles {
        let r = rule_at(mangle, c, *i);
        let rid = id("mangle", c, *i);
        let ctx = if *forward { "prerouting" } else { "output" };
        match role {
            Role::Ingress { .. } => {}
            Role::Restore(mask) => {
                masks.insert(*mask);
                let k = usize::from(!*forward);
                if saw_restore[k] {
                    report.add(
                        &r.loc,
                        What::Redundant(format!("{ctx}: the mark is already restored")),
                    );
                } else {
                    report.add(&r.loc, What::Spec(format!("{ctx}: established connections restore their mark (always part of the ruleset)")));
                }
                saw_restore[k] = true;
                consumed.insert(rid);
            }
            Role::LocalRoute(mask) => {
                masks.insert(*mask);
                report.add(&r.loc, What::Spec("output: the first packet of a new local connection takes its mark (route choice)".into()));
                consumed.insert(rid);
            }
            Role::RouteChoice { mark, mask } => {
                masks.insert(*mask);
                if !gw_of_mark.contains_key(mark) {
                    continue;
                }
                if !route_choice.insert(*mark) {
                    report.add(
                        &r.loc,
                        What::Redundant(format!("route choice for mark {mark:#x} again")),
                    );
                } else {
                    report.add(&r.loc, What::Spec(format!("route choice: packets of connections with mark {mark:#x} take it (always part of the ruleset)")));
                }
                consumed.insert(rid);
            }
            Role::Save(mask) => {
                masks.insert(*mask);
                report.add(&r.loc, What::Spec("prerouting: new marked connections keep the mark (always part of the ruleset)".into()));
                consumed.insert(rid);
            }
            Role::Select { sel, chain } => {
                let pin = match decisions[chain].split {
                    Split::Pin(m) => Some(m),
                    _ => None,
                };
                let list = if *forward {
                    &mut forward_sels
                } else {
                    &mut local_sels
                };
                list.push((sel.clone(), pin, r.loc.clone()));
                consumed.insert(rid);
            }
            Role::Pin { sel, mark } => {
                if !gw_of_mark.contains_key(mark) {
                    continue;
                }
                let list = if *forward {
                    &mut forward_sels
                } else {
                    &mut local_sels
                };
                list.push((sel.clone(), Some(*mark), r.loc.clone()));
                consumed.insert(rid);
                report.note(format!(
                    "{}: pins by setting the connection mark directly; the spec's pin also skips excluded destinations and marked connections",
                    r.loc
                ));
            }
        }
    }
    for (c, i) in &hooks {
        let r = rule_at(mangle, c, *i);
        report.add(
            &r.loc,
            What::Spec("jump from the built-in chain (structure)".into()),
        );
        consumed.insert(id("mangle", c, *i));
    }
    for g in &gws {
        if !route_choice.contains(&g.mark) && !script.header_gateways.is_empty() {
            continue;
        }
        if !route_choice.contains(&g.mark) {
            report.note(format!("no rule copies connection mark {:#x} to the packet mark in prerouting; the spec's ruleset does (its route choice)", g.mark));
        }
    }
    if !local_sels.is_empty()
        && !roles
            .iter()
            .any(|(_, _, r)| matches!(r, Role::LocalRoute(_)))
    {
        report.note("the input does not re-route the first packet of a new local connection by its new mark; the spec's ruleset does (see the README: without it, upstream ingress filtering drops half of them)".into());
    }
    if !saw_restore[1] {
        report.note("no restore rule in OUTPUT: the spec's ruleset restores marks for local connections too".into());
    }

    // SNAT per gateway interface.
    let mut snat = false;
    if let Some(nat) = script.table("nat") {
        let mut refs = Vec::new();
        let mut nat_hooks = Vec::new();
        flatten(
            nat,
            "POSTROUTING",
            &BTreeMap::new(),
            &mut refs,
            &mut nat_hooks,
            0,
        );
        let mut nat_used = false;
        for (c, i) in &refs {
            let r = rule_at(nat, c, *i);
            let rule = &r.rule;
            let plain = rule.unsupported.is_none()
                && rule.src.is_none()
                && rule.dst.is_none()
                && rule.protocol.is_none()
                && rule.iif.is_none()
                && rule.other_matches().next().is_none()
                && rule.states().is_none();
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

    // Routing: ip rules and routes, when the input has them.
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
        if g.interface.is_none() {
            return Err(TranslateError::NoBalancer(format!(
                "the split sets mark {:#x}, but no rule or route names that gateway's interface",
                g.mark
            )));
        }
    }
    if gws.iter().any(|g| g.via.is_none())
        && script.ip_routes.is_empty()
        && script.header_gateways.is_empty()
    {
        report.note("the input has no `ip route` lines: no gateway has `via` (give the script's ip lines as another FILE to fill it)".into());
    }

    // Mark mask.
    let mask = match masks.len() {
        0 => DEFAULT_MARK_MASK,
        1 => *masks.iter().next().expect("one"),
        _ => {
            report.note(format!(
                "the rules use several mark masks ({}); the spec uses the widest",
                masks
                    .iter()
                    .map(|m| format!("{m:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            masks.iter().fold(0, |a, b| a | b)
        }
    };

    // The spec as JSON, validated by the spec's own parser.
    let name_of = |m: u32, gws: &[Gw]| -> String {
        let i = gws.iter().position(|g| g.mark == m).unwrap_or(0);
        gws[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("isp{}", i + 1))
    };
    let mut gateways = Vec::new();
    for (i, g) in gws.iter().enumerate() {
        let mut o = Map::new();
        o.insert(
            "name".into(),
            json!(g.name.clone().unwrap_or_else(|| format!("isp{}", i + 1))),
        );
        o.insert("interface".into(), json!(g.interface));
        o.insert("mark".into(), json!(format!("{:#x}", g.mark)));
        o.insert("weight".into(), json!(g.weight.unwrap_or(1)));
        if let Some(a) = g.address {
            o.insert("address".into(), json!(a.to_string()));
        }
        if let Some(v) = g.via {
            o.insert("via".into(), json!(v.to_string()));
        }
        o.insert("route_table".into(), json!(g.route_table));
        gateways.push(Value::Object(o));
    }
    let sels = |list: &[(Sel, Option<u32>, Loc)], report: &mut Report, what: &str| -> Vec<Value> {
        let mut out = Vec::new();
        for (j, group) in merge(list).into_iter().enumerate() {
            let (sel, pin, locs, saddr, daddr) = group;
            let mut o = Map::new();
            if let Some(i) = &sel.iif {
                o.insert("iif".into(), json!(i));
            }
            if let Some(p) = &sel.protocol {
                o.insert("protocol".into(), json!(p));
            }
            if !sel.dports.is_empty() {
                let ports: Vec<Value> = sel
                    .dports
                    .iter()
                    .map(|p| {
                        if p.first == p.last {
                            json!(p.first)
                        } else {
                            json!(format!("{}-{}", p.first, p.last))
                        }
                    })
                    .collect();
                o.insert("dports".into(), Value::Array(ports));
            }
            if !saddr.is_empty() {
                o.insert(
                    "saddr".into(),
                    json!(saddr.iter().map(ToString::to_string).collect::<Vec<_>>()),
                );
            }
            if !daddr.is_empty() {
                o.insert(
                    "daddr".into(),
                    json!(daddr.iter().map(ToString::to_string).collect::<Vec<_>>()),
                );
            }
            if let Some(m) = pin {
                o.insert("gateway".into(), json!(name_of(m, &gws)));
            }
            for l in locs {
                report.add(
                    &l,
                    What::Spec(format!(
                        "balance.{what}[{j}]{}",
                        if pin.is_some() { " (pinned)" } else { "" }
                    )),
                );
            }
            out.push(Value::Object(o));
        }
        out
    };
    let forward = sels(&forward_sels, report, "forward");
    let local = sels(&local_sels, report, "local");
    let table = script
        .header_table
        .as_ref()
        .map_or("nftbalance".to_string(), |(_, t)| t.clone());
    let family = script
        .header_family
        .clone()
        .unwrap_or_else(|| "inet".into());
    let mut balance = Map::new();
    balance.insert("method".into(), json!(method));
    balance.insert("forward".into(), Value::Array(forward));
    balance.insert("local".into(), Value::Array(local));
    balance.insert(
        "exclude".into(),
        json!(exclude.iter().map(ToString::to_string).collect::<Vec<_>>()),
    );
    if let Some(s) = sticky {
        balance.insert("sticky".into(), json!({ "timeout": format!("{s}s") }));
    }
    if let Some(s) = hash_seed {
        balance.insert("hash_seed".into(), json!(format!("{s:#x}")));
    }
    let doc = json!({
        "table": table,
        "family": family,
        "mark_mask": format!("{mask:#x}"),
        "gateways": gateways,
        "balance": balance,
        "snat": snat,
    });
    let spec = Spec::from_json(&doc.to_string())
        .map_err(|e| TranslateError::InvalidSpec(e.to_string()))?;
    Ok(Recognition { spec, consumed })
}

fn set_weights(gws: &mut [Gw], w: &[u32], report: &mut Report) {
    // The header's weights win when they are the same ratio (3:3 rather than 1:1).
    let header: Vec<u32> = gws.iter().map(|g| g.weight.unwrap_or(0)).collect();
    let proportional = header.iter().all(|h| *h > 0)
        && header
            .iter()
            .zip(w)
            .all(|(h, x)| u64::from(*h) * u64::from(w[0]) == u64::from(*x) * u64::from(header[0]));
    if !proportional {
        if header.iter().any(|h| *h > 0) {
            report.note(format!(
                "the header's weights {header:?} differ from the split's {w:?}; the split wins"
            ));
        }
        for (g, x) in gws.iter_mut().zip(w) {
            g.weight = Some(*x);
        }
    }
}

fn split_name(s: &Split) -> &'static str {
    match s {
        Split::Pin(_) => "pin",
        Split::RoundRobin(_) => "round robin",
        Split::Random(_) => "random",
        Split::Hash { .. } => "source hash",
    }
}

fn marks_text(m: &[u32]) -> String {
    m.iter()
        .map(|x| format!("{x:#x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

type Group = (Sel, Option<u32>, Vec<Loc>, Vec<Ipv4Net>, Vec<Ipv4Net>);

/// Consecutive rules with the same interface, protocol and target become one selector when
/// they are exactly the product of their sources, destinations and ports.
fn merge(list: &[(Sel, Option<u32>, Loc)]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let (s0, p0, _) = &list[i];
        let mut j = i;
        while j < list.len()
            && list[j].0.iif == s0.iif
            && list[j].0.protocol == s0.protocol
            && list[j].1 == *p0
        {
            j += 1;
        }
        let run = &list[i..j];
        let mut saddrs: Vec<Option<Ipv4Net>> = Vec::new();
        let mut daddrs: Vec<Option<Ipv4Net>> = Vec::new();
        let mut ports: Vec<Vec<Ports>> = Vec::new();
        for (s, _, _) in run {
            if !saddrs.contains(&s.saddr) {
                saddrs.push(s.saddr);
            }
            if !daddrs.contains(&s.daddr) {
                daddrs.push(s.daddr);
            }
            let p = s.dports.clone();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let product = saddrs.len() * daddrs.len() * ports.len() == run.len()
            && !(saddrs.contains(&None) && saddrs.len() > 1)
            && !(daddrs.contains(&None) && daddrs.len() > 1)
            && !(ports.iter().any(Vec::is_empty) && ports.len() > 1)
            && saddrs.iter().all(|sa| {
                daddrs.iter().all(|da| {
                    ports.iter().all(|po| {
                        run.iter()
                            .any(|(s, _, _)| s.saddr == *sa && s.daddr == *da && s.dports == *po)
                    })
                })
            });
        if product {
            let mut sel = s0.clone();
            sel.dports = ports.concat();
            out.push((
                sel,
                *p0,
                run.iter().map(|(_, _, l)| l.clone()).collect(),
                saddrs.into_iter().flatten().collect(),
                daddrs.into_iter().flatten().collect(),
            ));
        } else {
            for (s, p, l) in run {
                out.push((
                    s.clone(),
                    *p,
                    vec![l.clone()],
                    s.saddr.into_iter().collect(),
                    s.daddr.into_iter().collect(),
                ));
            }
        }
        i = j;
    }
    out
}
