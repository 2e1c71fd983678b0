//! Root test of `nftbalance_netlink::lower`: every fixture spec, compiled and lowered to one
//! netlink batch, programs exactly the ruleset that `nft -f` of its golden dump programs; the
//! replace is idempotent; foreign tables are never touched; the delete batch is idempotent.

use std::path::{Path, PathBuf};

use nftbalance_netlink::lower::{delete_batch, replace_batch};
use nftbalance_netlink::{Batch, Commit, Socket};
use nftbalance_ruleset::{compile, Ruleset};
use nftbalance_spec::Spec;
use nftbalance_testns::{assert_same_ruleset, Netns};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// (name, spec path) of every `fixtures/specs/*.json`, sorted.
fn fixture_specs() -> Vec<(String, PathBuf)> {
    let dir = fixtures().join("specs");
    let mut specs: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    specs.sort();
    assert!(
        specs.len() >= 9,
        "expected the fixture specs in {}",
        dir.display()
    );
    specs
}

fn ruleset_of(json: &str, what: &str) -> Ruleset {
    let spec = Spec::from_json(json).unwrap_or_else(|e| panic!("{what}: invalid spec: {e}"));
    compile(&spec)
}

fn send(ns: &Netns, batch: &Batch, what: &str) {
    ns.run(|| {
        let sock = Socket::open().expect("open netlink socket");
        batch
            .send(&sock, Commit::Yes, None)
            .unwrap_or_else(|e| panic!("{what}: batch rejected: {e}"));
    });
}

/// `nft --debug=netlink list ruleset`: every rule's expressions at register level and every
/// set's elements as the kernel holds them, with handles removed (header lines of rules end
/// in their handle and position) and the elements of each set sorted (hash sets list in hash
/// order, which depends on a per-set random seed).
fn kernel_listing(ns: &Netns) -> Vec<String> {
    let out = ns.nft(&["--debug=netlink", "list", "ruleset"]);
    let mut lines: Vec<String> = Vec::new();
    let mut elements: Vec<String> = Vec::new();
    for l in out.lines() {
        if l.starts_with("\telement ") {
            elements.push(l.to_owned());
            continue;
        }
        elements.sort();
        lines.append(&mut elements);
        if l.starts_with(char::is_alphabetic) && !l.contains('@') && !l.starts_with("table ") {
            lines.push(l.split(' ').take(3).collect::<Vec<_>>().join(" "));
        } else {
            lines.push(l.to_owned());
        }
    }
    elements.sort();
    lines.append(&mut elements);
    lines
}

