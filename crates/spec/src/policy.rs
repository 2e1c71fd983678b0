//! Policies as the compiler sees them: every selector resolved to a [`Policy`] with its
//! members, tiers and weights, whether it names a policy, pins a gateway or names neither.
//! Pure functions of a parsed [`Spec`].

use std::collections::BTreeMap;
use std::path::Path;

use crate::model::{Member, Policy, PolicyKey, Selector, Spec};
use crate::parse::SpecError;

impl Spec {
    /// The policy a selector's connections follow: its `policy`, its `gateway` pin, or the
    /// implicit default.
    pub fn policy_of(&self, selector: &Selector) -> PolicyKey {
        match (&selector.policy, &selector.gateway) {
            (Some(p), _) => PolicyKey::Named(p.clone()),
            (None, Some(g)) => PolicyKey::Pin(g.clone()),
            (None, None) => PolicyKey::Default,
        }
    }

    /// The policy a key stands for, with every member resolved; None for a name this spec
    /// does not have.
    ///
    /// - [`PolicyKey::Default`]: every gateway in tier 1 with its own weight, `balance.method`
    ///   and `watch.all_down`. This is what every spec meant before policies existed.
    /// - [`PolicyKey::Pin`]: the pinned gateway in tier 1 and every other gateway in tier 2,
    ///   with their own weights. A pin is a one-gateway policy whose backup is the default
    ///   policy: that is what pins did before policies (a pin to an unavailable gateway is
    ///   balanced instead), so existing specs keep their meaning.
    pub fn resolve_policy(&self, key: &PolicyKey) -> Option<Policy> {
        let member = |name: &str, tier: u8| {
            let g = self.gateway(name)?;
            Some(Member {
                gateway: g.name.clone(),
                tier,
                weight: g.weight,
            })
        };
        let members = match key {
            PolicyKey::Named(name) => return self.policies.get(name).cloned(),
            PolicyKey::Default => self
                .gateways
                .iter()
                .filter_map(|g| member(&g.name, 1))
                .collect(),
            PolicyKey::Pin(pinned) => {
                let first = member(pinned, 1)?;
                let rest = (self.gateways.iter())
                    .filter(|g| g.name != *pinned)
                    .filter_map(|g| member(&g.name, 2));
                std::iter::once(first).chain(rest).collect()
            }
        };
        Some(Policy {
            members,
            method: self.balance.method,
            last_resort: self.watch.all_down,
        })
    }

    /// Every policy the ruleset needs, by key: the implicit default (always: inbound and
    /// unselected traffic aside, it is what a selector without `policy` or `gateway` uses),
    /// every named policy (used or not), and the pins the selectors use.
    pub fn effective_policies(&self) -> BTreeMap<PolicyKey, Policy> {
        let selectors = self.balance.forward.iter().chain(&self.balance.local);
        let keys = std::iter::once(PolicyKey::Default)
            .chain(self.policies.keys().cloned().map(PolicyKey::Named))
            .chain(selectors.map(|s| self.policy_of(s)));
        keys.filter_map(|k| Some((k.clone(), self.resolve_policy(&k)?)))
            .collect()
    }

    /// Problems with `hooks` that only the host can see: `exists` says whether a path names
    /// an existing file. The parser touches no file system, so the program calls this after
    /// parsing, with a real check, and refuses the spec (exit 2) on any problem.
    pub fn hook_problems(&self, exists: impl Fn(&Path) -> bool) -> Vec<SpecError> {
        let Some(hooks) = &self.hooks else {
            return Vec::new();
        };
        match hooks.on_change.first() {
            Some(program) if !exists(Path::new(program)) => vec![SpecError::Invalid {
                path: "hooks.on_change[0]".to_string(),
                message: format!("{} does not exist", crate::parse::show(program)),
            }],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AllDown, Method};

    const GATEWAYS: &str = r#""gateways":[
        {"name":"fibre","interface":"eth1","mark":1,"weight":3,"route_table":101},
        {"name":"dsl","interface":"eth2","mark":2,"weight":2,"route_table":102},
        {"name":"lte","interface":"wwan0","mark":3,"route_table":103}]"#;

