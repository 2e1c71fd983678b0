//! The commands that change or read the system: routing first, then the ruleset in one
//! transaction, and the routing change undone when the transaction fails.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nftbalance_legacy as legacy;
use nftbalance_netlink::{lower, read, transaction, Commit, Socket};
use nftbalance_routing as routing;
use nftbalance_ruleset::{self as ruleset, Availability, Ruleset};
use nftbalance_spec::Spec;

use crate::{privilege, write_stdout, Backend, EXIT_DIFFERENT};

/// How long a command waits for another nftbalance to finish with the same table.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Serialises nftbalance processes that change one table in one network namespace, so two
/// applies cannot interleave their routing and ruleset steps. Released when dropped.
pub fn lock(spec: &Spec) -> anyhow::Result<File> {
    let dir = Path::new("/run/nftbalance");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Namespaces share /run: the namespace's inode keeps their locks apart.
    let netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0);
    let path = dir.join(format!("{netns}-{}-{}.lock", spec.family, spec.table));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => anyhow::bail!(
                "another nftbalance has been changing table {} {} for {}s (lock {}); \
                 nothing was changed",
                spec.family,
                spec.table,
                LOCK_WAIT.as_secs(),
                path.display()
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

fn nft_socket() -> anyhow::Result<Socket> {
    Socket::open().context("opening the netfilter netlink socket")
}

fn route_socket() -> anyhow::Result<routing::Socket> {
    routing::Socket::open().context("opening the rtnetlink socket")
}

fn summary(rs: &Ruleset) -> String {
    let rules: usize = rs.chains.iter().map(|c| c.rules.len()).sum();
    format!(
        "{} chains, {} sets and maps, {rules} rules",
        rs.chains.len(),
        rs.sets.len()
    )
}

/// `apply [--check] [--backend]`.
pub fn apply(spec: &Spec, check: bool, backend: Backend) -> anyhow::Result<()> {
    privilege::require_net_admin("apply")?;
    let _lock = lock(spec)?;
    let rsock = route_socket()?;
    let links = routing::Links::read(&rsock).context("reading the network interfaces")?;
    let plan = routing::plan(spec);

    if check {
        // Nothing changes: the routing plan is only checked against the interfaces.
        for w in plan.skipped(&links) {
            eprintln!("nftbalance: warning: {w}");
        }
        let availability = Availability {
            unavailable: plan.unroutable_gateways(&links),
        };
        match backend {
            Backend::IptablesLegacy => {
                legacy::load::apply(spec, true)?;
                println!("iptables-legacy: the rules load; nothing was changed");
            }
            Backend::Nftables => {
                let rs = ruleset::compile_with(spec, &availability);
                transaction::run(&nft_socket()?, Commit::CheckOnly, || {
                    lower::replace_batch(&rs)
                })?;
                println!(
                    "table {} {}: the kernel accepts the ruleset ({}); nothing was changed",
                    rs.family,
                    rs.table,
                    summary(&rs)
                );
            }
        }
        return Ok(());
    }

    let before = routing::read_owned(&rsock).context("reading the current ip rules and routes")?;
    let report = routing::apply(&rsock, &plan, &links)?;
    for w in &report.warnings {
        eprintln!("nftbalance: warning: {w}");
    }
    let availability = Availability {
        unavailable: report.unrouted_gateways(),
    };
    let result = match backend {
        Backend::IptablesLegacy => legacy::load::apply(spec, false)
            .map(|()| "iptables-legacy: applied the NFTBALANCE-* chains".to_string())
            .map_err(anyhow::Error::from),
        Backend::Nftables => {
            let rs = ruleset::compile_with(spec, &availability);
            nft_socket()
                .and_then(|s| {
                    transaction::run(&s, Commit::Yes, || lower::replace_batch(&rs))
                        .map_err(anyhow::Error::from)
                })
                .map(|_| {
                    format!(
                        "table {} {}: applied ({})",
                        rs.family,
                        rs.table,
                        summary(&rs)
                    )
                })
        }
    };
    match result {
        Ok(done) => {
            let (rules, routes) = (
                plan.rules.len(),
                plan.routes.len() - report_skipped(&report),
            );
            println!("{done}; routing: {rules} ip rules, {routes} routes");
            Ok(())
        }
        Err(e) => match routing::restore(&rsock, &before) {
            Ok(()) => Err(e.context("the ip rules and routes were put back as they were")),
            Err(undo) => Err(e.context(format!(
                "putting the ip rules and routes back failed too: {undo}; \
                 run `nftbalance flush` and apply again"
            ))),
        },
    }
}

fn report_skipped(report: &routing::ApplyReport) -> usize {
    report.warnings.iter().map(|w| w.routes.len()).sum()
}

/// `flush [--backend]`: the ruleset first (so nothing is marked for a missing table), then the
/// owned ip rules and routes.
pub fn flush(spec: &Spec, backend: Backend) -> anyhow::Result<()> {
    privilege::require_net_admin("flush")?;
    let _lock = lock(spec)?;
    match backend {
        Backend::IptablesLegacy => {
            legacy::load::flush()?;
            println!("iptables-legacy: removed the NFTBALANCE-* chains");
        }
        Backend::Nftables => {
            let rs = ruleset::compile(spec);
            transaction::run(&nft_socket()?, Commit::Yes, || {
                lower::delete_batch(rs.family, &rs.table)
            })?;
            println!("table {} {}: removed", rs.family, rs.table);
        }
    }
    let (rules, routes) = routing::flush(&route_socket()?)?;
    println!("routing: removed {rules} ip rules and {routes} routes");
    Ok(())
}

/// `diff`: the live table against what `apply` would program now.
pub fn diff(spec: &Spec) -> anyhow::Result<ExitCode> {
    privilege::require_net_admin("diff")?;
    let rsock = route_socket()?;
    let links = routing::Links::read(&rsock).context("reading the network interfaces")?;
    let availability = Availability {
        unavailable: routing::plan(spec).unroutable_gateways(&links),
    };
    let rs = ruleset::compile_with(spec, &availability);
    let differences = read::diff(&nft_socket()?, &rs)?;
    let table = format!("table {} {}", rs.family, rs.table);
    if differences.is_empty() {
        println!("{table}: same as the spec");
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!(
        "{table}: {} difference(s) from the spec\n",
        differences.len()
    );
    for d in &differences {
        text.push_str(&format!("  {d}\n"));
    }
    write_stdout(&text)?;
    Ok(ExitCode::from(EXIT_DIFFERENT))
}
