//! The router pair (issue 20): keepalived.conf and conntrackd.conf for one node of a spec's
//! `ha` section, built as typed data and rendered to text, and the conntrackd commands of a
//! VRRP transition. Pure: no file, process or clock; the CLI writes and runs what this decides.
//!
//! keepalived and conntrackd do the work (VRRP, state replication); nothing here replaces them.

mod conntrackd;
mod keepalived;
mod transition;

pub use conntrackd::{conntrackd_conf, ConntrackdConf};
pub use keepalived::{keepalived_conf, KeepalivedConf};
pub use transition::{steps, Role, Step};

use nftbalance_spec::name;
use nftbalance_spec::{Ha, HaNode, Spec};
#[cfg(test)]
use std::net::Ipv4Addr;

/// Where things live on the router: what the notify commands and conntrackd's own files
/// point at. Every path passes `name::path` before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The nftbalance binary keepalived's notify commands run.
    pub nftbalance: String,
    /// The spec file, as the notify commands pass it to `nftbalance ha`.
    pub spec: String,
    /// conntrackd's configuration file (`conntrackd -C`).
    pub conntrackd_config: String,
    /// conntrackd's lock file, control socket and log file.
    pub conntrackd_lock: String,
    pub conntrackd_socket: String,
    pub conntrackd_log: String,
}

impl Paths {
    /// Debian's places: /usr/sbin/nftbalance (the package), conntrackd's own defaults.
    pub fn debian(spec: &str) -> Paths {
        Paths {
            nftbalance: "/usr/sbin/nftbalance".into(),
            spec: spec.into(),
            conntrackd_config: "/etc/conntrackd/conntrackd.conf".into(),
            conntrackd_lock: "/var/lock/conntrack.lock".into(),
            conntrackd_socket: "/var/run/conntrackd.ctl".into(),
            conntrackd_log: "/var/log/conntrackd.log".into(),
        }
    }

    /// conntrackd's lock, socket and log in one directory (one conntrackd per namespace).
    pub fn with_run_dir(mut self, dir: &str) -> Paths {
        let dir = dir.trim_end_matches('/');
        self.conntrackd_lock = format!("{dir}/conntrackd.lock");
        self.conntrackd_socket = format!("{dir}/conntrackd.ctl");
        self.conntrackd_log = format!("{dir}/conntrackd.log");
        self
    }

    fn check(&self) -> Result<(), HaError> {
        for (what, p) in [
            ("nftbalance binary", &self.nftbalance),
            ("spec", &self.spec),
            ("conntrackd config", &self.conntrackd_config),
            ("conntrackd lock file", &self.conntrackd_lock),
            ("conntrackd socket", &self.conntrackd_socket),
            ("conntrackd log file", &self.conntrackd_log),
        ] {
            name::path(p).map_err(|e| HaError::Path {
                what,
                path: p.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HaError {
    #[error("the spec has no \"ha\" section: it describes a single router, not a pair")]
    NoPair,
    #[error("{node:?} is not a node of the pair; its nodes are {a:?} and {b:?}")]
    UnknownNode { node: String, a: String, b: String },
    #[error("{what} {path:?} {reason}")]
    Path {
        what: &'static str,
        path: String,
        reason: String,
    },
}

/// One node of the spec's pair, with its peer: what both renderers start from.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'s> {
    pub spec: &'s Spec,
    pub ha: &'s Ha,
    pub node: &'s HaNode,
    pub peer: &'s HaNode,
}

impl<'s> NodeView<'s> {
    pub fn new(spec: &'s Spec, node: &str) -> Result<NodeView<'s>, HaError> {
        let ha = spec.ha.as_ref().ok_or(HaError::NoPair)?;
        let (node, peer) = ha.node_and_peer(node).ok_or_else(|| HaError::UnknownNode {
            node: node.into(),
            a: ha.nodes[0].name.clone(),
            b: ha.nodes[1].name.clone(),
        })?;
        Ok(NodeView {
            spec,
            ha,
            node,
            peer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{
      "gateways": [
        { "name": "isp1", "interface": "up1", "mark": 1, "address": "100.0.1.1",
          "via": "100.0.1.254", "route_table": 101,
          "health": { "targets": ["198.51.100.10"] } },
        { "name": "isp2", "interface": "up2", "mark": 2, "address": "100.0.2.1",
          "via": "100.0.2.254", "route_table": 102 } ],
      "ha": {
        "nodes": [
          { "name": "a", "priority": 150, "sync_address": "10.255.0.1",
            "probe_addresses": { "isp1": "100.0.1.2", "isp2": "100.0.2.2" } },
          { "name": "b", "priority": 100, "sync_address": "10.255.0.2",
            "probe_addresses": { "isp1": "100.0.1.3", "isp2": "100.0.2.3" } } ],
        "sync_interface": "sync0",
        "instances": [ { "name": "lan", "interface": "eth0", "virtual_router_id": 51,
                         "addresses": ["192.168.1.1/24"], "gateways": ["isp1", "isp2"] } ],
        "advert_interval": "500ms"
      } }"#;

    fn spec() -> Spec {
        Spec::from_json(SPEC).unwrap()
    }

    #[test]
    fn each_node_gets_its_priority_and_the_same_floating_addresses() {
        let paths = Paths::debian("/etc/nftbalance/spec.json");
        let a = keepalived_conf(&spec(), "a", &paths).unwrap().render();
        let b = keepalived_conf(&spec(), "b", &paths).unwrap().render();
        assert!(a.contains("priority 150") && b.contains("priority 100"));
        for conf in [&a, &b] {
            assert!(conf.contains("192.168.1.1/24 dev eth0"));
            assert!(conf.contains("100.0.1.1/32 dev up1"));
            assert!(conf.contains("advert_int 0.5"));
            assert!(conf.contains("nopreempt"));
            assert!(conf.contains(
                "notify_master \"/usr/sbin/nftbalance ha master --conntrackd-config \
                 /etc/conntrackd/conntrackd.conf /etc/nftbalance/spec.json\""
            ));
        }
    }

    #[test]
    fn conntrackd_talks_to_the_peer_and_ignores_the_routers_own_addresses() {
        let paths = Paths::debian("/s.json").with_run_dir("/tmp/x/");
        let c = conntrackd_conf(&spec(), "b", &paths).unwrap();
        assert_eq!(c.own_address, Ipv4Addr::new(10, 255, 0, 2));
        assert_eq!(c.peer_address, Ipv4Addr::new(10, 255, 0, 1));
        let text = c.render();
        assert!(text.contains("LockFile /tmp/x/conntrackd.lock"));
        assert!(text.contains("IPv4_address 100.0.2.2"));
        assert!(
            !text.contains("IPv4_address 100.0.1.1\n"),
            "floating addresses are synced"
        );
    }

    #[test]
    fn unknown_nodes_and_unsafe_paths_are_errors() {
        let paths = Paths::debian("/s.json");
        assert!(matches!(
            keepalived_conf(&spec(), "c", &paths),
            Err(HaError::UnknownNode { .. })
        ));
        let bad = Paths::debian("/a b.json");
        assert!(matches!(
            conntrackd_conf(&spec(), "a", &bad),
            Err(HaError::Path { .. })
        ));
    }
}
