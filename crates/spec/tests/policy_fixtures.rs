//! The example specs in fixtures/policies (issue 16) parse, and serialize to specs that parse
//! back the same. They live apart from fixtures/specs, whose files the ruleset goldens and
//! namespace tests compile.

use std::fs;
use std::path::{Path, PathBuf};

use nftbalance_spec::{PolicyKey, Spec};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/policies")
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "policy fixtures missing: {files:?}");
    files
}

#[test]
fn policy_examples_parse_and_round_trip() {
    for file in fixtures() {
        let text = fs::read_to_string(&file).unwrap();
        let spec = Spec::from_json(&text).unwrap_or_else(|e| panic!("{}:\n{e}", file.display()));
        assert!(!spec.policies.is_empty(), "{}", file.display());
        let json = serde_json::to_string_pretty(&spec).unwrap();
        let again = Spec::from_json(&json)
            .unwrap_or_else(|e| panic!("{} serialized:\n{e}\n{json}", file.display()));
        assert_eq!(again, spec, "{}", file.display());
        // Every selector resolves to a policy the ruleset will have.
        let all = spec.effective_policies();
        for s in spec.balance.forward.iter().chain(&spec.balance.local) {
            assert!(all.contains_key(&spec.policy_of(s)), "{}", file.display());
        }
        assert!(all.contains_key(&PolicyKey::Default));
    }
}

#[test]
fn tiers_example_means_what_the_issue_says() {
    let text = fs::read_to_string(dir().join("policies-tiers.json")).unwrap();
    let spec = Spec::from_json(&text).unwrap();
    let p = &spec.policies["fibre_dsl_then_lte"];
    let tiers: Vec<(u8, Vec<(&str, u32)>)> = p
        .tiers()
        .into_iter()
        .map(|(t, ms)| {
            (
                t,
                ms.iter().map(|m| (m.gateway.as_str(), m.weight)).collect(),
            )
        })
        .collect();
    assert_eq!(
        tiers,
        [(1, vec![("fibre", 3), ("dsl", 2)]), (2, vec![("lte", 1)])]
    );
}
