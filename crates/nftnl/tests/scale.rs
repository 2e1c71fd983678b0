//! Root test: 100k interval prefixes in one set, programmed through the crate (elements split
//! over many NEWSETELEM messages in one batch) and compared with `nft -f` of the same set.
//! Prints both timings (run with `--nocapture` to see them).

use std::fmt::Write;
use std::time::Instant;

use nftbalance_nftnl::{
    datatype, interval_elements, set_flags, Batch, ByteOrder, Commit, Family, Interval,
    IntervalLayout, SetSpec, Socket, Table, Udata,
};
use nftbalance_testns::{assert_same_ruleset, Netns};

const N: u32 = 100_000;

/// 10.0.0.0/30, 10.0.0.8/30, 10.0.0.16/30, ...: disjoint, non-adjacent (each needs a start and
/// an interval-end element: 200,001 elements with the leading zero segment).
fn prefix(i: u32) -> [u8; 4] {
    (0x0a00_0000u32 + i * 8).to_be_bytes()
}

#[test]
fn hundred_thousand_prefixes() {
    let ours = Netns::new("scale-api");
    let reference = Netns::new("scale-nft");

    let (build, send, msgs, bytes) = ours.run(|| {
        let t0 = Instant::now();
        let mut b = Batch::new();
        let table = Table::new(Family::Ip, "big");
        b.replace_table(&table, "table").unwrap();
        let spec = SetSpec {
            flags: set_flags::INTERVAL,
            userdata: Some(Udata::new().key_byteorder(ByteOrder::Big).into_bytes()),
            ..SetSpec::new(Family::Ip, "big", "nets", datatype::IPADDR, 4)
        };
        let set = b.add_set(&spec, "set nets").unwrap();
        let ivs = (0..N)
            .map(|i| Interval::prefix(&prefix(i), 30).unwrap())
            .collect();
        let elems = interval_elements(ivs, IntervalLayout::Named)
            .unwrap()
            .elements;
        assert_eq!(elems.len(), 2 * N as usize + 1);
        b.add_elements(Family::Ip, "big", &set, &elems, "set nets elements")
            .unwrap();
        let build = t0.elapsed();
        let t1 = Instant::now();
        let sock = Socket::open().unwrap();
        b.send(&sock, Commit::Yes, None)
            .unwrap_or_else(|e| panic!("rejected: {e}"));
        (build, t1.elapsed(), b.len(), b.byte_len())
    });

    let mut text = String::from(
        "table ip big\ndelete table ip big\ntable ip big {\n\tset nets {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { ",
    );
    for i in 0..N {
        let p = prefix(i);
        if i > 0 {
            text.push_str(", ");
        }
        write!(text, "{}.{}.{}.{}/30", p[0], p[1], p[2], p[3]).unwrap();
    }
    text.push_str(" }\n\t}\n}\n");
    let t2 = Instant::now();
    reference.load_nft(&text);
    let nft = t2.elapsed();

    eprintln!(
        "100k /30 prefixes: crate build {:?} + send/commit {:?} = {:?} ({} messages, {} bytes); nft -f {:?}",
        build,
        send,
        build + send,
        msgs,
        bytes,
        nft
    );
    assert_same_ruleset(&ours.ruleset_json(), &reference.ruleset_json());
}
