//! Uplink health for nftbalance.
//!
//! * [`Tracker`] (pure): per-gateway hysteresis, `up` consecutive successes to become
//!   [`State::Up`], `down` consecutive failures to become [`State::Down`]; starts
//!   [`State::Unknown`] (see [`Tracker`] for why).
//! * [`Quality`] (pure): what `watch` uses: the [`Tracker`]'s rule plus loss and median latency
//!   over a window of rounds, recovery thresholds and hold-down. It takes each round's time as
//!   an input, so it is tested with tables of rounds, without a clock.
//! * [`probe`] (effects): ICMP echo, TCP connect, DNS query and HTTP GET probes that leave
//!   through the uplink they test — bound to its interface (`SO_BINDTODEVICE`), carrying the
//!   gateway's mark (`SO_MARK`, so its `ip rule fwmark` table routes them) and its source
//!   address — so that a dead upstream behind a live link is detected, not just a dead link.
//!
//! All targets of a probe are probed **concurrently** on one thread (non-blocking sockets and
//! one `poll(2)` loop bounded by the probe's deadline): the probe succeeds once `reliability`
//! targets have answered and returns then; it fails when too many targets have failed for
//! that or the timeout has passed. No threads, no busy loops; the only blocking call is `poll`
//! with the remaining budget.
//!
//! Privileges: `SO_MARK` needs CAP_NET_ADMIN or CAP_NET_RAW; raw ICMP sockets need
//! CAP_NET_RAW (without it ping sockets are used when `net.ipv4.ping_group_range` allows).
//! Sockets belong to the network namespace of the calling thread.
#![cfg(target_os = "linux")]

mod dns;
mod http;
mod icmp;
mod probe;
mod quality;
mod tracker;

pub use probe::{
    probe, probe_with, IcmpSocket, Probe, ProbeOutcome, Target, TargetOutcome, TargetResult,
};
pub use quality::{Cause, Change, Quality, Thresholds};
pub use tracker::{State, Tracker, Transition};
