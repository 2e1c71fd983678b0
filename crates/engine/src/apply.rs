//! The commands that change the system: the new routing beside the old, then the rules in
//! one commit, then the old routing removed; the routing change undone when the commit
//! fails, and a journal for a process that dies in between. Also flush and recover.

use std::path::Path;

use anyhow::Context;
use nftbalance_routing as routing;
use nftbalance_ruleset::Availability;
use nftbalance_spec::Spec;

use crate::backend::LastCommit;
use crate::files::{self, netns_cookie, TableFiles};
use crate::journal::{self, Interrupted, Journal};
use crate::lock::{TableLock, LOCK_WAIT};
use crate::state::{self, Applied, WatchState};
use crate::{decide, BackendKind, Say};

/// Test hook: `NFTBALANCE_FAILPOINT=NAME` kills this process with SIGKILL at that point of
/// `apply`, as a crash would, so tests reach the gap between routing and rules on purpose.
fn failpoint(name: &str) {
    if std::env::var("NFTBALANCE_FAILPOINT").is_ok_and(|v| v == name) {
        let _ = signal_hook::low_level::raise(signal_hook::consts::SIGKILL);
    }
}

fn label(spec: &Spec) -> String {
    format!("table {} {}", spec.family, spec.table)
}

/// Takes the table's lock; with `settle`, settles a journal left by an apply that died.
/// Returns what settling did.
pub fn lock(
    spec: &Spec,
    files: &TableFiles,
    settle: bool,
    say: &Say,
) -> anyhow::Result<(TableLock, Option<journal::Settled>)> {
    let lock = TableLock::acquire(&files.lock(), &label(spec), LOCK_WAIT, say)?;
    let settled = if settle && files.journal().exists() {
        Some(Interrupted::read(&files.journal())?.settle()?)
    } else {
        None
    };
    Ok((lock, settled))
}

fn report_settled(settled: Option<journal::Settled>, say: &Say) {
    if let Some(s) = settled {
        for w in &s.warnings {
            (say.warn)(w);
        }
        (say.warn)(&s.done);
    }
}

/// A warning for read-only commands when an apply of this table died halfway.
pub fn interrupted_warning(spec: &Spec) -> Option<String> {
    let path = TableFiles::of(spec).journal();
    path.exists().then(|| {
        format!(
            "an apply of {} was interrupted (journal {}); routing and rules may not match \
             until `nftbalance recover` or the next apply",
            label(spec),
            path.display()
        )
    })
}

/// The other nftbalance table in force in this network namespace, if any: the policy
/// routing (ip rule priorities and routes nftbalance owns) is per namespace, so two tables
/// would remove each other's rules. A record whose table is gone is removed; so is another
/// iptables-legacy record when `backend` is iptables-legacy too (its chains have fixed
/// names, so a legacy apply replaces whatever legacy spec was there).
fn other_table(files: &TableFiles, backend: BackendKind) -> anyhow::Result<Option<String>> {
    let mine = files.applied();
    let records = files::of_this_netns(files.dir(), &files::netns_prefix(), ".applied.json")
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(Vec::new()),
            _ => Err(e),
        })
        .with_context(|| format!("listing {}", files.dir().display()))?;
    for path in records.into_iter().filter(|p| *p != mine) {
        let Ok(record) = Applied::read(&path) else {
            continue;
        };
        if record.netns_cookie.is_some() && record.netns_cookie != netns_cookie() {
            // A namespace that is gone left it, and this one got its inode number.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let Ok(spec) = Spec::from_json(&record.spec) else {
            continue;
        };
        let replaced = backend == BackendKind::IptablesLegacy && record.backend == backend;
        if !replaced && record.backend.backend().exists(&spec)? {
            return Ok(Some(format!(
                "{} ({})",
                label(&spec),
                match record.backend {
                    BackendKind::Nftables => "nftables",
                    BackendKind::IptablesLegacy => "iptables-legacy",
                }
            )));
        }
        let _ = std::fs::remove_file(&path);
    }
    Ok(None)
}

/// What apply or check did, for the command to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub summary: String,
}

/// `apply --check`: the kernel validates the whole change; nothing changes, not even to
/// settle an interrupted apply.
pub fn check(spec: &Spec, backend: BackendKind, say: &Say) -> anyhow::Result<Done> {
    if let Some(w) = interrupted_warning(spec) {
        (say.warn)(&w);
    }
    let files = TableFiles::of(spec);
    let _lock = lock(spec, &files, false, say)?;
    let rsock = route_socket()?;
    let links = routing::Links::read(&rsock).context("reading the network interfaces")?;
    let (plan, _) = crate::repair::routing_plan(&rsock, spec, &links)?;
    for w in plan.skipped(&links) {
        (say.warn)(&w.to_string());
    }
    let availability = Availability::without(plan.unroutable_gateways(&links));
    let summary = backend.backend().check(spec, &availability)?;
    Ok(Done { summary })
}

