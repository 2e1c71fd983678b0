//! The balancer in legacy rules as a `Spec`, in phases with typed results: (1) the mangle
//! table evaluated per class of new connection (`eval`), (2) the gateways, (3) each class's
//! key (ingress, pin, split, unmarked) and the splits' weights, exclusions and selectors
//! (`cover`), (4) routing and SNAT, then the spec built directly, and (5) the spec checked
//! against every class (`check`): whatever marking the spec does not reproduce is named.

mod check;
mod cover;
mod gateways;
mod report;
mod routing;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::IpNet;
use nftbalance_spec::{
    AllDown, Balance, Family, Gateway, Member, Method, Policy, Selector, Spec, Sticky, Watch,
    DEFAULT_MARK_MASK,
};

use crate::error::TranslateError;
use crate::eval::{self, Evaluation, Kind, Outcome};
use crate::iptables::Target;
use crate::report::Report;
use crate::script::{Script, Table};

/// (table, chain, index): one rule of the final ruleset.
pub type RuleId = (String, String, usize);

/// The recognised balancer and what each rule was.
#[derive(Debug, Clone)]
pub struct Recognition {
    pub spec: Spec,
    /// Rules that became the spec (or were redundant with it): not translated literally.
    pub consumed: BTreeSet<RuleId>,
}

/// A gateway as the phases find it.
#[derive(Debug, Clone, Default)]
pub struct Gw {
    pub name: Option<String>,
    pub interface: Option<String>,
    pub mark: u32,
    pub weight: Option<u32>,
    pub address: Option<Ipv4Addr>,
    pub via: Option<Ipv4Addr>,
    pub route_table: Option<u32>,
    /// Inbound connections on its interface get its mark in the input.
    pub ingress: bool,
}

/// What a class of new connections is, in the spec's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// Inbound on a gateway's interface.
    Ingress,
    /// Not marked.
    Zero,
    /// One gateway (index into the gateways).
    Pin(usize),
    /// Split over gateways (index into the splits).
    Split(usize),
    /// Marks no gateway stands for, or an outcome the evaluator could not know.
    Other,
}

/// One distinct split: how, and each gateway's integer weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub method: Method,
    pub hash_seed: Option<u32>,
    /// (gateway index, weight), in gateway order.
    pub weights: Vec<(usize, u32)>,
    pub classes: usize,
}

pub fn recognise(script: &Script, report: &mut Report) -> Result<Recognition, TranslateError> {
    let mangle = script
        .table("mangle")
        .ok_or_else(|| TranslateError::NoBalancer("the input has no mangle rules".into()))?;
    // Phase 1: evaluate.
    let fwd = eval::evaluate(mangle, "PREROUTING", &uplink_names(script))
        .map_err(TranslateError::NoBalancer)?;
    let local = eval::evaluate(mangle, "OUTPUT", &[]).map_err(TranslateError::NoBalancer)?;
    // Phase 2: gateways.
    let mut gws = gateways::find(script, mangle, &fwd, &local, report);
    if gws.is_empty() {
        return Err(TranslateError::NoBalancer(
            "no gateway: no new connection gets a mark that names an interface".into(),
        ));
    }
    let mask = mark_mask(mangle, &fwd, &local, report);
    // Phase 3: keys, splits, exclusions, selectors.
    let mut splits: Vec<Split> = Vec::new();
    let main = routing::main_table_marks(script);
    let keys_f = keys(&fwd, &gws, &main, &mut splits, mask, true);
    let keys_l = keys(&local, &gws, &main, &mut splits, mask, false);
    let mut exclude = cover::exclusions(&[(&fwd, &keys_f), (&local, &keys_l)]);
    // In input order, as the rules test them.
    let first_test = |n: &ipnet::Ipv4Net| {
        let rules = mangle.chains.iter().flat_map(|c| &c.rules);
        rules
            .filter(|r| r.rule.dst.as_ref().is_some_and(|d| d.value.trunc() == *n))
            .map(|r| r.loc.clone())
            .min()
    };
    exclude.sort_by_cached_key(first_test);
    let mut rects_f = cover::cover(&fwd, &keys_f, &exclude);
    let mut rects_l = cover::cover(&local, &keys_l, &exclude);
    in_input_order(mangle, &fwd, &mut rects_f);
    in_input_order(mangle, &local, &mut rects_l);
    let default = default_split(&splits, gws.len());
    if let Some(d) = default {
        set_weights(&mut gws, &splits[d], report);
    }
    // Phase 4: the network side.
    let mut consumed = BTreeSet::new();
    let snat = routing::snat(script, &mut gws, report, &mut consumed);
    routing::routing(script, &mut gws, report);
    let sticky = fwd
        .classes
        .iter()
        .chain(&local.classes)
        .find_map(|(_, o)| o.sticky);
    let spec = build(
        script,
        &gws,
        &splits,
        default,
        mask,
        exclude,
        sticky,
        snat,
        [&rects_f, &rects_l],
    );
    // Phase 5: check, and say what became of every rule.
    let parts = report::Parts {
        mangle,
        fwd: &fwd,
        local: &local,
        keys: [&keys_f, &keys_l],
        rects: [&rects_f, &rects_l],
        gws: &gws,
        splits: &splits,
        main: &main,
    };
    report::rules(&spec, &parts, mask, report, &mut consumed);
    Ok(Recognition { spec, consumed })
}

