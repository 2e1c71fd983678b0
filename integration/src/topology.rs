//! A namespaced multi-uplink network: LAN hosts, the router, one namespace per upstream
//! provider, and a server reachable through every provider. Built by `Topology::new`, torn
//! down on drop (helpers killed first, then every namespace), also when a test panics.
//!
//! ```text
//!  lan (192.168.1.10-19)
//!    eth0 ── eth0 router ppp0 ── rtr isp1 wan ── isp1 ┐
//!                        ppp1 ── rtr isp2 wan ── isp2 ├ server 198.51.100.10, .20
//!                        ppp2 ── rtr isp3 wan ── isp3 ┘        2001:db8:ff::10
//! ```
//! Uplink i (from 1): router 100.0.i.1/24 and 2001:db8:i::1/64, provider 100.0.i.254 and
//! 2001:db8:i::ff. Providers drop packets from the router whose source is not in that
//! uplink's prefix (ingress filtering, as real providers do) and count them.
//! `Topology::with_next_hops` gives uplinks other next hops, possibly the same one on several
//! uplinks (two LTE dongles that both hand out the same router address).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};

use crate::netns::{Netns, PATH};

pub const SERVER: &str = "198.51.100.10";
/// A second server address, used as an excluded destination.
pub const SERVER_EXCLUDED: &str = "198.51.100.20";
pub const SERVER6: &str = "2001:db8:ff::10";
pub const LAN_ROUTER: &str = "192.168.1.1";
pub const LAN_ROUTER6: &str = "fd00:1::1";

/// LAN host addresses (one namespace, several addresses: several hosts for the balancer).
pub fn lan_hosts() -> Vec<IpAddr> {
    (10..20)
        .map(|h| IpAddr::V4(Ipv4Addr::new(192, 168, 1, h)))
        .collect()
}

pub fn lan_hosts6() -> Vec<IpAddr> {
    (0x10..0x20)
        .map(|h| format!("fd00:1::{h:x}").parse().unwrap())
        .collect()
}

#[derive(Debug, Clone)]
pub struct Uplink {
    /// The router's interface name (`ppp0`, `ppp1`, ...).
    pub interface: String,
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub address6: String,
    pub gateway6: String,
    /// The IPv4 sources the provider accepts from the router (its ingress filter) and the
    /// server routes back through this provider: `100.0.i.0/24`, or the router's address
    /// alone when several uplinks share a subnet.
    pub source_net: String,
}

#[derive(Debug)]
pub struct Topology {
    pub router: Netns,
    pub lan: Netns,
    pub server: Netns,
    pub isps: Vec<Netns>,
    pub uplinks: Vec<Uplink>,
    helpers: Vec<Child>,
}

/// The traffic helper binary.
pub fn nbtraffic() -> String {
    crate::target_binary("nbtraffic")
}

impl Topology {
    /// Builds the network with `n` uplinks (1 to 9).
    pub fn new(n: usize) -> Topology {
        assert!((1..=9).contains(&n));
        let hops: Vec<Ipv4Addr> = (1..=n as u8)
            .map(|i| Ipv4Addr::new(100, 0, i, 254))
            .collect();
        Topology::with_next_hops(&hops)
    }

    /// Builds the network with one uplink per next hop. A next hop in `100.0.i.0/24` (uplink
    /// i, from 1) gives the usual uplink; any other next hop `a.b.c.d` is the provider's
    /// address on a `/24` where the router has `a.b.c.(100 + i)`, so next hops may repeat
    /// (the same address on different interfaces). IPv6 is as in [`Topology::new`].
    pub fn with_next_hops(next_hops: &[Ipv4Addr]) -> Topology {
        let n = next_hops.len();
        assert!((1..=9).contains(&n));
        let router = Netns::new("rtr");
        let lan = Netns::new("lan");
        let server = Netns::new("srv");
        let isps: Vec<Netns> = (1..=n).map(|i| Netns::new(&format!("isp{i}"))).collect();
        let uplinks: Vec<Uplink> = (1..=n)
            .map(|i| {
                let hop = next_hops[i - 1];
                let [a, b, c, _] = hop.octets();
                let (address, source_net) = if [a, b, c] == [100, 0, i as u8] {
                    (Ipv4Addr::new(100, 0, i as u8, 1), format!("100.0.{i}.0/24"))
                } else {
                    let address = Ipv4Addr::new(a, b, c, 100 + i as u8);
                    (address, format!("{address}/32"))
                };
                Uplink {
                    interface: format!("ppp{}", i - 1),
                    address,
                    gateway: hop,
                    address6: format!("2001:db8:{i}::1"),
                    gateway6: format!("2001:db8:{i}::ff"),
                    source_net,
                }
            })
            .collect();
        let topo = Topology {
            router,
            lan,
            server,
            isps,
            uplinks,
            helpers: Vec::new(),
        };
        topo.wire();
        topo
    }

