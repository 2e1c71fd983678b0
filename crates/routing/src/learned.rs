//! What an uplink's interface says about itself, for gateways whose spec leaves `address` or
//! `via` out (a DHCP or PPP uplink whose address and next hop change with every lease or
//! dial). Plain data and the pure choice of a gateway's values; [`Learned::read`] (in `live`)
//! fills it from the kernel.
//!
//! * `address` (IPv4): the interface's primary address (the first global, non-secondary one).
//! * `via` (IPv4): the peer address of a point-to-point address (`ip addr add A peer P`, as
//!   pppd sets it), else the next hop of a default route in the main table on that interface
//!   that nftbalance did not install (a DHCP client's, pppd's `defaultroute`), the lowest
//!   metric first; else nothing, and the route stays dev-only as without `via`.
//!
//! A value written in the spec always wins; IPv6 values are never learned.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use nftbalance_spec::Gateway;

/// What one interface says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LearnedUplink {
    /// The primary IPv4 address.
    pub address: Option<Ipv4Addr>,
    /// The peer of that address, when it is a point-to-point address.
    pub peer: Option<Ipv4Addr>,
    /// The next hop of the main table's default route on the interface (not ours).
    pub default_via: Option<Ipv4Addr>,
}

/// Learned facts by interface name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    by_interface: BTreeMap<String, LearnedUplink>,
}

impl Learned {
    pub fn insert(&mut self, interface: impl Into<String>, uplink: LearnedUplink) {
        self.by_interface.insert(interface.into(), uplink);
    }

    pub fn get(&self, interface: &str) -> Option<&LearnedUplink> {
        self.by_interface.get(interface)
    }

    /// The gateway's IPv4 address: the spec's, else the interface's primary address.
    pub fn address(&self, g: &Gateway) -> Option<Ipv4Addr> {
        g.address
            .or_else(|| self.get(&g.interface).and_then(|u| u.address))
    }

    /// The gateway's IPv4 next hop: the spec's, else the interface's point-to-point peer,
    /// else its default route's next hop; None means a dev-only route.
    pub fn via(&self, g: &Gateway) -> Option<Ipv4Addr> {
        g.via.or_else(|| {
            self.get(&g.interface)
                .and_then(|u| u.peer.or(u.default_via))
        })
    }

    /// One line per gateway whose values are learned, for logs: `isp2: address 100.0.2.50,
    /// via 100.0.2.200 (learned from ppp1)`; "not learned yet" where the interface says
    /// nothing.
    pub fn describe(&self, gateways: &[Gateway]) -> Vec<String> {
        gateways
            .iter()
            .filter(|g| g.address.is_none() || g.via.is_none())
            .map(|g| {
                let show =
                    |a: Option<Ipv4Addr>| a.map_or("not learned yet".into(), |a| a.to_string());
                format!(
                    "{}: address {}, via {} (learned from {})",
                    g.name,
                    show(self.address(g)),
                    show(self.via(g)),
                    g.interface
                )
            })
            .collect()
    }

    /// Only the interfaces of these gateways whose values are learned: two reads compare
    /// equal when nothing a plan depends on changed.
    pub fn of(&self, gateways: &[Gateway]) -> Learned {
        let mut out = Learned::default();
        for g in gateways
            .iter()
            .filter(|g| g.address.is_none() || g.via.is_none())
        {
            if let Some(u) = self.get(&g.interface) {
                out.insert(g.interface.clone(), u.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(address: Option<&str>, via: Option<&str>) -> Gateway {
        let mut json = String::from(
            r#"{"gateways":[{"name":"isp1","interface":"ppp0","mark":1,"route_table":101"#,
        );
        if let Some(a) = address {
            json.push_str(&format!(r#","address":"{a}""#));
        }
        if let Some(v) = via {
            json.push_str(&format!(r#","via":"{v}""#));
        }
        json.push_str(r#"}],"balance":{"forward":[{"iif":"eth0"}]}}"#);
        nftbalance_spec::Spec::from_json(&json).unwrap().gateways[0].clone()
    }

    fn learned(address: Option<&str>, peer: Option<&str>, default_via: Option<&str>) -> Learned {
        let ip = |s: Option<&str>| s.map(|s| s.parse().unwrap());
        let mut l = Learned::default();
        l.insert(
            "ppp0",
            LearnedUplink {
                address: ip(address),
                peer: ip(peer),
                default_via: ip(default_via),
            },
        );
        l
    }

    #[test]
    fn the_spec_wins_over_what_is_learned() {
        let g = gateway(Some("100.0.1.1"), Some("100.0.1.254"));
        let l = learned(Some("10.0.0.1"), Some("10.0.0.2"), Some("10.0.0.3"));
        assert_eq!(l.address(&g), Some("100.0.1.1".parse().unwrap()));
        assert_eq!(l.via(&g), Some("100.0.1.254".parse().unwrap()));
        assert!(l.describe(std::slice::from_ref(&g)).is_empty());
    }

    #[test]
    fn a_point_to_point_peer_comes_before_a_default_route() {
        let g = gateway(None, None);
        let l = learned(Some("10.0.0.1"), Some("10.0.0.2"), Some("10.0.0.3"));
        assert_eq!(l.address(&g), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(l.via(&g), Some("10.0.0.2".parse().unwrap()));
        let l = learned(Some("10.0.0.1"), None, Some("10.0.0.3"));
        assert_eq!(l.via(&g), Some("10.0.0.3".parse().unwrap()));
    }

    #[test]
    fn nothing_learned_means_no_address_and_a_dev_only_route() {
        let g = gateway(None, None);
        let l = Learned::default();
        assert_eq!((l.address(&g), l.via(&g)), (None, None));
        assert_eq!(
            l.describe(std::slice::from_ref(&g)),
            ["isp1: address not learned yet, via not learned yet (learned from ppp0)"]
        );
    }
}
