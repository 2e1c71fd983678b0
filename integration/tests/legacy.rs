//! The iptables-legacy backend: `dump --format iptables`, `apply/flush --backend
//! iptables-legacy`, in throwaway namespaces.

use nftbalance_integration::netns::Netns;
use nftbalance_integration::{fixture_files, repo_root, target_binary};

fn nftbalance(ns: &Netns, args: &[&str]) -> String {
    let out = ns.exec(&target_binary("nftbalance"), args, None);
    assert!(
        out.status.success(),
        "nftbalance {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// iptables-legacy-save of mangle and nat without comments and counters.
fn saved(ns: &Netns) -> String {
    let mut all = String::new();
    for t in ["mangle", "nat"] {
        let text = ns.ok("iptables-legacy-save", &["-t", t]);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            // Chain lines carry counters: ":PREROUTING ACCEPT [12:3400]".
            let line = match line.find(" [") {
                Some(i) if line.starts_with(':') => &line[..i],
                _ => line,
            };
            all.push_str(line);
            all.push('\n');
        }
    }
    all
}

const FOREIGN: &str = "*mangle\n-A PREROUTING -i eth9 -j MARK --set-xmark 0x10000/0x10000\n\
-A OUTPUT -p udp --dport 53 -j TOS --set-tos 0x10/0x3f\nCOMMIT\n\
*nat\n-A POSTROUTING -o eth9 -j MASQUERADE\n-A PREROUTING -i eth9 -p tcp --dport 2222 -j DNAT --to-destination 192.168.1.5:22\nCOMMIT\n";

#[test]
fn every_iptables_golden_passes_iptables_restore_test() {
    let ns = Netns::new("iptest");
    for file in fixture_files("dump", "rules") {
        let text = std::fs::read(&file).unwrap();
        let out = ns.exec("iptables-legacy-restore", &["--test"], Some(&text));
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn legacy_apply_is_idempotent_and_leaves_foreign_rules_alone() {
    let ns = Netns::new("ipapply");
    let out = ns.exec(
        "iptables-legacy-restore",
        &["--noflush"],
        Some(FOREIGN.as_bytes()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = saved(&ns);
    let specs = repo_root().join("fixtures/specs");
    let seed = specs.join("seed.json");
    let seed = seed.to_str().unwrap();

    nftbalance(&ns, &["apply", "--backend", "iptables-legacy", seed]);
    let once = saved(&ns);
    assert_eq!(
        once.matches("-j NFTBALANCE-PREROUTING").count(),
        1,
        "{once}"
    );
    nftbalance(&ns, &["apply", "--backend", "iptables-legacy", seed]);
    assert_eq!(saved(&ns), once, "a second apply changed the rules");
    for line in before.lines().filter(|l| l.starts_with("-A")) {
        assert!(once.contains(line), "foreign rule lost: {line}");
    }

    // Another spec replaces ours, chains it no longer needs included.
    let pinned = specs.join("mark-mask.json");
    nftbalance(
        &ns,
        &[
            "apply",
            "--backend",
            "iptables-legacy",
            pinned.to_str().unwrap(),
        ],
    );
    assert!(saved(&ns).contains("NFTBALANCE-PIN-1"));
    nftbalance(&ns, &["apply", "--backend", "iptables-legacy", seed]);
    assert_eq!(
        saved(&ns),
        once,
        "re-applying the seed did not give the seed's rules back"
    );

    // --check changes nothing.
    nftbalance(
        &ns,
        &[
            "apply",
            "--check",
            "--backend",
            "iptables-legacy",
            pinned.to_str().unwrap(),
        ],
    );
    assert_eq!(saved(&ns), once);

    nftbalance(&ns, &["flush", "--backend", "iptables-legacy", seed]);
    assert_eq!(
        saved(&ns),
        before,
        "flush did not restore the foreign state"
    );
    nftbalance(&ns, &["flush", "--backend", "iptables-legacy", seed]);
    assert_eq!(saved(&ns), before);
}

#[test]
fn every_expressible_fixture_applies_with_the_legacy_backend() {
    let ns = Netns::new("ipall");
    for file in fixture_files("dump", "rules") {
        let stem = file
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".rules")
            .to_string();
        let spec = repo_root()
            .join("fixtures/specs")
            .join(format!("{stem}.json"));
        nftbalance(
            &ns,
            &[
                "apply",
                "--backend",
                "iptables-legacy",
                spec.to_str().unwrap(),
            ],
        );
    }
}
