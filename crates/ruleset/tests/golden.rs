//! Every fixture spec against its golden nft and JSON dumps.
//! `make bless` (NFTBALANCE_BLESS=1) rewrites the goldens; review them with `git diff`.

use std::fs;
use std::path::{Path, PathBuf};

use nftbalance_ruleset::{compile, json, nft};
use nftbalance_spec::Spec;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn bless() -> bool {
    std::env::var_os("NFTBALANCE_BLESS").is_some()
}

fn spec_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(fixtures().join("specs"))
        .expect("fixtures/specs")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "fixture specs missing: {files:?}");
    files
}

/// Compares (or with bless, writes) one golden; returns a failure line instead of panicking
/// so one run lists every stale golden.
fn check(path: &Path, actual: &str) -> Option<String> {
    if bless() {
        fs::write(path, actual).unwrap();
        return None;
    }
    match fs::read_to_string(path) {
        Ok(expected) if expected == actual => None,
        Ok(_) => Some(format!(
            "{} differs (run `make bless` and review the diff)",
            path.display()
        )),
        Err(e) => Some(format!("{}: {e} (run `make bless`)", path.display())),
    }
}

#[test]
fn dumps_match_goldens() {
    let dump = fixtures().join("dump");
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
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn no_stale_goldens() {
    let stems: Vec<String> = spec_files()
        .iter()
        .map(|f| f.file_stem().unwrap().to_str().unwrap().to_string())
        .collect();
    for entry in fs::read_dir(fixtures().join("dump")).unwrap() {
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
