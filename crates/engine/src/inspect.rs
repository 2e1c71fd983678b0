//! The read-only commands' data: `diff` (rules and routing against the spec) and `status`
//! (gateway states, counters, connections). They change nothing.

use anyhow::Context;
use nftbalance_netlink::{conntrack, read};
use nftbalance_routing as routing;
use nftbalance_ruleset as ruleset;
use nftbalance_ruleset::policy::{policies_in_use, InUse};
use nftbalance_spec::{Gateway, Spec};
use serde::Serialize;

use crate::apply::{expected_availability, route_socket};
use crate::backend::nft_socket;
use crate::files::{netns_cookie, TableFiles};
use crate::probe_once;
use crate::state::{Applied, WatchState};

/// `diff`: every way the live table and the owned policy routing differ from what `apply`
/// would program now; empty when they are the same.
pub fn diff(spec: &Spec) -> anyhow::Result<Vec<String>> {
    let rsock = route_socket()?;
    let links = routing::Links::read(&rsock).context("reading the network interfaces")?;
    let (plan, _) = crate::repair::routing_plan(&rsock, spec, &links)?;
    let unrouted = plan.unroutable_gateways(&links);
    let (availability, _) = expected_availability(spec, &TableFiles::of(spec), &unrouted);
    let rs = ruleset::compile_with(spec, &availability);
    let mut out: Vec<String> = read::diff(&nft_socket()?, &rs)?
        .into_iter()
        .map(|d| d.to_string())
        .collect();
    out.extend(
        routing::differences(&rsock, &plan, &links).context("reading the ip rules and routes")?,
    );
    Ok(out)
}

/// One gateway in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStatus {
    pub name: String,
    pub interface: String,
    /// Observed: up, down, unknown or unchecked.
    pub state: String,
    /// Whether the ruleset in force gives it new connections (None without a running watch).
    pub available: Option<bool>,
    pub weight: u32,
    pub packets: u64,
    pub bytes: u64,
    pub new_connections: u64,
    pub live_connections: u64,
    pub new_connection_share: f64,
    pub byte_share: f64,
    /// From the running watch: failed rounds in the health window (percent), the median
    /// round-trip time (ms), state changes and probe rounds since it started.
    pub loss_percent: Option<u8>,
    pub rtt_ms: Option<u32>,
    pub transitions: Option<u64>,
    pub probe_rounds: Option<u64>,
}

/// The last change of the table (apply, or watch's update) and whether it stands.
#[derive(Debug, Clone, Serialize)]
pub struct LastApply {
    /// Unix seconds of its commit.
    pub at: u64,
    pub duration_ms: Option<u64>,
    /// False while the running watch has a change it could not make (`pending`).
    pub ok: bool,
}

/// The conntrack table's use.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ConntrackUsage {
    pub count: u64,
    pub max: u64,
}

/// Everything `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub table: String,
    pub family: String,
    /// Whether the table is there (its counters are).
    pub applied: bool,
    /// `watch` (a running watch's state file) or `probe` (one probe round now).
    pub state_source: String,
    /// Why the running watch has not yet applied what its probes observed, if so.
    pub pending: Option<String>,
    pub gateways: Vec<GatewayStatus>,
    /// The default policy and every named one, as the ruleset in force splits them.
    pub policies: Vec<PolicyStatus>,
    pub conntrack: Option<ConntrackUsage>,
    /// Unix seconds since which the counters count (the last commit that re-created them,
    /// from the applied record); none when unknown.
    pub counters_since: Option<u64>,
    /// None when nothing was applied (no applied record).
    pub last_apply: Option<LastApply>,
}

/// The availability the table in force was compiled for, and where that came from.
#[derive(Debug, Clone)]
pub struct InForce {
    pub availability: ruleset::Availability,
    /// `the running watch`, `the last apply` or `the spec (nothing applied)`.
    pub source: String,
    /// The running watch's state, if one runs.
    pub watch: Option<WatchState>,
}

/// What the ruleset in force gives new connections: the applied record (apply and watch
/// write it after each commit), with the running watch's view of which gateways are in force.
pub fn in_force(spec: &Spec, state_file: Option<&std::path::Path>) -> InForce {
    let files = TableFiles::of(spec);
    let own = files.state();
    let watch = WatchState::of_running_watch(state_file.unwrap_or(&own), netns_cookie());
    let applied = Applied::read(&files.applied()).ok();
    let mut availability = applied
        .as_ref()
        .map(Applied::availability)
        .unwrap_or_default();
    let source = match (&watch, &applied) {
        (Some(w), _) => {
            availability.unavailable = (w.gateways.iter())
                .filter(|g| !g.available)
                .map(|g| g.name.clone())
                .collect();
            "the running watch"
        }
        (None, Some(_)) => "the last apply",
        (None, None) => "the spec (nothing applied)",
    };
    InForce {
        availability,
        source: source.into(),
        watch,
    }
}

/// One policy in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    /// `(default)` for the implicit default policy.
    pub name: String,
    /// The active tier; None when no member is usable.
    pub tier: Option<u8>,
    /// The members taking new connections and their shares (percent, by weight).
    pub members: Vec<MemberShare>,
    /// What new connections do when no member is usable (`keep-last` while kept).
    pub last_resort: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberShare {
    pub gateway: String,
    pub share: f64,
}

