//! `nftbalance translate --from mwan3` end to end: every imported fixture's spec is one that
//! `nftbalance dump` compiles and the real nft accepts (`nft -c -f`, text and JSON), and the
//! command's output, exit status and stderr are those the goldens and the issue call for.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nftbalance_integration::cli::text;
use nftbalance_integration::netns::{Netns, PATH};
use nftbalance_integration::{fixture_files, target_binary};

fn nftbalance(args: &[&str]) -> Output {
    Command::new(target_binary("nftbalance"))
        .args(args)
        .env("PATH", PATH)
        .output()
        .unwrap()
}

fn sibling(f: &Path, ext: &str) -> PathBuf {
    let stem = f.file_stem().unwrap().to_str().unwrap();
    f.with_file_name(format!("{stem}.{ext}"))
}

/// `translate --from mwan3 FILE` with the fixture's `--define`s and `extra` arguments.
fn import(f: &Path, extra: &[&str]) -> Output {
    let defines = std::fs::read_to_string(sibling(f, "defines")).unwrap_or_default();
    let mut args = vec!["translate", "--from", "mwan3", f.to_str().unwrap()];
    for d in defines.lines() {
        args.extend(["-D", d]);
    }
    args.extend(extra);
    nftbalance(&args)
}

/// [`import`] of a good fixture (`partial` with `--partial`), which must exit 0: its stdout.
fn imported(f: &Path, extra: &[&str]) -> Vec<u8> {
    let mut args = extra.to_vec();
    if f.file_stem().unwrap() == "partial" {
        args.push("--partial");
    }
    let out = import(f, &args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: {}",
        f.display(),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("became the spec ("),
        "{}",
        f.display()
    );
    out.stdout
}

#[test]
fn every_imported_spec_dumps_to_a_ruleset_nft_accepts() {
    let ns = Netns::new("mwan3");
    let specs = fixture_files("mwan3", "json");
    assert!(specs.len() >= 6, "{specs:?}");
    for spec in specs {
        let path = spec.to_str().unwrap();
        for (format, check) in [
            ("nft", &["-c", "-f", "/dev/stdin"][..]),
            ("json", &["-j", "-c", "-f", "/dev/stdin"][..]),
        ] {
            let dump = nftbalance(&["dump", "--format", format, path]);
            assert_eq!(
                dump.status.code(),
                Some(0),
                "dump {path}: {}",
                text(&dump.stderr)
            );
            let out = ns.exec("nft", check, Some(&dump.stdout));
            assert!(
                out.status.success(),
                "nft {check:?} of {path}'s dump: {}",
                text(&out.stderr)
            );
        }
    }
    // `--to nft` prints the same ruleset straight from the configuration.
    for f in fixture_files("mwan3", "uci") {
        let nft = imported(&f, &["--to", "nft"]);
        let check = ns.exec("nft", &["-c", "-f", "/dev/stdin"], Some(&nft));
        assert!(
            check.status.success(),
            "nft -c -f of {} --to nft: {}",
            f.display(),
            text(&check.stderr)
        );
    }
    // -c changed nothing.
    assert_eq!(ns.ruleset_json(), serde_json::json!({ "nftables": [] }));
}

#[test]
fn endless_input_stops_at_the_limit() {
    let mut child = Command::new(target_binary("nftbalance"))
        .args(["translate", "--from", "mwan3", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = "# comment\n".repeat(4096);
        // Ends when nftbalance closes the pipe.
        while stdin.write_all(chunk.as_bytes()).is_ok() {}
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("-:1: the file is longer than"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_command_prints_the_golden_spec_and_a_report() {
    for f in fixture_files("mwan3", "uci") {
        let out = imported(&f, &[]);
        let golden = std::fs::read_to_string(sibling(&f, "spec.json")).unwrap();
        assert_eq!(text(&out), golden, "{}", f.display());
    }
}

#[test]
fn rules_left_out_exit_2_naming_each_line_unless_partial() {
    let f = fixture_files("mwan3", "uci")
        .into_iter()
        .find(|f| f.file_stem().unwrap() == "partial")
        .unwrap();
    let out = import(&f, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "a partial spec was printed without --partial"
    );
    let stderr = text(&out.stderr);
    for line in [22, 27, 31, 36, 40] {
        assert!(
            stderr.contains(&format!("  partial.uci:{line}: "))
                || stderr.contains(&format!("/partial.uci:{line}: ")),
            "line {line} not named:\n{stderr}"
        );
    }
}

#[test]
fn bad_configurations_exit_2_with_file_and_line() {
    for f in fixture_files("mwan3/bad", "uci") {
        let out = import(&f, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", f.display());
        assert!(out.stdout.is_empty());
        let golden = std::fs::read_to_string(sibling(&f, "err")).unwrap();
        let first = golden.lines().next().unwrap();
        // The CLI names the file as given; the golden as NAME.uci.
        let (_, message) = first.split_once(".uci:").unwrap_or(("", first));
        assert!(
            text(&out.stderr).contains(message),
            "{}: {}",
            f.display(),
            text(&out.stderr)
        );
    }
}

#[test]
fn flags_are_checked() {
    let f = fixture_files("mwan3", "uci").remove(0);
    let path = f.to_str().unwrap();
    for (args, want) in [
        (
            vec!["translate", "--from", "mwan3", path, path],
            "reads one file",
        ),
        (
            vec![
                "translate",
                "--from",
                "mwan3",
                path,
                "-D",
                "wan.device=a\"b",
            ],
            "--define",
        ),
    ] {
        let out = nftbalance(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
