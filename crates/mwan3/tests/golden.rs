//! mwan3 configurations (`fixtures/mwan3/*.uci`, with `--define` items one per line in
//! `NAME.defines`) against their goldens: `NAME.spec.json` and `NAME.report`, or `NAME.err`
//! for the refused ones in `fixtures/mwan3/bad/`. `make bless` (NFTBALANCE_BLESS=1) rewrites
//! them.

use std::fs;
use std::path::Path;

use nftbalance_mwan3::{import, network};
use nftbalance_spec::Spec;
use nftbalance_testns::golden::{assert_all, check, check_instead_of, fixture_files};

fn run(file: &Path, failures: &mut Vec<String>) -> bool {
    let stem = file.file_stem().unwrap().to_str().unwrap().to_string();
    let p = |ext: &str| file.with_file_name(format!("{stem}.{ext}"));
    let text = fs::read_to_string(file).unwrap();
    let defines: Vec<String> = fs::read_to_string(p("defines"))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let name = format!("{stem}.uci");
    let result = network::parse(&defines).and_then(|net| import(&name, &text, &net));
    match result {
        Ok(imp) => {
            let mut s = serde_json::to_string_pretty(&imp.spec).unwrap();
            s.push('\n');
            // What the CLI prints is what `nftbalance dump/apply` reads.
            assert_eq!(Spec::from_json(&s).as_ref(), Ok(&imp.spec), "{name}");
            failures.extend(check_instead_of(&p("spec.json"), &p("err"), &s));
            failures.extend(check(&p("report"), &imp.report.to_string()));
            true
        }
        Err(e) => {
            failures.extend(check_instead_of(
                &p("err"),
                &p("spec.json"),
                &format!("{e}\n"),
            ));
            false
        }
    }
}

#[test]
fn documented_examples_match_their_goldens() {
    let mut failures = Vec::new();
    let files = fixture_files("mwan3", "uci");
    assert!(files.len() >= 6, "fixtures missing: {files:?}");
    for f in files {
        if !run(&f, &mut failures) {
            failures.push(format!(
                "{}: refused; good fixtures must import",
                f.display()
            ));
        }
    }
    assert_all(&failures);
}

#[test]
fn bad_configurations_are_refused_with_their_place() {
    let mut failures = Vec::new();
    for f in fixture_files("mwan3/bad", "uci") {
        if run(&f, &mut failures) {
            failures.push(format!(
                "{}: imported; bad fixtures must be refused",
                f.display()
            ));
        }
        let err = f.with_extension("err");
        if let Ok(text) = fs::read_to_string(&err) {
            // Every message names its file and line (or the --define it is about).
            for line in text.lines() {
                let placed = line.contains(".uci:") || line.starts_with("--define");
                if !placed {
                    failures.push(format!("{}: {line:?} names no place", err.display()));
                }
            }
        }
    }
    assert_all(&failures);
}
