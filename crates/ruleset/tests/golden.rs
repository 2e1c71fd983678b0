//! Every fixture spec against its golden nft and JSON dumps.
//! `make bless` (NFTBALANCE_BLESS=1) rewrites the goldens; review them with `git diff`.

use std::fs;
use std::path::PathBuf;

use nftbalance_ruleset::{compile, json, nft};
use nftbalance_spec::Spec;
use nftbalance_testns::golden::{assert_all, check, fixture_files, fixtures_dir};

fn spec_files() -> Vec<PathBuf> {
    let files = fixture_files("specs", "json");
    assert!(files.len() >= 8, "fixture specs missing: {files:?}");
    files
}

#[test]
fn dumps_match_goldens() {
    let dump = fixtures_dir().join("dump");
    let mut failures = Vec::new();
    for file in spec_files() {
        let stem = file.file_stem().unwrap().to_str().unwrap().to_string();
        let spec = Spec::from_json(&fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let rs = compile(&spec);
        let text = nft::render(&rs);
        let mut doc = serde_json::to_string_pretty(&json::render(&rs)).unwrap();
        doc.push('\n');
        failures.extend(check(&dump.join(format!("{stem}.nft")), &text));
        failures.extend(check(&dump.join(format!("{stem}.json")), &doc));
        // Byte-stable: a second compile of the same spec gives the same bytes.
        assert_eq!(
            nft::render(&compile(&spec)),
            text,
            "{stem}: output is not deterministic"
        );
    }
    assert_all(&failures);
}

#[test]
fn no_stale_goldens() {
    let stems: Vec<String> = spec_files()
        .iter()
        .map(|f| f.file_stem().unwrap().to_str().unwrap().to_string())
        .collect();
    for entry in fs::read_dir(fixtures_dir().join("dump")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        let stem = name.split('.').next().unwrap().to_string();
        assert!(
            stems.contains(&stem),
            "{} has no spec in fixtures/specs",
            path.display()
        );
    }
}
