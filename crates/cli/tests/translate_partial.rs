//! `translate`'s exit contract: exit 2 naming every rule whose marking the spec does not
//! reproduce (nothing on stdout); `--partial` prints the spec (exit 0) and lists them.

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nftbalance"))
        .arg("translate")
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn outside_corpus() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/legacy/outside");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "save"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    files
}

/// The lines a fixture marks as outside the model (`-m comment --comment "outside"`).
fn outside_lines(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    (text.lines().enumerate())
        .filter(|(_, l)| l.contains("--comment \"outside\""))
        .map(|(i, _)| format!("{file}:{}", i + 1))
        .collect()
}

#[test]
fn marking_outside_the_spec_exits_2_naming_every_line() {
    for f in outside_corpus() {
        let (code, stdout, stderr) = run(&[&f]);
        assert_eq!(code, Some(2), "{f}: {stderr}");
        assert!(stdout.is_empty(), "{f}: printed a spec: {stdout}");
        let error = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_default();
        for line in outside_lines(&f) {
            assert!(error.contains(&line), "{f}: {line} not named in {error:?}");
        }
    }
}

#[test]
fn partial_prints_the_spec_and_lists_the_lines() {
    for f in outside_corpus() {
        let (code, stdout, stderr) = run(&["--partial", &f]);
        assert_eq!(code, Some(0), "{f}: {stderr}");
        assert!(stdout.contains("\"gateways\""), "{f}: {stdout}");
        let listed = stderr
            .split("marking outside the spec")
            .nth(1)
            .unwrap_or_default();
        for line in outside_lines(&f) {
            let at = line.rsplit_once(':').map(|(_, n)| n).unwrap();
            assert!(
                listed.contains(&format!(".save:{at}:")),
                "{f}: line {at} not listed:\n{stderr}"
            );
        }
    }
}

#[test]
fn a_complete_translation_exits_0() {
    let corpus =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/legacy/shapes/mwan3.sh");
    let (code, stdout, stderr) = run(&[corpus.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("\"gateways\""));
    assert!(
        stderr.contains("marking outside the spec (0 lines)"),
        "{stderr}"
    );
}