pub(crate) fn route_socket() -> anyhow::Result<routing::Socket> {
    routing::Socket::open().context("opening the rtnetlink socket")
}

/// `apply`: see the module docs. A running watch of this table lends its gateway states, so
/// that apply never puts a gateway watch found down back into the split.
pub fn apply(spec: &Spec, source: &str, backend: BackendKind, say: &Say) -> anyhow::Result<Done> {
    let files = TableFiles::of(spec);
    let (_lock, settled) = lock(spec, &files, true, say)?;
    report_settled(settled, say);
    apply_locked(spec, source, backend, &files, say)
}

/// Milliseconds since `started`, for the applied record.
fn millis_since(started: std::time::Instant) -> Option<u64> {
    u64::try_from(started.elapsed().as_millis()).ok()
}

/// [`apply`] under a lock the caller holds.
pub(crate) fn apply_locked(
    spec: &Spec,
    source: &str,
    backend: BackendKind,
    files: &TableFiles,
    say: &Say,
) -> anyhow::Result<Done> {
    let started = std::time::Instant::now();
    if let Some(other) = other_table(files, backend)? {
        anyhow::bail!(
            "{other} is applied in this network namespace already, and nftbalance's policy \
             routing (ip rules at priorities {}-{}, routes of protocol {}) belongs to one \
             table per namespace; flush that table first (`nftbalance flush` with its spec) \
             or put both specs' gateways into one spec; nothing was changed",
            routing::OWNED_PRIORITIES.start(),
            routing::OWNED_PRIORITIES.end(),
            routing::ROUTE_PROTOCOL
        );
    }
    let rsock = route_socket()?;
    let links = routing::Links::read(&rsock).context("reading the network interfaces")?;
    let (plan, learned) = crate::repair::routing_plan(&rsock, spec, &links)?;
    for line in &learned {
        (say.note)(line);
    }
    let before = routing::read_owned(&rsock).context("reading the current ip rules and routes")?;
    // Read once: the record's spec text is as large as the spec.
    let previous = previous_record(files, backend);
    let seen = Seen {
        plan: &plan,
        links: &links,
        before: &before,
        previous: previous.as_ref(),
    };
    if let Some(done) = unchanged(spec, source, backend, files, &seen, say)? {
        return Ok(done);
    }
    let mut journal = Journal::begin(files.journal(), source, backend, &before)?;
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
        (say.warn)(&w.to_string());
    }
    failpoint("after-routing");
    let availability = availability_with_watch(spec, files, &report.unrouted_gateways(), say);
    let b = backend.backend();
    let last = previous.as_ref().map(last_commit);
    let result = b
        .generation()
        .and_then(|generation| journal.routing_done(&availability, generation))
        .and_then(|()| b.apply_over(spec, source, &availability, last.as_ref()));
    match result {
        Ok(outcome) => {
            failpoint("after-commit");
            let took = millis_since(started);
            let counters_since = match &previous {
                Some(p) if !outcome.counters_reset => p.counters_since,
                _ => Some(state::now()),
            };
            let committed = Committed {
                generation: outcome.generation,
                counters_since,
                duration_ms: took,
            };
            record_applied(files, backend, source, &availability, committed, say);
            let done = outcome.summary;
            routing::apply(&rsock, &plan, &links).map_err(|e| {
                anyhow::Error::from(e).context(format!(
                    "{done}, but removing the previous ip rules and routes failed; \
                     the journal stays, so `nftbalance recover` or the next apply tries again"
                ))
            })?;
            journal.finish()?;
            let skipped: usize = report.warnings.iter().map(|w| w.routes.len()).sum();
            let (rules, routes) = (plan.rules.len(), plan.routes.len() - skipped);
            Ok(Done {
                summary: format!("{done}; routing: {rules} ip rules, {routes} routes"),
            })
        }
        Err(e) => match routing::restore(&rsock, &before) {
            Ok(skipped) => {
                for w in &skipped {
                    (say.warn)(w);
                }
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

/// Whether a re-apply has nothing to do, as a reconnect hook's usually has: the routing is
/// the plan already, and the applied record holds this very text, compiled for the
/// availability wanted now, committed at the generation the kernel still reads (so the live
/// table is that ruleset). Then nothing is compiled, sent or written: no journal is needed,
/// as a kill -9 at any point leaves the state as it was, and the record stays true (its
/// `at` is the time of the last commit).
pub(crate) fn nothing_to_do(
    previous: Option<&Applied>,
    source: &str,
    availability: &Availability,
    generation_now: Option<u32>,
    routing_in_force: bool,
) -> bool {
    routing_in_force
        && !crate::backend::forced_full_replace()
        && generation_now.is_some()
        && previous.is_some_and(|p| {
            p.generation == generation_now
                && p.spec == source
                && p.unavailable == availability.unavailable
                && p.kept == availability.kept
        })
}

/// What apply has read before it changes anything.
struct Seen<'a> {
    plan: &'a routing::RoutingPlan,
    links: &'a routing::Links,
    /// The owned ip rules and routes.
    before: &'a routing::OwnedState,
    previous: Option<&'a Applied>,
}

/// The summary of an apply that found [`nothing_to_do`], or none when there is something.
fn unchanged(
    spec: &Spec,
    source: &str,
    backend: BackendKind,
    files: &TableFiles,
    seen: &Seen,
    say: &Say,
) -> anyhow::Result<Option<Done>> {
    let (plan, links) = (seen.plan, seen.links);
    let routing_in_force = routing::in_force(plan, links, seen.before);
    if !routing_in_force || seen.previous.is_none_or(|p| p.spec != source) {
        return Ok(None);
    }
    let (availability, watch) =
        expected_availability(spec, files, &plan.unroutable_gateways(links));
    let now = backend.backend().generation()?;
    if !nothing_to_do(seen.previous, source, &availability, now, routing_in_force) {
        return Ok(None);
    }
    let skipped = plan.skipped(links);
    for w in &skipped {
        (say.warn)(&w.to_string());
    }
    note_watch(&availability, watch, &plan.unroutable_gateways(links), say);
    let routes: usize = plan.routes.len() - skipped.iter().map(|w| w.routes.len()).sum::<usize>();
    let summary = format!(
        "{}: unchanged, nothing sent (incremental apply); routing: {} ip rules, {routes} routes",
        label(spec),
        plan.rules.len()
    );
    log::info!("{summary}");
    Ok(Some(Done { summary }))
}

/// The gateways without routes, plus those a running watch of this table found down.
fn availability_with_watch(
    spec: &Spec,
    files: &TableFiles,
    unrouted: &std::collections::BTreeSet<String>,
    say: &Say,
) -> Availability {
    let (a, watch) = expected_availability(spec, files, unrouted);
    note_watch(&a, watch, unrouted, say);
    a
}

/// Says which gateways the running watch (if any) finds down.
fn note_watch(
    a: &Availability,
    watch: Option<WatchState>,
    unrouted: &std::collections::BTreeSet<String>,
    say: &Say,
) {
    let Some(watch) = watch else {
        return;
    };
    let down: Vec<&str> = a
        .unavailable
        .iter()
        .filter(|n| !unrouted.contains(*n))
        .map(String::as_str)
        .collect();
    if !down.is_empty() {
        (say.note)(&format!(
            "the running watch (pid {}) finds {} down: no new connections for them",
            watch.pid,
            down.join(", ")
        ));
    }
}

/// The availability the table should be compiled for now: routing's view (`unrouted`), plus
/// the observed states of a running watch of this table (returned too), as watch decides.
pub(crate) fn expected_availability(
    spec: &Spec,
    files: &TableFiles,
    unrouted: &std::collections::BTreeSet<String>,
) -> (Availability, Option<WatchState>) {
    let Some(watch) = WatchState::of_running_watch(&files.state(), netns_cookie()) else {
        return (Availability::without(unrouted.clone()), None);
    };
    let in_force = Applied::read(&files.applied())
        .map(|a| a.availability())
        .unwrap_or_default();
    let a = decide::availability(spec, &watch.observed(), unrouted, &in_force);
    (a, Some(watch))
}

/// The applied record of this table's last commit by `backend` in this network namespace.
fn previous_record(files: &TableFiles, backend: BackendKind) -> Option<Applied> {
    Applied::read(&files.applied())
        .ok()
        .filter(|a| a.backend == backend)
        .filter(|a| a.netns_cookie.is_none() || a.netns_cookie == netns_cookie())
}

/// What a record says was committed.
fn last_commit(record: &Applied) -> LastCommit {
    LastCommit {
        source: record.spec.clone(),
        availability: record.availability(),
        generation: record.generation,
    }
}

/// What the applied record says about the commit besides the spec.
struct Committed {
    generation: Option<u32>,
    counters_since: Option<u64>,
    /// How long the apply took.
    duration_ms: Option<u64>,
}

/// The applied record a running watch follows. A failure to write it is a warning: the
/// rules are in, and watch falls back to its own spec.
fn record_applied(
    files: &TableFiles,
    backend: BackendKind,
    source: &str,
    availability: &Availability,
    committed: Committed,
    say: &Say,
) {
    let record = Applied {
        version: state::APPLIED_VERSION,
        backend,
        spec: source.to_string(),
        unavailable: availability.unavailable.clone(),
        kept: availability.kept.clone(),
        netns_cookie: netns_cookie(),
        at: state::now(),
        duration_ms: committed.duration_ms,
        pid: std::process::id(),
        generation: committed.generation,
        counters_since: committed.counters_since,
    };
    if let Err(e) = record.write(&files.applied()) {
        (say.warn)(&format!("{e:#}"));
    }
}

/// What flush removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flushed {
    pub rules: String,
    /// None when the routing belongs to another table and was left alone.
    pub routing: Option<(usize, usize)>,
    pub routing_owner: Option<String>,
}

/// `flush`: the rules first (so nothing is marked for a missing table), then the owned ip
/// rules and routes, unless another table's rules are in force and the routing is theirs.
pub fn flush(spec: &Spec, backend: BackendKind, say: &Say) -> anyhow::Result<Flushed> {
    let files = TableFiles::of(spec);
    let (_lock, settled) = lock(spec, &files, true, say)?;
    report_settled(settled, say);
    let rules = backend.backend().remove(spec)?;
    match std::fs::remove_file(files.applied()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            (say.warn)(&format!("removing {}: {e}", files.applied().display()))
        }
        _ => {}
    }
    if let Some(owner) = other_table(&files, backend)? {
        return Ok(Flushed {
            rules,
            routing: None,
            routing_owner: Some(owner),
        });
    }
    let removed = routing::flush(&route_socket()?)?;
    Ok(Flushed {
        rules,
        routing: Some(removed),
        routing_owner: None,
    })
}

