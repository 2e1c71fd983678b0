//! The ruleset of `tests/data/seed.nft`, rebuilt with the crate's API, message for message in the
//! order `nft -f` sends it (as shown by `nft --debug=netlink` / `--debug=mnl`).

use nftbalance_nftnl::{
    ct_state, datatype, interval_elements, priority, set_flags, udata_set, value, Batch, ByteOrder,
    ByteorderOp, Chain, ChainType, CmpOp, CtKey, DynsetOp, ElemData, Expr, Family, Hook, Interval,
    IntervalLayout, MetaKey, NatKind, NumgenKind, PayloadBase, Policy, Register, Rule, SetData,
    SetElem, SetRef, SetSpec, Table, Udata, Verdict,
};

pub const TABLE: &str = "nftbalance";
const F: Family = Family::Inet;
const R1: Register = Register::R1;
const R2: Register = Register::R2;

pub fn ct_state_is(mask: u32) -> Vec<Expr> {
    vec![
        Expr::Ct {
            dreg: R1,
            key: CtKey::State,
        },
        Expr::Bitwise {
            sreg: R1,
            dreg: R1,
            mask: value::host_u32(mask),
            xor: value::host_u32(0),
        },
        Expr::Cmp {
            sreg: R1,
            op: CmpOp::Neq,
            data: value::host_u32(0),
        },
    ]
}

fn meta_mark_set_ct_mark() -> Vec<Expr> {
    vec![
        Expr::Ct {
            dreg: R1,
            key: CtKey::Mark,
        },
        Expr::MetaSet {
            sreg: R1,
            key: MetaKey::Mark,
        },
    ]
}

fn ct_mark_nonzero() -> Vec<Expr> {
    vec![
        Expr::Ct {
            dreg: R1,
            key: CtKey::Mark,
        },
        Expr::Cmp {
            sreg: R1,
            op: CmpOp::Neq,
            data: value::host_u32(0),
        },
    ]
}

fn nfproto(p: u8) -> Vec<Expr> {
    vec![
        Expr::Meta {
            dreg: R1,
            key: MetaKey::NfProto,
        },
        Expr::Cmp {
            sreg: R1,
            op: CmpOp::Eq,
            data: vec![p],
        },
    ]
}

fn l4proto(p: u8) -> Vec<Expr> {
    vec![
        Expr::Meta {
            dreg: R1,
            key: MetaKey::L4Proto,
        },
        Expr::Cmp {
            sreg: R1,
            op: CmpOp::Eq,
            data: vec![p],
        },
    ]
}

fn iifname_is(name: &str) -> Vec<Expr> {
    vec![
        Expr::Meta {
            dreg: R1,
            key: MetaKey::IifName,
        },
        Expr::Cmp {
            sreg: R1,
            op: CmpOp::Eq,
            data: value::ifname(name),
        },
    ]
}

fn th_dport(dreg: Register) -> Expr {
    Expr::Payload {
        dreg,
        base: PayloadBase::Transport,
        offset: 2,
        len: 2,
    }
}

fn ip_saddr(dreg: Register) -> Expr {
    Expr::Payload {
        dreg,
        base: PayloadBase::Network,
        offset: 12,
        len: 4,
    }
}

fn lookup(set: &SetRef, dreg: Option<Register>) -> Expr {
    Expr::Lookup {
        sreg: R1,
        dreg,
        set: set.clone(),
        invert: false,
    }
}

fn jump(chain: &str) -> Expr {
    Expr::Verdict(Verdict::Jump(chain.into()))
}

fn cat(parts: Vec<Vec<Expr>>) -> Vec<Expr> {
    parts.into_iter().flatten().collect()
}

fn set_spec(name: &str, flags: u32, key_type: u32, key_len: u32) -> SetSpec {
    SetSpec {
        flags,
        ..SetSpec::new(F, TABLE, name, key_type, key_len)
    }
}

