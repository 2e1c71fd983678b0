//! Network-namespace lab for the probe tests. Every test builds its own namespaces
//! (`nftbalance_testns::Netns`, deleted on drop, also when the test panics); nothing is
//! changed in the root namespace. Tests fail loudly without root; they never skip.
//!
//! ```text
//!            up1 10.1.0.1 ─── dn 10.1.0.2 [p1] srv 10.3.1.1 ─── s1 10.3.1.2
//!  [router]                                                           [server] lo 10.9.9.9
//!            up2 10.2.0.1 ─── dn 10.2.0.2 [p2] srv 10.3.2.1 ─── s2 10.3.2.2      fd00:9::9
//! ```
//! IPv6 alongside: fd00:<i>::1/2 on the uplinks, fd00:3:<i>::1/2 between provider and server.
//! The router has no default route in main: `fwmark i lookup 10i`, table 10i has the default
//! route via provider i (IPv4 and IPv6). Providers forward 10.9.9.0/24 and fd00:9::/64 to the
//! server (which owns only .9 / ::9, so .10 / ::10 are silent black holes) and count what they
//! forward to 10.9.9.9 / fd00:9::9 in the named counter `inet probe to_server`. The server
//! listens on TCP 8080 (IPv4 and IPv6).
#![allow(dead_code)]

use std::net::TcpListener;

use nftbalance_testns::Netns;

/// The router, two providers and a server (see the module docs).
#[derive(Debug)]
pub struct Lab {
    pub router: Netns,
    pub providers: [Netns; 2],
    pub server: Netns,
    _listeners: Vec<TcpListener>,
}

pub const SERVER4: &str = "10.9.9.9";
pub const SERVER6: &str = "fd00:9::9";
/// Routed to the server, which does not own it and does not forward: a silent black hole.
pub const DEAD4: &str = "10.9.9.10";
pub const DEAD6: &str = "fd00:9::10";
pub const PORT: u16 = 8080;

impl Lab {
    pub fn new() -> Lab {
        let router = Netns::new("rtr");
        let providers = [Netns::new("isp1"), Netns::new("isp2")];
        let server = Netns::new("srv");
        for ns in [&router, &providers[0], &providers[1], &server] {
            // no duplicate address detection: otherwise the link-local addresses stay
            // tentative for ~2 s and neighbour discovery from addresses not on the link
            // (the server's loopback address) stalls until then; static IPv6 addresses survive
            // a link going down (by default the kernel flushes them, and nobody here re-adds
            // them as a network manager would)
            ns.sysctl(&[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.keep_addr_on_down=1",
                "net.ipv6.conf.default.keep_addr_on_down=1",
            ]);
        }
        router.sysctl(&[
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ]);
        server.cmd("ip addr add 10.9.9.9/32 dev lo");
        server.cmd("ip addr add fd00:9::9/128 dev lo nodad");
        for (k, p) in providers.iter().enumerate() {
            let i = k + 1;
            router.cmd(&format!(
                "ip link add up{i} type veth peer name dn netns {}",
                p.name()
            ));
            p.cmd(&format!(
                "ip link add srv type veth peer name s{i} netns {}",
                server.name()
            ));
            router.cmd(&format!("ip addr add 10.{i}.0.1/24 dev up{i}"));
            router.cmd(&format!("ip addr add fd00:{i}::1/64 dev up{i} nodad"));
            p.cmd(&format!("ip addr add 10.{i}.0.2/24 dev dn"));
            p.cmd(&format!("ip addr add fd00:{i}::2/64 dev dn nodad"));
            p.cmd(&format!("ip addr add 10.3.{i}.1/24 dev srv"));
            p.cmd(&format!("ip addr add fd00:3:{i}::1/64 dev srv nodad"));
            server.cmd(&format!("ip addr add 10.3.{i}.2/24 dev s{i}"));
            server.cmd(&format!("ip addr add fd00:3:{i}::2/64 dev s{i} nodad"));
            router.cmd(&format!("ip link set up{i} up"));
            p.cmd("ip link set dn up");
            p.cmd("ip link set srv up");
            server.cmd(&format!("ip link set s{i} up"));
            p.sysctl(&["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
            p.cmd(&format!("ip route add 10.9.9.0/24 via 10.3.{i}.2"));
            p.cmd(&format!("ip -6 route add fd00:9::/64 via fd00:3:{i}::2"));
            server.cmd(&format!("ip route add 10.{i}.0.0/24 via 10.3.{i}.1"));
            server.cmd(&format!("ip -6 route add fd00:{i}::/64 via fd00:3:{i}::1"));
            let table = 100 + i;
            router.cmd(&format!(
                "ip route add default via 10.{i}.0.2 dev up{i} table {table}"
            ));
            router.cmd(&format!(
                "ip -6 route add default via fd00:{i}::2 dev up{i} table {table}"
            ));
            router.cmd(&format!("ip rule add fwmark {i} lookup {table}"));
            router.cmd(&format!("ip -6 rule add fwmark {i} lookup {table}"));
            p.load_nft(
                "table inet probe {\n\
                 \tcounter to_server { }\n\
                 \tchain tally {\n\
                 \t\ttype filter hook forward priority 0; policy accept;\n\
                 \t\tip daddr 10.9.9.9 counter name \"to_server\"\n\
                 \t\tip6 daddr fd00:9::9 counter name \"to_server\"\n\
                 \t}\n\
                 \tchain cut {\n\
                 \t\ttype filter hook forward priority 10; policy accept;\n\
                 \t}\n\
                 }\n",
            );
        }
        let listeners = server.run(|| {
            vec![
                TcpListener::bind((SERVER4, PORT)).expect("listen 10.9.9.9:8080"),
                TcpListener::bind((SERVER6, PORT)).expect("listen [fd00:9::9]:8080"),
            ]
        });
        Lab {
            router,
            providers,
            server,
            _listeners: listeners,
        }
    }

    /// Packets provider `i` (1 or 2) forwarded to the server address so far.
    pub fn forwarded(&self, i: usize) -> u64 {
        let text = self.providers[i - 1].nft(&["list", "counter", "inet", "probe", "to_server"]);
        let after = text
            .split("packets ")
            .nth(1)
            .unwrap_or_else(|| panic!("no packet count in {text}"));
        after
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad packet count in {text}"))
    }

    /// Provider `i` drops everything it would forward (after counting it); its links stay up.
    pub fn provider_drops_all(&self, i: usize) {
        self.providers[i - 1].nft(&["add", "rule", "inet", "probe", "cut", "drop"]);
    }

    /// Provider `i` forwards again.
    pub fn provider_forwards(&self, i: usize) {
        self.providers[i - 1].nft(&["flush", "chain", "inet", "probe", "cut"]);
    }
}
