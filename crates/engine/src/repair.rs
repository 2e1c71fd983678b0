//! Finding and undoing other programs' changes to what nftbalance owns: the owned ip rules
//! and routes (make-before-break, as apply does) and the table (one transaction replacing
//! it). Also the routing plan with the values learned from the interfaces, which apply and
//! watch share. Decides nothing about when to repair: watch paces that (`pacing`).

use anyhow::Context;
use nftbalance_netlink::{lower, read, transaction, Commit, Socket};
use nftbalance_routing as routing;
use nftbalance_ruleset::Ruleset;
use nftbalance_spec::Spec;

/// The routing as it should be now, and how the kernel differs from it.
#[derive(Debug, Clone)]
pub(crate) struct RoutingView {
    pub links: routing::Links,
    /// Only what the spec's gateways learn (two reads compare equal when nothing that
    /// matters changed).
    pub learned: routing::Learned,
    pub plan: routing::RoutingPlan,
    pub differences: Vec<String>,
}

/// The spec's routing plan with the values it leaves out learned from the interfaces, and
/// one line per gateway with learned values saying what they are now (for apply to print).
pub(crate) fn routing_plan(
    rsock: &routing::Socket,
    spec: &Spec,
    links: &routing::Links,
) -> anyhow::Result<(routing::RoutingPlan, Vec<String>)> {
    let learned =
        routing::Learned::read(rsock, links).context("reading the interfaces' addresses")?;
    let lines = learned
        .describe(&spec.gateways)
        .into_iter()
        .map(|l| format!("gateway {l}"))
        .collect();
    Ok((routing::plan_learned(spec, &learned), lines))
}

/// Reads the links, the learned values and the owned rules and routes.
pub(crate) fn read_routing(rsock: &routing::Socket, spec: &Spec) -> anyhow::Result<RoutingView> {
    let links = routing::Links::read(rsock).context("reading the network interfaces")?;
    let learned = routing::Learned::read(rsock, &links)
        .context("reading the interfaces' addresses")?
        .of(&spec.gateways);
    let plan = routing::plan_learned(spec, &learned);
    let differences = routing::differences(rsock, &plan, &links)
        .context("reading the owned ip rules and routes")?;
    Ok(RoutingView {
        links,
        learned,
        plan,
        differences,
    })
}

/// Puts the owned routing back to the plan: what is missing goes in beside what is there,
/// then what is extra goes (the kernel never lacks a route for a mark in between).
pub(crate) fn repair_routing(
    rsock: &routing::Socket,
    view: &RoutingView,
) -> anyhow::Result<routing::ApplyReport> {
    routing::install(rsock, &view.plan, &view.links).context("repairing the routing")?;
    routing::apply(rsock, &view.plan, &view.links).context("repairing the routing")
}

/// How the live table differs from `current`, one line each (empty: it is `current`).
pub(crate) fn table_differences(socket: &Socket, current: &Ruleset) -> anyhow::Result<Vec<String>> {
    Ok(read::diff(socket, current)
        .context("reading the table back")?
        .into_iter()
        .map(|d| d.to_string())
        .collect())
}

/// Replaces the table with `current` in one transaction (it may be gone).
pub(crate) fn replace_table(socket: &Socket, current: &Ruleset) -> anyhow::Result<()> {
    transaction::run(socket, Commit::Yes, || lower::replace_batch(current))
        .context("repairing the table")?;
    Ok(())
}

/// At most `n` lines joined, with how many were left out: log lines stay readable when a
/// whole table is gone.
pub(crate) fn first_lines(lines: &[String], n: usize) -> String {
    let mut s = lines.iter().take(n).cloned().collect::<Vec<_>>().join("; ");
    if lines.len() > n {
        s.push_str(&format!("; and {} more", lines.len() - n));
    }
    s
}
