//! `nftbalance explain` and `simulate`: the live facts (what is in force, the kernel's route,
//! conntrack entries) gathered here, the decisions taken by the pure `explain` crate.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use nftbalance_engine::{decide, inspect};
use nftbalance_explain::{self as explain, Decision, Origin, Outcome, Query, Route, Source};
use nftbalance_spec::{Protocol, Spec};
use serde::Serialize;

use crate::{load_spec, write_stdout};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The spec file (JSON).
    spec: PathBuf,
    /// The destination: ADDR, ADDR:PORT or [IPv6]:PORT.
    #[arg(long, value_name = "ADDR[:PORT]")]
    to: String,
    /// The source address (LAN host, or the remote end of an inbound connection).
    #[arg(long, value_name = "ADDR")]
    from: Option<IpAddr>,
    #[arg(long, value_enum, default_value_t = Proto::Tcp)]
    proto: Proto,
    /// The interface the connection arrives on (the LAN's for forwarded connections, an
    /// uplink's for inbound ones).
    #[arg(long, value_name = "IFACE", required_unless_present_any = ["local", "live"], conflicts_with = "local")]
    iif: Option<String>,
    /// A connection the router itself opens.
    #[arg(long)]
    local: bool,
    /// List the existing conntrack entries of this tuple and the uplink each is on.
    #[arg(long)]
    live: bool,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The state file of `watch` [default: the table's own in this network namespace].
    #[arg(long)]
    state_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The spec file (JSON).
    spec: PathBuf,
    /// The gateways that go down (by name).
    #[arg(long, value_name = "GATEWAY", required = true, num_args = 1..)]
    down: Vec<String>,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The state file of `watch` [default: the table's own in this network namespace].
    #[arg(long)]
    state_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
}

/// `ADDR`, `ADDR:PORT` or `[ADDR]:PORT`.
fn parse_to(s: &str) -> anyhow::Result<(IpAddr, Option<u16>)> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok((a, None));
    }
    match s.parse::<SocketAddr>() {
        Ok(sa) if sa.port() != 0 => Ok((sa.ip(), Some(sa.port()))),
        _ => anyhow::bail!(
            "--to {s}: expected ADDR, ADDR:PORT or [IPv6]:PORT with a port from 1 to 65535"
        ),
    }
}

fn query(a: &ExplainArgs) -> anyhow::Result<Query> {
    let (to, port) = parse_to(&a.to)?;
    if let Some(from) = a.from {
        anyhow::ensure!(
            from.is_ipv4() == to.is_ipv4(),
            "--from {from} and --to {to} are of different address families"
        );
    }
    Ok(Query {
        to,
        port,
        from: a.from,
        protocol: match a.proto {
            Proto::Tcp => Protocol::Tcp,
            Proto::Udp => Protocol::Udp,
        },
        origin: match &a.iif {
            Some(i) => Origin::Interface(i.clone()),
            None => Origin::Local,
        },
    })
}

/// What `explain` prints: the explanation and where the gateways in force came from.
#[derive(Debug, Serialize)]
struct ExplainReport {
    /// `the running watch`, `the last apply` or `the spec (nothing applied)`.
    in_force_from: String,
    /// Gateways that take no new connections now.
    unavailable: Vec<String>,
    #[serde(flatten)]
    explanation: explain::Explanation,
}

