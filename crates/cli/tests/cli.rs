//! The command line: arguments, output streams and exit statuses.

use std::io::Write;
use std::process::{ChildStdin, Command, Output, Stdio};

use nftbalance_testns::repo_root;

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    run_feeding(args, |pipe| {
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
    })
}

/// Runs the binary with `feed` writing its standard input (closed afterwards).
fn run_feeding(args: &[&str], feed: impl FnOnce(&mut ChildStdin)) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nftbalance"))
        .current_dir(repo_root())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    feed(&mut pipe);
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[test]
fn dump_prints_the_golden() {
    let out = run(&["dump", "fixtures/specs/seed.json"], None);
    assert_eq!(out.status.code(), Some(0));
    let golden = std::fs::read_to_string(repo_root().join("fixtures/dump/seed.nft")).unwrap();
    assert_eq!(text(&out.stdout), golden);
    assert!(out.stderr.is_empty());
}

#[test]
fn dump_json_reads_standard_input() {
    let spec = std::fs::read_to_string(repo_root().join("fixtures/specs/seed.json")).unwrap();
    let out = run(&["dump", "--format", "json", "-"], Some(&spec));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let golden = std::fs::read_to_string(repo_root().join("fixtures/dump/seed.json")).unwrap();
    assert_eq!(text(&out.stdout), golden);
}

#[test]
fn missing_spec_file_is_exit_2_with_the_path() {
    let out = run(&["dump", "no/such/spec.json"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("nftbalance: error: reading spec no/such/spec.json: "),
        "{err}"
    );
}

#[test]
fn usage_errors_are_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["dump"],
        &["dump", "x.json", "--format", "yaml"],
    ] {
        let out = run(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn help_explains_dump() {
    let out = run(&["dump", "--help"], None);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("nft -f"), "{help}");
    assert!(help.contains("--format"), "{help}");
}

#[test]
fn spec_that_is_not_utf8_is_refused() {
    let dir = std::env::temp_dir().join(format!("nftbalance-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("latin1.json");
    std::fs::write(&file, b"{\"table\": \"caf\xe9\"}").unwrap();
    let out = run(&["dump", file.to_str().unwrap()], None);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("valid UTF-8"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 22.7: `yes | nftbalance dump -` and `dump /dev/zero` grew to gigabytes. Input is
/// refused past the documented limit, before more than that is held.
#[test]
fn endless_input_is_refused_at_the_size_limit() {
    let out = run(&["dump", "/dev/zero"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("/dev/zero is larger than 64 MiB"), "{err}");

    let line = "y\n".repeat(1 << 16);
    // The reader stops at the limit and exits: the pipe then breaks, as for `yes`.
    let out = run_feeding(&["dump", "-"], |pipe| {
        for _ in 0..1024 {
            if pipe.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
    });
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("spec - is larger than 64 MiB"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn pair_configurations_need_a_node_of_the_pair() {
    let fmt = |f: &str, extra: &[&str]| {
        let mut args = vec!["dump", "--format", f];
        args.extend(extra);
        run(&args, None)
    };
    for f in ["keepalived", "conntrackd"] {
        let out = fmt(f, &["fixtures/specs/pair.json"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out.stderr).contains("--node NAME is required"),
            "{}",
            text(&out.stderr)
        );
        let out = fmt(f, &["--node", "c", "fixtures/specs/pair.json"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("\"c\" is not a node of the pair"));
        let out = fmt(f, &["--node", "a", "fixtures/specs/seed.json"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("no \"ha\" section"));
        let out = fmt(
            f,
            &[
                "--node",
                "a",
                "--run-dir",
                "/tmp/a b",
                "fixtures/specs/pair.json",
            ],
        );
        assert_eq!(out.status.code(), Some(2), "a path keepalived would split");
        assert!(out.stdout.is_empty());
    }
    let out = fmt("keepalived", &["--node", "b", "fixtures/specs/pair.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let conf = text(&out.stdout);
    assert!(conf.contains("priority 100") && conf.contains("100.0.2.1/32 dev ppp1"));
    let spec = repo_root().join("fixtures/specs/pair.json");
    assert!(conf.contains(&format!(
        "ha master --conntrackd-config /etc/conntrackd/conntrackd.conf {}",
        spec.display()
    )));
}