/// Selectors in the order of the first rule that tells their classes from the others.
fn in_input_order(mangle: &Table, ev: &Evaluation, rects: &mut [(Key, cover::Rect)]) {
    let mut all = rects
        .iter()
        .flat_map(|(_, r)| r.classes.iter())
        .map(|&i| &ev.classes[i].1.ran);
    let Some(first) = all.next() else { return };
    let common: BTreeSet<eval::RuleRef> = all.fold(first.clone(), |acc, r| {
        acc.intersection(r).copied().collect()
    });
    rects.sort_by_cached_key(|(_, r)| {
        let ran = r.classes.iter().flat_map(|&i| ev.classes[i].1.ran.iter());
        ran.filter(|x| !common.contains(x))
            .map(|&(c, i)| mangle.chains[c].rules[i].loc.clone())
            .min()
    });
}

/// Interface names the spec may give gateways, so that their classes exist (their inbound
/// connections are what the spec's ingress marks).
fn uplink_names(script: &Script) -> Vec<String> {
    let mut out: Vec<String> = script
        .header_gateways
        .iter()
        .map(|h| h.interface.clone())
        .collect();
    out.extend(script.ip_routes.iter().filter_map(|r| r.dev.clone()));
    if let Some(nat) = script.table("nat") {
        for c in &nat.chains {
            out.extend(
                c.rules
                    .iter()
                    .filter_map(|r| r.rule.oif.as_ref())
                    .filter(|o| !o.neg)
                    .map(|o| o.value.clone()),
            );
        }
    }
    out.retain(|n| !n.ends_with('+'));
    out.sort();
    out.dedup();
    out
}

/// The mark mask: the masks of the connection marks written (the widest when several).
fn mark_mask(mangle: &Table, fwd: &Evaluation, local: &Evaluation, report: &mut Report) -> u32 {
    let mut masks = BTreeSet::new();
    for &(c, i) in fwd.reached.iter().chain(&local.reached) {
        match &mangle.chains[c].rules[i].rule.target {
            Some(Target::SetConnmark { value, mask }) if *value != 0 && value & !mask == 0 => {
                masks.insert(*mask);
            }
            Some(Target::RestoreMark { nfmask, ctmask } | Target::SaveMark { nfmask, ctmask })
                if nfmask == ctmask =>
            {
                masks.insert(*ctmask);
            }
            _ => {}
        }
    }
    match masks.len() {
        0 => DEFAULT_MARK_MASK,
        1 => *masks.iter().next().expect("one"),
        _ => {
            let list: Vec<String> = masks.iter().map(|m| format!("{m:#x}")).collect();
            report.note(format!(
                "the rules use several mark masks ({}); the spec uses the widest",
                list.join(", ")
            ));
            masks.iter().fold(0, |a, b| a | b)
        }
    }
}