/// `recover`: settles every apply in this network namespace that died halfway; one line per
/// journal. A directory that cannot be read is an error.
pub fn recover(say: &Say) -> anyhow::Result<Vec<String>> {
    let found = journal::left_behind(Path::new(files::RUN_DIR), &files::netns_prefix())?;
    let mut lines = Vec::new();
    for path in found {
        let interrupted = Interrupted::read(&path)?;
        let spec = interrupted.spec.clone();
        // The lock settles it, unless another nftbalance did so while we waited.
        match lock(&spec, &TableFiles::of(&spec), true, say)? {
            (_lock, Some(done)) => {
                for w in &done.warnings {
                    (say.warn)(w);
                }
                lines.push(done.done);
            }
            (_lock, None) => lines.push(format!(
                "{}: settled meanwhile by another nftbalance",
                label(&spec)
            )),
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(spec: &str, generation: Option<u32>) -> Applied {
        Applied {
            version: state::APPLIED_VERSION,
            backend: BackendKind::Nftables,
            spec: spec.into(),
            unavailable: ["isp2".to_string()].into(),
            kept: Default::default(),
            netns_cookie: None,
            at: 0,
            duration_ms: None,
            pid: 1,
            generation,
            counters_since: None,
        }
    }

    #[test]
    fn only_the_same_text_availability_generation_and_routing_is_nothing_to_do() {
        let a = Availability::without(["isp2".to_string()].into());
        let r = record("{}", Some(7));
        assert!(nothing_to_do(Some(&r), "{}", &a, Some(7), true));
        assert!(
            !nothing_to_do(Some(&r), "{}", &a, Some(7), false),
            "routing differs"
        );
        assert!(
            !nothing_to_do(Some(&r), "{}", &a, Some(8), true),
            "someone committed"
        );
        assert!(
            !nothing_to_do(Some(&r), "{}", &a, None, true),
            "no generation"
        );
        assert!(
            !nothing_to_do(Some(&r), "{ }", &a, Some(7), true),
            "other text"
        );
        let all = Availability::without(Default::default());
        assert!(
            !nothing_to_do(Some(&r), "{}", &all, Some(7), true),
            "isp2 back"
        );
        assert!(!nothing_to_do(
            Some(&record("{}", None)),
            "{}",
            &a,
            None,
            true
        ));
        assert!(!nothing_to_do(None, "{}", &a, Some(7), true), "no record");
    }
}
