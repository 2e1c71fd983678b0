//! Phase 5's words: the spec checked against every class, and what became of every mangle
//! rule (a part of the spec, redundant, kept rule by rule, or marking outside the spec).

use std::collections::{BTreeMap, BTreeSet};

use nftbalance_spec::Spec;

use crate::eval::{self, Evaluation, RuleRef};
use crate::iptables::{Match, Rule, Target};
use crate::report::{Report, What};
use crate::script::Table;

use super::cover::Rect;
use super::{check, gw_name, split_name, Gw, Key, RuleId, Split};

/// Everything the phases found, for the report.
pub struct Parts<'a> {
    pub mangle: &'a Table,
    pub fwd: &'a Evaluation,
    pub local: &'a Evaluation,
    pub keys: [&'a [Key]; 2],
    pub rects: [&'a [(Key, Rect)]; 2],
    pub gws: &'a [Gw],
    pub splits: &'a [Split],
    /// Marks routed by the main table.
    pub main: &'a [(u32, u32)],
}

/// Rules the spec's ruleset always has an equivalent of, whatever the balancer.
fn structural(rule: &Rule) -> Option<&'static str> {
    match &rule.target {
        Some(Target::RestoreMark { .. }) => Some("restore: packets of known connections take the connection's mark (always part of the ruleset)"),
        Some(Target::SaveMark { .. }) if rule.iif.is_none() && rule.dst.is_none() => {
            Some("new marked connections keep the mark (always part of the ruleset)")
        }
        Some(Target::SetMark { value, .. }) => rule
            .matches
            .iter()
            .any(|m| matches!(m, Match::Connmark { neg: false, value: v, .. } if v == value))
            .then_some("route choice: packets of connections with this mark take it (always part of the ruleset)"),
        _ => None,
    }
}

pub fn rules(
    spec: &Spec,
    p: &Parts<'_>,
    mask: u32,
    report: &mut Report,
    consumed: &mut BTreeSet<RuleId>,
) {
    let rule = |r: RuleRef| &p.mangle.chains[r.0].rules[r.1];
    let writes =
        |r: RuleRef| eval::writes_mark(&rule(r).rule) && structural(&rule(r).rule).is_none();
    // Marking the spec does not reproduce.
    let mut blamed: BTreeMap<RuleRef, String> = BTreeMap::new();
    for (ev, forward) in [(p.fwd, true), (p.local, false)] {
        for (i, rules) in check::differences(spec, ev, forward, mask, p.main, writes) {
            let (c, _) = &ev.classes[i];
            let hook = if forward { "PREROUTING" } else { "OUTPUT" };
            for r in rules {
                blamed.entry(r).or_insert_with(|| {
                    format!(
                        "{hook}: marks new connections ({}) in a way the spec does not",
                        check::describe(&ev.dims, c)
                    )
                });
            }
        }
    }
    let labels = labels(p);
    let reached: BTreeSet<RuleRef> = p.fwd.reached.union(&p.local.reached).copied().collect();
    let ran: BTreeSet<RuleRef> = p
        .fwd
        .classes
        .iter()
        .chain(&p.local.classes)
        .flat_map(|(_, o)| o.ran.iter().copied())
        .collect();
    for (ci, c) in p.mangle.chains.iter().enumerate() {
        let elsewhere = hooks_reaching(p.mangle, ci);
        for (i, r) in c.rules.iter().enumerate() {
            let at = (ci, i);
            let id = ("mangle".to_string(), c.name.clone(), i);
            let what = if let Some(why) = blamed.get(&at) {
                What::Marks(why.clone())
            } else if !reached.contains(&at) {
                match elsewhere {
                    Some(h) if eval::writes_mark(&r.rule) => {
                        What::Marks(format!("marks in {h}: the spec has no such marking"))
                    }
                    Some(_) => continue,
                    None => What::Redundant("never reached from a built-in chain".into()),
                }
            } else if let Some(s) = structural(&r.rule) {
                What::Spec(s.into())
            } else if matches!(r.rule.target, Some(Target::Log { .. })) || r.rule.target.is_none() {
                What::Outside(
                    "logs or counts only: not part of the spec (kept rule by rule)".into(),
                )
            } else if matches!(r.rule.target, Some(Target::Drop | Target::Reject(_))) {
                continue;
            } else if let Some(l) = labels.get(&at) {
                What::Spec(l.clone())
            } else if !ran.contains(&at) {
                if eval::writes_mark(&r.rule) {
                    What::Marks(
                        "writes a mark, but for no new connection: the spec has no such marking"
                            .into(),
                    )
                } else {
                    What::Redundant("never decides anything for a new connection".into())
                }
            } else {
                What::Redundant("leaves new connections unmarked".into())
            };
            if matches!(what, What::Spec(_) | What::Redundant(_)) && reached.contains(&at) {
                consumed.insert(id);
            }
            report.add(&r.loc, what);
        }
    }
    notes(spec, p, report);
}

