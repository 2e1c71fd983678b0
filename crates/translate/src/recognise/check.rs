//! Phase 5: the built spec run over the same classes, by the spec's own semantics (ingress
//! first, pinned selectors before balanced ones, exclusions, each policy's weights), against
//! what the input's rules do. Every class that differs names the rules that marked it: those
//! are the lines outside the spec.

use std::collections::BTreeSet;

use ipnet::{IpNet, Ipv4Net};
use nftbalance_spec::{Method, Selector, Spec};

use crate::eval::{Class, Dims, Evaluation, Kind, Outcome, RuleRef};

use super::cover::{self, Rect};

/// What the spec does to a class's new connections.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// This mark every time (0: not marked).
    Fixed(u32),
    /// Inbound on a gateway's interface: that mark, or none where the input marks none.
    Ingress(u32),
    Split {
        method: Method,
        shares: Vec<(u32, f64)>,
    },
}

/// The spec's outcome for a class of `ev` (forward: PREROUTING, else OUTPUT).
pub fn expect(spec: &Spec, dims: &Dims, c: &Class, forward: bool) -> Expect {
    if let Some(k) = c.iif {
        if let Some(g) = spec
            .gateways
            .iter()
            .find(|g| dims.iifs[k].exact.as_deref() == Some(g.interface.as_str()))
        {
            return Expect::Ingress(g.mark);
        }
    }
    let sels = if forward {
        &spec.balance.forward
    } else {
        &spec.balance.local
    };
    let hit = |s: &&Selector| cover::matches(dims, c, &rect_of(s));
    let chosen = sels
        .iter()
        .filter(|s| s.gateway.is_some())
        .find(hit)
        .or_else(|| sels.iter().filter(|s| s.gateway.is_none()).find(hit));
    let Some(s) = chosen else {
        return Expect::Fixed(0);
    };
    let dst = dims.dsts[c.dst].rep;
    if spec
        .balance
        .exclude
        .iter()
        .any(|n| matches!(n, IpNet::V4(n) if n.contains(&dst)))
    {
        return Expect::Fixed(0);
    }
    let Some(policy) = spec.resolve_policy(&spec.policy_of(s)) else {
        return Expect::Fixed(0);
    };
    let tier = policy
        .tiers()
        .into_iter()
        .next()
        .map(|(_, m)| m)
        .unwrap_or_default();
    let total: u32 = tier.iter().map(|m| m.weight).sum();
    let mut shares: Vec<(u32, f64)> = tier
        .iter()
        .filter_map(|m| {
            Some((
                spec.gateway(&m.gateway)?.mark,
                f64::from(m.weight) / f64::from(total.max(1)),
            ))
        })
        .collect();
    shares.sort_by_key(|(m, _)| *m);
    if let [(m, _)] = shares[..] {
        return Expect::Fixed(m);
    }
    Expect::Split {
        method: policy.method,
        shares,
    }
}

fn rect_of(s: &Selector) -> Rect {
    let v4 = |n: &[IpNet]| {
        n.iter()
            .filter_map(|n| if let IpNet::V4(x) = n { Some(*x) } else { None })
            .collect::<Vec<Ipv4Net>>()
    };
    Rect {
        iif: s.iif.clone(),
        protocol: s.protocol,
        dports: s.dports.clone(),
        saddr: v4(&s.saddr),
        daddr: v4(&s.daddr),
        classes: Vec::new(),
    }
}

/// Whether the input's outcome is the spec's (marks compared within `mask`).
/// `main`: marks routed by the main table, which count as unmarked.
pub fn agrees(o: &Outcome, e: &Expect, mask: u32, main: &[(u32, u32)]) -> bool {
    if o.unknown.is_some() || o.dropped {
        return false;
    }
    let mut got: Vec<(u32, f64)> = Vec::new();
    for (m, s) in &o.marks {
        let m = if main.iter().any(|(v, k)| m & k == *v) {
            &0
        } else {
            m
        };
        match got.iter_mut().find(|(k, _)| *k == m & mask) {
            Some(x) => x.1 += s,
            None => got.push((m & mask, *s)),
        }
    }
    got.sort_by_key(|(m, _)| *m);
    let same = |want: &[(u32, f64)]| {
        want.len() == got.len()
            && want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.0 == b.0 && (a.1 - b.1).abs() < 1e-6)
    };
    match e {
        Expect::Fixed(m) => same(&[(*m, 1.0)]),
        // The spec also marks inbound connections the input leaves unmarked: more, not less.
        Expect::Ingress(m) => same(&[(*m, 1.0)]) || same(&[(0, 1.0)]),
        Expect::Split { method, shares } => {
            let kind_ok = matches!(
                (method, o.kind),
                (Method::RoundRobin, Kind::Nth)
                    | (Method::Random, Kind::Random)
                    | (Method::SourceHash, Kind::Hash { .. })
            );
            kind_ok && same(shares)
        }
    }
}

/// The classes of `ev` where the spec differs from the input, with the rules to blame.
pub fn differences(
    spec: &Spec,
    ev: &Evaluation,
    forward: bool,
    mask: u32,
    main: &[(u32, u32)],
    writes: impl Fn(RuleRef) -> bool,
) -> Vec<(usize, BTreeSet<RuleRef>)> {
    let mut out = Vec::new();
    for (i, (c, o)) in ev.classes.iter().enumerate() {
        let e = expect(spec, &ev.dims, c, forward);
        if agrees(o, &e, mask, main) {
            continue;
        }
        let mut blame: BTreeSet<RuleRef> = o.ran.iter().copied().filter(|r| writes(*r)).collect();
        blame.extend(o.unknown);
        out.push((i, blame));
    }
    out
}

/// A class in words, for the report.
pub fn describe(dims: &Dims, c: &Class) -> String {
    let mut parts = Vec::new();
    if let Some(k) = c.iif {
        parts.push(match &dims.iifs[k].exact {
            Some(n) => format!("in {n}"),
            None => format!("in {}", dims.iifs[k].rep),
        });
    }
    let p = &dims.protos[c.proto];
    parts.push(match (p.proto.as_str(), p.ports) {
        ("", _) => "other protocols".to_string(),
        (n, Some((a, b))) if a == b => format!("{n} port {a}"),
        (n, Some((a, b))) => format!("{n} ports {a}-{b}"),
        (n, None) => n.to_string(),
    });
    parts.push(format!("to {}", dims.dsts[c.dst].rep));
    parts.push(format!("from {}", dims.srcs[c.src].rep));
    parts.join(", ")
}
