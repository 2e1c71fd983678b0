//! `nftbalance status`: per gateway its state, weight, traffic and connection counters, live
//! connections and shares, from the kernel's counters and conntrack table.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use nftbalance_netlink::{conntrack, read, Socket};
use nftbalance_ruleset as ruleset;
use nftbalance_spec::Spec;
use serde_json::{json, Value};

use crate::{load_spec, privilege, watch, write_stdout};

/// States from a running `watch` (its state file), else one probe round.
fn states(spec: &Spec, state_file: &Path) -> (String, Vec<String>) {
    if let Ok(text) = std::fs::read_to_string(state_file) {
        if let Ok(doc) = serde_json::from_str::<Value>(&text) {
            let alive = doc["pid"]
                .as_u64()
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if alive {
                let states = spec
                    .gateways
                    .iter()
                    .map(|g| {
                        doc["gateways"]
                            .as_array()
                            .and_then(|gs| gs.iter().find(|x| x["name"] == g.name.as_str()))
                            .and_then(|x| x["state"].as_str())
                            .unwrap_or("unknown")
                            .to_string()
                    })
                    .collect();
                return ("watch".into(), states);
            }
        }
    }
    let states = spec
        .gateways
        .iter()
        .map(|g| match watch::probe(spec, g) {
            Some((true, _)) => "up".to_string(),
            Some((false, _)) => "down".to_string(),
            None => "unchecked".to_string(),
        })
        .collect();
    ("probe".into(), states)
}

/// The router's conntrack usage (count, max), or None when conntrack is not loaded: both
/// sysctl files exist only once the module is. Read in the caller's network namespace.
fn conntrack_usage() -> Option<(u64, u64)> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("nf_conntrack_count")?, read("nf_conntrack_max")?))
}

/// The status line for the conntrack table; max 0 means the kernel enforces no limit.
fn conntrack_line(usage: Option<(u64, u64)>) -> String {
    match usage {
        None => "conntrack: not loaded\n".to_string(),
        Some((count, 0)) => format!("conntrack: {count} entries (no limit)\n"),
        Some((count, max)) if count >= max => {
            format!(
                "conntrack: {count} of {max} entries (full: the kernel drops new connections)\n"
            )
        }
        Some((count, max)) => format!("conntrack: {count} of {max} entries\n"),
    }
}

/// A JSON number for a width-aligned column (serde_json's Display ignores widths).
fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * part as f64 / total as f64
    }
}

pub fn status(path: &Path, as_json: bool, state_file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let spec = load_spec(path)?;
    privilege::require_net_admin("status")?;
    let file = state_file.unwrap_or_else(|| watch::default_state_file(&spec));
    let (source, states) = states(&spec, &file);
    let rs = ruleset::compile(&spec);
    let socket = Socket::open().context("opening the netfilter netlink socket")?;
    let counters = read::account(&socket, &rs, spec.gateways.len())?;
    let applied = counters.is_some();
    let counters = counters.unwrap_or_else(|| vec![Default::default(); spec.gateways.len()]);
    let mut live = Vec::new();
    for g in &spec.gateways {
        live.push(
            conntrack::count_by_mark(&socket, g.mark, spec.mark_mask)
                .context("counting connections in the conntrack table")?,
        );
    }
    let usage = conntrack_usage();
    let total_new: u64 = counters.iter().map(|c| c.new_connections.packets).sum();
    let total_bytes: u64 = counters.iter().map(|c| c.traffic.bytes).sum();
    let rows: Vec<Value> = spec
        .gateways
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let c = counters[i];
            json!({
                "name": g.name,
                "interface": g.interface,
                "state": states[i],
                "weight": g.weight,
                "packets": c.traffic.packets,
                "bytes": c.traffic.bytes,
                "new_connections": c.new_connections.packets,
                "live_connections": live[i],
                "new_connection_share": share(c.new_connections.packets, total_new),
                "byte_share": share(c.traffic.bytes, total_bytes),
            })
        })
        .collect();
    if as_json {
        let doc = json!({
            "table": spec.table,
            "family": spec.family.as_str(),
            "applied": applied,
            "state_source": source,
            "gateways": rows,
            "conntrack": usage.map(|(count, max)| json!({ "count": count, "max": max })),
        });
        write_stdout(&format!("{doc:#}\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "table {} {}{} (states from {})\n",
        spec.family,
        spec.table,
        if applied {
            ""
        } else {
            ": not applied, no counters"
        },
        if source == "watch" {
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
    for r in &rows {
        out.push_str(&format!(
            "{:<12} {:<10} {:<9} {:>6} {:>12} {:>14} {:>8} {:>6.1}% {:>6} {:>6.1}%\n",
            r["name"].as_str().unwrap_or(""),
            r["interface"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            n(&r["weight"]),
            n(&r["packets"]),
            n(&r["bytes"]),
            n(&r["new_connections"]),
            r["new_connection_share"].as_f64().unwrap_or(0.0),
            n(&r["live_connections"]),
            r["byte_share"].as_f64().unwrap_or(0.0),
        ));
    }
    out.push_str(&conntrack_line(usage));
    write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::conntrack_line;

    #[test]
    fn conntrack_lines() {
        assert_eq!(conntrack_line(None), "conntrack: not loaded\n");
        assert_eq!(
            conntrack_line(Some((12, 262144))),
            "conntrack: 12 of 262144 entries\n"
        );
        assert_eq!(
            conntrack_line(Some((262144, 262144))),
            "conntrack: 262144 of 262144 entries (full: the kernel drops new connections)\n"
        );
        assert_eq!(
            conntrack_line(Some((5, 0))),
            "conntrack: 5 entries (no limit)\n"
        );
    }
}
