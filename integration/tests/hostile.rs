//! Hostile input: every command refuses it with a clear message and exit status 2, nothing
//! panics, nothing is applied. Large cases are generated here rather than checked in.

use nftbalance_integration::netns::Netns;
use nftbalance_integration::{fixture_files, target_binary};
use serde_json::json;

fn cases() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = fixture_files("hostile", "json")
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    let gw = r#"{"name":"a","interface":"eth1","mark":1,"route_table":101}"#;
    out.push((
        "100k gateways".into(),
        format!(r#"{{"gateways":[{}]}}"#, vec![gw; 100_000].join(",")).into_bytes(),
    ));
    out.push((
        "1 MB name".into(),
        format!(
            r#"{{"gateways":[{{"name":"{}","interface":"eth1","mark":1,"route_table":101}}]}}"#,
            "x".repeat(1 << 20)
        )
        .into_bytes(),
    ));
    out.push(("deep nesting".into(), "[".repeat(200_000).into_bytes()));
    out.push(("1 MB of NUL".into(), vec![0u8; 1 << 20]));
    out.push((
        "100k bad ports".into(),
        format!(
            r#"{{"gateways":[{gw}],"balance":{{"forward":[{{"protocol":"tcp","dports":[{}]}}]}}}}"#,
            vec!["0"; 100_000].join(",")
        )
        .into_bytes(),
    ));
    out
}

#[test]
fn hostile_specs_are_refused_cleanly_and_apply_nothing() {
    let ns = Netns::new("hostile");
    let bin = target_binary("nftbalance");
    for (name, input) in cases() {
        for args in [
            &["dump", "-"][..],
            &["dump", "--format", "iptables", "-"],
            &["apply", "-"],
            &["diff", "-"],
        ] {
            let out = ns.exec(&bin, args, Some(&input));
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {err}");
            assert!(!err.contains("panicked"), "{name} {args:?} panicked: {err}");
            assert!(
                err.starts_with("nftbalance: error: "),
                "{name} {args:?}: {err}"
            );
            assert!(
                err.len() < 20_000,
                "{name} {args:?}: a {} byte message",
                err.len()
            );
            assert!(out.stdout.is_empty(), "{name} {args:?} printed output");
        }
    }
    assert_eq!(
        ns.ruleset_json(),
        json!({ "nftables": [] }),
        "something was applied"
    );
}

/// Runs nftbalance as nobody with no capabilities at all.
fn unprivileged(args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([
            "--bounding-set",
            "-all",
            "--inh-caps",
            "-all",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(target_binary("nftbalance"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn dump_needs_no_privilege() {
    let spec = nftbalance_integration::repo_root().join("fixtures/specs/seed.json");
    for format in ["nft", "json", "iptables", "ip"] {
        let out = unprivileged(&["dump", "--format", format, spec.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "dump --format {format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn translate_needs_no_privilege() {
    let rules = nftbalance_integration::repo_root().join("fixtures/legacy/seed.rules");
    let out = unprivileged(&["translate", rules.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"gateways\""));
}
