//! Pure decisions of the engine: which gateways take new connections, from what the probes
//! observed, what routing could install and what is in force now. No I/O.

use std::collections::{BTreeMap, BTreeSet};

use nftbalance_health::State;
use nftbalance_ruleset::Availability;
use nftbalance_spec::{AllDown, Spec};

/// The gateways that get no new connections: those without routes (`unrouted`) and those the
/// probes found down. When that is every gateway and `watch.all_down` is keep-last, the split
/// in force (`in_force`) stays: a probe target may be what failed, not every uplink at once.
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
    let all = spec.gateways.iter().all(|g| unavailable.contains(&g.name));
    if all && spec.watch.all_down == AllDown::KeepLast {
        // Only names of this spec: an edited spec may have dropped some.
        let kept = in_force
            .unavailable
            .iter()
            .filter(|n| spec.gateways.iter().any(|g| &g.name == *n))
            .cloned()
            .collect();
        return Availability { unavailable: kept };
    }
    Availability { unavailable }
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
        let b_out = Availability {
            unavailable: names(&["b"]),
        };
        let gone_a = Availability {
            unavailable: names(&["gone", "a"]),
        };
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
}
