//! Which members of a policy take new connections under an [`Availability`]: the active tier
//! (the lowest with a usable member) and its usable members, else the members keep-last kept,
//! else the policy's last resort. Pure; the compiler, the engine's decisions and `status`
//! share it so that they never disagree.

use nftbalance_spec::{AllDown, Member, Policy, PolicyKey, Spec};

use crate::Availability;

/// What a policy does with new connections now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InUse {
    /// Split over these members of this tier.
    Tier { tier: u8, members: Vec<Member> },
    /// No member is usable; keep-last keeps splitting over the members in use before.
    Kept { members: Vec<Member> },
    /// No member is usable: new connections follow the main table (main-table, or keep-last
    /// with nothing to keep) or are refused (unreachable).
    LastResort(AllDown),
}

impl InUse {
    /// The members that take new connections (none for a last resort).
    pub fn members(&self) -> &[Member] {
        match self {
            InUse::Tier { members, .. } | InUse::Kept { members } => members,
            InUse::LastResort(_) => &[],
        }
    }

    /// The active tier, if a tier is in use.
    pub fn tier(&self) -> Option<u8> {
        match self {
            InUse::Tier { tier, .. } => Some(*tier),
            _ => None,
        }
    }
}

/// The default policy and every named one (by name), each with what it does under
/// `availability`. Pins are left out: they follow their gateway or the default policy.
pub fn policies_in_use(spec: &Spec, availability: &Availability) -> Vec<(PolicyKey, InUse)> {
    let keys = std::iter::once(PolicyKey::Default)
        .chain(spec.policies.keys().cloned().map(PolicyKey::Named));
    keys.filter_map(|key| {
        let policy = spec.resolve_policy(&key)?;
        let name = match &key {
            PolicyKey::Named(n) => n.as_str(),
            // Only named policies are kept by keep-last.
            _ => "",
        };
        let used = in_use(name, &policy, availability);
        Some((key, used))
    })
    .collect()
}

/// What the policy named `name` (for [`Availability::kept`]) does under `availability`.
pub fn in_use(name: &str, policy: &Policy, availability: &Availability) -> InUse {
    for (tier, members) in policy.tiers() {
        let usable: Vec<Member> = members
            .into_iter()
            .filter(|m| !availability.unavailable.contains(&m.gateway))
            .cloned()
            .collect();
        if !usable.is_empty() {
            return InUse::Tier {
                tier,
                members: usable,
            };
        }
    }
    if policy.last_resort == AllDown::KeepLast {
        if let Some(kept) = availability.kept.get(name) {
            let members: Vec<Member> = (policy.members.iter())
                .filter(|m| kept.contains(&m.gateway))
                .cloned()
                .collect();
            if !members.is_empty() {
                return InUse::Kept { members };
            }
        }
    }
    InUse::LastResort(policy.last_resort)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftbalance_spec::Method;
    use std::collections::BTreeSet;

    fn policy(last_resort: AllDown) -> Policy {
        let m = |gateway: &str, tier, weight| Member {
            gateway: gateway.into(),
            tier,
            weight,
        };
        Policy {
            members: vec![m("fibre", 1, 3), m("lte", 2, 1), m("dsl", 1, 2)],
            method: Method::RoundRobin,
            last_resort,
        }
    }

    fn down(names: &[&str]) -> Availability {
        Availability::without(names.iter().map(|n| n.to_string()).collect())
    }

    fn names(u: &InUse) -> Vec<&str> {
        u.members().iter().map(|m| m.gateway.as_str()).collect()
    }

    #[test]
    fn the_lowest_tier_with_a_usable_member_is_in_use() {
        let p = policy(AllDown::KeepLast);
        let all = in_use("p", &p, &down(&[]));
        assert_eq!((all.tier(), names(&all)), (Some(1), vec!["fibre", "dsl"]));
        let one = in_use("p", &p, &down(&["fibre"]));
        assert_eq!((one.tier(), names(&one)), (Some(1), vec!["dsl"]));
        let backup = in_use("p", &p, &down(&["fibre", "dsl"]));
        assert_eq!((backup.tier(), names(&backup)), (Some(2), vec!["lte"]));
    }

    #[test]
    fn with_no_usable_member_the_last_resort_decides() {
        let gone = down(&["fibre", "dsl", "lte"]);
        for resort in [AllDown::MainTable, AllDown::Unreachable, AllDown::KeepLast] {
            assert_eq!(
                in_use("p", &policy(resort), &gone),
                InUse::LastResort(resort)
            );
        }
        let mut kept = gone.clone();
        kept.kept.insert(
            "p".into(),
            BTreeSet::from(["lte".to_string(), "gone".to_string()]),
        );
        let u = in_use("p", &policy(AllDown::KeepLast), &kept);
        assert_eq!((u.tier(), names(&u)), (None, vec!["lte"]));
        // Only keep-last keeps.
        let u = in_use("p", &policy(AllDown::MainTable), &kept);
        assert_eq!(u, InUse::LastResort(AllDown::MainTable));
    }
}
