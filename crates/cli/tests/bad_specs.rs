//! Every file in fixtures/bad is refused with exit status 2 and exactly the message in its
//! `.err` file. `make bless` (NFTBALANCE_BLESS=1) rewrites the `.err` files.

use std::fs;
use std::path::Path;
use std::process::Command;

#[test]
fn bad_specs_are_refused_with_their_message() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut specs: Vec<_> = fs::read_dir(root.join("fixtures/bad"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 25, "bad fixtures missing");
    let mut failures = Vec::new();
    for spec in specs {
        let rel = spec.strip_prefix(&root).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_nftbalance"))
            .current_dir(&root)
            .arg("dump")
            .arg(rel)
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{}: exit status {:?}, expected 2",
                rel.display(),
                out.status.code()
            ));
        }
        if !out.stdout.is_empty() {
            failures.push(format!("{}: printed a ruleset", rel.display()));
        }
        let expected_path = spec.with_extension("err");
        if std::env::var_os("NFTBALANCE_BLESS").is_some() {
            fs::write(&expected_path, &stderr).unwrap();
            continue;
        }
        match fs::read_to_string(&expected_path) {
            Ok(expected) if expected == stderr => {}
            Ok(expected) => failures.push(format!(
                "{}:\n  expected: {expected}\n  actual:   {stderr}",
                rel.display()
            )),
            Err(e) => failures.push(format!(
                "{}: {e} (run `make bless`)",
                expected_path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