/// Panics with the lines only one side has if the listings differ.
fn assert_same_lines(what: &str, ours: &[String], nft: &[String]) {
    if ours != nft {
        let only = |a: &[String], b: &[String]| -> Vec<String> {
            a.iter().filter(|l| !b.contains(l)).cloned().collect()
        };
        let first = ours.iter().zip(nft).position(|(a, b)| a != b);
        panic!(
            "{what}: kernel objects differ (first at line {first:?})\n--- only ours ---\n{}\n--- only nft ---\n{}\n--- ours around the first difference ---\n{}",
            only(ours, nft).join("\n"),
            only(nft, ours).join("\n"),
            ours.iter()
                .skip(first.unwrap_or(0).saturating_sub(12))
                .take(24)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Programs `rs` through the batch in one namespace and `nft_text` with `nft -f` in another,
/// and asserts both hold the same ruleset.
fn assert_lowering_matches_nft(what: &str, rs: &Ruleset, nft_text: &str) {
    let ours = Netns::new("lower-api");
    let reference = Netns::new("lower-nft");
    let batch = replace_batch(rs).unwrap_or_else(|e| panic!("{what}: lowering failed: {e}"));
    send(&ours, &batch, what);
    reference.load_nft(nft_text);

    let json = ours.ruleset_json();
    assert_same_ruleset(&json, &reference.ruleset_json());
    assert_eq!(ours.ruleset_text(), reference.ruleset_text(), "{what}");
    assert_same_lines(what, &kernel_listing(&ours), &kernel_listing(&reference));

    // The replace is atomic and idempotent: sending it again gives the same ruleset.
    send(&ours, &replace_batch(rs).unwrap(), what);
    assert_same_ruleset(&ours.ruleset_json(), &json);
}

#[test]
fn every_fixture_matches_nft_of_its_dump() {
    for (name, path) in fixture_specs() {
        let json = std::fs::read_to_string(&path).unwrap();
        let rs = ruleset_of(&json, &name);
        let dump = fixtures().join("dump").join(format!("{name}.nft"));
        let text = std::fs::read_to_string(&dump)
            .unwrap_or_else(|e| panic!("read {}: {e}", dump.display()));
        assert_lowering_matches_nft(&name, &rs, &text);
    }
}

/// Constructs the fixtures do not reach: `ip6` tables, IPv6 sticky sets and `jhash ip6 saddr`
/// vmaps, non-byte-aligned and `/0` prefixes, open port ranges, dual-stack source hash with
/// IPv6 masquerade, `meta l4proto` with an address, narrow masks in `ip` tables.
const EXTRA_SPECS: &[(&str, &str)] = &[
    (
        "ip6-sticky-hash-mask",
        r#"{
          "table": "v6bal", "family": "ip6", "mark_mask": "0xff00",
          "gateways": [
            { "name": "a", "interface": "wan0", "mark": "0x100", "weight": 1,
              "address6": "2001:db8:1::10", "route_table": 101 },
            { "name": "b", "interface": "wan1", "mark": "0x200", "weight": 2, "route_table": 102 },
            { "name": "c", "interface": "wan2", "mark": "0x300", "weight": 1, "route_table": 103 }
          ],
          "balance": {
            "method": "source-hash", "hash_seed": 42, "sticky": { "timeout": "90s" },
            "forward": [
              { "iif": "lan0", "protocol": "udp", "dports": [53, "60000-65535"],
                "saddr": ["2001:db8:aa::/47", "2001:db8:ab::5"], "daddr": "2001:db8:ff00::/41" },
              { "protocol": "tcp", "daddr": ["2001:db8:cc::/64"], "gateway": "c" }
            ],
            "local": [ { "protocol": "udp", "dports": ["1000-2000"], "gateway": "a" } ],
            "exclude": [ "fc00::/7", "2001:db8:100::1" ]
          }
        }"#,
    ),
    (
        "inet-dual-hash-sticky",
        r#"{
          "gateways": [
            { "name": "a", "interface": "wan0", "mark": 1, "address": "192.0.2.1",
              "address6": "2001:db8:1::10", "route_table": 101 },
            { "name": "b", "interface": "wan1", "mark": 2, "via6": "fe80::1", "route_table": 102 },
            { "name": "c", "interface": "wan2", "mark": 3, "route_table": 103 }
          ],
          "balance": {
            "method": "source-hash", "sticky": { "timeout": "1d" },
            "forward": [
              { "iif": "lan0", "saddr": ["10.1.0.0/16", "10.3.0.7", "2001:db8:aa::/48"],
                "daddr": ["0.0.0.0/0", "::/0"] },
              { "iif": "lan0", "protocol": "tcp",
                "dports": [22, 80, 443, 8443, "9000-9100", 9200, 9300, 9400, 9500],
                "saddr": "10.8.0.0/13", "gateway": "b" }
            ],
            "local": [ {} ],
            "exclude": [ "10.0.0.0/8", "10.255.0.0/16", "fe80::/10", "::1", "128.0.0.0/1" ]
          }
        }"#,
    ),
    (
        "ip-random-narrow-mask",
        r#"{
          "table": "t", "family": "ip", "mark_mask": "0x0f", "snat": true,
          "gateways": [
            { "name": "a", "interface": "wan0", "mark": 1, "weight": 3, "route_table": 101 },
            { "name": "b", "interface": "wan1", "mark": 2, "address": "198.51.100.1",
              "route_table": 102 }
          ],
          "balance": {
            "method": "random",
            "forward": [ { "iif": "lan0", "protocol": "tcp", "dports": ["1-65535"],
                           "daddr": ["203.0.113.0/25", "203.0.113.128/25", "198.18.0.0/15"] } ],
            "local": [ { "protocol": "udp", "saddr": "192.168.7.7", "gateway": "a" } ]
          }
        }"#,
    ),
    (
        "ip6-no-snat-one-gateway",
        r#"{
          "family": "ip6", "snat": false,
          "gateways": [ { "name": "only", "interface": "wan0", "mark": 7, "route_table": 101 } ],
          "balance": { "forward": [ { "iif": "lan0", "saddr": "::/0" } ],
                       "local": [ { "protocol": "tcp", "dports": [443, 80] } ] }
        }"#,
    ),
];

