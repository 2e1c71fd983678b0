//! UCI names -> spec names. uci allows names nftbalance does not (a digit first, any length);
//! each is mapped to a valid, unique name, and the mapping is reported. Every result is
//! checked by `nftbalance_spec::name::identifier`, the spec's own rule.

use std::collections::BTreeSet;

use nftbalance_spec::name;

/// The spec's limit on gateway and policy names.
pub const NAME_MAX: usize = 32;

/// Names handed out so far, per kind (gateways and policies are separate namespaces).
#[derive(Debug, Default)]
pub struct Names {
    used: BTreeSet<String>,
}

impl Names {
    /// `uci` itself when valid and unused; else a valid variant prefixed by `prefix` (a
    /// letter first), cut to the limit and made unique with a counter. Returns the name and
    /// whether it differs from `uci`.
    pub fn assign(&mut self, uci: &str, prefix: &str) -> (String, bool) {
        if name::identifier(uci, NAME_MAX).is_ok() && !self.used.contains(uci) {
            self.used.insert(uci.to_string());
            return (uci.to_string(), false);
        }
        let clean: String = uci
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = if clean.starts_with(|c: char| c.is_ascii_alphabetic()) {
            clean
        } else {
            format!("{prefix}{clean}")
        };
        let mut n = 1;
        loop {
            let suffix = if n == 1 {
                String::new()
            } else {
                format!("_{n}")
            };
            let mut cand: String = base.chars().take(NAME_MAX - suffix.len()).collect();
            cand.push_str(&suffix);
            if name::identifier(&cand, NAME_MAX).is_ok() && !self.used.contains(&cand) {
                self.used.insert(cand.clone());
                return (cand, true);
            }
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_valid_and_unique() {
        let mut n = Names::default();
        assert_eq!(n.assign("wan", "gw_"), ("wan".into(), false));
        assert_eq!(n.assign("3g", "gw_"), ("gw_3g".into(), true));
        let long = "a".repeat(40);
        let (a, _) = n.assign(&long, "gw_");
        let (b, _) = n.assign(&format!("{long}b"), "gw_");
        assert_eq!(a.len(), NAME_MAX);
        assert_ne!(a, b);
        assert_eq!(n.assign("x;drop\"", "gw_").0, "x_drop_");
        assert_eq!(n.assign("", "gw_").0, "gw_");
    }
}
