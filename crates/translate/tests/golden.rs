//! The corpus (`fixtures/legacy/corpus/*.save` and the seed's forms) against golden outputs
//! next to them: `NAME.spec.json` (or `.spec.err`), `NAME.report`, `NAME.nft` (or `.nft.err`)
//! and `NAME.literal.nft` (or `.literal.err`). `make bless` (NFTBALANCE_BLESS=1) rewrites them.

use std::collections::BTreeMap;
use std::fs;

use nftbalance_testns::golden::{assert_all, check_instead_of, fixture_files};
use nftbalance_translate::{to_nft, to_spec, Input};

#[test]
fn corpus_matches_goldens() {
    let files = fixture_files("legacy/corpus", "save");
    assert!(files.len() >= 6, "corpus missing: {files:?}");
    let mut failures = Vec::new();
    for f in files {
        let stem = f.file_stem().unwrap().to_str().unwrap().to_string();
        let text = fs::read_to_string(&f).unwrap();
        let name = format!("{stem}.save");
        let input = [Input {
            name: &name,
            text: &text,
        }];
        let d = BTreeMap::new();
        let p = |ext: &str| f.with_file_name(format!("{stem}.{ext}"));
        let mut check = |path: &str, instead_of: &str, actual: &str| {
            failures.extend(check_instead_of(&p(path), &p(instead_of), actual));
        };
        match to_spec(&input, &d) {
            Ok((spec, report)) => {
                let mut s = serde_json::to_string_pretty(&spec).unwrap();
                s.push('\n');
                check("spec.json", "spec.err", &s);
                check("report", "report.none", &report.to_string());
            }
            Err(e) => check("spec.err", "spec.json", &format!("{e}\n")),
        }
        match to_nft(&input, &d, false) {
            Ok((nft, _)) => check("nft", "nft.err", &nft),
            Err(e) => check("nft.err", "nft", &format!("{e}\n")),
        }
        match to_nft(&input, &d, true) {
            Ok((nft, _)) => check("literal.nft", "literal.err", &nft),
            Err(e) => check("literal.err", "literal.nft", &format!("{e}\n")),
        }
    }
    assert_all(&failures);
}