#[test]
fn extra_specs_match_nft_of_their_dump() {
    for (name, json) in EXTRA_SPECS {
        let rs = ruleset_of(json, name);
        let text = nftbalance_ruleset::nft::render(&rs);
        assert_lowering_matches_nft(name, &rs, &text);
    }
}

const FOREIGN: &str = "\
table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname \"lo\" accept
		tcp dport 22 counter accept
	}
}
table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname \"eth9\" masquerade
	}
}
";

#[test]
fn foreign_tables_are_untouched_and_delete_is_idempotent() {
    let ns = Netns::new("lower-foreign");
    ns.load_nft(FOREIGN);
    let before = ns.ruleset_text();
    assert!(before.contains("table ip nat") && before.contains("table inet filter"));

    // Deleting a table that does not exist succeeds and changes nothing.
    let del = delete_batch(nftbalance_spec::Family::Inet, "nftbalance").unwrap();
    send(&ns, &del, "delete (absent)");
    assert_eq!(ns.ruleset_text(), before);

    let seed = std::fs::read_to_string(fixtures().join("specs/seed.json")).unwrap();
    let rs = ruleset_of(&seed, "seed");
    send(&ns, &replace_batch(&rs).unwrap(), "replace");
    send(&ns, &replace_batch(&rs).unwrap(), "replace again");
    let with_ours = ns.ruleset_text();
    assert!(with_ours.contains("table inet nftbalance"), "{with_ours}");
    // Ours is appended after the foreign tables, which are byte-identical.
    assert!(
        with_ours.starts_with(&before),
        "foreign tables changed:\n--- before ---\n{before}\n--- after ---\n{with_ours}"
    );
    assert_eq!(with_ours.matches("table inet nftbalance").count(), 1);

    send(&ns, &del, "delete");
    assert_eq!(ns.ruleset_text(), before, "delete left something behind");
    send(&ns, &del, "delete again");
    assert_eq!(ns.ruleset_text(), before);

    // Same for an ip table with a name of a foreign table in another family.
    let local = std::fs::read_to_string(fixtures().join("specs/local-only.json")).unwrap();
    let rs = ruleset_of(&local, "local-only");
    send(&ns, &replace_batch(&rs).unwrap(), "replace local-only");
    assert!(ns.ruleset_text().starts_with(&before));
    send(
        &ns,
        &delete_batch(rs.family, &rs.table).unwrap(),
        "delete local-only",
    );
    assert_eq!(ns.ruleset_text(), before);
}

#[test]
fn labels_name_every_object() {
    let seed = std::fs::read_to_string(fixtures().join("specs/seed.json")).unwrap();
    let batch = replace_batch(&ruleset_of(&seed, "seed")).unwrap();
    let labels: Vec<&str> = batch.labels().collect();
    for expected in [
        "table inet nftbalance (ensure)",
        "table inet nftbalance (delete)",
        "table inet nftbalance",
        "chain prerouting",
        "chain balance",
        "set exclude_v4",
        "map ingress_mark",
        "map snat_v4",
        "chain balance, rule 3: ct mark set numgen inc mod 2 map { 0 : 0x00000001, 1 : 0x00000002 }",
        "chain balance, rule 3: ct mark set numgen inc mod 2 map { 0 : 0x00000001, 1 : 0x00000002 } (anonymous map)",
        "chain prerouting, rule 3: ct state new iifname \"eth0\" tcp dport { 22, 25, 80, 443 } jump balance (anonymous set)",
    ] {
        assert!(labels.contains(&expected), "no label {expected:?} in {labels:#?}");
    }
    // a kernel refusal names the rule: jump to a chain that does not exist
    let ns = Netns::new("lower-label");
    let mut rs = ruleset_of(&seed, "seed");
    rs.chains.retain(|c| c.name != "balance");
    let err = ns.run(|| {
        let sock = Socket::open().unwrap();
        replace_batch(&rs)
            .unwrap()
            .send(&sock, Commit::Yes, None)
            .expect_err("jump to a missing chain must be refused")
    });
    let text = err.to_string();
    assert!(
        text.contains("chain prerouting, rule 3: ct state new iifname \"eth0\" tcp dport"),
        "{text}"
    );
    assert_eq!(ns.ruleset_text(), "", "refused batch changed the ruleset");
}