    fn spec(rest: &str) -> Spec {
        let text = format!("{{{GATEWAYS}{rest}}}");
        Spec::from_json(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn m(gateway: &str, tier: u8, weight: u32) -> Member {
        Member {
            gateway: gateway.into(),
            tier,
            weight,
        }
    }

    #[test]
    fn selectors_without_policy_use_the_default_of_every_gateway_in_tier_one() {
        let s = spec(
            r#","balance":{"method":"random","forward":[{}]},"watch":{"all_down":"main-table"}"#,
        );
        let key = s.policy_of(&s.balance.forward[0]);
        assert_eq!(key, PolicyKey::Default);
        assert_eq!(
            s.resolve_policy(&key),
            Some(Policy {
                members: vec![m("fibre", 1, 3), m("dsl", 1, 2), m("lte", 1, 1)],
                method: Method::Random,
                last_resort: AllDown::MainTable,
            })
        );
    }

    #[test]
    fn a_pin_prefers_its_gateway_and_falls_back_to_the_others() {
        let s = spec(r#","balance":{"local":[{"gateway":"dsl"}]}"#);
        let key = s.policy_of(&s.balance.local[0]);
        assert_eq!(key, PolicyKey::Pin("dsl".into()));
        let p = s.resolve_policy(&key).unwrap();
        assert_eq!(
            p.members,
            [m("dsl", 1, 2), m("fibre", 2, 3), m("lte", 2, 1)]
        );
        assert_eq!(p.tiers().len(), 2);
        assert_eq!(p.last_resort, AllDown::KeepLast);
    }

    #[test]
    fn named_policies_take_defaults_from_balance_and_watch() {
        let s = spec(
            r#","policies":{
                "voip":{"members":[{"gateway":"dsl"},{"gateway":"fibre","tier":2,"weight":7}]},
                "bulk":{"members":[{"gateway":"lte"}],"method":"round-robin","last_resort":"unreachable"}},
               "balance":{"method":"source-hash","forward":[{"policy":"voip"},{"gateway":"lte"},{}]},
               "watch":{"all_down":"main-table"}"#,
        );
        let voip = &s.policies["voip"];
        assert_eq!(voip.members, [m("dsl", 1, 2), m("fibre", 2, 7)]);
        assert_eq!(voip.method, Method::SourceHash);
        assert_eq!(voip.last_resort, AllDown::MainTable);
        let bulk = &s.policies["bulk"];
        assert_eq!(bulk.method, Method::RoundRobin);
        assert_eq!(bulk.last_resort, AllDown::Unreachable);

        let all = s.effective_policies();
        let keys: Vec<&PolicyKey> = all.keys().collect();
        assert_eq!(
            keys,
            [
                &PolicyKey::Default,
                &PolicyKey::Named("bulk".into()),
                &PolicyKey::Named("voip".into()),
                &PolicyKey::Pin("lte".into()),
            ]
        );
        assert_eq!(all[&PolicyKey::Named("voip".into())], *voip);
        assert_eq!(s.resolve_policy(&PolicyKey::Named("nope".into())), None);
        assert_eq!(s.resolve_policy(&PolicyKey::Pin("nope".into())), None);
    }

    #[test]
    fn tiers_group_members_lowest_first() {
        let s = spec(
            r#","policies":{"p":{"members":[
                {"gateway":"lte","tier":3},{"gateway":"fibre"},{"gateway":"dsl","tier":3}]}}"#,
        );
        let tiers = s.policies["p"].tiers();
        let shown: Vec<(u8, Vec<&str>)> = tiers
            .iter()
            .map(|(t, ms)| (*t, ms.iter().map(|m| m.gateway.as_str()).collect()))
            .collect();
        assert_eq!(shown, [(1, vec!["fibre"]), (3, vec!["lte", "dsl"])]);
    }

    #[test]
    fn hook_problems_ask_the_host_whether_the_program_exists() {
        let s = spec(r#","hooks":{"on_change":["/usr/local/sbin/uplink-changed","--quiet"]}"#);
        assert_eq!(s.hook_problems(|_| true), []);
        let e = s.hook_problems(|p| p != Path::new("/usr/local/sbin/uplink-changed"));
        assert_eq!(
            e.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["hooks.on_change[0]: \"/usr/local/sbin/uplink-changed\" does not exist"]
        );
        assert_eq!(spec("").hook_problems(|_| false), []);
    }
}
