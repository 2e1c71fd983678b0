//! `nftbalance status` as a table or JSON: the data comes from the engine.

use std::path::Path;
use std::process::ExitCode;

use nftbalance_engine::inspect::{self, ConntrackUsage, PolicyStatus, Status};

use crate::{load_spec, privilege, write_stdout};

/// The status line for the conntrack table; max 0 means the kernel enforces no limit.
fn conntrack_line(usage: Option<ConntrackUsage>) -> String {
    match usage {
        None => "conntrack: not loaded\n".to_string(),
        Some(ConntrackUsage { count, max: 0 }) => {
            format!("conntrack: {count} entries (no limit)\n")
        }
        Some(ConntrackUsage { count, max }) if count >= max => format!(
            "conntrack: {count} of {max} entries (full: the kernel drops new connections)\n"
        ),
        Some(ConntrackUsage { count, max }) => format!("conntrack: {count} of {max} entries\n"),
    }
}

/// The observed state, and whether the ruleset in force disagrees (a pending change).
fn state_cell(state: &str, available: Option<bool>) -> String {
    match (state, available) {
        ("down", Some(true)) => "down*".into(),
        ("up" | "unknown", Some(false)) => format!("{state}*"),
        _ => state.to_string(),
    }
}

/// `fibre 60.0%, dsl 40.0%`, or the last resort in force.
fn policy_use(p: &PolicyStatus) -> String {
    let shares: Vec<String> = (p.members.iter())
        .map(|m| format!("{} {:.1}%", m.gateway, m.share))
        .collect();
    match (&p.last_resort, shares.is_empty()) {
        (Some(r), true) => format!("none usable: {r}"),
        (Some(r), false) => format!("{} ({r})", shares.join(", ")),
        (None, _) => shares.join(", "),
    }
}

/// `, counters since 15:04:05 UTC (12 s ago)`: when the counters started (same day), or
/// how long ago.
fn counters_since(since: Option<u64>, now: u64) -> String {
    let Some(since) = since else {
        return String::new();
    };
    let ago = now.saturating_sub(since);
    let (h, m, sec) = (since / 3600 % 24, since / 60 % 60, since % 60);
    if ago < 86_400 {
        format!(", counters since {h:02}:{m:02}:{sec:02} UTC ({ago} s ago)")
    } else {
        format!(", counters since {} days ago", ago / 86_400)
    }
}

fn table(s: &Status) -> String {
    let mut out = format!(
        "table {} {}{}{} (states from {})\n",
        s.family,
        s.table,
        if s.applied {
            ""
        } else {
            ": not applied, no counters"
        },
        counters_since(s.counters_since, nftbalance_engine::state::now()),
        if s.state_source == "watch" {
            "the running watch"
        } else {
            "one probe round now"
        }
    );
    out.push_str(&format!(
        "{:<12} {:<10} {:<9} {:>6} {:>12} {:>14} {:>8} {:>7} {:>6} {:>7}\n",
        "gateway",
        "interface",
        "state",
        "weight",
        "packets",
        "bytes",
        "new",
        "share",
        "live",
        "bytes%"
    ));
    for g in &s.gateways {
        out.push_str(&format!(
            "{:<12} {:<10} {:<9} {:>6} {:>12} {:>14} {:>8} {:>6.1}% {:>6} {:>6.1}%\n",
            g.name,
            g.interface,
            state_cell(&g.state, g.available),
            g.weight,
            g.packets,
            g.bytes,
            g.new_connections,
            g.new_connection_share,
            g.live_connections,
            g.byte_share,
        ));
    }
    // Only when the spec has named policies: the default policy alone is the table above.
    if s.policies.len() > 1 {
        out.push_str(&format!(
            "{:<24} {:<5} {}\n",
            "policy", "tier", "new connections"
        ));
        for p in &s.policies {
            out.push_str(&format!(
                "{:<24} {:<5} {}\n",
                p.name,
                p.tier.map_or("-".to_string(), |t| t.to_string()),
                policy_use(p)
            ));
        }
    }
    if let Some(p) = &s.pending {
        out.push_str(&format!(
            "* the split in force does not follow this state yet: {p} (watch retries)\n"
        ));
    }
    out.push_str(&conntrack_line(s.conntrack));
    out
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Table,
    /// JSON.
    Json,
    /// Prometheus text exposition format, for node_exporter's textfile collector.
    Prometheus,
}

pub fn status(path: &Path, format: Format, state_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let spec = load_spec(path)?;
    privilege::require_net_admin("status")?;
    let s = inspect::status(&spec, state_file)?;
    let text = match format {
        Format::Json => {
            let mut t = serde_json::to_string_pretty(&s)?;
            t.push('\n');
            t
        }
        Format::Table => table(&s),
        Format::Prometheus => nftbalance_metrics::render(&s),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_since_says_when_and_how_long_ago() {
        assert_eq!(counters_since(None, 100), "");
        assert_eq!(
            counters_since(Some(3_600 + 62), 3_600 + 72),
            ", counters since 01:01:02 UTC (10 s ago)"
        );
        assert_eq!(
            counters_since(Some(0), 3 * 86_400),
            ", counters since 3 days ago"
        );
    }

    #[test]
    fn conntrack_lines() {
        let u = |count, max| Some(ConntrackUsage { count, max });
        assert_eq!(conntrack_line(None), "conntrack: not loaded\n");
        assert_eq!(
            conntrack_line(u(12, 262144)),
            "conntrack: 12 of 262144 entries\n"
        );
        assert_eq!(
            conntrack_line(u(262144, 262144)),
            "conntrack: 262144 of 262144 entries (full: the kernel drops new connections)\n"
        );
        assert_eq!(conntrack_line(u(5, 0)), "conntrack: 5 entries (no limit)\n");
    }

    #[test]
    fn a_pending_change_is_marked() {
        assert_eq!(state_cell("down", Some(true)), "down*");
        assert_eq!(state_cell("up", Some(false)), "up*");
        assert_eq!(state_cell("down", Some(false)), "down");
        assert_eq!(state_cell("up", None), "up");
    }
}