/// The object messages of the batch `nft -f <text>` sends, captured with strace in a fresh
/// namespace (each message as sent; nft's batch carries no generation id, like ours).
fn nft_wire_messages(text: &str) -> Vec<Vec<u8>> {
    let ns = Netns::new("lower-wire");
    let dir = std::env::temp_dir();
    let script = dir.join(format!("{}.nft", ns.name()));
    let trace = dir.join(format!("{}.strace", ns.name()));
    std::fs::write(&script, text).unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "strace", "-e", "trace=sendmsg"])
        .args(["-e", "write=all", "-s", "0", "-o"])
        .arg(&trace)
        .args(["nft", "-f"])
        .arg(&script)
        .output()
        .expect("run strace (the wire test needs the strace package)");
    assert!(
        out.status.success(),
        "strace nft -f failed (the wire test needs the strace package): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = std::fs::read_to_string(&trace).unwrap();
    let _ = std::fs::remove_file(script);
    let _ = std::fs::remove_file(trace);

    // Hex dump lines (" | 00000  14 00 00 00 ...  ascii |") of every sendmsg buffer.
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for line in dump.lines() {
        if line.contains("sendmsg(") {
            sent.push(Vec::new());
        } else if let (Some(buf), Some(hex)) = (sent.last_mut(), line.strip_prefix(" | ")) {
            let hex = &hex[7..hex.len().min(7 + 49)];
            buf.extend(
                hex.split_whitespace()
                    .map(|b| u8::from_str_radix(b, 16).expect("hex byte")),
            );
        }
    }
    let batch = sent
        .into_iter()
        .find(|b| b.len() >= 20 && u16::from_ne_bytes([b[4], b[5]]) == 0x10)
        .expect("nft sent no batch");
    let mut msgs = split_messages(&batch);
    // drop batch begin and end
    assert_eq!(u16::from_ne_bytes([msgs[0][4], msgs[0][5]]), 0x10);
    assert_eq!(
        u16::from_ne_bytes([msgs.last().unwrap()[4], msgs.last().unwrap()[5]]),
        0x11
    );
    msgs.remove(0);
    msgs.pop();
    msgs
}

/// Netlink messages of a buffer, with the sequence number zeroed.
fn split_messages(mut buf: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
        assert!(
            len >= 16 && len <= buf.len(),
            "bad netlink message length {len}"
        );
        let mut m = buf[..len].to_vec();
        m[8..12].fill(0);
        out.push(m);
        buf = &buf[(len + 3) & !3..];
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| {
            c.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A netlink attribute: its type (with the nested flag) and its payload including the padding,
/// or its attributes if nested.
#[derive(Debug, PartialEq, Eq)]
enum Attr {
    Leaf(u16, Vec<u8>),
    Nest(u16, Vec<Attr>),
}

const NLA_F_NESTED: u16 = 0x8000;

/// The attributes of `buf`, stably sorted by type at every level: nft writes some attributes
/// itself, in another order than libnftnl's builders (which the kernel does not care about),
/// while repeated attributes (list elements: set elements, expressions) keep their order.
fn attrs(mut buf: &[u8]) -> Vec<Attr> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]);
        assert!(len >= 4 && len <= buf.len(), "bad attribute length {len}");
        let padded = ((len + 3) & !3).min(buf.len());
        out.push(if ty & NLA_F_NESTED != 0 {
            Attr::Nest(ty, attrs(&buf[4..len]))
        } else {
            Attr::Leaf(ty, buf[4..padded].to_vec())
        });
        buf = &buf[padded..];
    }
    out.sort_by_key(|a| match a {
        Attr::Leaf(t, _) | Attr::Nest(t, _) => *t,
    });
    out
}

