//! Stand-in uplink interfaces for a spec inside a test namespace, so that `nftbalance apply`
//! finds every gateway's interface up and its next hop on a connected subnet (and therefore
//! installs every route and balances over every gateway).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::netns::Netns;

/// Creates a veth (with its peer in the same namespace) per gateway of the spec (JSON text),
/// named as the gateway's interface, up, with addresses next to its `via`/`via6`.
pub fn add_uplinks(ns: &Netns, spec_json: &str) {
    let spec: Value = serde_json::from_str(spec_json).expect("spec JSON");
    let gateways = spec["gateways"].as_array().expect("gateways");
    for (i, g) in gateways.iter().enumerate() {
        let ifname = g["interface"].as_str().expect("interface");
        let peer = format!("nbpeer{i}");
        ns.ok(
            "ip",
            &["link", "add", ifname, "type", "veth", "peer", "name", &peer],
        );
        ns.ok("ip", &["link", "set", &peer, "up"]);
        ns.ok(
            "sysctl",
            &["-qw", &format!("net.ipv6.conf.{ifname}.accept_dad=0")],
        );
        let addr = |key: &str| g[key].as_str().and_then(|s| s.parse::<IpAddr>().ok());
        let mut v4_nets: Vec<Ipv4Addr> = Vec::new();
        if let Some(IpAddr::V4(a)) = addr("address") {
            ns.ok("ip", &["addr", "add", &format!("{a}/24"), "dev", ifname]);
            v4_nets.push(net24(a));
        }
        if let Some(IpAddr::V4(via)) = addr("via") {
            if !v4_nets.contains(&net24(via)) {
                let o = via.octets();
                let host = if o[3] == 250 { 251 } else { 250 };
                let a = Ipv4Addr::new(o[0], o[1], o[2], host);
                ns.ok("ip", &["addr", "add", &format!("{a}/24"), "dev", ifname]);
            }
        }
        if let Some(IpAddr::V6(a)) = addr("address6") {
            ns.ok(
                "ip",
                &["addr", "add", &format!("{a}/64"), "dev", ifname, "nodad"],
            );
        }
        if let Some(IpAddr::V6(via)) = addr("via6") {
            let link_local = via.segments()[0] & 0xffc0 == 0xfe80;
            let covered = matches!(addr("address6"), Some(IpAddr::V6(a)) if a.segments()[..4] == via.segments()[..4]);
            if !link_local && !covered {
                let s = via.segments();
                let a = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0xfa);
                ns.ok(
                    "ip",
                    &["addr", "add", &format!("{a}/64"), "dev", ifname, "nodad"],
                );
            }
        }
        ns.ok("ip", &["link", "set", ifname, "up"]);
    }
}

fn net24(a: Ipv4Addr) -> Ipv4Addr {
    let o = a.octets();
    Ipv4Addr::new(o[0], o[1], o[2], 0)
}
