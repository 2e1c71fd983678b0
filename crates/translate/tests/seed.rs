//! The seed's rules, as the seed writes them and as iptables-legacy-save prints them, and
//! every fixture spec that iptables can express, back to the same `Spec`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use nftbalance_spec::Spec;
use nftbalance_translate::{defines, to_spec, Input, TranslateError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn read(rel: &str) -> String {
    fs::read_to_string(fixtures().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn spec(rel: &str) -> Spec {
    Spec::from_json(&read(rel)).unwrap()
}

fn translate(files: &[&str], defs: &[&str]) -> Result<Spec, TranslateError> {
    let texts: Vec<(String, String)> = files.iter().map(|f| (f.to_string(), read(f))).collect();
    let inputs: Vec<Input<'_>> = texts
        .iter()
        .map(|(n, t)| Input { name: n, text: t })
        .collect();
    to_spec(&inputs, &defines(defs).unwrap()).map(|(s, _)| s)
}

#[test]
fn the_seed_script_needs_its_missing_variable_and_names_it() {
    let e = translate(&["legacy/seed.sh"], &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "legacy/seed.sh:19: $TABLE1 is not set in the script; give its value with --define TABLE1=VALUE"
    );
}

#[test]
fn the_seed_script_translates_to_the_seed_spec_exactly() {
    let got = translate(&["legacy/seed.sh"], &["TABLE1=connection1"]).unwrap();
    assert_eq!(got, spec("specs/seed.json"));
}

#[test]
fn the_seed_restore_file_with_its_ip_lines_translates_to_the_seed_spec_exactly() {
    let got = translate(&["legacy/seed.rules", "legacy/seed-routing.sh"], &[]).unwrap();
    assert_eq!(got, spec("specs/seed.json"));
}

#[test]
fn iptables_legacy_save_of_the_loaded_seed_translates_to_the_seed_spec() {
    // With the seed's ip lines: exactly the seed spec.
    let got = translate(&["legacy/seed.save", "legacy/seed-routing.sh"], &[]).unwrap();
    assert_eq!(got, spec("specs/seed.json"));
    // Alone, iptables-save carries no routes: route tables default to 101, 102 (which is the
    // seed's numbering) and no gateway has `via`. Everything else is the seed spec.
    let alone = translate(&["legacy/seed.save"], &[]).unwrap();
    let mut want = spec("specs/seed.json");
    for g in &mut want.gateways {
        g.via = None;
    }
    assert_eq!(alone, want);
}

/// What the iptables form cannot carry, set as the spec's defaults would read it back:
/// the order of `exclude`
/// (merged and sorted by `render`) and of selectors (pins first, as the ruleset checks them),
/// and the health-check settings of `watch` (not part of the rules at all).
fn normalized(mut s: Spec) -> serde_json::Value {
    s.balance.exclude = ipnet::IpNet::aggregate(&s.balance.exclude);
    for list in [&mut s.balance.forward, &mut s.balance.local] {
        let (mut pins, rest): (Vec<_>, Vec<_>) = list.drain(..).partition(|x| x.gateway.is_some());
        pins.extend(rest);
        *list = pins;
        for sel in list.iter_mut() {
            sel.saddr = ipnet::IpNet::aggregate(&sel.saddr);
            sel.daddr = ipnet::IpNet::aggregate(&sel.daddr);
            // Every address is no condition: the evaluator finds the same classes either way.
            for nets in [&mut sel.saddr, &mut sel.daddr] {
                if nets.iter().any(|n| n.prefix_len() == 0) {
                    nets.clear();
                }
            }
        }
    }
    let mut v = serde_json::to_value(&s).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("watch");
    for g in o["gateways"].as_array_mut().unwrap() {
        let g = g.as_object_mut().unwrap();
        g.remove("health");
        g.remove("flush_conntrack");
    }
    v
}

#[test]
fn round_trip_every_fixture_spec_iptables_can_express() {
    let mut files: Vec<PathBuf> = fs::read_dir(fixtures().join("specs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut done = 0;
    let mut failures = Vec::new();
    for f in files {
        let want = Spec::from_json(&fs::read_to_string(&f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let Ok(text) = nftbalance_legacy::render(&want) else {
            continue;
        };
        done += 1;
        let input = [Input {
            name: "render",
            text: &text,
        }];
        match to_spec(&input, &BTreeMap::new()) {
            Ok((got, _)) if normalized(got.clone()) == normalized(want.clone()) => {}
            Ok((got, _)) => failures.push(format!(
                "{}:\nwant {}\ngot  {}",
                f.display(),
                normalized(want),
                normalized(got)
            )),
            Err(e) => failures.push(format!("{}: {e}", f.display())),
        }
    }
    assert!(done >= 8, "only {done} fixture specs rendered");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
