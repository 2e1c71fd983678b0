//! Golden files: plain files checked in under `fixtures/`, compared byte for byte with what a
//! test produces and rewritten by `make bless` (`NFTBALANCE_BLESS=1`), then reviewed with
//! `git diff`. A check returns a failure line instead of panicking, so that one run lists
//! every stale golden; [`assert_all`] fails the test with all of them.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The environment variable that makes [`check`] write the goldens instead of comparing.
pub const BLESS_VAR: &str = "NFTBALANCE_BLESS";

/// Lines of difference shown in a failure message, at the most.
const DIFF_LINES: usize = 40;

/// `fixtures/` in the repository root.
pub fn fixtures_dir() -> PathBuf {
    crate::repo_root().join("fixtures")
}

/// The files in `fixtures/<dir>` whose extension is `ext`, sorted. Panics when there are
/// none: a golden test over no fixtures must not pass.
pub fn fixture_files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let path = fixtures_dir().join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures/{dir}/*.{ext}");
    files
}

/// Whether this run rewrites the goldens (`make bless`).
pub fn blessing() -> bool {
    std::env::var_os(BLESS_VAR).is_some()
}

/// Compares `actual` with the golden at `path` or, when blessing, writes it there. Returns a
/// failure line (with the lines that differ) instead of panicking.
pub fn check(path: &Path, actual: &str) -> Option<String> {
    if blessing() {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        fs::write(path, actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return None;
    }
    match fs::read_to_string(path) {
        Ok(expected) if expected == actual => None,
        Ok(expected) => Some(format!(
            "{} differs (run `make bless` and review the diff):\n{}",
            path.display(),
            line_diff(&expected, actual)
        )),
        Err(e) => Some(format!("{}: {e} (run `make bless`)", path.display())),
    }
}

/// [`check`] of a golden that stands instead of another one (`NAME.rules` or, where the
/// output is a refusal, `NAME.rules.err`): blessing also deletes `instead_of`, and checking
/// fails while it exists.
pub fn check_instead_of(path: &Path, instead_of: &Path, actual: &str) -> Vec<String> {
    if blessing() {
        let _ = fs::remove_file(instead_of);
    }
    let mut failures = Vec::new();
    if !blessing() && instead_of.exists() {
        failures.push(format!(
            "{} is stale (run `make bless`)",
            instead_of.display()
        ));
    }
    failures.extend(check(path, actual));
    failures
}

/// Fails the test with every failure line, if there is any.
#[track_caller]
pub fn assert_all(failures: &[String]) {
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The lines of `expected` missing from `actual` (`- `) and the lines of `actual` missing
/// from `expected` (`+ `), in order: enough to see what changed without a diff tool.
pub fn line_diff(expected: &str, actual: &str) -> String {
    let (old, new): (HashSet<&str>, HashSet<&str>) =
        (expected.lines().collect(), actual.lines().collect());
    let removed = expected
        .lines()
        .filter(|l| !new.contains(l))
        .map(|l| ("-", l));
    let added = actual
        .lines()
        .filter(|l| !old.contains(l))
        .map(|l| ("+", l));
    let lines: Vec<String> = removed
        .chain(added)
        .map(|(sign, l)| format!("{sign} {l}\n"))
        .collect();
    let mut out: String = lines.iter().take(DIFF_LINES).map(String::as_str).collect();
    if lines.len() > DIFF_LINES {
        out.push_str(&format!("... and {} more\n", lines.len() - DIFF_LINES));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_lists_removed_then_added_lines() {
        assert_eq!(line_diff("a\nb\nc\n", "a\nc\nd\n"), "- b\n+ d\n");
        assert_eq!(line_diff("same\n", "same\n"), "");
    }

    #[test]
    fn fixture_files_are_sorted_and_filtered() {
        let specs = fixture_files("specs", "json");
        assert!(specs.windows(2).all(|w| w[0] < w[1]));
        assert!(specs.iter().all(|p| p.extension().unwrap() == "json"));
        assert!(specs[0].starts_with(fixtures_dir()));
    }

    #[test]
    #[should_panic(expected = "no fixtures/specs/*.none")]
    fn fixture_files_panic_when_there_are_none() {
        fixture_files("specs", "none");
    }
}
