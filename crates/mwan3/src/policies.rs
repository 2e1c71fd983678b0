//! `config member` and `config policy` sections -> the spec's policies. A member's metric
//! becomes a tier by rank within its policy (the lowest metric is tier 1), its weight the
//! member's weight; `last_resort` becomes the policy's.

use std::collections::{BTreeMap, BTreeSet};

use nftbalance_spec::{AllDown, Member, Method, Policy, MAX_TIER, MAX_WEIGHT};

use crate::interfaces::Gateways;
use crate::names::Names;
use crate::uci::{show, Config, Section};
use crate::{Cx, What};

/// mwan3 leaves members with a higher metric out of their policies.
const MWAN3_LOWEST_METRIC: u32 = 256;
/// mwan3 refuses policy and rule names longer than this (iptables chain name room).
pub const MWAN3_NAME_MAX: usize = 15;
/// The spec's limit on policies.
const MAX_POLICIES: usize = 64;

/// A usable member: its gateway (index in the gateway list), metric and weight.
#[derive(Debug, Clone, Copy)]
pub struct Usable {
    pub gateway: usize,
    pub metric: u32,
    pub weight: u32,
}

pub fn members(cx: &mut Cx<'_>, config: &Config, gws: &Gateways) -> BTreeMap<String, Usable> {
    let mut out = BTreeMap::new();
    for s in config.sections.iter().filter(|s| s.kind == "member") {
        let Some(name) = &s.name else {
            cx.whole(
                s,
                What::Ignored(
                    "anonymous member: policies name their members, so none can use this one"
                        .into(),
                ),
            );
            continue;
        };
        let iface = cx.single(s, "interface").map(|(_, v)| v.to_string());
        let metric = cx.number(s, "metric", 1, 1, u32::MAX);
        let weight = cx.number(s, "weight", 1, 1, MAX_WEIGHT);
        cx.unknown(s, &["interface", "metric", "weight"]);
        let Some(iface) = iface else {
            cx.whole(
                s,
                What::Ignored("no interface: mwan3 skips this member".into()),
            );
            continue;
        };
        let Some(&gateway) = gws.by_uci.get(&iface) else {
            let why = format!(
                "interface {} is not an enabled interface: the member never carries traffic",
                show(&iface)
            );
            cx.whole(s, What::Ignored(why));
            continue;
        };
        if metric > MWAN3_LOWEST_METRIC {
            cx.whole(s, What::Ignored(format!("metric {metric} is above {MWAN3_LOWEST_METRIC}: mwan3 leaves this member out of its policies")));
            continue;
        }
        let gw = &gws.list[gateway].gateway.name;
        cx.section(
            s,
            What::Spec(format!(
                "-> a member of the policies listing it: gateway {gw}"
            )),
        );
        for (opt, what) in [
            ("interface", format!("-> member gateway {gw}")),
            (
                "metric",
                "-> member tier (the metric's rank in each policy)".to_string(),
            ),
            ("weight", format!("-> member weight {weight}")),
        ] {
            if let Some(o) = s.option(opt) {
                cx.at(s, o, What::Spec(what));
            }
        }
        out.insert(
            name.clone(),
            Usable {
                gateway,
                metric,
                weight,
            },
        );
    }
    out
}

/// What a rule's `use_policy` leads to.
#[derive(Debug, Clone)]
pub enum Target {
    /// A policy of the spec, by its spec name.
    Imported(String),
    /// A policy that has no usable member: mwan3 applies its last resort to everything.
    Empty { last_resort: String },
    /// No chain mwan3 would jump to does anything: the rule has no effect.
    Nothing(String),
}

#[derive(Debug, Default)]
pub struct Policies {
    pub spec: BTreeMap<String, Policy>,
    pub by_uci: BTreeMap<String, Target>,
}

impl Policies {
    pub fn into_spec(self) -> BTreeMap<String, Policy> {
        self.spec
    }
}

pub fn policies(
    cx: &mut Cx<'_>,
    config: &Config,
    members: &BTreeMap<String, Usable>,
    gws: &Gateways,
) -> Policies {
    let mut out = Policies::default();
    let mut names = Names::default();
    for s in config.sections.iter().filter(|s| s.kind == "policy") {
        let Some(uci) = &s.name else {
            cx.whole(
                s,
                What::Ignored(
                    "anonymous policy: rules name their policy, so none can use this one".into(),
                ),
            );
            continue;
        };
        if uci.len() > MWAN3_NAME_MAX {
            let why = format!("name longer than {MWAN3_NAME_MAX} characters: mwan3 does not set this policy up, so rules using it do nothing");
            cx.whole(s, What::Ignored(why.clone()));
            out.by_uci.insert(uci.clone(), Target::Nothing(why));
            continue;
        }
        let last_resort = match cx.single(s, "last_resort") {
            None => "unreachable".to_string(),
            Some((o, v @ ("unreachable" | "blackhole" | "default"))) => {
                let _ = o;
                v.to_string()
            }
            Some((o, v)) => {
                cx.err(
                    o.value().line,
                    format!(
                        "last_resort: {} is not unreachable, blackhole or default",
                        show(v)
                    ),
                );
                continue;
            }
        };
        cx.unknown(s, &["use_member", "last_resort"]);
        let picked = policy_members(cx, s, members);
        if picked.is_empty() {
            let why = format!("no usable member: mwan3 sends every connection of this policy to its last resort ({last_resort}), which nftbalance has no policy for");
            cx.whole(s, What::Ignored(why));
            out.by_uci
                .insert(uci.clone(), Target::Empty { last_resort });
            continue;
        }
        if out.spec.len() == MAX_POLICIES {
            cx.err(s.line, format!("more than {MAX_POLICIES} policies with members; nftbalance takes at most {MAX_POLICIES}"));
            continue;
        }
        let (name, renamed) = names.assign(uci, "p_");
        let Some(policy) = build(cx, s, &name, &picked, &last_resort, gws) else {
            continue;
        };
        let mapped = if renamed {
            format!(" (the UCI name {} is not a valid policy name)", show(uci))
        } else {
            String::new()
        };
        cx.section(s, What::Spec(format!("-> policies.{name}{mapped}")));
        out.spec.insert(name.clone(), policy);
        out.by_uci.insert(uci.clone(), Target::Imported(name));
    }
    out
}