/// A message as (header, attributes): the netlink header with length and sequence number zeroed and
/// `NLM_F_CREATE` cleared on `NFT_MSG_NEWTABLE` (nft sends `table x` without it, the crate's
/// `add_table` with it; the kernel creates a missing table either way), and the nfgenmsg.
fn message(m: &[u8]) -> ([u8; 20], Vec<Attr>) {
    let mut hdr: [u8; 20] = m[..20].try_into().unwrap();
    hdr[..4].fill(0); // length: the attributes are compared
    if u16::from_ne_bytes([hdr[4], hdr[5]]) == (10 << 8) {
        let flags = u16::from_ne_bytes([hdr[6], hdr[7]]) & !0x400;
        hdr[6..8].copy_from_slice(&flags.to_ne_bytes());
    }
    let mut attrs = attrs(&m[20..]);
    default_bitwise_op(&mut attrs);
    (hdr, attrs)
}

/// nft sends `NFTA_BITWISE_OP = NFT_BITWISE_BOOL` (attribute 6, 0) for `&`/`|` expressions
/// but not for `ct state` flag tests; the crate's `Expr::Bitwise` never sends it. Absent,
/// the kernel uses `NFT_BITWISE_BOOL`, so both are the same expression: drop it.
fn default_bitwise_op(attrs: &mut [Attr]) {
    for a in attrs.iter_mut() {
        if let Attr::Nest(_, inner) = a {
            let is_bitwise = inner
                .iter()
                .any(|x| matches!(x, Attr::Leaf(1, name) if name.starts_with(b"bitwise\0")));
            if is_bitwise {
                for x in inner.iter_mut() {
                    if let Attr::Nest(t, data) = x {
                        if *t & !NLA_F_NESTED == 2 {
                            data.retain(|d| *d != Attr::Leaf(6, vec![0; 4]));
                        }
                    }
                }
            }
            default_bitwise_op(inner);
        }
    }
}

/// Our batch and nft's for the same ruleset are the same messages, byte for byte (sequence
/// numbers aside): same order, attributes, set ids, flags, sizes and userdata.
fn assert_same_wire(what: &str, rs: &Ruleset, nft_text: &str) {
    let batch = replace_batch(rs).unwrap();
    let ours = split_messages(&batch.encode(0, Commit::Yes, None));
    let ours = &ours[1..ours.len() - 1];
    let labels: Vec<&str> = batch.labels().collect();
    let theirs = nft_wire_messages(nft_text);
    let diffs: Vec<String> = ours
        .iter()
        .zip(&theirs)
        .enumerate()
        .filter(|(_, (a, b))| message(a) != message(b))
        .map(|(i, (a, b))| {
            format!(
                "message {i} ({}):\n--- ours ---\n{}\n--- nft ---\n{}",
                labels[i],
                hex(a),
                hex(b)
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: {} of {} messages differ from nft's\n{}",
        diffs.len(),
        ours.len(),
        diffs.join("\n")
    );
    assert_eq!(ours.len(), theirs.len(), "{what}: message counts differ");
}

#[test]
fn batches_are_byte_identical_to_nft() {
    for (name, path) in fixture_specs() {
        let rs = ruleset_of(&std::fs::read_to_string(&path).unwrap(), &name);
        let text =
            std::fs::read_to_string(fixtures().join("dump").join(format!("{name}.nft"))).unwrap();
        assert_same_wire(&name, &rs, &text);
    }
    for (name, json) in EXTRA_SPECS {
        let rs = ruleset_of(json, name);
        assert_same_wire(name, &rs, &nftbalance_ruleset::nft::render(&rs));
    }
}
