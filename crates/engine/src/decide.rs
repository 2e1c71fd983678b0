//! Pure decisions of the engine: which gateways take new connections, from what the probes
//! observed, what routing could install and what is in force now. No I/O.

use std::collections::{BTreeMap, BTreeSet};

use nftbalance_health::State;
use nftbalance_ruleset::policy::{in_use, policies_in_use, InUse};
use nftbalance_ruleset::Availability;
use nftbalance_spec::{AllDown, PolicyKey, Spec};

/// The gateways that get no new connections: those without routes (`unrouted`) and those the
/// probes found down. When that is every gateway and `watch.all_down` is keep-last, the split
/// in force (`in_force`) stays: a probe target may be what failed, not every uplink at once.
/// A named policy whose members are all out and whose `last_resort` is keep-last keeps the
/// members it used in force.
pub fn availability(
    spec: &Spec,
    observed: &BTreeMap<String, State>,
    unrouted: &BTreeSet<String>,
    in_force: &Availability,
) -> Availability {
    let mut unavailable = unrouted.clone();
    for g in &spec.gateways {
        if observed.get(&g.name) == Some(&State::Down) {
            unavailable.insert(g.name.clone());
        }
    }
    let known = |n: &String| spec.gateways.iter().any(|g| &g.name == n);
    let all = spec.gateways.iter().all(|g| unavailable.contains(&g.name));
    if all && spec.watch.all_down == AllDown::KeepLast {
        // Only names of this spec: an edited spec may have dropped some.
        let mut kept = in_force.clone();
        kept.unavailable.retain(known);
        return kept;
    }
    let mut wanted = Availability::without(unavailable);
    for (name, policy) in &spec.policies {
        if policy.last_resort != AllDown::KeepLast {
            continue;
        }
        if let InUse::LastResort(_) = in_use(name, policy, &wanted) {
            let before = in_use(name, policy, in_force);
            let members: BTreeSet<String> =
                before.members().iter().map(|m| m.gateway.clone()).collect();
            if !members.is_empty() {
                wanted.kept.insert(name.clone(), members);
            }
        }
    }
    wanted
}

/// The policies whose active tier or members in use differ between two availabilities: the
/// default policy and every named one (pins follow the default policy's members).
pub fn policy_changes(
    spec: &Spec,
    before: &Availability,
    after: &Availability,
) -> Vec<(PolicyKey, InUse, InUse)> {
    let was = policies_in_use(spec, before);
    let now = policies_in_use(spec, after);
    was.into_iter()
        .zip(now)
        .filter(|((_, w), (_, n))| w != n)
        .map(|((key, w), (_, n))| (key, w, n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(all_down: &str) -> Spec {
        Spec::from_json(&format!(
            r#"{{"gateways":[
                {{"name":"a","interface":"eth1","mark":1,"route_table":101}},
                {{"name":"b","interface":"eth2","mark":2,"route_table":102}}],
               "watch":{{"all_down":"{all_down}"}}}}"#
        ))
        .unwrap()
    }

    fn names(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn states(s: &[(&str, State)]) -> BTreeMap<String, State> {
        s.iter().map(|(n, st)| (n.to_string(), *st)).collect()
    }

    #[test]
    fn cases() {
        use State::*;
        let none = Availability::default();
        let b_out = Availability::without(names(&["b"]));
        let gone_a = Availability::without(names(&["gone", "a"]));
        // (all_down, observed, unrouted, in force, wanted unavailable)
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, State)>,
            &'a [&'a str],
            &'a Availability,
            &'a [&'a str],
        );
        let cases: Vec<Case> = vec![
            ("keep-last", vec![], &[], &none, &[]),
            (
                "keep-last",
                vec![("a", Unknown), ("b", Up)],
                &[],
                &none,
                &[],
            ),
            ("keep-last", vec![("a", Down)], &[], &none, &["a"]),
            ("keep-last", vec![("a", Up)], &["b"], &none, &["b"]),
            // Every gateway out: keep-last keeps what is in force.
            (
                "keep-last",
                vec![("a", Down), ("b", Down)],
                &[],
                &b_out,
                &["b"],
            ),
            ("keep-last", vec![("a", Down)], &["b"], &none, &[]),
            (
                "main-table",
                vec![("a", Down), ("b", Down)],
                &[],
                &b_out,
                &["a", "b"],
            ),
            // Names the spec no longer has are not kept.
            (
                "keep-last",
                vec![("a", Down), ("b", Down)],
                &[],
                &gone_a,
                &["a"],
            ),
            // A gateway watch does not know (new in the spec) counts as usable.
            ("keep-last", vec![("x", Down)], &[], &none, &[]),
        ];
        for (all_down, observed, unrouted, in_force, want) in cases {
            let got = availability(
                &spec(all_down),
                &states(&observed),
                &names(unrouted),
                in_force,
            );
            assert_eq!(
                got.unavailable,
                names(want),
                "{all_down} {observed:?} {unrouted:?}"
            );
        }
    }

    /// A keep-last policy whose members are all out keeps the members it used in force; the
    /// other policies and gateways are unaffected.
    #[test]
    fn a_keep_last_policy_keeps_its_members_in_force() {
        use State::*;
        let s = Spec::from_json(
            r#"{"gateways":[
                {"name":"a","interface":"eth1","mark":1,"route_table":101},
                {"name":"b","interface":"eth2","mark":2,"route_table":102},
                {"name":"c","interface":"eth3","mark":3,"route_table":103}],
               "policies":{
                 "keep":{"members":[{"gateway":"a"},{"gateway":"b","tier":2}],"last_resort":"keep-last"},
                 "main":{"members":[{"gateway":"a"}],"last_resort":"main-table"}}}"#,
        )
        .unwrap();
        let b_only = Availability::without(names(&["a"]));
        let got = availability(
            &s,
            &states(&[("a", Down), ("b", Down)]),
            &names(&[]),
            &b_only,
        );
        assert_eq!(got.unavailable, names(&["a", "b"]));
        assert_eq!(got.kept.get("keep"), Some(&names(&["b"])), "{got:?}");
        assert_eq!(got.kept.get("main"), None, "main-table keeps nothing");
        // Once a member is back, nothing is kept.
        let got = availability(&s, &states(&[("a", Down)]), &names(&[]), &got);
        assert!(got.kept.is_empty(), "{got:?}");
    }
}
