//! Every fixture spec against its golden iptables-restore dump (`fixtures/dump/NAME.rules`),
//! or, where iptables cannot express the spec, its golden refusal (`NAME.rules.err`).
//! `make bless` rewrites them.

use std::fs;
use std::path::{Path, PathBuf};

use nftbalance_spec::Spec;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

#[test]
fn iptables_dumps_match_goldens() {
    let bless = std::env::var_os("NFTBALANCE_BLESS").is_some();
    let mut specs: Vec<PathBuf> = fs::read_dir(fixtures().join("specs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    specs.sort();
    let mut failures = Vec::new();
    let mut expressible = 0;
    for file in specs {
        let stem = file.file_stem().unwrap().to_str().unwrap().to_string();
        let spec = Spec::from_json(&fs::read_to_string(&file).unwrap()).unwrap();
        let (path, actual, other) = match nftbalance_legacy::render(&spec) {
            Ok(text) => {
                expressible += 1;
                (format!("{stem}.rules"), text, format!("{stem}.rules.err"))
            }
            Err(e) => (
                format!("{stem}.rules.err"),
                format!("{e}\n"),
                format!("{stem}.rules"),
            ),
        };
        let path = fixtures().join("dump").join(path);
        let other = fixtures().join("dump").join(other);
        if bless {
            fs::write(&path, &actual).unwrap();
            let _ = fs::remove_file(&other);
            continue;
        }
        if other.exists() {
            failures.push(format!("{} is stale (run `make bless`)", other.display()));
        }
        match fs::read_to_string(&path) {
            Ok(expected) if expected == actual => {}
            Ok(_) => failures.push(format!(
                "{} differs (run `make bless`, review the diff)",
                path.display()
            )),
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(expressible >= 6, "too few specs iptables can express");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
