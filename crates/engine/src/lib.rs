//! nftbalance's engine: the order of its effects. The apply protocol (lock, journal, routing
//! make-before-break around one commit, settling an apply that died), flush and recover, the
//! watch session, the data behind `diff` and `status`, and the typed files they share under
//! /run/nftbalance. What to program comes from the pure crates (spec, ruleset, routing's
//! plan); this crate decides only in [`decide`] and does the I/O everywhere else.

pub mod apply;
pub mod backend;
pub mod decide;
mod events;
pub mod files;
pub mod hooks;
pub mod inspect;
pub mod journal;
pub mod lock;
mod pacing;
mod repair;
pub mod state;
pub mod watch;

use std::time::Duration;

pub use backend::{Backend, BackendKind};
use nftbalance_health as health;
use nftbalance_spec::{Gateway, Health, HealthTarget, QueryTarget, Spec};

/// Where the engine's messages go: the binary prints them, watch logs them.
pub struct Say<'a> {
    /// Progress (waiting for a lock, following a watch).
    pub note: &'a dyn Fn(&str),
    /// Something the user should know that did not stop the command.
    pub warn: &'a dyn Fn(&str),
}

impl Say<'_> {
    /// Says nothing (tests).
    pub fn quiet() -> Say<'static> {
        Say {
            note: &|_| {},
            warn: &|_| {},
        }
    }
}

impl std::fmt::Debug for Say<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Say")
    }
}

/// One probe round of a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// The round's round-trip time when at least `reliability` targets answered; `None` when
    /// it failed.
    pub answer: Option<Duration>,
    /// What happened, for logs and the state file.
    pub detail: String,
}

/// The probe of a gateway's health section: every target (ICMP and TCP, then DNS and HTTP,
/// each in spec order) through its interface, with its mark and source address.
pub fn gateway_probe(spec: &Spec, g: &Gateway, h: &Health) -> health::Probe {
    let probes = h.targets.iter().map(|t| match t {
        HealthTarget::Icmp(a) => health::Target::Icmp(*a),
        HealthTarget::Tcp(s) => health::Target::Tcp(*s),
    });
    let queries = h.queries.iter().map(|q| match q {
        QueryTarget::Dns { server, name } => health::Target::Dns {
            server: *server,
            name: name.clone(),
        },
        QueryTarget::Http { addr, path } => health::Target::Http {
            addr: *addr,
            path: path.clone(),
        },
    });
    let source = g
        .address
        .map(std::net::IpAddr::V4)
        .or(g.address6.map(std::net::IpAddr::V6));
    health::Probe {
        interface: g.interface.clone(),
        mark: g.mark & spec.mark_mask,
        source,
        targets: probes.chain(queries).collect(),
        reliability: h.reliability,
        timeout: Duration::from_millis(h.timeout_ms.into()),
    }
}

/// On a router of a pair (spec `ha`), its own address on the gateway's uplink: the
/// gateway's `address` floats and is on the master only, so both routers probe from their
/// own, whichever role they have, and the backup's view is ready when it takes over.
/// This router is the node whose `sync_address` it holds (an address binds only where it
/// is local).
fn pair_probe_source(spec: &Spec, g: &Gateway) -> Option<std::net::Ipv4Addr> {
    let ha = spec.ha.as_ref()?;
    let node = ha
        .nodes
        .iter()
        .find(|n| std::net::UdpSocket::bind((n.sync_address, 0)).is_ok())?;
    node.probe_addresses.get(&g.name).copied()
}

/// What the quality tracker of a gateway acts on: its health section's thresholds.
pub fn thresholds(h: &Health) -> health::Thresholds {
    let ms = |v: u32| Duration::from_millis(v.into());
    health::Thresholds {
        up: h.up,
        down: h.down,
        window: h.window,
        max_loss: h.max_loss,
        recover_loss: h.recover_loss,
        max_latency: h.max_latency_ms.map(ms),
        recover_latency: h.recover_latency_ms.map(ms),
        hold_down: ms(h.hold_down_ms),
    }
}

/// One probe round of a gateway (see [`gateway_probe`]). None for a gateway without health
/// checks.
pub fn probe_once(spec: &Spec, g: &Gateway) -> Option<Round> {
    let h = g.health.as_ref()?;
    let mut probe = gateway_probe(spec, g, h);
    if let Some(own) = pair_probe_source(spec, g) {
        probe.source = Some(std::net::IpAddr::V4(own));
    }
    let outcome = health::probe(&probe);
    let detail = outcome.reason().unwrap_or_else(|| {
        let rtt = outcome.rtt.unwrap_or(outcome.elapsed);
        format!("answered in {} ms", rtt.as_millis())
    });
    Some(Round {
        answer: outcome.rtt,
        detail,
    })
}
