//! `translate` bounds its memory: input past the limit and runaway shell expansion end in a
//! clear error (exit 2) quickly, under an address-space limit far below what they once took.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `translate::MAX_INPUT`, repeated so that a change to it is a visible change here.
const MAX_INPUT: usize = 16 * 1024 * 1024;

/// Runs translate on standard input under `prlimit --as` (1 GiB: the doubling input once
/// allocated 8 GiB, `yes` 1.9 GiB in 5 s), in a bounded time.
fn translate_bounded(stdin: Vec<u8>) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = Command::new("prlimit")
        .arg("--as=1073741824")
        .arg(env!("CARGO_BIN_EXE_nftbalance"))
        .args(["translate", "--to", "nft", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux)");
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // The reader stops at the limit: a broken pipe past it is expected.
        let _ = pipe.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (out, start.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn input_one_byte_over_the_limit_is_refused() {
    let mut text = b"# comment line\n".repeat(MAX_INPUT / 15 + 1);
    text.truncate(MAX_INPUT + 1);
    let (out, took) = translate_bounded(text);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("longer than {MAX_INPUT} bytes")),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn input_at_the_limit_is_read() {
    let mut text = b"#".repeat(MAX_INPUT - 1);
    text.push(b'\n');
    let (out, _) = translate_bounded(text);
    // Read in full, then no balancer and no rules: an empty nft script.
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn doubling_variable_ends_in_an_error_naming_line_and_limit() {
    let mut text = String::from("A=x\n");
    for _ in 0..35 {
        text.push_str("A=$A$A\n");
    }
    text.push_str("iptables -t mangle -A PREROUTING -i \"$A\" -j ACCEPT\n");
    let (out, took) = translate_bounded(text.into_bytes());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // 2^17 bytes > 64 KiB: the 18th line's assignment is the first over the limit.
    assert!(
        stderr(&out)
            .contains("-:18: a word with its variables expanded would be longer than 65536 bytes"),
        "{}",
        stderr(&out)
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}
