//! Every fixture spec against its golden iptables-restore dump (`fixtures/dump/NAME.rules`),
//! or, where iptables cannot express the spec, its golden refusal (`NAME.rules.err`).
//! `make bless` rewrites them.

use std::fs;

use nftbalance_spec::Spec;
use nftbalance_testns::golden::{assert_all, check_instead_of, fixture_files, fixtures_dir};

#[test]
fn iptables_dumps_match_goldens() {
    let dump = fixtures_dir().join("dump");
    let mut failures = Vec::new();
    let mut expressible = 0;
    for file in fixture_files("specs", "json") {
        let stem = file.file_stem().unwrap().to_str().unwrap().to_string();
        let spec = Spec::from_json(&fs::read_to_string(&file).unwrap()).unwrap();
        let (rules, err) = (
            dump.join(format!("{stem}.rules")),
            dump.join(format!("{stem}.rules.err")),
        );
        failures.extend(match nftbalance_legacy::render(&spec) {
            Ok(text) => {
                expressible += 1;
                check_instead_of(&rules, &err, &text)
            }
            Err(e) => check_instead_of(&err, &rules, &format!("{e}\n")),
        });
    }
    assert!(expressible >= 6, "too few specs iptables can express");
    assert_all(&failures);
}