    /// Sysctls, then the LAN, the server and each uplink: one piece each.
    fn wire(&self) {
        let r = &self.router;
        for ns in [r, &self.server].into_iter().chain(&self.isps) {
            for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
                ns.ok("sysctl", &["-qw", key]);
            }
        }
        // The router's replies arrive on the uplink their connection uses, which the main
        // table does not point at; strict reverse-path filtering would drop them.
        for key in [
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            r.ok("sysctl", &["-qw", key]);
        }

        self.wire_lan();
        self.wire_server();
        for k in 0..self.isps.len() {
            self.wire_uplink(k);
        }
        let first = &self.uplinks[0];
        r.ok(
            "ip",
            &[
                "route",
                "add",
                "default",
                "via",
                &first.gateway.to_string(),
                "dev",
                &first.interface,
            ],
        );
        r.ok(
            "ip",
            &["-6", "route", "add", "default", "via", &first.gateway6],
        );
    }

    /// LAN <-> router, addresses and default routes of the LAN hosts.
    fn wire_lan(&self) {
        let (r, lan) = (&self.router, &self.lan);
        // LAN <-> router.
        lan.ok(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                r.name(),
            ],
        );
        r.cmd("ip addr add 192.168.1.1/24 dev eth0");
        r.cmd("ip addr add fd00:1::1/64 dev eth0 nodad");
        r.cmd("ip link set eth0 up");
        for h in lan_hosts() {
            lan.ok("ip", &["addr", "add", &format!("{h}/24"), "dev", "eth0"]);
        }
        for h in lan_hosts6() {
            lan.ok(
                "ip",
                &["addr", "add", &format!("{h}/64"), "dev", "eth0", "nodad"],
            );
        }
        lan.cmd("ip link set eth0 up");
        lan.cmd("ip route add default via 192.168.1.1");
        lan.cmd("ip -6 route add default via fd00:1::1");
    }

    fn wire_server(&self) {
        let srv = &self.server;
        // Server addresses.
        for a in [SERVER, SERVER_EXCLUDED] {
            srv.ok("ip", &["addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        srv.ok(
            "ip",
            &["addr", "add", &format!("{SERVER6}/128"), "dev", "lo"],
        );
    }

    /// Router <-> provider `k`, provider <-> server.
    /// Router <-> provider `k`, provider <-> server, the routes between them and the
    /// provider's ingress filter.
    fn wire_uplink(&self, k: usize) {
        let (r, srv) = (&self.router, &self.server);
        let (isp, up) = (&self.isps[k], &self.uplinks[k]);
        let (i, dev) = (k + 1, &up.interface);
        // router <-> provider
        let (provider, server) = (isp.name(), srv.name());
        r.cmd(&format!(
            "ip link add {dev} type veth peer name rtr netns {provider}"
        ));
        r.cmd(&format!("ip addr add {}/24 dev {dev}", up.address));
        r.cmd(&format!("ip addr add {}/64 dev {dev} nodad", up.address6));
        r.cmd(&format!("ip link set {dev} up"));
        isp.cmd(&format!("ip addr add {}/24 dev rtr", up.gateway));
        isp.cmd(&format!("ip addr add {}/64 dev rtr nodad", up.gateway6));
        isp.cmd("ip link set rtr up");
        // provider <-> server
        isp.cmd(&format!(
            "ip link add wan type veth peer name isp{i} netns {server}"
        ));
        isp.cmd(&format!("ip addr add 172.31.{i}.1/30 dev wan"));
        isp.cmd(&format!("ip addr add 2001:db8:f{i}::1/64 dev wan nodad"));
        isp.cmd("ip link set wan up");
        srv.cmd(&format!("ip addr add 172.31.{i}.2/30 dev isp{i}"));
        srv.cmd(&format!("ip addr add 2001:db8:f{i}::2/64 dev isp{i} nodad"));
        srv.cmd(&format!("ip link set isp{i} up"));
        isp.cmd(&format!("ip route add 198.51.100.0/24 via 172.31.{i}.2"));
        isp.cmd(&format!(
            "ip -6 route add 2001:db8:ff::/64 via 2001:db8:f{i}::2"
        ));
        srv.cmd(&format!("ip route add {} via 172.31.{i}.1", up.source_net));
        srv.cmd(&format!(
            "ip -6 route add 2001:db8:{i}::/64 via 2001:db8:f{i}::1"
        ));
        // Ingress filtering: only this uplink's addresses may come from the router.
        let bcp38 = format!(
            "table inet bcp38 {{\n chain forward {{ type filter hook forward priority 0;\n  \
             iifname \"rtr\" ip saddr != {} counter drop\n  \
             iifname \"rtr\" ip6 saddr != 2001:db8:{i}::/64 counter drop\n }}\n}}\n",
            up.source_net
        );
        isp.load_nft(&bcp38);
    }

    /// Per-uplink tables and rules set by hand, the way `nftbalance apply` sets them (local
    /// destinations first, then fwmark, then from): for routers whose rules nftbalance does
    /// not load (the seed's own iptables rules, the benchmark's baselines).
    pub fn policy_routing(&self, marks: &[u32], mask: u32) {
        let ip = |args: &[&str]| self.router.ok("ip", args);
        for v in ["-4", "-6"] {
            ip(&[
                v,
                "rule",
                "add",
                "priority",
                "1000",
                "lookup",
                "main",
                "suppress_prefixlength",
                "0",
            ]);
        }
        for (k, (up, mark)) in self.uplinks.iter().zip(marks).enumerate() {
            let table = (101 + k).to_string();
            let fwmark = format!("{mark:#x}/{mask:#x}");
            let (prio, from_prio) = ((1001 + k).to_string(), (1101 + k).to_string());
            for (v, gateway, address) in [
                ("-4", up.gateway.to_string(), up.address.to_string()),
                ("-6", up.gateway6.clone(), up.address6.clone()),
            ] {
                ip(&[
                    v,
                    "route",
                    "add",
                    "default",
                    "via",
                    &gateway,
                    "dev",
                    &up.interface,
                    "table",
                    &table,
                ]);
                ip(&[
                    v, "rule", "add", "priority", &prio, "fwmark", &fwmark, "lookup", &table,
                ]);
                ip(&[
                    v, "rule", "add", "priority", &from_prio, "from", &address, "lookup", &table,
                ]);
            }
        }
    }

    /// `nftbalance apply` of a spec (JSON text) on the router.
    pub fn apply(&self, spec_json: &str) {
        self.apply_with(Backend::Nftables, spec_json);
    }

    /// `nftbalance apply --backend ...` of a spec (JSON text) on the router.
    pub fn apply_with(&self, backend: Backend, spec_json: &str) {
        let backend = match backend {
            Backend::Nftables => "nftables",
            Backend::IptablesLegacy => "iptables-legacy",
        };
        let out = self.router.exec(
            &crate::target_binary("nftbalance"),
            &["apply", "--backend", backend, "-"],
            Some(spec_json.as_bytes()),
        );
        assert!(
            out.status.success(),
            "nftbalance apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the traffic helper's server in a namespace; returns once it listens.
    pub fn serve(&mut self, ns: Which, addr: &str, udp: bool) {
        let child = serve_in(self.ns(ns), addr, udp);
        self.helpers.push(child);
    }

    pub fn ns(&self, which: Which) -> &Netns {
        match which {
            Which::Router => &self.router,
            Which::Lan => &self.lan,
            Which::Server => &self.server,
            Which::Isp(i) => &self.isps[i],
        }
    }

    /// Runs the traffic helper's client in a namespace; returns its JSON lines.
    pub fn traffic(&self, ns: Which, args: &[&str]) -> Vec<serde_json::Value> {
        let out = self.ns(ns).exec(&nbtraffic(), args, None);
        assert!(
            out.status.success(),
            "nbtraffic {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    /// Starts the traffic helper's client in the background (for long-lived streams).
    pub fn spawn_traffic(&self, ns: Which, args: &[&str]) -> TrafficRun {
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns(ns).name(), &nbtraffic()])
            .args(args)
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nbtraffic");
        TrafficRun { child: Some(child) }
    }

    /// Which uplink (index) a server-seen source address belongs to.
    pub fn uplink_of(&self, seen: &str) -> Option<usize> {
        self.uplinks
            .iter()
            .position(|u| u.address.to_string() == seen || u.address6 == seen)
    }

    /// The uplink (index) of each connection of a traffic run, in order; panics on a failed
    /// connection or a source address that is no uplink's.
    pub fn uplinks_used(&self, results: &[serde_json::Value]) -> Vec<usize> {
        results
            .iter()
            .map(|r| {
                assert_eq!(r["ok"], true, "connection failed: {r}");
                let seen = r["seen"].as_str().expect("the address the server saw");
                self.uplink_of(seen)
                    .unwrap_or_else(|| panic!("server saw {seen}, not an uplink address"))
            })
            .collect()
    }

    /// Packets each provider dropped for a source address that is not its uplink's.
    pub fn ingress_drops(&self) -> Vec<u64> {
        self.isps
            .iter()
            .map(|isp| isp.rule_counters(&["table", "inet", "bcp38"]).iter().sum())
            .collect()
    }
}

/// Starts the traffic helper's server in `ns`; returns once it listens.
pub fn serve_in(ns: &Netns, addr: &str, udp: bool) -> Child {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name(), &nbtraffic(), "serve", addr]);
    if udp {
        cmd.arg("--udp");
    }
    let mut child = cmd
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nbtraffic serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "nbtraffic serve {addr} did not start");
    child
}

/// A background traffic run; killed if dropped before `finish`.
#[derive(Debug)]
pub struct TrafficRun {
    child: Option<Child>,
}

impl TrafficRun {
    /// Waits for the run and returns its JSON lines.
    pub fn finish(mut self) -> Vec<serde_json::Value> {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nbtraffic: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }
}

impl Drop for TrafficRun {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Which ruleset backend the router uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nftables,
    IptablesLegacy,
}

#[derive(Debug, Clone, Copy)]
pub enum Which {
    Router,
    Lan,
    Server,
    Isp(usize),
}

impl Drop for Topology {
    fn drop(&mut self) {
        for c in &mut self.helpers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
