//! The corpus (`fixtures/legacy/corpus/*.save` and the seed's forms) against golden outputs
//! next to them: `NAME.spec.json` (or `.spec.err`), `NAME.report`, `NAME.nft` (or `.nft.err`)
//! and `NAME.literal.nft` (or `.literal.err`). `make bless` (NFTBALANCE_BLESS=1) rewrites them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use nftbalance_translate::{to_nft, to_spec, Input};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/legacy/corpus")
}

fn check(failures: &mut Vec<String>, path: &Path, other: &Path, actual: &str) {
    if std::env::var_os("NFTBALANCE_BLESS").is_some() {
        fs::write(path, actual).unwrap();
        let _ = fs::remove_file(other);
        return;
    }
    if other.exists() {
        failures.push(format!("{} is stale (run `make bless`)", other.display()));
    }
    match fs::read_to_string(path) {
        Ok(e) if e == actual => {}
        Ok(_) => failures.push(format!(
            "{} differs (run `make bless` and review the diff)",
            path.display()
        )),
        Err(e) => failures.push(format!("{}: {e} (run `make bless`)", path.display())),
    }
}

#[test]
fn corpus_matches_goldens() {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "save"))
        .collect();
    files.sort();
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
        let p = |ext: &str| corpus().join(format!("{stem}.{ext}"));
        match to_spec(&input, &d) {
            Ok((spec, report)) => {
                let mut s = serde_json::to_string_pretty(&spec).unwrap();
                s.push('\n');
                check(&mut failures, &p("spec.json"), &p("spec.err"), &s);
                check(
                    &mut failures,
                    &p("report"),
                    &p("report.none"),
                    &report.to_string(),
                );
            }
            Err(e) => check(
                &mut failures,
                &p("spec.err"),
                &p("spec.json"),
                &format!("{e}\n"),
            ),
        }
        match to_nft(&input, &d, false) {
            Ok((nft, _)) => check(&mut failures, &p("nft"), &p("nft.err"), &nft),
            Err(e) => check(&mut failures, &p("nft.err"), &p("nft"), &format!("{e}\n")),
        }
        match to_nft(&input, &d, true) {
            Ok((nft, _)) => check(&mut failures, &p("literal.nft"), &p("literal.err"), &nft),
            Err(e) => check(
                &mut failures,
                &p("literal.err"),
                &p("literal.nft"),
                &format!("{e}\n"),
            ),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