/// The built-in chain (other than PREROUTING and OUTPUT) that reaches chain `c`, if any.
fn hooks_reaching(mangle: &Table, c: usize) -> Option<&'static str> {
    ["INPUT", "FORWARD", "POSTROUTING"]
        .into_iter()
        .find(|h| eval::reachable(mangle, h).iter().any(|(x, _)| *x == c))
}

/// Each rule that ran for some class: the first part of the spec it became.
fn labels(p: &Parts<'_>) -> BTreeMap<RuleRef, String> {
    let mut out: BTreeMap<RuleRef, String> = BTreeMap::new();
    for (h, (ev, kind)) in [(p.fwd, "forward"), (p.local, "local")]
        .into_iter()
        .enumerate()
    {
        for (j, (k, r)) in p.rects[h].iter().enumerate() {
            let what = match k {
                Key::Pin(g) => format!("balance.{kind}[{j}]: pinned to {}", gw_name(p.gws, *g)),
                Key::Split(s) => match p.spec_policy(*s) {
                    Some(name) => format!("balance.{kind}[{j}]: policy {name}"),
                    None => format!("balance.{kind}[{j}]"),
                },
                _ => continue,
            };
            for &i in &r.classes {
                for at in &ev.classes[i].1.ran {
                    out.entry(*at).or_insert_with(|| what.clone());
                }
            }
        }
        for (i, (c, o)) in ev.classes.iter().enumerate() {
            let what = match p.keys[h][i] {
                Key::Ingress => {
                    let name = c
                        .iif
                        .and_then(|k| ev.dims.iifs[k].exact.clone())
                        .unwrap_or_default();
                    let g = p
                        .gws
                        .iter()
                        .position(|g| g.interface.as_deref() == Some(name.as_str()));
                    format!(
                        "gateway {}: inbound connections on {name} keep its mark",
                        g.map(|g| gw_name(p.gws, g)).unwrap_or_default()
                    )
                }
                Key::Zero => {
                    "balance.exclude (or not selected): new connections stay unmarked".into()
                }
                _ => continue,
            };
            for at in &o.ran {
                out.entry(*at).or_insert_with(|| what.clone());
            }
        }
    }
    out
}

impl Parts<'_> {
    /// The policy name of split `s`, None for the default.
    fn spec_policy(&self, s: usize) -> Option<String> {
        let default = super::default_split(self.splits, self.gws.len());
        (Some(s) != default).then(|| split_name(s))
    }
}

fn notes(spec: &Spec, p: &Parts<'_>, report: &mut Report) {
    for (ev, hook) in [(p.fwd, "PREROUTING"), (p.local, "OUTPUT")] {
        for (_, o) in &ev.classes {
            if o.kind == eval::Kind::Nth && !o.order.is_empty() {
                let order: Vec<String> = o.order.iter().map(|m| format!("{m:#x}")).collect();
                report.note(format!(
                    "{hook}: the input's nth counters give new connections the marks {} in turn; the spec's counter gives the same shares in gateway order",
                    order.join(", ")
                ));
            }
        }
    }
    if spec.balance.method == nftbalance_spec::Method::SourceHash {
        report.note("source-hash: HMARK's hash is not nft's jhash, so with the same seed hosts map to uplinks differently (the shares are the same)".into());
    }
    for g in p.gws.iter().filter(|g| !g.ingress) {
        if let Some(i) = &g.interface {
            report.note(format!("mark {:#x}: the input marks no inbound connection on {i}; the spec's ingress map does", g.mark));
        }
    }
}