/// Each class's key; new splits are added to `splits`.
/// `main`: (mark, mask) of `ip rule fwmark M/K lookup main`: such a mark routes as unmarked.
fn keys(
    ev: &Evaluation,
    gws: &[Gw],
    main: &[(u32, u32)],
    splits: &mut Vec<Split>,
    mask: u32,
    forward: bool,
) -> Vec<Key> {
    let gw_of = |m: u32| gws.iter().position(|g| g.mark & mask == m & mask);
    ev.classes
        .iter()
        .map(|(c, o)| {
            let uplink = forward
                && c.iif.is_some_and(|k| {
                    let name = ev.dims.iifs[k].exact.as_deref();
                    gws.iter()
                        .any(|g| g.interface.as_deref() == name && name.is_some())
                });
            if uplink {
                return Key::Ingress;
            }
            if o.unknown.is_some() || o.dropped {
                return Key::Other;
            }
            match o.fixed() {
                Some(m) if m & mask == 0 || main.iter().any(|(v, k)| m & k == *v) => Key::Zero,
                Some(m) if gws.len() == 1 && gw_of(m).is_some() => {
                    split_key(o, gws, splits, mask).unwrap_or(Key::Other)
                }
                Some(m) => gw_of(m).map_or(Key::Other, Key::Pin),
                None => split_key(o, gws, splits, mask).unwrap_or(Key::Other),
            }
        })
        .collect()
}

fn split_key(o: &Outcome, gws: &[Gw], splits: &mut Vec<Split>, mask: u32) -> Option<Key> {
    let mut shares = vec![0.0; gws.len()];
    for (m, s) in &o.marks {
        let g = gws.iter().position(|g| g.mark & mask == m & mask)?;
        shares[g] += s;
    }
    let (method, hash_seed) = match o.kind {
        Kind::Fixed | Kind::Nth => (Method::RoundRobin, None),
        Kind::Random => (Method::Random, None),
        Kind::Hash { rnd } => (Method::SourceHash, Some(rnd)),
    };
    let w = weights_of(&shares)?;
    let weights: Vec<(usize, u32)> = w.into_iter().enumerate().filter(|(_, x)| *x > 0).collect();
    let i = match splits
        .iter()
        .position(|s| s.method == method && s.hash_seed == hash_seed && s.weights == weights)
    {
        Some(i) => i,
        None => {
            splits.push(Split {
                method,
                hash_seed,
                weights,
                classes: 0,
            });
            splits.len() - 1
        }
    };
    splits[i].classes += 1;
    Some(Key::Split(i))
}

/// Smallest integer weights (at most 1000 in total) whose shares match `shares` within
/// 1e-6 (0 for a gateway with no share).
fn weights_of(shares: &[f64]) -> Option<Vec<u32>> {
    (1..=nftbalance_spec::MAX_WEIGHT).find_map(|total| {
        let w: Vec<u32> = shares
            .iter()
            .map(|s| (s * f64::from(total)).round() as u32)
            .collect();
        let exact = w.iter().sum::<u32>() == total
            && w.iter()
                .zip(shares)
                .all(|(x, s)| (f64::from(*x) / f64::from(total) - s).abs() < 1e-6);
        exact.then_some(w)
    })
}

/// The split over every gateway that most classes take: the spec's default balance.
fn default_split(splits: &[Split], gateways: usize) -> Option<usize> {
    (0..splits.len())
        .filter(|&i| splits[i].weights.len() == gateways)
        .max_by_key(|&i| (splits[i].classes, usize::MAX - i))
}

