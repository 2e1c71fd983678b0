//! Root test: `table ip` and `table ip6` (no nfproto guards, family-specific payload offsets)
//! programmed through the crate match `nft -f` of the same text.

use nftbalance_nftnl::{
    datatype, interval_elements, priority, set_flags, value, Batch, ByteOrder, Chain, ChainType,
    CmpOp, Commit, Expr, Family, Hook, Interval, IntervalLayout, MetaKey, NatKind, PayloadBase,
    Policy, Register, Rule, SetSpec, Socket, Table, Udata, Verdict,
};
use nftbalance_testns::{assert_same_ruleset, Netns};

const R1: Register = Register::R1;

fn program(ns: &Netns, batch: Batch) {
    ns.run(move || {
        let sock = Socket::open().expect("socket");
        batch
            .send(&sock, Commit::Yes, None)
            .unwrap_or_else(|e| panic!("batch rejected: {e}"));
    });
}

/// `saddr @set accept; daddr <addr> counter drop; mark 0x2a masquerade` in one family. Long
/// because it is data: each object written out as `nft --debug=netlink` shows it.
fn family_batch(family: Family, table: &str, addr_len: u32) -> Batch {
    let (saddr_off, daddr_off, key_type, prefixes, daddr): (u32, u32, u32, Vec<Interval>, Vec<u8>) =
        if family == Family::Ip {
            (
                12,
                16,
                datatype::IPADDR,
                vec![
                    Interval::prefix(&[172, 16, 0, 0], 12).unwrap(),
                    Interval::prefix(&[198, 51, 100, 0], 24).unwrap(),
                ],
                vec![192, 0, 2, 1],
            )
        } else {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            let mut b = a;
            b[4] = 0x12;
            let mut d = a;
            d[15] = 1;
            (
                8,
                24,
                datatype::IP6ADDR,
                vec![
                    Interval::prefix(&b, 48).unwrap(),
                    Interval::prefix(&[0xfd; 16], 8).unwrap(),
                ],
                d.to_vec(),
            )
        };
    let mut b = Batch::new();
    b.replace_table(&Table::new(family, table), "table")
        .unwrap();
    b.add_chain(
        &Chain::base(
            family,
            table,
            "in",
            ChainType::Filter,
            Hook::Input,
            priority::FILTER,
            Policy::Drop,
        ),
        "chain in",
    )
    .unwrap();
    b.add_chain(
        &Chain::base(
            family,
            table,
            "post",
            ChainType::Nat,
            Hook::Postrouting,
            priority::SRCNAT,
            Policy::Accept,
        ),
        "chain post",
    )
    .unwrap();
    let spec = SetSpec {
        flags: set_flags::INTERVAL,
        userdata: Some(Udata::new().key_byteorder(ByteOrder::Big).into_bytes()),
        ..SetSpec::new(family, table, "allowed", key_type, addr_len)
    };
    let set = b.add_set(&spec, "set allowed").unwrap();
    b.add_elements(
        family,
        table,
        &set,
        &interval_elements(prefixes, IntervalLayout::Named)
            .unwrap()
            .elements,
        "set allowed elements",
    )
    .unwrap();
    let payload = |offset| Expr::Payload {
        dreg: R1,
        base: PayloadBase::Network,
        offset,
        len: addr_len,
    };
    b.add_rule(
        &Rule::new(
            family,
            table,
            "in",
            vec![
                payload(saddr_off),
                Expr::Lookup {
                    sreg: R1,
                    dreg: None,
                    set,
                    invert: false,
                },
                Expr::Verdict(Verdict::Accept),
            ],
        ),
        "rule 1",
    )
    .unwrap();
    b.add_rule(
        &Rule::new(
            family,
            table,
            "in",
            vec![
                payload(daddr_off),
                Expr::Cmp {
                    sreg: R1,
                    op: CmpOp::Eq,
                    data: daddr,
                },
                Expr::Counter,
                Expr::Verdict(Verdict::Drop),
            ],
        ),
        "rule 2",
    )
    .unwrap();
    b.add_rule(
        &Rule::new(
            family,
            table,
            "post",
            vec![
                Expr::Meta {
                    dreg: R1,
                    key: MetaKey::Mark,
                },
                Expr::Cmp {
                    sreg: R1,
                    op: CmpOp::Eq,
                    data: value::host_u32(0x2a),
                },
                Expr::Masquerade {
                    flags: None,
                    proto_min: None,
                    proto_max: None,
                },
            ],
        ),
        "rule 3",
    )
    .unwrap();
    // snat to a constant address: immediate into r1 + nat
    let (nat_family, to) = if family == Family::Ip {
        (Family::Ip, vec![203, 0, 113, 7])
    } else {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[15] = 7;
        (Family::Ip6, a.to_vec())
    };
    b.add_rule(
        &Rule::new(
            family,
            table,
            "post",
            vec![
                Expr::Meta {
                    dreg: R1,
                    key: MetaKey::OifName,
                },
                Expr::Cmp {
                    sreg: R1,
                    op: CmpOp::Eq,
                    data: value::ifname("ppp0"),
                },
                Expr::Immediate { dreg: R1, data: to },
                Expr::Nat {
                    kind: NatKind::Snat,
                    family: nat_family,
                    addr_min: Some(R1),
                    addr_max: None,
                    proto_min: None,
                    proto_max: None,
                    flags: None,
                },
            ],
        ),
        "rule 4",
    )
    .unwrap();
    b
}

const IP_NFT: &str = r#"table ip t4
delete table ip t4
table ip t4 {
	set allowed {
		type ipv4_addr
		flags interval
		elements = { 172.16.0.0/12, 198.51.100.0/24 }
	}
	chain in {
		type filter hook input priority filter; policy drop;
		ip saddr @allowed accept
		ip daddr 192.0.2.1 counter drop
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		meta mark 0x2a masquerade
		oifname "ppp0" snat to 203.0.113.7
	}
}
"#;

const IP6_NFT: &str = r#"table ip6 t6
delete table ip6 t6
table ip6 t6 {
	set allowed {
		type ipv6_addr
		flags interval
		elements = { 2001:db8:1200::/48, fd00::/8 }
	}
	chain in {
		type filter hook input priority filter; policy drop;
		ip6 saddr @allowed accept
		ip6 daddr 2001:db8::1 counter drop
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		meta mark 0x2a masquerade
		oifname "ppp0" snat to 2001:db8::7
	}
}
"#;

#[test]
fn table_ip_matches_nft() {
    let ours = Netns::new("ip-api");
    let reference = Netns::new("ip-nft");
    program(&ours, family_batch(Family::Ip, "t4", 4));
    reference.load_nft(IP_NFT);
    assert_same_ruleset(&ours.ruleset_json(), &reference.ruleset_json());
}

#[test]
fn table_ip6_matches_nft() {
    let ours = Netns::new("ip6-api");
    let reference = Netns::new("ip6-nft");
    program(&ours, family_batch(Family::Ip6, "t6", 16));
    reference.load_nft(IP6_NFT);
    assert_same_ruleset(&ours.ruleset_json(), &reference.ruleset_json());
}