/// The usable members a policy lists, each gateway once (its lowest metric).
fn policy_members(
    cx: &mut Cx<'_>,
    s: &Section,
    members: &BTreeMap<String, Usable>,
) -> Vec<(usize, Usable)> {
    let mut picked: Vec<(usize, Usable)> = Vec::new();
    let Some(o) = s.option("use_member") else {
        return picked;
    };
    if !o.list {
        cx.at(s, o, What::Ignored("written as option: mwan3 reads use_member as a list (list use_member '...') and ignores an option".into()));
        return picked;
    }
    for v in &o.values {
        let Some(m) = members.get(&v.text) else {
            let why = format!("{} is not a usable member (not defined, or its interface is not enabled): mwan3 skips it", show(&v.text));
            cx.value(s, o, v, What::Ignored(why));
            continue;
        };
        match picked.iter_mut().find(|(_, p)| p.gateway == m.gateway) {
            Some((_, p)) => {
                let why = "a second member for the same gateway: nftbalance keeps one member per gateway, the one with the lower metric";
                cx.value(s, o, v, What::Approx(why.into()));
                if m.metric < p.metric {
                    *p = *m;
                }
            }
            None => picked.push((v.line, *m)),
        }
    }
    picked
}

fn build(
    cx: &mut Cx<'_>,
    s: &Section,
    name: &str,
    picked: &[(usize, Usable)],
    last_resort: &str,
    gws: &Gateways,
) -> Option<Policy> {
    let metrics: BTreeSet<u32> = picked.iter().map(|(_, m)| m.metric).collect();
    if metrics.len() > usize::from(MAX_TIER) {
        cx.err(
            s.line,
            format!(
                "policy uses {} different metrics; nftbalance has {MAX_TIER} tiers",
                metrics.len()
            ),
        );
        return None;
    }
    let tier_of = |metric: u32| metrics.iter().position(|&m| m == metric).unwrap_or(0) as u8 + 1;
    let o = s.option("use_member");
    let mut out = Vec::new();
    for (k, (line, m)) in picked.iter().enumerate() {
        let gw = &gws.list[m.gateway].gateway.name;
        let tier = tier_of(m.metric);
        if let (Some(o), Some(v)) = (o, o.and_then(|o| o.values.iter().find(|v| v.line == *line))) {
            cx.value(s, o, v, What::Spec(format!("-> policies.{name}.members[{k}]: gateway {gw}, tier {tier} (metric {}), weight {}", m.metric, m.weight)));
        }
        out.push(Member {
            gateway: gw.clone(),
            tier,
            weight: m.weight,
        });
    }
    let only = |v6: bool| {
        (picked.iter()).any(|(_, m)| {
            let g = &gws.list[m.gateway];
            if v6 {
                g.v6 && !g.v4
            } else {
                g.v4 && !g.v6
            }
        })
    };
    if only(false) && only(true) {
        cx.section(s, What::Approx(format!("policies.{name} mixes IPv4 and IPv6 interfaces: mwan3 balances each family over its own interfaces, nftbalance every connection over all members; give both interfaces of one uplink the same --define IFACE.device so that they become one gateway")));
    }
    let last = match last_resort {
        "default" => {
            report_last(
                cx,
                s,
                What::Spec(format!("-> policies.{name}.last_resort = main-table")),
            );
            AllDown::MainTable
        }
        "blackhole" => {
            report_last(cx, s, What::Approx(format!("-> policies.{name}.last_resort = unreachable: nftbalance refuses the connection at once (TCP reset, ICMP unreachable) where mwan3's blackhole drops it silently")));
            AllDown::Unreachable
        }
        _ => {
            report_last(
                cx,
                s,
                What::Spec(format!("-> policies.{name}.last_resort = unreachable")),
            );
            AllDown::Unreachable
        }
    };
    Some(Policy {
        members: out,
        method: Method::Random,
        last_resort: last,
    })
}

fn report_last(cx: &mut Cx<'_>, s: &Section, w: What) {
    match s.option("last_resort") {
        Some(o) => cx.at(s, o, w),
        None => cx.section(s, w),
    }
}
