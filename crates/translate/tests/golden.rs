//! The corpus (`fixtures/legacy/corpus/*.save` and the seed's forms) against golden outputs
//! next to them: `NAME.spec.json` (or `.spec.err`), `NAME.report`, `NAME.nft` (or `.nft.err`)
//! and `NAME.literal.nft` (or `.literal.err`). `make bless` (NFTBALANCE_BLESS=1) rewrites them.

use std::collections::BTreeMap;
use std::fs;

use nftbalance_testns::golden::{assert_all, check_instead_of, fixture_files};
use nftbalance_translate::{to_nft, to_spec, Input};

#[test]
fn corpus_matches_goldens() {
    goldens("legacy/corpus", "save", 6);
}

/// One fixture per balancer shape the evaluator must read (inline splits, per-mark chains
/// without ingress marks, mwan3's masks, LOG in mark chains, shadowing rules).
#[test]
fn shapes_match_goldens() {
    goldens("legacy/shapes", "sh", 6);
}

/// Inputs that mark outside the model: the report names every such line.
#[test]
fn outside_corpus_matches_goldens() {
    goldens("legacy/outside", "save", 3);
}

/// Every rule of the outside corpus commented "outside" is named as marking outside the
/// spec (the CLI exits 2 on any; `--partial` prints the spec anyway).
#[test]
fn outside_corpus_names_every_marking_line() {
    for f in fixture_files("legacy/outside", "save") {
        let text = fs::read_to_string(&f).unwrap();
        let input = [Input {
            name: "in.save",
            text: &text,
        }];
        let (_, report) = to_spec(&input, &BTreeMap::new()).unwrap();
        let named: Vec<usize> = report.marking().map(|e| e.loc.line).collect();
        let want: Vec<usize> = (text.lines().enumerate())
            .filter(|(_, l)| l.contains("--comment \"outside\""))
            .map(|(i, _)| i + 1)
            .collect();
        assert!(!want.is_empty(), "{f:?}");
        for w in want {
            assert!(named.contains(&w), "{f:?}: line {w} not named: {report}");
        }
    }
}

fn goldens(dir: &str, ext: &str, at_least: usize) {
    let files = fixture_files(dir, ext);
    assert!(files.len() >= at_least, "{dir} missing: {files:?}");
    let mut failures = Vec::new();
    for f in files {
        let stem = f.file_stem().unwrap().to_str().unwrap().to_string();
        let text = fs::read_to_string(&f).unwrap();
        let name = format!("{stem}.{ext}");
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
