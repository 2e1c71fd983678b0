//! Hostile input: garbage, huge files and generated configurations with hostile names and
//! values never panic, and whatever is imported is a spec the spec crate accepts, whose
//! names are all valid (nothing from the input reaches generated text unchecked).

use nftbalance_mwan3::{import, network, uci, Mwan3Error, Network};
use nftbalance_spec::{name, Spec};
use proptest::prelude::*;

/// Values meant to break out of nft, iptables or JSON text, or to overflow a parser.
const HOSTILE: &[&str] = &[
    "wan",
    "1",
    "0",
    "",
    "'",
    "\"",
    "\\",
    "x\" } table ip evil { chain c { drop; }",
    "$(reboot)",
    "`id`",
    "a;b",
    "eth0 drop",
    "0x3F00",
    "4294967296",
    "-1",
    "1.1.1.1",
    "2001:db8::1",
    "1.1.1.1,::1",
    "10.0.0.1/8",
    "0.0.0.0/0",
    "65536",
    "1:2:3",
    "tcp",
    "icmp",
    "all",
    "ipv4",
    "ipv6",
    "default",
    "unreachable",
    "blackhole",
    "balanced",
    "3g",
    "a_name_that_is_much_longer_than_thirty_two_characters",
    "counter",
    "\u{202e}rtl",
];

const KINDS: &[&str] = &["globals", "interface", "member", "policy", "rule", "junk"];
const OPTIONS: &[&str] = &[
    "enabled",
    "track_ip",
    "track_method",
    "reliability",
    "count",
    "timeout",
    "interval",
    "up",
    "down",
    "check_quality",
    "failure_latency",
    "failure_loss",
    "recovery_latency",
    "recovery_loss",
    "family",
    "flush_conntrack",
    "interface",
    "metric",
    "weight",
    "use_member",
    "last_resort",
    "use_policy",
    "src_ip",
    "dest_ip",
    "proto",
    "dest_port",
    "src_port",
    "src_iface",
    "ipset",
    "sticky",
    "mmx_mask",
    "logging",
    "httping_ssl",
];
const NAMES: &[&str] = &[
    "wan",
    "wanb",
    "3g",
    "m1",
    "m2",
    "balanced",
    "default",
    "counter",
    "x_123456789012345678901234567890",
];

/// One value in UCI single quotes (a quote inside becomes `'\''`, as uci export writes it).
fn quoted(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

fn config() -> impl Strategy<Value = String> {
    let option = (any::<bool>(), 0..OPTIONS.len(), 0..HOSTILE.len()).prop_map(|(list, o, v)| {
        let cmd = if list { "list" } else { "option" };
        format!("\t{cmd} {} {}\n", OPTIONS[o], quoted(HOSTILE[v]))
    });
    let section = (
        0..KINDS.len(),
        0..NAMES.len(),
        prop::collection::vec(option, 0..8),
    )
        .prop_map(|(k, n, opts)| {
            format!(
                "config {} {}\n{}",
                KINDS[k],
                quoted(NAMES[n]),
                opts.concat()
            )
        });
    prop::collection::vec(section, 0..12).prop_map(|s| s.concat())
}

fn check(text: &str, net: &Network) {
    match import("f", text, net) {
        Ok(imp) => {
            let json = serde_json::to_string(&imp.spec).unwrap();
            assert_eq!(Spec::from_json(&json).as_ref(), Ok(&imp.spec));
            for g in &imp.spec.gateways {
                assert!(name::identifier(&g.name, 32).is_ok(), "{}", g.name);
                assert!(name::interface(&g.interface).is_ok(), "{}", g.interface);
            }
            for p in imp.spec.policies.keys() {
                assert!(name::identifier(p, 32).is_ok(), "{p}");
            }
            let _ = imp.report.to_string();
        }
        Err(Mwan3Error::Spec(e)) => panic!("importer built an invalid spec from {text:?}:\n{e}"),
        Err(e) => {
            let m = e.to_string();
            assert!(
                m.starts_with("f:") || m.contains("\nf:"),
                "no place in {m:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn generated_configurations_never_panic(text in config()) {
        let net = network::parse(&["wan.device=eth1", "wanb.device=eth2"]).unwrap();
        check(&text, &net);
    }

    #[test]
    fn garbage_never_panics(text in "[a-z '\"\\\\#;\\n\\t\\r0-9.:/_-]{0,400}") {
        check(&text, &Network::default());
    }
}

#[test]
fn a_file_past_the_limit_is_refused_with_its_place() {
    let big = "#".repeat(uci::MAX_INPUT + 1);
    let e = import("f", &big, &Network::default())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("f:1: the file is longer than"), "{e}");
}

#[test]
fn a_large_file_is_read_in_bounded_time() {
    // 1 MiB of rules (about 10,000) and as many re-opened sections, a hundred times a large
    // real configuration: read, mapped and checked by the spec parser as one.
    let mut text = String::from("config interface wan\n option enabled 1\nconfig member m\n option interface wan\nconfig policy p\n list use_member m\n");
    let mut n = 0;
    while text.len() < 1024 * 1024 {
        text.push_str(&format!("config rule r{n}\n option dest_ip '10.{}.{}.0/24'\n option use_policy p\nconfig member m\n option weight {}\n", n / 256 % 256, n % 256, n % 9 + 1));
        n += 1;
    }
    let start = std::time::Instant::now();
    let imp = import("f", &text, &Network::default()).unwrap();
    assert_eq!(imp.spec.balance.forward.len(), n);
    // Generous: about a second here (opt-level 2 in test builds).
    assert!(start.elapsed().as_secs() < 60, "{:?}", start.elapsed());
}

#[test]
fn unterminated_quotes_and_endless_continuations_end_with_an_error() {
    for text in [
        "config a b\noption x '",
        "config a b\noption x \"\\",
        &"\\\n".repeat(100_000),
        &"'".repeat(100_001),
    ] {
        check(text, &Network::default());
    }
}
