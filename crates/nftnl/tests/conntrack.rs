//! Conntrack by mark over ctnetlink, in a throwaway namespace: UDP datagrams to different
//! ports create one conntrack entry each, an nft rule gives them connection marks by
//! destination port; then count by mark (exact and masked) and delete one mark only.

use std::net::UdpSocket;

use nftbalance_nftnl::{conntrack, Socket};
use nftbalance_testns::Netns;

const MARKS: &str = "table inet ctmark {
	chain out {
		type filter hook output priority 0; policy accept;
		udp dport 1000-1099 ct mark set 0x1
		udp dport 2000-2099 ct mark set 0x2
		udp dport 3000-3099 ct mark set 0x101
	}
}
";

/// One datagram to each port (each is a new conntrack entry: same source port, new
/// destination port).
fn send(to: &str, ports: std::ops::Range<u16>) {
    let bind = if to.contains(':') {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let s = UdpSocket::bind(bind).expect("bind UDP");
    for p in ports {
        let dst = if to.contains(':') {
            format!("[{to}]:{p}")
        } else {
            format!("{to}:{p}")
        };
        s.send_to(b"x", dst).expect("send UDP");
    }
}

#[test]
fn count_and_delete_conntrack_entries_by_mark() {
    let ns = Netns::new("ct");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.load_nft(MARKS);
    ns.run(|| {
        let s = Socket::open().expect("netfilter socket");
        assert_eq!(
            conntrack::count_by_mark(&s, 0, 0).unwrap(),
            0,
            "fresh namespace"
        );

        send("127.0.0.1", 1000..1004); // mark 1, IPv4
        send("::1", 1000..1002); // mark 1, IPv6
        send("127.0.0.1", 2000..2003); // mark 2
        send("::1", 2000..2001); // mark 2, IPv6
        send("127.0.0.1", 3000..3002); // mark 0x101
        send("127.0.0.1", 4000..4002); // no mark

        let count = |mark, mask| conntrack::count_by_mark(&s, mark, mask).unwrap();
        assert_eq!(count(1, u32::MAX), 6);
        assert_eq!(count(2, u32::MAX), 4);
        assert_eq!(count(0x101, u32::MAX), 2);
        assert_eq!(count(0, u32::MAX), 2, "unmarked entries");
        assert_eq!(count(1, 0xff), 8, "0x1 and 0x101 under mask 0xff");
        assert_eq!(count(0x100, 0xf00), 2);
        assert_eq!(count(0, 0), 14, "everything");

        let e = conntrack::delete_by_mark(&s, 0x100, 0xff).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);

        // delete mark 1 exactly: 0x101 shares the low bits but is another mark
        assert_eq!(conntrack::delete_by_mark(&s, 1, u32::MAX).unwrap(), 6);
        assert_eq!(count(1, u32::MAX), 0);
        assert_eq!(count(2, u32::MAX), 4, "mark 2 entries remain");
        assert_eq!(count(0x101, u32::MAX), 2);
        assert_eq!(count(0, 0), 8);
        assert_eq!(
            conntrack::delete_by_mark(&s, 1, u32::MAX).unwrap(),
            0,
            "twice is fine"
        );

        // masked deletion: everything whose low byte is 2 or 1 (0x101)
        assert_eq!(conntrack::delete_by_mark(&s, 0x1, 0xff).unwrap(), 2);
        assert_eq!(count(0, 0), 6);

        // many entries: more than one batch of deletions
        send("127.0.0.1", 2003..2100);
        send("::1", 2001..2100);
        assert_eq!(count(2, u32::MAX), 4 + 97 + 99);
        assert_eq!(conntrack::delete_by_mark(&s, 2, u32::MAX).unwrap(), 200);
        assert_eq!(count(0, 0), 2, "only the unmarked entries are left");
    });
}