fn mark_pkt(chain: &str, isp: u32, with_ct: bool) -> Vec<Rule> {
    let mut rules = vec![Rule::new(
        F,
        TABLE,
        chain,
        vec![
            Expr::Meta {
                dreg: R1,
                key: MetaKey::Mark,
            },
            Expr::Bitwise {
                sreg: R1,
                dreg: R1,
                mask: value::host_u32(0xffff_00ff),
                xor: value::host_u32(isp << 8),
            },
            Expr::MetaSet {
                sreg: R1,
                key: MetaKey::Mark,
            },
        ],
    )];
    if with_ct {
        rules.push(Rule::new(
            F,
            TABLE,
            chain,
            vec![
                Expr::Ct {
                    dreg: R1,
                    key: CtKey::Mark,
                },
                Expr::Bitwise {
                    sreg: R1,
                    dreg: R1,
                    mask: value::host_u32(0xffff_00ff),
                    xor: value::host_u32(isp << 8),
                },
                Expr::CtSet {
                    sreg: R1,
                    key: CtKey::Mark,
                },
            ],
        ));
    }
    rules
}

struct Builder {
    batch: Batch,
    rule_no: std::collections::HashMap<String, usize>,
}

impl Builder {
    fn rule(&mut self, chain: &str, exprs: Vec<Expr>) {
        let n = self.rule_no.entry(chain.to_owned()).or_default();
        *n += 1;
        let label = format!("chain {chain}, rule {n}");
        self.batch
            .add_rule(&Rule::new(F, TABLE, chain, exprs), label)
            .unwrap();
    }

    fn set(&mut self, spec: SetSpec, elems: &[SetElem]) -> SetRef {
        let r = self
            .batch
            .add_set(&spec, format!("set {}", spec.name))
            .unwrap();
        if !elems.is_empty() {
            self.batch
                .add_elements(F, TABLE, &r, elems, format!("set {} elements", spec.name))
                .unwrap();
        }
        r
    }
}

