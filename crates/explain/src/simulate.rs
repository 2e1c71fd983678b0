//! `simulate`: the shares per policy after some gateways go down, beside the shares now, and
//! what becomes of the connections on the gateways that go down. Pure: the availabilities are
//! decided by the caller (the engine's `decide::availability`, as watch decides them).

use std::collections::BTreeSet;

use nftbalance_ruleset::policy::policies_in_use;
use nftbalance_ruleset::Availability;
use nftbalance_spec::{PolicyKey, Spec};
use serde::Serialize;

use crate::{policy_shares, PolicyUse};

/// Everything `simulate` says.
#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    pub down: Vec<String>,
    /// Per policy (the default one, then the named ones): now and after.
    pub policies: Vec<PolicyChange>,
    /// Per gateway that goes down: its connections now and what becomes of them.
    pub gateways: Vec<Stranded>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyChange {
    pub name: String,
    pub now: PolicyUse,
    pub after: PolicyUse,
}

/// The live connections of a gateway that goes down.
#[derive(Debug, Clone, Serialize)]
pub struct Stranded {
    pub gateway: String,
    /// Conntrack entries with its mark now; None when they could not be counted.
    pub connections: Option<u64>,
    /// `flushed`: deleted at once (`flush_conntrack`), their hosts reconnect through the new
    /// split; `kept`: they keep its mark and stay on it.
    pub fate: String,
}

/// The shares under `now` and under `after` (the availability with `down` out), and the
/// connections each downed gateway holds (`count`: its live connections, if known).
pub fn simulate(
    spec: &Spec,
    now: &Availability,
    after: &Availability,
    down: &BTreeSet<String>,
    count: impl Fn(&str) -> Option<u64>,
) -> Simulation {
    let method = |key: &PolicyKey| {
        spec.resolve_policy(key)
            .map_or(spec.balance.method, |p| p.method)
            .as_str()
    };
    let before = policies_in_use(spec, now);
    let later = policies_in_use(spec, after);
    let policies = before
        .into_iter()
        .zip(later)
        .map(|((key, was), (_, will))| PolicyChange {
            name: key.to_string(),
            now: policy_shares(&key, method(&key), &was),
            after: policy_shares(&key, method(&key), &will),
        })
        .collect();
    let gateways = (spec.gateways.iter())
        .filter(|g| down.contains(&g.name))
        .map(|g| Stranded {
            gateway: g.name.clone(),
            connections: count(&g.name),
            fate: if g.flush_conntrack { "flushed" } else { "kept" }.into(),
        })
        .collect();
    Simulation {
        down: down.iter().cloned().collect(),
        policies,
        gateways,
    }
}
