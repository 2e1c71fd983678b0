//! The network side an mwan3 file does not hold (devices, addresses, next hops, routing
//! tables, local prefixes), given as `--define` items: `IFACE.KEY=VALUE` per mwan3 interface,
//! `exclude=PREFIX[,PREFIX...]` for the whole spec.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use nftbalance_spec::name;

use crate::uci::show;
use crate::Mwan3Error;

/// The keys an interface takes, for `--help` and messages.
pub const IFACE_KEYS: &str = "device, address, via, address6, via6, table";

/// What the user told us about one mwan3 interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfaceNet {
    pub device: Option<String>,
    pub address: Option<Ipv4Addr>,
    pub via: Option<Ipv4Addr>,
    pub address6: Option<Ipv6Addr>,
    pub via6: Option<Ipv6Addr>,
    pub table: Option<u32>,
}

/// Every `--define`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    /// By mwan3 interface name (the UCI section name).
    pub ifaces: BTreeMap<String, IfaceNet>,
    /// Destinations never balanced (mwan3 finds connected networks at run time).
    pub exclude: Vec<IpNet>,
}

impl Network {
    pub fn iface(&self, name: &str) -> IfaceNet {
        self.ifaces.get(name).cloned().unwrap_or_default()
    }
}

/// Parses `--define` items. Whether each interface exists is checked against the file.
pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Network, Mwan3Error> {
    let mut net = Network::default();
    for item in items {
        let item = item.as_ref();
        let fail = |message: String| Mwan3Error::Define {
            item: show(item),
            message,
        };
        let Some((key, value)) = item.split_once('=') else {
            return Err(fail(
                "expected IFACE.KEY=VALUE or exclude=PREFIX[,PREFIX]".into(),
            ));
        };
        if key == "exclude" {
            for p in value.split(',').filter(|p| !p.is_empty()) {
                net.exclude.push(prefix(p).map_err(fail)?);
            }
            continue;
        }
        let Some((iface, field)) = key.rsplit_once('.') else {
            return Err(fail(format!(
                "{} is not IFACE.KEY (keys: {IFACE_KEYS}) or exclude",
                show(key)
            )));
        };
        let entry = net.ifaces.entry(iface.to_string()).or_default();
        set(entry, field, value).map_err(fail)?;
    }
    Ok(net)
}

fn set(entry: &mut IfaceNet, field: &str, value: &str) -> Result<(), String> {
    let v4 =
        |v: &str| Ipv4Addr::from_str(v).map_err(|_| format!("{} is not an IPv4 address", show(v)));
    let v6 =
        |v: &str| Ipv6Addr::from_str(v).map_err(|_| format!("{} is not an IPv6 address", show(v)));
    match field {
        "device" => {
            name::interface(value).map_err(|e| format!("{} {e}", show(value)))?;
            entry.device = Some(value.to_string());
        }
        "address" => entry.address = Some(v4(value)?),
        "via" => entry.via = Some(v4(value)?),
        "address6" => entry.address6 = Some(v6(value)?),
        "via6" => entry.via6 = Some(v6(value)?),
        "table" => {
            let t: u32 = value
                .parse()
                .map_err(|_| format!("{} is not a routing table number", show(value)))?;
            if matches!(t, 0 | 253..=255) {
                return Err(format!(
                    "{t} is one of the kernel's own tables; use another"
                ));
            }
            entry.table = Some(t);
        }
        other => {
            return Err(format!(
                "{} is not a key; use one of {IFACE_KEYS}",
                show(other)
            ))
        }
    }
    Ok(())
}

/// A prefix or address, with host bits cleared as iptables clears them.
pub fn prefix(s: &str) -> Result<IpNet, String> {
    let net = if s.contains('/') {
        IpNet::from_str(s).ok()
    } else {
        IpAddr::from_str(s).ok().map(IpNet::from)
    };
    net.map(|n| n.trunc())
        .ok_or_else(|| format!("{} is not an address or prefix", show(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defines() {
        let n = parse(&[
            "wan.device=eth1",
            "wan.via=100.64.0.1",
            "wan6.via6=fe80::1",
            "wan.table=7",
            "exclude=192.168.1.0/24,fd00::/8",
        ])
        .unwrap();
        let wan = n.iface("wan");
        assert_eq!(wan.device.as_deref(), Some("eth1"));
        assert_eq!(wan.table, Some(7));
        assert_eq!(n.iface("wan6").via6, Some("fe80::1".parse().unwrap()));
        assert_eq!(n.exclude.len(), 2);
        for bad in [
            "wan",
            "wan.device=eth0;drop",
            "wan.device=\"x\"",
            "wan.via=fe80::1",
            "wan.table=254",
            "wan.colour=red",
            "nokey=1",
            "exclude=10.0.0.0/33",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
    }
}
