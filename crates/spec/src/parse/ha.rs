//! The `ha` section (issue 20): the router pair, its sync link and VRRP instances. Checked
//! against the gateways, so every floating address and probe source names a real uplink.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde_json::Value;

use super::{index, show, Cx, NAME_MAX};
use crate::model::{Family, Gateway, Ha, HaNode, VrrpInstance};

/// keepalived's VRRPv3 interval bounds: 10 ms steps up to 40.95 s; below 100 ms a busy
/// router misses adverts and both nodes become master.
const ADVERT_MIN_MS: u64 = 100;
const ADVERT_MAX_MS: u64 = 40_950;
pub(crate) const DEFAULT_ADVERT_MS: u32 = 1000;
/// More instances than a pair has interfaces would be a mistake, not a design.
const MAX_INSTANCES: usize = 16;
/// keepalived's limit on virtual addresses per instance is far higher; this keeps a spec sane.
pub(crate) const MAX_ADDRESSES: usize = 64;

impl Cx<'_> {
    pub(super) fn ha(
        &mut self,
        v: &Value,
        path: &str,
        family: Family,
        gateways: Option<&[Gateway]>,
    ) -> Option<Ha> {
        let obj = self.object(
            v,
            path,
            &[
                "nodes",
                "sync_interface",
                "instances",
                "advert_interval",
                "preempt",
            ],
        )?;
        if !family.has_ipv4() {
            self.err(
                path,
                "the pair floats IPv4 addresses; use family inet or ip",
            );
        }
        let nodes = self
            .required(&obj, "nodes")
            .and_then(|(v, p)| self.ha_nodes(v, &p, gateways));
        let sync_interface = self
            .required(&obj, "sync_interface")
            .and_then(|(v, p)| self.interface(v, &p));
        let instances = self
            .required(&obj, "instances")
            .and_then(|(v, p)| self.vrrp_instances(v, &p, gateways));
        let advert_interval_ms = match obj.field("advert_interval") {
            None => Some(DEFAULT_ADVERT_MS),
            Some((v, p)) => self.advert_interval(v, &p),
        };
        let preempt = match obj.field("preempt") {
            None => Some(false),
            Some((v, p)) => self.bool(v, &p),
        };
        let (nodes, sync_interface, instances) = (nodes?, sync_interface?, instances?);
        // Checked before the scalar fields are given up on, so one mistake hides no other.
        self.ha_cross_checks(&nodes, &sync_interface, &instances, path, gateways);
        Some(Ha {
            nodes,
            sync_interface,
            instances,
            advert_interval_ms: advert_interval_ms?,
            preempt: preempt?,
        })
    }

    /// A required `name`: as a gateway's.
    fn required_name(&mut self, obj: &super::Obj<'_>) -> Option<String> {
        let (v, p) = self.required(obj, "name")?;
        let s = self.string(v, &p)?;
        self.identifier(&s, &p, NAME_MAX)
    }

    /// A number from 1 to `max` (at most 255).
    fn byte(&mut self, v: &Value, path: &str, max: u8, what: &str) -> Option<u8> {
        let n = self.u32(v, path)?;
        match u8::try_from(n) {
            Ok(b) if (1..=max).contains(&b) => Some(b),
            _ => {
                self.err(path, format!("{n} is out of range: use 1 to {max}{what}"));
                None
            }
        }
    }

    fn advert_interval(&mut self, v: &Value, path: &str) -> Option<u32> {
        let ms = self.duration_ms(v, path, ADVERT_MIN_MS, ADVERT_MAX_MS, "100ms to 40950ms")?;
        if ms % 10 != 0 {
            self.err(
                path,
                format!("{ms}ms is not a multiple of 10ms (VRRPv3 counts centiseconds)"),
            );
            return None;
        }
        Some(ms)
    }

    fn ha_nodes(
        &mut self,
        v: &Value,
        path: &str,
        gateways: Option<&[Gateway]>,
    ) -> Option<Vec<HaNode>> {
        let items = self.array(v, path)?;
        if items.len() != 2 {
            self.err(
                path,
                format!("a pair has exactly 2 routers; found {}", items.len()),
            );
            return None;
        }
        let nodes: Vec<Option<HaNode>> = items
            .iter()
            .enumerate()
            .map(|(i, n)| self.ha_node(n, &index(path, i), gateways))
            .collect();
        let nodes: Vec<HaNode> = nodes.into_iter().collect::<Option<_>>()?;
        let second = index(path, 1);
        let (a, b) = (&nodes[0], &nodes[1]);
        if a.name == b.name {
            self.err(
                format!("{second}.name"),
                format!("{} is already used by {path}[0]", show(&a.name)),
            );
        }
        if a.sync_address == b.sync_address {
            self.err(
                format!("{second}.sync_address"),
                format!("{} is already used by {path}[0]", a.sync_address),
            );
        }
        if a.priority == b.priority {
            self.err(
                format!("{second}.priority"),
                format!(
                    "{} is {path}[0]'s too: give the preferred router the higher one",
                    a.priority
                ),
            );
        }
        for (gateway, addr) in &b.probe_addresses {
            if a.probe_addresses.get(gateway) == Some(addr) {
                self.err(
                    format!("{second}.probe_addresses.{gateway}"),
                    format!("{addr} is {path}[0]'s too: each router needs its own"),
                );
            }
        }
        Some(nodes)
    }

    fn ha_node(&mut self, v: &Value, path: &str, gateways: Option<&[Gateway]>) -> Option<HaNode> {
        let obj = self.object(
            v,
            path,
            &["name", "priority", "sync_address", "probe_addresses"],
        )?;
        let name = self.required_name(&obj);
        let priority = self
            .required(&obj, "priority")
            .and_then(|(v, p)| self.byte(v, &p, 254, " (VRRP priorities)"));
        let sync_address = self
            .required(&obj, "sync_address")
            .and_then(|(v, p)| self.ipv4(v, &p));
        let probe_addresses = match obj.field("probe_addresses") {
            None => Some(BTreeMap::new()),
            Some((v, p)) => self.probe_addresses(v, &p, gateways),
        };
        Some(HaNode {
            name: name?,
            priority: priority?,
            sync_address: sync_address?,
            probe_addresses: probe_addresses?,
        })
    }

    /// The pair's addresses are IPv4: VRRP and conntrackd's sync run over IPv4 here.
    fn ipv4(&mut self, v: &Value, path: &str) -> Option<Ipv4Addr> {
        let s = self.string(v, path)?;
        match IpAddr::from_str(&s) {
            Ok(IpAddr::V4(a)) => Some(a),
            Ok(IpAddr::V6(_)) => {
                self.err(
                    path,
                    format!("{} is IPv6; the pair's addresses are IPv4", show(&s)),
                );
                None
            }
            Err(_) => {
                self.err(path, format!("{} is not an IPv4 address", show(&s)));
                None
            }
        }
    }

    /// Gateway name -> this node's own address on that uplink.
    fn probe_addresses(
        &mut self,
        v: &Value,
        path: &str,
        gateways: Option<&[Gateway]>,
    ) -> Option<BTreeMap<String, Ipv4Addr>> {
        let Value::Object(map) = v else {
            self.err(
                path,
                format!(
                    "expected an object of gateway names to addresses, found {}",
                    super::describe(v)
                ),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in map {
            let p = super::join(path, &super::quote_key(key));
            let known = gateways.is_none_or(|gs| gs.iter().any(|g| &g.name == key));
            if !known {
                self.err(&p, format!("{} is not a gateway's name", show(key)));
                ok = false;
                continue;
            }
            match self.ipv4(value, &p) {
                Some(a) => {
                    out.insert(key.clone(), a);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn vrrp_instances(
        &mut self,
        v: &Value,
        path: &str,
        gateways: Option<&[Gateway]>,
    ) -> Option<Vec<VrrpInstance>> {
        let items = self.array(v, path)?;
        if items.is_empty() || items.len() > MAX_INSTANCES {
            self.err(
                path,
                format!("{} instances; use 1 to {MAX_INSTANCES}", items.len()),
            );
            return None;
        }
        let parsed: Vec<Option<VrrpInstance>> = items
            .iter()
            .enumerate()
            .map(|(i, x)| self.vrrp_instance(x, &index(path, i), gateways))
            .collect();
        let parsed: Vec<VrrpInstance> = parsed.into_iter().collect::<Option<_>>()?;
        let mut names = BTreeMap::new();
        let mut ids = BTreeMap::new();
        let mut floating = BTreeMap::new();
        let mut ok = true;
        for (i, inst) in parsed.iter().enumerate() {
            let at = index(path, i);
            if let Some(first) = names.insert(inst.name.clone(), i) {
                self.err(
                    format!("{at}.name"),
                    format!(
                        "{} is already used by {}",
                        show(&inst.name),
                        index(path, first)
                    ),
                );
                ok = false;
            }
            // One id per interface would do for VRRP, but one per pair is what people read.
            if let Some(first) = ids.insert(inst.virtual_router_id, i) {
                self.err(
                    format!("{at}.virtual_router_id"),
                    format!(
                        "{} is already used by {}",
                        inst.virtual_router_id,
                        index(path, first)
                    ),
                );
                ok = false;
            }
            for (j, g) in inst.gateways.iter().enumerate() {
                if let Some(first) = floating.insert(g.clone(), i) {
                    self.err(
                        format!("{at}.gateways[{j}]"),
                        format!("{} already floats with {}", show(g), index(path, first)),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(parsed)
    }

    fn vrrp_instance(
        &mut self,
        v: &Value,
        path: &str,
        gateways: Option<&[Gateway]>,
    ) -> Option<VrrpInstance> {
        let obj = self.object(
            v,
            path,
            &[
                "name",
                "interface",
                "virtual_router_id",
                "addresses",
                "gateways",
            ],
        )?;
        let name = self.required_name(&obj);
        let interface = self
            .required(&obj, "interface")
            .and_then(|(v, p)| self.interface(v, &p));
        let virtual_router_id = self
            .required(&obj, "virtual_router_id")
            .and_then(|(v, p)| self.byte(v, &p, 255, ""));
        let addresses = match obj.field("addresses") {
            None => Some(Vec::new()),
            Some((v, p)) => self.floating_addresses(v, &p),
        };
        let floating = match obj.field("gateways") {
            None => Some(Vec::new()),
            Some((v, p)) => self.floating_gateways(v, &p, gateways),
        };
        let (addresses, floating) = (addresses?, floating?);
        if addresses.is_empty() && floating.is_empty() {
            self.err(
                path,
                "nothing floats: give addresses (the LAN gateway address) or gateways",
            );
            return None;
        }
        Some(VrrpInstance {
            name: name?,
            interface: interface?,
            virtual_router_id: virtual_router_id?,
            addresses,
            gateways: floating,
        })
    }

    /// Addresses with their prefix (`192.168.1.1/24`); a bare address is a /32.
    fn floating_addresses(&mut self, v: &Value, path: &str) -> Option<Vec<Ipv4Net>> {
        let items = self.array(v, path)?;
        if items.len() > MAX_ADDRESSES {
            self.err(
                path,
                format!("{} addresses; at most {MAX_ADDRESSES}", items.len()),
            );
            return None;
        }
        let parsed: Vec<Option<Ipv4Net>> = items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let p = index(path, i);
                let s = self.string(x, &p)?;
                let net = if s.contains('/') {
                    Ipv4Net::from_str(&s).ok()
                } else {
                    Ipv4Addr::from_str(&s).ok().map(Ipv4Net::from)
                };
                if net.is_none() {
                    self.err(
                        p,
                        format!(
                            "{} is not an IPv4 address with a prefix, e.g. \"192.168.1.1/24\"",
                            show(&s)
                        ),
                    );
                }
                net
            })
            .collect();
        parsed.into_iter().collect()
    }

    /// Names of gateways whose `address` floats; each must have one.
    fn floating_gateways(
        &mut self,
        v: &Value,
        path: &str,
        gateways: Option<&[Gateway]>,
    ) -> Option<Vec<String>> {
        let items = self.array(v, path)?;
        let mut seen = BTreeSet::new();
        let parsed: Vec<Option<String>> = items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let p = index(path, i);
                let s = self.string(x, &p)?;
                let Some(gs) = gateways else { return Some(s) };
                match gs.iter().find(|g| g.name == s) {
                    None => self.err(&p, format!("{} is not a gateway's name", show(&s))),
                    Some(g) if g.address.is_none() => self.err(
                        &p,
                        format!(
                            "{} has no address to float: give the gateway an \"address\"",
                            show(&s)
                        ),
                    ),
                    Some(_) if !seen.insert(s.clone()) => {
                        self.err(&p, format!("{} is listed twice", show(&s)))
                    }
                    Some(_) => return Some(s),
                }
                None
            })
            .collect();
        parsed.into_iter().collect()
    }

    /// Every floating gateway with health checks needs each node's own probe address: the
    /// backup does not hold the gateway's address and could not probe from it.
    fn ha_cross_checks(
        &mut self,
        nodes: &[HaNode],
        sync_interface: &str,
        instances: &[VrrpInstance],
        path: &str,
        gateways: Option<&[Gateway]>,
    ) {
        let Some(gateways) = gateways else { return };
        let floating: BTreeSet<&str> = instances
            .iter()
            .flat_map(|i| i.gateways.iter().map(String::as_str))
            .collect();
        for (k, node) in nodes.iter().enumerate() {
            let at = format!("{}.probe_addresses", index(&super::join(path, "nodes"), k));
            for g in gateways {
                let own = node.probe_addresses.get(&g.name);
                if own.is_none() && g.health.is_some() && floating.contains(g.name.as_str()) {
                    self.err(
                        &at,
                        format!(
                            "missing {}: its address floats and it has health checks, so \
                             this router needs its own address on that uplink to probe from",
                            show(&g.name)
                        ),
                    );
                }
                if own.is_some() && own == g.address.as_ref() {
                    self.err(
                        format!("{at}.{}", g.name),
                        format!(
                            "{} is the gateway's floating address; use this router's own",
                            g.address.unwrap()
                        ),
                    );
                }
            }
        }
        for (k, inst) in instances.iter().enumerate() {
            if inst.interface == sync_interface {
                self.err(
                    format!("{}.interface", index(&super::join(path, "instances"), k)),
                    format!(
                        "{} is the sync interface: VRRP runs on the LAN, conntrackd alone on \
                         the sync link",
                        show(&inst.interface)
                    ),
                );
            }
        }
        if let Some(g) = gateways.iter().find(|g| g.interface == sync_interface) {
            self.err(
                super::join(path, "sync_interface"),
                format!(
                    "{} is gateway {}'s uplink",
                    show(sync_interface),
                    show(&g.name)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::Spec;

    const GATEWAYS: &str = r#""gateways": [
        { "name": "isp1", "interface": "ppp0", "mark": 1, "address": "100.0.1.1", "route_table": 101 } ]"#;

    fn pair(ha: &str) -> Result<Spec, Vec<String>> {
        Spec::from_json(&format!("{{ {GATEWAYS}, \"ha\": {ha} }}"))
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    const NODES: &str = r#""nodes": [
        { "name": "a", "priority": 200, "sync_address": "10.0.0.1" },
        { "name": "b", "priority": 100, "sync_address": "10.0.0.2" } ]"#;

    #[test]
    fn defaults_are_one_second_adverts_and_no_preemption() {
        let spec = pair(&format!(
            r#"{{ {NODES}, "sync_interface": "sync0", "instances": [
                 {{ "name": "lan", "interface": "eth0", "virtual_router_id": 7,
                    "addresses": ["192.168.1.1"], "gateways": ["isp1"] }} ] }}"#
        ))
        .unwrap();
        let ha = spec.ha.unwrap();
        assert_eq!((ha.advert_interval_ms, ha.preempt), (1000, false));
        assert_eq!(ha.instances[0].addresses[0].to_string(), "192.168.1.1/32");
        let (a, b) = ha.node_and_peer("b").unwrap();
        assert_eq!((a.name.as_str(), b.name.as_str()), ("b", "a"));
    }

    #[test]
    fn missing_parts_are_named_by_path() {
        let errors = pair(&format!("{{ {NODES} }}")).unwrap_err();
        assert_eq!(
            errors,
            [
                "ha.sync_interface: missing (required)",
                "ha.instances: missing (required)"
            ]
        );
    }
}
