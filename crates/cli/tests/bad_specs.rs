//! Every file in fixtures/bad is refused with exit status 2 and exactly the message in its
//! `.err` file. `make bless` (NFTBALANCE_BLESS=1) rewrites the `.err` files.

use std::process::Command;

use nftbalance_testns::golden::{assert_all, check, fixture_files};
use nftbalance_testns::repo_root;

#[test]
fn bad_specs_are_refused_with_their_message() {
    let root = repo_root();
    let specs = fixture_files("bad", "json");
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
        failures.extend(check(&spec.with_extension("err"), &stderr));
    }
    assert_all(&failures);
}
