//! The commands that change or read the system: the new routing beside the old, then the
//! ruleset in one transaction, then the old routing removed; the routing change undone when
//! the transaction fails, and a journal for a process that dies in between.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nftbalance_legacy as legacy;
use nftbalance_netlink::{lower, read, transaction, Commit, Socket};
use nftbalance_routing as routing;
use nftbalance_ruleset::{self as ruleset, Availability, Ruleset};
use nftbalance_spec::Spec;

use crate::journal::{self, Journal};
use crate::{privilege, write_stdout, Backend, EXIT_DIFFERENT};

/// How long a command waits for another nftbalance to finish with the same table.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Where locks, journals and state files live.
pub const RUN_DIR: &str = "/run/nftbalance";

/// The part of file names in [`RUN_DIR`] that is this network namespace: namespaces share
/// /run, their inode numbers keep them apart.
fn netns_prefix() -> String {
    let netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0);
    format!("{netns}-")
}

/// `RUN_DIR/NETNS-FAMILY-TABLE.EXT`: the lock and the journal of one table.
fn table_file(spec: &Spec, ext: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!(
        "{}{}-{}.{ext}",
        netns_prefix(),
        spec.family,
        spec.table
    ))
}

/// Serialises nftbalance processes that change one table in one network namespace, so two
/// applies cannot interleave their routing and ruleset steps. Released when dropped. An
/// apply of this table that died halfway is settled first (see [`journal`]).
pub fn lock(spec: &Spec) -> anyhow::Result<File> {
    let (file, settled) = lock_and_settle(spec, true)?;
    if let Some(done) = settled {
        eprintln!("nftbalance: warning: {done}");
    }
    Ok(file)
}

/// The lock; with `settle`, a journal left by an apply that died is settled under it.
fn lock_and_settle(spec: &Spec, settle: bool) -> anyhow::Result<(File, Option<String>)> {
    std::fs::create_dir_all(RUN_DIR).with_context(|| format!("creating {RUN_DIR}"))?;
    let path = table_file(spec, "lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    let deadline = Instant::now() + LOCK_WAIT;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                if !said {
                    said = true;
                    eprintln!(
                        "nftbalance: waiting for another nftbalance that is changing table {} {} \
                         (lock {}); this one goes after it",
                        spec.family,
                        spec.table,
                        path.display()
                    );
                }
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
    let journal = table_file(spec, "journal");
    let settled = if settle && journal.exists() {
        Some(journal::Interrupted::read(&journal)?.settle()?)
    } else {
        None
    };
    Ok((file, settled))
}

/// Test hook: `NFTBALANCE_FAILPOINT=NAME` kills this process with SIGKILL at that point of
/// `apply`, as a crash would, so tests reach the gap between routing and rules on purpose.
fn failpoint(name: &str) {
    if std::env::var("NFTBALANCE_FAILPOINT").is_ok_and(|v| v == name) {
        let _ = signal_hook::low_level::raise(signal_hook::consts::SIGKILL);
    }
}

/// `recover`: settles every apply in this network namespace that died halfway.
pub fn recover() -> anyhow::Result<()> {
    privilege::require_net_admin("recover")?;
    let found = journal::left_behind(Path::new(RUN_DIR), &netns_prefix());
    if found.is_empty() {
        println!("nothing to recover: no interrupted apply in this network namespace");
    }
    for path in found {
        let interrupted = journal::Interrupted::read(&path)?;
        // The lock settles it, unless another nftbalance did so while we waited.
        match lock_and_settle(&interrupted.spec, true)? {
            (_lock, Some(done)) => println!("{done}"),
            (_lock, None) => println!(
                "table {} {}: settled meanwhile by another nftbalance",
                interrupted.spec.family, interrupted.spec.table
            ),
        }
    }
    Ok(())
}

/// A warning for read-only commands when an apply of this table died halfway.
pub fn warn_if_interrupted(spec: &Spec) {
    let path = table_file(spec, "journal");
    if path.exists() {
        eprintln!(
            "nftbalance: warning: an apply of table {} {} was interrupted (journal {}); \
             routing and rules may not match until `nftbalance recover` or the next apply",
            spec.family,
            spec.table,
            path.display()
        );
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
pub fn apply(spec: &Spec, source: &str, check: bool, backend: Backend) -> anyhow::Result<()> {
    privilege::require_net_admin("apply")?;
    // --check changes nothing, not even to settle an interrupted apply.
    let _lock = if check {
        warn_if_interrupted(spec);
        lock_and_settle(spec, false)?.0
    } else {
        lock(spec)?
    };
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
    let mut journal = Journal::begin(table_file(spec, "journal"), source, backend, &before)?;
    // Make before break: the new ip rules and routes go in beside the old ones, so the old
    // ruleset keeps routing by its marks until the commit; the old ones go after it. A
    // refused routing step puts back what it had changed itself.
    let report = match routing::install(&rsock, &plan, &links) {
        Ok(report) => report,
        Err(e) => {
            journal.finish()?;
            return Err(e.into());
        }
    };
    for w in &report.warnings {
        eprintln!("nftbalance: warning: {w}");
    }
    failpoint("after-routing");
    let availability = Availability {
        unavailable: report.unrouted_gateways(),
    };
    let recorded = match backend {
        Backend::Nftables => nft_socket().and_then(|s| {
            s.generation()
                .context("reading the nftables generation")
                .map(Some)
        }),
        Backend::IptablesLegacy => Ok(None),
    }
    .and_then(|generation| journal.routing_done(&availability.unavailable, generation));
    let result = match (recorded, backend) {
        (Err(e), _) => Err(e),
        (Ok(()), Backend::IptablesLegacy) => legacy::load::apply(spec, false)
            .map(|()| "iptables-legacy: applied the NFTBALANCE-* chains".to_string())
            .map_err(anyhow::Error::from),
        (Ok(()), Backend::Nftables) => {
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
            failpoint("after-commit");
            routing::apply(&rsock, &plan, &links).map_err(|e| {
                anyhow::Error::from(e).context(format!(
                    "{done}, but removing the previous ip rules and routes failed; \
                     the journal stays, so `nftbalance recover` or the next apply tries again"
                ))
            })?;
            journal.finish()?;
            let (rules, routes) = (
                plan.rules.len(),
                plan.routes.len() - report_skipped(&report),
            );
            println!("{done}; routing: {rules} ip rules, {routes} routes");
            Ok(())
        }
        Err(e) => match routing::restore(&rsock, &before) {
            Ok(()) => {
                journal.finish()?;
                Err(e.context("the ip rules and routes were put back as they were"))
            }
            Err(undo) => Err(e.context(format!(
                "putting the ip rules and routes back failed too: {undo}; \
                 the journal stays, so `nftbalance recover` or the next apply tries again"
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
    warn_if_interrupted(spec);
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