pub fn explain(a: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let spec = load_spec(&a.spec)?;
    let q = query(a)?;
    if a.live {
        crate::privilege::require_net_admin("explain --live")?;
        return live(&spec, &q, a.json);
    }
    let in_force = inspect::in_force(&spec, a.state_file.as_deref());
    let mut e = explain::explain(&spec, &in_force.availability, &q);
    ask_kernel(&spec, &in_force.availability, &q, &mut e.outcomes);
    let report = ExplainReport {
        in_force_from: in_force.source,
        unavailable: in_force.availability.unavailable.iter().cloned().collect(),
        explanation: e,
    };
    let text = if a.json {
        json(&report)?
    } else {
        explain_text(&report)
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Main-table outcomes: the kernel's route now (its interface gives the source NAT). Without
/// the privilege or a route socket they stay unknown.
fn ask_kernel(
    spec: &Spec,
    a: &nftbalance_ruleset::Availability,
    q: &Query,
    outcomes: &mut [Outcome],
) {
    let Ok(sock) = nftbalance_routing::Socket::open() else {
        return;
    };
    for o in outcomes.iter_mut().filter(|o| o.gateway.is_none()) {
        let Ok(found) = nftbalance_routing::lookup(&sock, q.to, 0) else {
            continue;
        };
        if let Some(dev) = &found.dev {
            o.source = explain::main_table_source(spec, a, dev, q.to.is_ipv6());
        }
        o.route = Route::Main {
            dev: found.dev,
            via: found.via,
        };
    }
}

fn json<T: Serialize>(v: &T) -> anyhow::Result<String> {
    let mut t = serde_json::to_string_pretty(v)?;
    t.push('\n');
    Ok(t)
}

fn mark_text(spec: &Spec, mark: u32) -> String {
    if spec.mark_mask == u32::MAX {
        format!("{mark:#x}")
    } else {
        format!("{mark:#x}/{:#x}", spec.mark_mask)
    }
}

fn route_text(r: &Route) -> String {
    match r {
        Route::Table {
            rule_priority,
            table,
            via,
            dev,
        } => {
            let via = via.map_or_else(String::new, |v| format!("via {v} "));
            format!("ip rule {rule_priority} -> table {table}: default {via}dev {dev}")
        }
        Route::Main { dev: None, .. } => "main table".into(),
        Route::Main { dev: Some(d), via } => {
            let via = via.map_or_else(String::new, |v| format!("via {v} "));
            format!("main table: {via}dev {d}")
        }
    }
}

fn source_text(s: &Source) -> String {
    match s {
        Source::Nat {
            nat: explain::Nat::To { address },
        } => format!("{address} (snat)"),
        Source::Nat {
            nat: explain::Nat::Masquerade { interface },
        } => {
            format!("the address of {interface} (masquerade)")
        }
        Source::Nat {
            nat: explain::Nat::None,
        } => "unchanged (no source NAT)".into(),
        Source::Destination { address } => {
            format!("{address} (replies come from the address it was sent to)")
        }
        Source::Unknown => "by the main table's route (ask as root to see it)".into(),
    }
}

fn decision_text(d: &Decision) -> String {
    match d {
        Decision::Inbound { gateway } => {
            format!("inbound on {gateway}'s uplink: answered through it")
        }
        Decision::Excluded { prefix } => {
            format!("excluded destination ({prefix}): not balanced, main table")
        }
        Decision::NotSelected => "no selector matches: not balanced, main table".into(),
        Decision::Gateway { gateway } => format!("through {gateway}"),
        Decision::Split {
            method,
            members,
            chosen,
        } => {
            let this = chosen
                .as_ref()
                .map_or_else(String::new, |c| format!("; this source's hash picks {c}"));
            format!("{method} split over {}{this}", members.join(", "))
        }
        Decision::LastResortMainTable => {
            "no member usable: last resort main-table, not balanced".into()
        }
        Decision::Refused => "no member usable: refused at once (last resort unreachable)".into(),
    }
}

fn explain_text(r: &ExplainReport) -> String {
    let e = &r.explanation;
    let spec_gw = |o: &Outcome| {
        o.gateway.as_ref().map_or_else(
            || "main table".to_string(),
            |g| format!("{g} ({})", o.interface.as_deref().unwrap_or("")),
        )
    };
    let mut out = format!("connection: {}\n", e.connection);
    out.push_str(&format!("gateways in force: from {}", r.in_force_from));
    if !r.unavailable.is_empty() {
        out.push_str(&format!(
            "; no new connections for {}",
            r.unavailable.join(", ")
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "selector: {}\n",
        e.selector.as_deref().unwrap_or("none")
    ));
    if let Some(p) = &e.policy {
        let members: Vec<String> = (p.members.iter())
            .map(|m| format!("{} {:.1}%", m.gateway, m.percent))
            .collect();
        let tier = p.tier.map_or("none".into(), |t| t.to_string());
        out.push_str(&format!(
            "policy: {} ({}), tier {tier}: {}{}\n",
            p.name,
            p.method,
            if members.is_empty() {
                "no member".into()
            } else {
                members.join(", ")
            },
            p.last_resort
                .as_ref()
                .map_or_else(String::new, |l| format!(" (last resort {l})"))
        ));
    }
    out.push_str(&format!("decision: {}\n", decision_text(&e.decision)));
    for o in &e.outcomes {
        out.push_str(&format!(
            "  {:>5.1}%  {}: mark {}, {}, source {}\n",
            o.percent,
            spec_gw(o),
            mark_text_plain(o.mark),
            route_text(&o.route),
            source_text(&o.source)
        ));
    }
    out.push_str(&format!("rules ({}):\n", e.hook));
    for s in &e.rules {
        out.push_str(&format!("  {} #{}: {}\n", s.chain, s.rule, s.text));
    }
    for n in &e.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

fn mark_text_plain(mark: u32) -> String {
    if mark == 0 {
        "none".into()
    } else {
        format!("{mark:#x}")
    }
}

/// One live conntrack entry of the tuple.
#[derive(Debug, Serialize)]
struct LiveEntry {
    protocol: String,
    source: String,
    destination: String,
    mark: String,
    /// The gateway whose mark it carries; None: unmarked, the main table.
    gateway: Option<String>,
    interface: Option<String>,
    /// The source address the far end sees (the reply direction's destination).
    seen_as: IpAddr,
    why: String,
}

fn live(spec: &Spec, q: &Query, as_json: bool) -> anyhow::Result<ExitCode> {
    let socket = nftbalance_netlink::Socket::open().context("opening a netfilter socket")?;
    let proto = q.protocol.number();
    let found = nftbalance_netlink::conntrack::list_by_mark(&socket, 0, 0, |c| {
        let o = &c.original;
        o.dst == q.to
            && o.protocol == proto
            && q.port.is_none_or(|p| o.dport == Some(p))
            && q.from.is_none_or(|f| o.src == f)
    })
    .context("listing the conntrack table")?;
    let entries: Vec<LiveEntry> = found.iter().map(|c| live_entry(spec, c)).collect();
    let text = if as_json {
        json(&entries)?
    } else if entries.is_empty() {
        "no conntrack entries match\n".to_string()
    } else {
        entries
            .iter()
            .map(|e| {
                format!(
                    "{} {} -> {}: mark {}, {}, seen as {} ({})\n",
                    e.protocol,
                    e.source,
                    e.destination,
                    e.mark,
                    e.gateway
                        .as_ref()
                        .map_or("main table".to_string(), |g| format!(
                            "{g} ({})",
                            e.interface.as_deref().unwrap_or("")
                        )),
                    e.seen_as,
                    e.why
                )
            })
            .collect()
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn endpoint(a: IpAddr, port: Option<u16>) -> String {
    match (a, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

fn live_entry(spec: &Spec, c: &nftbalance_netlink::conntrack::Connection) -> LiveEntry {
    let mark = c.mark & spec.mark_mask;
    let g = (mark != 0)
        .then(|| spec.gateways.iter().find(|g| g.mark == mark))
        .flatten();
    let why = match g {
        Some(g) => format!(
            "its connection mark {} is {}'s: every packet routes by table {}",
            mark_text(spec, mark),
            g.name,
            g.route_table
        ),
        None if mark == 0 => "no mark of this spec's: it follows the main table".into(),
        None => format!("mark {mark:#x} is no gateway's of this spec"),
    };
    let o = &c.original;
    LiveEntry {
        protocol: match o.protocol {
            6 => "tcp".into(),
            17 => "udp".into(),
            n => n.to_string(),
        },
        source: endpoint(o.src, o.sport),
        destination: endpoint(o.dst, o.dport),
        mark: format!("{:#x}", c.mark),
        gateway: g.map(|g| g.name.clone()),
        interface: g.map(|g| g.interface.clone()),
        seen_as: c.reply.dst,
        why,
    }
}

pub fn simulate(a: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let spec = load_spec(&a.spec)?;
    let down: BTreeSet<String> = a.down.iter().cloned().collect();
    for d in &down {
        if spec.gateway(d).is_none() {
            let names: Vec<&str> = spec.gateways.iter().map(|g| g.name.as_str()).collect();
            anyhow::bail!(
                "--down {d}: the spec has no such gateway (it has {})",
                names.join(", ")
            );
        }
    }
    let in_force = inspect::in_force(&spec, a.state_file.as_deref());
    let now = in_force.availability;
    // As watch would decide it: the downed gateways observed down, the rest as in force.
    let observed = (down.iter())
        .map(|d| (d.clone(), nftbalance_health::State::Down))
        .collect();
    let after = decide::availability(&spec, &observed, &now.unavailable, &now);
    let counting = count_connections(&spec);
    let (socket, why_not) = match counting {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let sim = explain::simulate::simulate(&spec, &now, &after, &down, |name| {
        let g = spec.gateway(name)?;
        let s = socket.as_ref()?;
        nftbalance_netlink::conntrack::count_by_mark(s, g.mark, spec.mark_mask).ok()
    });
    let text = if a.json {
        json(&sim)?
    } else {
        simulate_text(&sim, why_not.as_deref())
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// A socket that can read the conntrack table, or why there is none.
fn count_connections(spec: &Spec) -> anyhow::Result<nftbalance_netlink::Socket> {
    crate::privilege::require_net_admin("simulate (to count connections)")?;
    let s = nftbalance_netlink::Socket::open().context("opening a netfilter socket")?;
    let first = spec.gateways.first().map_or(0, |g| g.mark);
    nftbalance_netlink::conntrack::count_by_mark(&s, first, spec.mark_mask)
        .context("reading the conntrack table")?;
    Ok(s)
}

fn shares_text(p: &explain::PolicyUse) -> String {
    let members: Vec<String> = (p.members.iter())
        .map(|m| format!("{} {:.1}%", m.gateway, m.percent))
        .collect();
    let tier = p.tier.map_or("-".into(), |t| format!("tier {t}"));
    match (&p.last_resort, members.is_empty()) {
        (Some(r), true) => format!("none usable: {r}"),
        (Some(r), false) => format!("{} ({r})", members.join(", ")),
        (None, _) => format!("{tier}: {}", members.join(", ")),
    }
}

fn simulate_text(s: &explain::simulate::Simulation, why_not: Option<&str>) -> String {
    let mut out = format!("if {} went down:\n", s.down.join(", "));
    for p in &s.policies {
        out.push_str(&format!(
            "policy {}\n  now:   {}\n  after: {}\n",
            p.name,
            shares_text(&p.now),
            shares_text(&p.after)
        ));
    }
    for g in &s.gateways {
        match g.connections {
            Some(n) if g.fate == "flushed" => out.push_str(&format!(
                "{}: {n} live connections would be flushed (flush_conntrack); their hosts reconnect through the new split\n",
                g.gateway
            )),
            Some(n) => out.push_str(&format!(
                "{}: {n} live connections would stay on it (they keep its mark; without flush_conntrack they stall if it is dead)\n",
                g.gateway
            )),
            None => out.push_str(&format!(
                "{}: live connections not counted{}\n",
                g.gateway,
                why_not.map_or_else(String::new, |w| format!(": {w}"))
            )),
        }
    }
    out
}