/// The seed ruleset as a batch (atomic replace of `inet nftbalance`). Long because it is
/// data: every object of `seed.nft`, in its order, written out as `nft --debug=netlink` shows
/// it, so a reader can compare the two side by side.
pub fn seed_batch() -> Batch {
    let mut b = Builder {
        batch: Batch::new(),
        rule_no: Default::default(),
    };
    b.batch
        .replace_table(&Table::new(F, TABLE), "table inet nftbalance")
        .unwrap();

    // chains, in nft's order
    let base =
        |name: &str, t, hook, prio| Chain::base(F, TABLE, name, t, hook, prio, Policy::Accept);
    for c in [
        base(
            "prerouting",
            ChainType::Filter,
            Hook::Prerouting,
            priority::MANGLE,
        ),
        base("output", ChainType::Route, Hook::Output, priority::MANGLE),
        Chain::regular(F, TABLE, "balance"),
        Chain::regular(F, TABLE, "set_pkt_isp1"),
        Chain::regular(F, TABLE, "set_pkt_isp2"),
        base(
            "postrouting",
            ChainType::Nat,
            Hook::Postrouting,
            priority::SRCNAT,
        ),
    ] {
        b.batch.add_chain(&c, format!("chain {}", c.name)).unwrap();
    }

    // named sets and maps
    let big = Udata::new().key_byteorder(ByteOrder::Big).into_bytes();
    let mut s = set_spec("exclude_v4", set_flags::INTERVAL, datatype::IPADDR, 4);
    s.userdata = Some(big.clone());
    let exclude_v4 = b.set(
        s,
        &interval_elements(
            vec![
                Interval::prefix(&[10, 0, 0, 0], 8).unwrap(),
                Interval::prefix(&[192, 168, 0, 0], 16).unwrap(),
            ],
            IntervalLayout::Named,
        )
        .unwrap()
        .elements,
    );

    let mut s = set_spec("exclude_v6", set_flags::INTERVAL, datatype::IP6ADDR, 16);
    s.userdata = Some(big.clone());
    let mut fc00 = [0u8; 16];
    fc00[0] = 0xfc;
    let mut fe80 = [0u8; 16];
    fe80[0] = 0xfe;
    fe80[1] = 0x80;
    let exclude_v6 = b.set(
        s,
        &interval_elements(
            vec![
                Interval::prefix(&fc00, 7).unwrap(),
                Interval::prefix(&fe80, 10).unwrap(),
            ],
            IntervalLayout::Named,
        )
        .unwrap()
        .elements,
    );

    let mut s = set_spec("ingress_mark", set_flags::MAP, datatype::IFNAME, 16);
    s.data = Some(SetData {
        data_type: datatype::MARK,
        data_len: 4,
    });
    s.userdata = Some(
        Udata::new()
            .key_byteorder(ByteOrder::Host)
            .data_byteorder(ByteOrder::Host)
            .data_interval(false)
            .into_bytes(),
    );
    let ingress_mark = b.set(
        s,
        &[
            SetElem::mapping(value::ifname("ppp0"), value::host_u32(1)),
            SetElem::mapping(value::ifname("ppp1"), value::host_u32(2)),
        ],
    );

    let mut s = set_spec("snat_v4", set_flags::MAP, datatype::IFNAME, 16);
    s.data = Some(SetData {
        data_type: datatype::IPADDR,
        data_len: 4,
    });
    s.userdata = Some(
        Udata::new()
            .key_byteorder(ByteOrder::Host)
            .data_byteorder(ByteOrder::Big)
            .data_interval(false)
            .into_bytes(),
    );
    let snat_v4 = b.set(
        s,
        &[
            SetElem::mapping(value::ifname("ppp0"), vec![100, 0, 1, 1]),
            SetElem::mapping(value::ifname("ppp1"), vec![100, 0, 2, 1]),
        ],
    );

    let mut s = set_spec(
        "sticky_v4",
        set_flags::MAP | set_flags::TIMEOUT | set_flags::EVAL,
        datatype::IPADDR,
        4,
    );
    s.data = Some(SetData {
        data_type: datatype::MARK,
        data_len: 4,
    });
    s.timeout_ms = Some(600_000);
    s.userdata = Some(
        Udata::new()
            .key_byteorder(ByteOrder::Big)
            .data_byteorder(ByteOrder::Host)
            .data_interval(false)
            .into_bytes(),
    );
    let sticky_v4 = b.set(s, &[]);

    let mut s = set_spec(
        "seen_v4",
        set_flags::TIMEOUT | set_flags::EVAL,
        datatype::IPADDR,
        4,
    );
    s.timeout_ms = Some(600_000);
    s.userdata = Some(big.clone());
    let seen_v4 = b.set(s, &[]);

    // ---- chain prerouting ----
    b.rule(
        "prerouting",
        cat(vec![
            ct_state_is(ct_state::ESTABLISHED | ct_state::RELATED),
            meta_mark_set_ct_mark(),
        ]),
    );
    b.rule(
        "prerouting",
        cat(vec![
            ct_state_is(ct_state::NEW),
            vec![
                Expr::Meta {
                    dreg: R1,
                    key: MetaKey::IifName,
                },
                lookup(&ingress_mark, Some(R1)),
                Expr::CtSet {
                    sreg: R1,
                    key: CtKey::Mark,
                },
            ],
        ]),
    );
    // tcp dport { 22, 25, 80, 443 }: anonymous constant set
    let mut s = set_spec(
        "__set%d",
        set_flags::ANONYMOUS | set_flags::CONSTANT,
        datatype::INET_SERVICE,
        2,
    );
    s.size = Some(4);
    s.userdata = Some(
        Udata::new()
            .key_byteorder(ByteOrder::Big)
            // typeof: payload expression (7), proto desc th (8), field dport (2)
            .typeof_expr(
                udata_set::KEY_TYPEOF,
                7,
                Udata::new().put_u32(0, 8).put_u32(1, 2),
            )
            .into_bytes(),
    );
    let ports = b.set(
        s,
        &[22u16, 25, 80, 443]
            .iter()
            .map(|p| SetElem::key(value::port(*p)))
            .collect::<Vec<_>>(),
    );
    b.rule(
        "prerouting",
        cat(vec![
            ct_state_is(ct_state::NEW),
            iifname_is("eth0"),
            l4proto(6),
            vec![th_dport(R1), lookup(&ports, None), jump("balance")],
        ]),
    );
    b.rule(
        "prerouting",
        cat(vec![
            ct_state_is(ct_state::NEW),
            iifname_is("eth0"),
            l4proto(17),
            vec![
                th_dport(R1),
                Expr::Cmp {
                    sreg: R1,
                    op: CmpOp::Gte,
                    data: value::port(1000),
                },
                Expr::Cmp {
                    sreg: R1,
                    op: CmpOp::Lte,
                    data: value::port(2000),
                },
            ],
            nfproto(2),
            vec![
                // ip saddr 192.168.1.0/24: nft loads only the 3 prefix bytes
                Expr::Payload {
                    dreg: R1,
                    base: PayloadBase::Network,
                    offset: 12,
                    len: 3,
                },
                Expr::Cmp {
                    sreg: R1,
                    op: CmpOp::Eq,
                    data: vec![192, 168, 1],
                },
                jump("balance"),
            ],
        ]),
    );
    b.rule(
        "prerouting",
        cat(vec![
            ct_state_is(ct_state::NEW),
            ct_mark_nonzero(),
            meta_mark_set_ct_mark(),
        ]),
    );

    // ---- chain output ----
    b.rule(
        "output",
        cat(vec![
            ct_state_is(ct_state::ESTABLISHED | ct_state::RELATED),
            meta_mark_set_ct_mark(),
        ]),
    );
    b.rule(
        "output",
        cat(vec![
            ct_state_is(ct_state::NEW),
            l4proto(6),
            vec![
                th_dport(R1),
                Expr::Cmp {
                    sreg: R1,
                    op: CmpOp::Eq,
                    data: value::port(80),
                },
                jump("balance"),
            ],
        ]),
    );
    b.rule(
        "output",
        cat(vec![
            ct_state_is(ct_state::NEW),
            ct_mark_nonzero(),
            meta_mark_set_ct_mark(),
        ]),
    );

    // ---- chain balance ----
    let ret = || Expr::Verdict(Verdict::Return);
    b.rule(
        "balance",
        cat(vec![
            nfproto(2),
            vec![
                Expr::Payload {
                    dreg: R1,
                    base: PayloadBase::Network,
                    offset: 16,
                    len: 4,
                },
                lookup(&exclude_v4, None),
                ret(),
            ],
        ]),
    );
    b.rule(
        "balance",
        cat(vec![
            nfproto(10),
            vec![
                Expr::Payload {
                    dreg: R1,
                    base: PayloadBase::Network,
                    offset: 24,
                    len: 16,
                },
                lookup(&exclude_v6, None),
                ret(),
            ],
        ]),
    );
    b.rule("balance", cat(vec![ct_mark_nonzero(), vec![ret()]]));
    b.rule(
        "balance",
        cat(vec![
            nfproto(2),
            vec![
                ip_saddr(R1),
                lookup(&sticky_v4, Some(R1)),
                Expr::CtSet {
                    sreg: R1,
                    key: CtKey::Mark,
                },
            ],
        ]),
    );
    b.rule(
        "balance",
        cat(vec![
            nfproto(2),
            vec![
                ip_saddr(R1),
                Expr::Ct {
                    dreg: R2,
                    key: CtKey::Mark,
                },
                Expr::Dynset {
                    op: DynsetOp::Update,
                    sreg_key: R1,
                    sreg_data: Some(R2),
                    set: sticky_v4.clone(),
                    timeout_ms: None,
                },
            ],
        ]),
    );

    // numgen inc mod 6 map { 0-2 : 1, 3-4 : 2, 5 : 3 }
    let int_map_udata = Udata::new()
        .key_byteorder(ByteOrder::Host)
        .data_byteorder(ByteOrder::Host)
        .data_interval(false)
        .into_bytes();
    let anon_interval_map =
        set_flags::ANONYMOUS | set_flags::CONSTANT | set_flags::INTERVAL | set_flags::MAP;
    let mark = |v: u32| ElemData::Value(value::host_u32(v));
    let be = value::be_u32;
    let mut s = set_spec("__map%d", anon_interval_map, datatype::INTEGER, 4);
    s.data = Some(SetData {
        data_type: datatype::MARK,
        data_len: 4,
    });
    s.size = Some(6);
    s.userdata = Some(int_map_udata.clone());
    let m = b.set(
        s,
        &interval_elements(
            vec![
                Interval::inclusive(be(0), &be(2)).with_data(mark(1)),
                Interval::inclusive(be(3), &be(4)).with_data(mark(2)),
                Interval::single(be(5)).with_data(mark(3)),
            ],
            IntervalLayout::Anonymous,
        )
        .unwrap()
        .elements,
    );
    let hton = Expr::Byteorder {
        sreg: R1,
        dreg: R1,
        op: ByteorderOp::Hton,
        len: 4,
        size: 4,
    };
    b.rule(
        "balance",
        vec![
            Expr::Numgen {
                dreg: R1,
                kind: NumgenKind::Inc,
                modulus: 6,
                offset: 0,
            },
            hton.clone(),
            lookup(&m, Some(R1)),
            Expr::CtSet {
                sreg: R1,
                key: CtKey::Mark,
            },
        ],
    );

    // jhash ip saddr mod 3 seed 0x6e667462 map { 0 : 1, 1-2 : 2 }
    let mut s = set_spec("__map%d", anon_interval_map, datatype::INTEGER, 4);
    s.data = Some(SetData {
        data_type: datatype::MARK,
        data_len: 4,
    });
    s.size = Some(4);
    s.userdata = Some(int_map_udata);
    let m = b.set(
        s,
        &interval_elements(
            vec![
                Interval::single(be(0)).with_data(mark(1)),
                Interval::inclusive(be(1), &be(2)).with_data(mark(2)),
            ],
            IntervalLayout::Anonymous,
        )
        .unwrap()
        .elements,
    );
    b.rule(
        "balance",
        cat(vec![
            nfproto(2),
            vec![
                ip_saddr(R2),
                Expr::Jhash {
                    sreg: R2,
                    dreg: R1,
                    len: 4,
                    modulus: 3,
                    seed: Some(0x6e66_7462),
                    offset: 0,
                },
                hton.clone(),
                lookup(&m, Some(R1)),
                Expr::CtSet {
                    sreg: R1,
                    key: CtKey::Mark,
                },
            ],
        ]),
    );

    // ct mark & 0xff00 vmap { 0x100 : jump set_pkt_isp1, 0x200 : jump set_pkt_isp2 }
    let vmap_udata = Udata::new()
        .key_byteorder(ByteOrder::Host)
        .typeof_expr(udata_set::DATA_TYPEOF, 1, Udata::new())
        .data_interval(false)
        .into_bytes();
    let mut s = set_spec(
        "__map%d",
        set_flags::ANONYMOUS | set_flags::CONSTANT | set_flags::MAP,
        datatype::MARK,
        4,
    );
    s.data = Some(SetData::verdict());
    s.size = Some(2);
    s.userdata = Some(vmap_udata.clone());
    let m = b.set(
        s,
        &[
            SetElem::verdict(value::host_u32(0x100), Verdict::Jump("set_pkt_isp1".into())),
            SetElem::verdict(value::host_u32(0x200), Verdict::Jump("set_pkt_isp2".into())),
        ],
    );
    b.rule(
        "balance",
        vec![
            Expr::Ct {
                dreg: R1,
                key: CtKey::Mark,
            },
            Expr::Bitwise {
                sreg: R1,
                dreg: R1,
                mask: value::host_u32(0xff00),
                xor: value::host_u32(0),
            },
            lookup(&m, Some(Register::VERDICT)),
        ],
    );

    // numgen random mod 3 vmap { 0-1 : jump set_pkt_isp1, 2 : goto set_pkt_isp2 }
    let mut s = set_spec("__map%d", anon_interval_map, datatype::INTEGER, 4);
    s.data = Some(SetData::verdict());
    s.size = Some(4);
    s.userdata = Some(vmap_udata);
    let m = b.set(
        s,
        &interval_elements(
            vec![
                Interval::inclusive(be(0), &be(1))
                    .with_data(ElemData::Verdict(Verdict::Jump("set_pkt_isp1".into()))),
                Interval::single(be(2))
                    .with_data(ElemData::Verdict(Verdict::Goto("set_pkt_isp2".into()))),
            ],
            IntervalLayout::Anonymous,
        )
        .unwrap()
        .elements,
    );
    b.rule(
        "balance",
        vec![
            Expr::Numgen {
                dreg: R1,
                kind: NumgenKind::Random,
                modulus: 3,
                offset: 0,
            },
            hton,
            lookup(&m, Some(Register::VERDICT)),
        ],
    );

    // ct mark & 0xff00 == 0x100 update @seen_v4 { ip saddr }
    b.rule(
        "balance",
        cat(vec![
            vec![
                Expr::Ct {
                    dreg: R1,
                    key: CtKey::Mark,
                },
                Expr::Bitwise {
                    sreg: R1,
                    dreg: R1,
                    mask: value::host_u32(0xff00),
                    xor: value::host_u32(0),
                },
                Expr::Cmp {
                    sreg: R1,
                    op: CmpOp::Eq,
                    data: value::host_u32(0x100),
                },
            ],
            nfproto(2),
            vec![
                ip_saddr(R1),
                Expr::Dynset {
                    op: DynsetOp::Update,
                    sreg_key: R1,
                    sreg_data: None,
                    set: seen_v4,
                    timeout_ms: None,
                },
            ],
        ]),
    );

    // ip6 saddr != @exclude_v6 return
    b.rule(
        "balance",
        cat(vec![
            nfproto(10),
            vec![
                Expr::Payload {
                    dreg: R1,
                    base: PayloadBase::Network,
                    offset: 8,
                    len: 16,
                },
                Expr::Lookup {
                    sreg: R1,
                    dreg: None,
                    set: exclude_v6,
                    invert: true,
                },
                ret(),
            ],
        ]),
    );

    // ---- set_pkt_isp1 / set_pkt_isp2 ----
    for r in mark_pkt("set_pkt_isp1", 1, true)
        .into_iter()
        .chain(mark_pkt("set_pkt_isp2", 2, false))
    {
        let chain = r.chain.clone();
        b.rule(&chain, r.exprs);
    }

    // ---- chain postrouting ----
    let oifname = || Expr::Meta {
        dreg: R1,
        key: MetaKey::OifName,
    };
    let snat = |family| Expr::Nat {
        kind: NatKind::Snat,
        family,
        addr_min: Some(R1),
        addr_max: None,
        proto_min: None,
        proto_max: None,
        flags: None,
    };
    b.rule(
        "postrouting",
        vec![oifname(), lookup(&snat_v4, Some(R1)), snat(Family::Ip)],
    );

    let mut s = set_spec(
        "__map%d",
        set_flags::ANONYMOUS | set_flags::CONSTANT | set_flags::MAP,
        datatype::IFNAME,
        16,
    );
    s.data = Some(SetData {
        data_type: datatype::IP6ADDR,
        data_len: 16,
    });
    s.size = Some(1);
    s.userdata = Some(
        Udata::new()
            .key_byteorder(ByteOrder::Host)
            .data_byteorder(ByteOrder::Big)
            .data_interval(false)
            .into_bytes(),
    );
    let mut v6 = [0u8; 16];
    v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    v6[15] = 1;
    let m = b.set(s, &[SetElem::mapping(value::ifname("ppp0"), v6.to_vec())]);
    b.rule(
        "postrouting",
        vec![oifname(), lookup(&m, Some(R1)), snat(Family::Ip6)],
    );

    let mut s = set_spec(
        "__set%d",
        set_flags::ANONYMOUS | set_flags::CONSTANT,
        datatype::IFNAME,
        16,
    );
    s.size = Some(2);
    s.userdata = Some(
        Udata::new()
            .key_byteorder(ByteOrder::Host)
            // typeof: meta expression (9), key oifname (7)
            .typeof_expr(udata_set::KEY_TYPEOF, 9, Udata::new().put_u32(0, 7))
            .into_bytes(),
    );
    let ifs = b.set(
        s,
        &[
            SetElem::key(value::ifname("ppp0")),
            SetElem::key(value::ifname("ppp1")),
        ],
    );
    b.rule(
        "postrouting",
        cat(vec![
            nfproto(10),
            vec![
                oifname(),
                lookup(&ifs, None),
                Expr::Masquerade {
                    flags: None,
                    proto_min: None,
                    proto_max: None,
                },
            ],
        ]),
    );

    b.batch
}

/// The seed file.
pub fn seed_nft() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/seed.nft"))
        .expect("read tests/data/seed.nft")
}