fn set_weights(gws: &mut [Gw], split: &Split, report: &mut Report) {
    // The header's weights win when they are the same ratio (3:3 rather than 1:1).
    let w: Vec<u32> = split.weights.iter().map(|(_, x)| *x).collect();
    let header: Vec<u32> = gws.iter().map(|g| g.weight.unwrap_or(0)).collect();
    let proportional = header.iter().all(|h| *h > 0)
        && header
            .iter()
            .zip(&w)
            .all(|(h, x)| u64::from(*h) * u64::from(w[0]) == u64::from(*x) * u64::from(header[0]));
    if proportional {
        return;
    }
    if header.iter().any(|h| *h > 0) {
        report.note(format!(
            "the header's weights {header:?} differ from the split's {w:?}; the split wins"
        ));
    }
    for (g, x) in gws.iter_mut().zip(w) {
        g.weight = Some(x);
    }
}

pub fn gw_name(gws: &[Gw], i: usize) -> String {
    gws[i]
        .name
        .clone()
        .unwrap_or_else(|| format!("isp{}", i + 1))
}

/// The policy name of a split that is not the default.
pub fn split_name(i: usize) -> String {
    format!("split{}", i + 1)
}

#[allow(clippy::too_many_arguments)]
fn build(
    script: &Script,
    gws: &[Gw],
    splits: &[Split],
    default: Option<usize>,
    mask: u32,
    exclude: Vec<ipnet::Ipv4Net>,
    sticky: Option<u32>,
    snat: bool,
    rects: [&[(Key, cover::Rect)]; 2],
) -> Spec {
    let gateways = gws
        .iter()
        .enumerate()
        .map(|(i, g)| Gateway {
            name: gw_name(gws, i),
            interface: g.interface.clone().unwrap_or_default(),
            mark: g.mark,
            weight: g.weight.unwrap_or(1),
            address: g.address,
            via: g.via,
            address6: None,
            via6: None,
            route_table: g.route_table.unwrap_or(0),
            health: None,
            flush_conntrack: false,
        })
        .collect();
    let mut policies = BTreeMap::new();
    for (i, s) in splits.iter().enumerate() {
        if Some(i) != default {
            let members = s
                .weights
                .iter()
                .map(|&(g, weight)| Member {
                    gateway: gw_name(gws, g),
                    tier: 1,
                    weight,
                })
                .collect();
            policies.insert(
                split_name(i),
                Policy {
                    members,
                    method: s.method,
                    last_resort: AllDown::KeepLast,
                },
            );
        }
    }
    let selectors = |list: &[(Key, cover::Rect)]| -> Vec<Selector> {
        list.iter()
            .map(|(k, r)| Selector {
                iif: r.iif.clone(),
                protocol: r.protocol,
                dports: r.dports.clone(),
                saddr: r.saddr.iter().map(|n| IpNet::V4(*n)).collect(),
                daddr: r.daddr.iter().map(|n| IpNet::V4(*n)).collect(),
                gateway: match k {
                    Key::Pin(g) => Some(gw_name(gws, *g)),
                    _ => None,
                },
                policy: match k {
                    Key::Split(i) if Some(*i) != default => Some(split_name(*i)),
                    _ => None,
                },
            })
            .collect()
    };
    let main = default.map(|d| &splits[d]);
    Spec {
        table: script
            .header_table
            .as_ref()
            .map_or("nftbalance".to_string(), |(_, t)| t.clone()),
        family: match script.header_family.as_deref() {
            Some("ip") => Family::Ip,
            Some("ip6") => Family::Ip6,
            _ => Family::Inet,
        },
        mark_mask: mask,
        gateways,
        balance: Balance {
            method: main.map_or(Method::RoundRobin, |s| s.method),
            forward: selectors(rects[0]),
            local: selectors(rects[1]),
            exclude: exclude.into_iter().map(IpNet::V4).collect(),
            sticky: sticky.map(|timeout_secs| Sticky { timeout_secs }),
            hash_seed: main
                .and_then(|s| s.hash_seed)
                .unwrap_or(nftbalance_spec::DEFAULT_HASH_SEED),
        },
        snat,
        watch: Watch::default(),
        policies,
        hooks: None,
        ha: None,
    }
}