/// The policies under the availability in force (the last applied record, else all usable).
fn policies(spec: &Spec) -> Vec<PolicyStatus> {
    // Any applied record of this table will do: its availability names gateways, and a name
    // this spec lacks is simply not a member.
    let in_force = Applied::read(&TableFiles::of(spec).applied())
        .map(|a| a.availability())
        .unwrap_or_default();
    let in_use = policies_in_use(spec, &in_force);
    in_use
        .into_iter()
        .map(|(key, used)| {
            let total: u32 = used.members().iter().map(|m| m.weight).sum();
            let members = (used.members().iter())
                .map(|m| MemberShare {
                    gateway: m.gateway.clone(),
                    share: share(u64::from(m.weight), u64::from(total)),
                })
                .collect();
            let last_resort = match used {
                InUse::Tier { .. } => None,
                InUse::Kept { .. } => Some("keep-last".to_string()),
                InUse::LastResort(r) => Some(r.as_str().to_string()),
            };
            PolicyStatus {
                name: key.to_string(),
                tier: used.tier(),
                members,
                last_resort,
            }
        })
        .collect()
}

/// Where the states came from, a pending change, and per gateway (observed state, available).
struct States {
    source: String,
    pending: Option<String>,
    gateways: Vec<(String, Option<bool>)>,
}

/// The states from a running watch, or from one probe round now.
fn states(spec: &Spec, watch: Option<&WatchState>) -> States {
    if let Some(w) = watch {
        let of = |g: &Gateway| {
            w.gateways
                .iter()
                .find(|x| x.name == g.name)
                .map(|x| (x.state.clone(), Some(x.available)))
                .unwrap_or_else(|| ("unknown".into(), None))
        };
        return States {
            source: "watch".into(),
            pending: w.pending.clone(),
            gateways: spec.gateways.iter().map(of).collect(),
        };
    }
    let states = spec
        .gateways
        .iter()
        .map(|g| {
            let s = match probe_once(spec, g) {
                Some(r) if r.answer.is_some() => "up",
                Some(_) => "down",
                None => "unchecked",
            };
            (s.to_string(), None)
        })
        .collect();
    States {
        source: "probe".into(),
        pending: None,
        gateways: states,
    }
}

/// The router's conntrack usage, or None when conntrack is not loaded: both sysctl files
/// exist only once the module is. Read in the caller's network namespace.
fn conntrack_usage() -> Option<ConntrackUsage> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(ConntrackUsage {
        count: read("nf_conntrack_count")?,
        max: read("nf_conntrack_max")?,
    })
}

fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * part as f64 / total as f64
    }
}

/// `status`: `state_file` overrides the table's own state file.
pub fn status(spec: &Spec, state_file: Option<&std::path::Path>) -> anyhow::Result<Status> {
    let own = TableFiles::of(spec).state();
    let watch = WatchState::of_running_watch(state_file.unwrap_or(&own), netns_cookie());
    status_from(spec, watch.as_ref())
}

/// The running watch's figures of one gateway: loss, rtt, transitions, rounds.
fn watch_figures(
    watch: Option<&WatchState>,
    name: &str,
) -> (Option<u8>, Option<u32>, Option<u64>, Option<u64>) {
    match watch.and_then(|w| w.gateways.iter().find(|g| g.name == name)) {
        Some(g) => (g.loss, g.rtt_ms, Some(g.transitions), Some(g.rounds)),
        None => (None, None, None, None),
    }
}

/// `status` with the gateway states of `watch` (a running watch's state), else one probe
/// round now; the rest is read from the kernel and the applied record.
pub fn status_from(spec: &Spec, watch: Option<&WatchState>) -> anyhow::Result<Status> {
    let States {
        source,
        pending,
        gateways: states,
    } = states(spec, watch);
    let rs = ruleset::compile(spec);
    let socket = nft_socket()?;
    let by_name = read::account(&socket, &rs)?;
    let applied = by_name.is_some();
    let by_name = by_name.unwrap_or_default();
    let counters: Vec<read::GatewayCounters> = spec
        .gateways
        .iter()
        .map(|g| by_name.get(&g.name).copied().unwrap_or_default())
        .collect();
    let mut live = Vec::new();
    for g in &spec.gateways {
        live.push(
            conntrack::count_by_mark(&socket, g.mark, spec.mark_mask)
                .context("counting connections in the conntrack table")?,
        );
    }
    let total_new: u64 = counters.iter().map(|c| c.new_connections.packets).sum();
    let total_bytes: u64 = counters.iter().map(|c| c.traffic.bytes).sum();
    let gateways = spec
        .gateways
        .iter()
        .zip(states)
        .zip(counters.iter().zip(live))
        .map(|((g, (state, available)), (c, live))| {
            let (loss_percent, rtt_ms, transitions, probe_rounds) = watch_figures(watch, &g.name);
            GatewayStatus {
                name: g.name.clone(),
                interface: g.interface.clone(),
                state,
                available,
                weight: g.weight,
                packets: c.traffic.packets,
                bytes: c.traffic.bytes,
                new_connections: c.new_connections.packets,
                live_connections: live,
                new_connection_share: share(c.new_connections.packets, total_new),
                byte_share: share(c.traffic.bytes, total_bytes),
                loss_percent,
                rtt_ms,
                transitions,
                probe_rounds,
            }
        })
        .collect();
    let last_apply = Applied::read(&TableFiles::of(spec).applied())
        .ok()
        .map(|a| LastApply {
            at: a.at,
            duration_ms: a.duration_ms,
            ok: pending.is_none(),
        });
    Ok(Status {
        table: spec.table.clone(),
        family: spec.family.as_str().to_string(),
        applied,
        state_source: source,
        pending,
        gateways,
        policies: policies(spec),
        conntrack: conntrack_usage(),
        counters_since: applied
            .then(|| crate::state::Applied::read(&TableFiles::of(spec).applied()).ok())
            .flatten()
            .and_then(|a| a.counters_since),
        last_apply,
    })
}
