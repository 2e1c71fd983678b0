//! nftbalance's engine: the order of its effects. The apply protocol (lock, journal, routing
//! make-before-break around one commit, settling an apply that died), flush and recover, the
//! watch session, the data behind `diff` and `status`, and the typed files they share under
//! /run/nftbalance. What to program comes from the pure crates (spec, ruleset, routing's
//! plan); this crate decides only in [`decide`] and does the I/O everywhere else.

pub mod apply;
pub mod backend;
pub mod decide;
pub mod files;
pub mod hooks;
pub mod inspect;
pub mod journal;
pub mod lock;
pub mod state;
pub mod watch;

use std::time::Duration;

pub use backend::{Backend, BackendKind};
use nftbalance_health as health;
use nftbalance_spec::{Gateway, HealthTarget, Spec};

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

/// One probe round of a gateway: through its interface, with its mark and source address.
/// None for a gateway without health checks.
pub fn probe_once(spec: &Spec, g: &Gateway) -> Option<(bool, String)> {
    let h = g.health.as_ref()?;
    let targets = h
        .targets
        .iter()
        .map(|t| match t {
            HealthTarget::Icmp(a) => health::Target::Icmp(*a),
            HealthTarget::Tcp(s) => health::Target::Tcp(*s),
        })
        .collect();
    let source = g
        .address
        .map(std::net::IpAddr::V4)
        .or(g.address6.map(std::net::IpAddr::V6));
    let p = health::Probe {
        interface: g.interface.clone(),
        mark: g.mark & spec.mark_mask,
        source,
        targets,
        timeout: Duration::from_millis(h.timeout_ms.into()),
    };
    let outcome = health::probe(&p);
    let detail = outcome
        .reason()
        .unwrap_or_else(|| format!("answered in {} ms", outcome.elapsed.as_millis()));
    Some((outcome.ok, detail))
}
