//! `nftbalance translate` against the kernel: its rule-by-rule nft next to
//! iptables-restore-translate's (same listing wherever the peer is right; on packets, ours is
//! right where the peer is wrong), and the seed's iptables rules and their translated spec
//! sending the same connections through the same uplinks.

use std::path::{Path, PathBuf};
use std::process::Command;

use nftbalance_integration::netns::{Netns, PATH};
use nftbalance_integration::topology::{Topology, Which, SERVER};
use nftbalance_integration::{repo_root, target_binary};
use serde_json::Value;

fn corpus() -> Vec<PathBuf> {
    let dir = repo_root().join("fixtures/legacy/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "save"))
        .collect();
    files.sort();
    files
}

fn translate(args: &[&str]) -> std::process::Output {
    Command::new(target_binary("nftbalance"))
        .arg("translate")
        .args(args)
        .env("PATH", PATH)
        .output()
        .unwrap()
}

fn ours_literal(file: &Path) -> Result<String, String> {
    let out = translate(&["--to", "nft", "--literal", file.to_str().unwrap()]);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        assert_eq!(out.status.code(), Some(2));
        Err(String::from_utf8(out.stderr).unwrap())
    }
}

fn peer(text: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("nbt-translate-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("in.save");
    std::fs::write(&f, text).unwrap();
    let out = Command::new("iptables-restore-translate")
        .args(["-f", f.to_str().unwrap()])
        .env("PATH", PATH)
        .output()
        .expect("iptables-restore-translate (Debian package iptables)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn load(ns: &Netns, nft: &str) {
    let out = ns.exec("nft", &["-f", "-"], Some(nft.as_bytes()));
    assert!(
        out.status.success(),
        "nft -f failed: {}\n{nft}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The source rules of a save file per (table, chain), in order.
fn source_rules(text: &str) -> Vec<(String, String, String)> {
    let mut table = String::new();
    let mut out = Vec::new();
    for l in text.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
        } else if let Some(r) = l.strip_prefix("-A ") {
            let chain = r.split_whitespace().next().unwrap().to_string();
            out.push((table.clone(), chain, l.to_string()));
        }
    }
    out
}

/// A mark operation iptables-restore-translate gets wrong: CONNMARK set with a partial mask
/// and a non-zero value (it binds `xor` before `and`), or save/restore with partial masks
/// (it leaves those out, as comments).
fn peer_wrong(rule: &str) -> Option<bool> {
    if rule.contains("CONNMARK --set-xmark") {
        let vm = rule
            .split("--set-xmark ")
            .nth(1)?
            .split_whitespace()
            .next()?;
        let (v, m) = vm.split_once('/')?;
        let v = u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()?;
        let m = u32::from_str_radix(m.trim_start_matches("0x"), 16).ok()?;
        return (v != 0 && m != u32::MAX && m != 0).then_some(true);
    }
    if (rule.contains("--save-mark") || rule.contains("--restore-mark"))
        && !rule.contains("--nfmask 0xffffffff --ctmask 0xffffffff")
    {
        // Left out: the peer has no rule for it.
        return Some(false);
    }
    None
}

fn rules_of(doc: &Value) -> Vec<Value> {
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule").cloned())
        .collect()
}

fn non_rules(doc: &Value) -> Vec<Value> {
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o.get("rule").is_none())
        .cloned()
        .collect()
}

#[test]
fn literal_translation_lists_like_iptables_restore_translate_wherever_the_peer_is_right() {
    let mut compared = 0;
    let mut peer_wrong_seen = 0;
    for file in corpus() {
        let text = std::fs::read_to_string(&file).unwrap();
        let ours = match ours_literal(&file) {
            Ok(t) => t,
            Err(e) => {
                // Only partial-mask restore/save (two registers) is refused, naming line and option.
                assert!(
                    e.contains("--restore-mark --nfmask") || e.contains("--save-mark --ctmask"),
                    "{}: {e}",
                    file.display()
                );
                assert!(e.contains(".save:"), "{e}");
                continue;
            }
        };
        let theirs = peer(&text);
        let a = Netns::new("trours");
        let b = Netns::new("trpeer");
        load(&a, &ours);
        load(&b, &theirs);
        let (ja, jb) = (a.ruleset_json(), b.ruleset_json());
        assert_eq!(
            non_rules(&ja),
            non_rules(&jb),
            "{}: tables and chains differ",
            file.display()
        );
        let (ra, rb) = (rules_of(&ja), rules_of(&jb));
        // Walk the source rules in the kernel's order: per table and chain as listed.
        let sources = source_rules(&text);
        let mut j = 0;
        for (i, r) in ra.iter().enumerate() {
            let key = (r["table"].as_str().unwrap(), r["chain"].as_str().unwrap());
            let same_chain: Vec<&(String, String, String)> = sources
                .iter()
                .filter(|(t, c, _)| (t.as_str(), c.as_str()) == key)
                .collect();
            let k = ra[..i]
                .iter()
                .filter(|x| (x["table"].as_str().unwrap(), x["chain"].as_str().unwrap()) == key)
                .count();
            let src = &same_chain[k].2;
            match peer_wrong(src) {
                None => {
                    assert_eq!(Some(r), rb.get(j), "{}: {src}", file.display());
                    j += 1;
                }
                Some(peer_has_a_rule) => {
                    peer_wrong_seen += 1;
                    if peer_has_a_rule {
                        assert_ne!(Some(r), rb.get(j), "{}: {src}", file.display());
                        j += 1;
                    }
                }
            }
        }
        assert_eq!(j, rb.len(), "{}: the peer has more rules", file.display());
        compared += 1;
    }
    assert!(compared >= 6, "compared {compared} corpus files");
    assert!(
        peer_wrong_seen >= 4,
        "the corpus should hold masked marks the peer gets wrong"
    );
}

/// Counts packets of the probe that left the rule under test with exactly (ctmark, nfmark).
fn probe(ns: &Netns, expect_ct: u32, expect_nf: u32) -> (u64, u64) {
    let probe = format!(
        "table ip probe {{
            chain pre {{
                type filter hook output priority -160; policy accept;
                udp dport 9 ct mark set 0xabcd12ff meta mark set 0x5a5a5a5a
            }}
            chain post {{
                type filter hook output priority -140; policy accept;
                udp dport 9 ct mark {expect_ct:#x} meta mark {expect_nf:#x} counter
                udp dport 9 counter
            }}
        }}\n"
    );
    load(ns, &probe);
    let out = ns.exec("bash", &["-c", "echo x > /dev/udp/127.0.0.1/9"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = ns.ok("nft", &["list", "chain", "ip", "probe", "post"]);
    let counts: Vec<u64> = listing
        .lines()
        .filter_map(|l| l.split("counter packets ").nth(1))
        .map(|s| s.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    (counts[0], counts[1])
}

#[test]
fn masked_marks_are_right_on_packets_where_iptables_restore_translate_is_wrong() {
    // (rule, ctmark after, nfmark after, the peer is wrong), from ct 0xabcd12ff, nf 0x5a5a5a5a.
    let cases: &[(&str, u32, u32, bool)] = &[
        (
            "-j CONNMARK --set-xmark 0x1/0xff",
            0xabcd_1201,
            0x5a5a_5a5a,
            true,
        ),
        (
            "-j CONNMARK --set-xmark 0x100/0xff00",
            0xabcd_01ff,
            0x5a5a_5a5a,
            true,
        ),
        (
            "-j CONNMARK --save-mark --nfmask 0xff --ctmask 0xffffffff",
            0x0000_005a,
            0x5a5a_5a5a,
            true,
        ),
        (
            "-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xff",
            0xabcd_12ff,
            0x0000_00ff,
            true,
        ),
        (
            "-j CONNMARK --set-xmark 0x0/0xff",
            0xabcd_1200,
            0x5a5a_5a5a,
            false,
        ),
        (
            "-j MARK --set-xmark 0x10/0xf0",
            0xabcd_12ff,
            0x5a5a_5a1a,
            false,
        ),
    ];
    let dir = std::env::temp_dir().join(format!("nbt-masked-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (rule, ct, nf, peer_wrong) in cases {
        let save = format!(
            "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A OUTPUT -p udp -m udp --dport 9 {rule}\nCOMMIT\n"
        );
        let f = dir.join("rule.save");
        std::fs::write(&f, &save).unwrap();
        // Ground truth: the rule itself, in iptables-legacy, between the two probe chains.
        let legacy = Netns::new("trlegacy");
        let out = legacy.exec("iptables-legacy-restore", &[], Some(save.as_bytes()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (hit, all) = probe(&legacy, *ct, *nf);
        assert!(all > 0 && hit == all, "{rule}: the kernel's xt_connmark/xt_mark disagree with the expected marks ({hit}/{all})");
        let ours = Netns::new("trours");
        load(&ours, &ours_literal(&f).unwrap());
        let (hit, all) = probe(&ours, *ct, *nf);
        assert!(
            all > 0 && hit == all,
            "{rule}: our translation gave other marks than iptables ({hit}/{all})"
        );
        let theirs = Netns::new("trpeer");
        load(&theirs, &peer(&save));
        let (hit, all) = probe(&theirs, *ct, *nf);
        assert!(all > 0);
        if *peer_wrong {
            assert_eq!(
                hit, 0,
                "{rule}: iptables-restore-translate was expected to be wrong here"
            );
        } else {
            assert_eq!(
                hit, all,
                "{rule}: iptables-restore-translate was expected to be right here"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn uplink_sequence(topo: &mut Topology) -> Vec<usize> {
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let results = topo.traffic(
        Which::Lan,
        &["connect", &format!("{SERVER}:80"), "--count", "20"],
    );
    topo.uplinks_used(&results)
}

#[test]
fn the_seeds_rules_and_their_translated_spec_send_the_same_connections_the_same_way() {
    let seed_sh = repo_root().join("fixtures/legacy/seed.sh");
    let out = translate(&[seed_sh.to_str().unwrap(), "--define", "TABLE1=connection1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = String::from_utf8(out.stdout).unwrap();

    let mut seed = Topology::new(2);
    seed.policy_routing(&[1, 2], 0xffff_ffff);
    let rules = std::fs::read(repo_root().join("fixtures/legacy/seed.rules")).unwrap();
    let out = seed
        .router
        .exec("iptables-legacy-restore", &[], Some(&rules));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = uplink_sequence(&mut seed);
    drop(seed);

    let mut ours = Topology::new(2);
    ours.apply(&spec);
    let mine = uplink_sequence(&mut ours);
    assert_eq!(theirs.len(), 20);
    assert_eq!(theirs, mine, "iptables {theirs:?}\nnftbalance {mine:?}");
    assert!(theirs.contains(&0) && theirs.contains(&1), "{theirs:?}");
}
