//! `watch`: health checks per gateway and, when the wanted split changes, ONE transaction
//! that replaces only the balance decision (the chains whose rules change), never the table:
//! counters, sets and sticky sources keep their contents.
//!
//! The table is always "the last applied spec under the gateway states watch observes":
//! watch follows the applied record an `apply` writes (adopting its spec), apply reads the
//! states watch writes, and both change the table only under its lock. A change that cannot
//! be made now (lock busy, transaction refused) stays pending and is retried until the table
//! matches; the state file says what was observed and what is in force, separately.
//!
//! Woken by the kernel's notifications (`events`), watch also puts back what other programs
//! removed or changed (`repair`, paced by `pacing`), learns uplinks' addresses and next hops
//! as they change, and resumes from its state file after a restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use nftbalance_health as health;
use nftbalance_netlink::{conntrack, read};
use nftbalance_routing as routing;
use nftbalance_ruleset::{self as ruleset, Availability, Ruleset};
use nftbalance_spec::Spec;

use crate::apply::{self, route_socket};
use crate::backend::{nft_socket, update_table, Updated};
use crate::events;
use crate::files::{netns_cookie, TableFiles};
use crate::hooks::{self, GatewayChange, HookEvent, HookRunner, PolicyChange};
use crate::journal::Interrupted;
use crate::lock::{LockError, TableLock};
use crate::pacing::Pacing;
use crate::repair::{self, first_lines};
use crate::state::{self, Applied, GatewayState, WatchState};
use crate::{decide, probe_once, thresholds, BackendKind, Round, Say};

fn tier_text(tier: Option<u8>) -> String {
    tier.map_or_else(|| "none".into(), |t| t.to_string())
}

/// How long a failover waits for another nftbalance's lock before it retries later: short,
/// so that probing, logging and the state file go on meanwhile.
const TRANSITION_LOCK_WAIT: Duration = Duration::from_secs(2);
/// How often watch looks for changes by others without a kernel notification: the backstop
/// for a lost notification (reading every owned route each second would be a cost on a
/// router with a full routing table).
const BACKSTOP: Duration = Duration::from_secs(10);
/// How often the wanted split is compared with the one in force without a probe verdict
/// (links that went away, an apply that changed the spec, a retry).
const RECHECK: Duration = Duration::from_secs(1);
/// The longest pause between retries of a change that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn log_say() -> Say<'static> {
    Say {
        note: &|m| log::warn!("{m}"),
        warn: &|m| log::warn!("{m}"),
    }
}

/// The identity of the applied record's file: a change means an apply (or flush) happened.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The live state of a watch session.
struct Session {
    spec: Spec,
    /// Runs `hooks.on_change` for each transition, never blocking the session.
    hooks: Arc<HookRunner>,
    /// The spec's text (what apply journals and records).
    source: String,
    files: TableFiles,
    state_file: PathBuf,
    /// Per gateway: its health from the probe rounds (a gateway without checks stays up).
    qualities: Vec<health::Quality>,
    details: Vec<String>,
    since: Vec<u64>,
    /// What the table holds as far as watch knows; None after a flush (watch then idles).
    current: Option<Ruleset>,
    in_force: Availability,
    applied_stamp: Option<(SystemTime, u64)>,
    pending: Option<String>,
    failures: u32,
    next_attempt: Instant,
    /// Repairs of the same thing again and again wait longer and longer.
    pacing: Pacing,
    /// The nftables generation when the table was last known to be `current`: while it has
    /// not moved, nobody committed anything and the table needs no reading.
    known_generation: Option<u32>,
    /// The interfaces and learned values at the last check (a change is no fight).
    seen: Option<(routing::Links, routing::Learned)>,
    /// The kernel reported a change since the last repair check (or a repair waits).
    woken: bool,
    /// When the last repair check went through.
    checked: Instant,
    /// Per gateway: state changes and probe rounds since the start (metrics).
    transitions: Vec<u64>,
    rounds: Vec<u64>,
    /// How long the last update took (the applied record says it).
    last_update_ms: Option<u64>,
    /// The state shared with a metrics endpoint, if one runs.
    published: Option<Published>,
}

/// What a running watch publishes for a metrics endpoint beside it: the spec in force and
/// the state it last wrote (the same document as the state file).
pub type Published = Arc<std::sync::Mutex<Option<(Spec, WatchState)>>>;

impl Session {
    fn new(
        spec: Spec,
        source: String,
        files: TableFiles,
        state_file: PathBuf,
        hooks: Arc<HookRunner>,
    ) -> Session {
        let n = spec.gateways.len();
        let now = Instant::now();
        let qualities = spec
            .gateways
            .iter()
            .map(|g| match &g.health {
                Some(h) => health::Quality::new(thresholds(h), now),
                None => health::Quality::starting_as(
                    health::State::Up,
                    health::Thresholds::consecutive(1, 1, 1),
                    now,
                ),
            })
            .collect();
        Session {
            qualities,
            details: vec![String::new(); n],
            since: vec![state::now(); n],
            current: None,
            in_force: Availability::default(),
            applied_stamp: None,
            pending: None,
            failures: 0,
            next_attempt: Instant::now(),
            pacing: Pacing::default(),
            known_generation: None,
            seen: None,
            woken: true,
            checked: Instant::now(),
            transitions: vec![0; n],
            rounds: vec![0; n],
            last_update_ms: None,
            published: None,
            hooks,
            spec,
            source,
            files,
            state_file,
        }
    }

    /// Takes over the table: if it is not the spec under the gateways routed now, a full
    /// apply puts it right first. A lock that can never be taken ends watch here.
    fn start(&mut self) -> anyhow::Result<()> {
        let say = log_say();
        let lock = TableLock::acquire(
            &self.files.lock(),
            &format!("table {} {}", self.spec.family, self.spec.table),
            crate::lock::LOCK_WAIT,
            &say,
        )?;
        self.settle_journal();
        self.resume_observed();
        let rs_if_applied = Applied::read(&self.files.applied())
            .ok()
            .filter(|a| a.spec == self.source && a.backend == BackendKind::Nftables);
        let adopted = match rs_if_applied {
            Some(a) => {
                let availability = a.availability();
                let rs = ruleset::compile_with(&self.spec, &availability);
                read::diff(&nft_socket()?, &rs)?
                    .is_empty()
                    .then_some((rs, availability))
            }
            None => None,
        };
        match adopted {
            Some((rs, availability)) => {
                self.current = Some(rs);
                self.in_force = availability;
            }
            None => {
                log::info!(
                    "table {} {} is not this spec as applied: applying it",
                    self.spec.family,
                    self.spec.table
                );
                apply::apply_locked(
                    &self.spec,
                    &self.source,
                    BackendKind::Nftables,
                    &self.files,
                    &say,
                )?;
                self.follow_applied()?;
            }
        }
        self.applied_stamp = stamp(&self.files.applied());
        drop(lock);
        self.write_state();
        Ok(())
    }

    /// Takes the gateway states from the state file a previous watch of this table left in
    /// this network namespace (killed, restarted by systemd): a restart neither forgets a
    /// gateway found down nor re-decides what is in force.
    fn resume_observed(&mut self) {
        let Ok(previous) = WatchState::read(&self.state_file) else {
            return;
        };
        if previous.table != self.spec.table
            || previous.family != self.spec.family.as_str()
            || previous.netns_cookie != netns_cookie()
        {
            return;
        }
        let now = Instant::now();
        let mut resumed = Vec::new();
        for (i, g) in self.spec.gateways.iter().enumerate() {
            let (Some(h), Some(was)) = (
                &g.health,
                previous.gateways.iter().find(|p| p.name == g.name),
            ) else {
                continue;
            };
            let Some(state) = previous.observed().get(&g.name).copied() else {
                continue;
            };
            if state == health::State::Unknown {
                continue;
            }
            self.qualities[i] = health::Quality::starting_as(state, thresholds(h), now);
            self.since[i] = was.since;
            resumed.push(format!("{} {}", g.name, state.as_str()));
        }
        if !resumed.is_empty() {
            log::warn!(
                "resuming from {} (pid {}): {}",
                self.state_file.display(),
                previous.pid,
                resumed.join(", ")
            );
        }
    }

    /// Settles an interrupted apply; a failure is logged and never blocks a failover.
    fn settle_journal(&self) {
        let path = self.files.journal();
        if !path.exists() {
            return;
        }
        match Interrupted::read(&path).and_then(|j| j.settle()) {
            Ok(s) => {
                for w in &s.warnings {
                    log::warn!("{w}");
                }
                log::warn!("{}", s.done);
            }
            Err(e) => log::error!("{e:#}; going on with the failover, the journal stays"),
        }
    }

    /// Reads the applied record and, when it is another spec than watch's, adopts it.
    /// Returns whether the spec changed (the probers must restart). Call under the lock.
    fn follow_applied(&mut self) -> anyhow::Result<bool> {
        self.applied_stamp = stamp(&self.files.applied());
        let Ok(a) = Applied::read(&self.files.applied()) else {
            if self.current.take().is_some() {
                log::warn!(
                    "table {} {} was flushed: watch keeps probing and changes nothing until \
                     the next apply",
                    self.spec.family,
                    self.spec.table
                );
            }
            return Ok(false);
        };
        let mut changed = false;
        if a.spec != self.source {
            match Spec::from_json(&a.spec) {
                Ok(spec) => {
                    log::warn!(
                        "an apply (pid {}) changed the spec of table {} {}: following it",
                        a.pid,
                        spec.family,
                        spec.table
                    );
                    self.adopt(spec, a.spec.clone());
                    changed = true;
                }
                Err(e) => {
                    log::error!("the applied record's spec does not parse ({e}); ignoring it");
                    return Ok(false);
                }
            }
        }
        self.in_force = a.availability();
        self.current = Some(ruleset::compile_with(&self.spec, &self.in_force));
        Ok(changed)
    }

    /// Takes a new spec, keeping the observed state of gateways it still has.
    fn adopt(&mut self, spec: Spec, source: String) {
        if spec.hooks != self.spec.hooks || spec.table != self.spec.table {
            match hooks::check_hooks(&spec).and_then(|()| Ok(HookRunner::for_spec(&spec)?)) {
                Ok(runner) => self.hooks = Arc::new(runner),
                Err(e) => log::error!("the new spec's hooks: {e:#}; keeping the running ones"),
            }
        }
        let mut next = Session::new(
            spec,
            source,
            self.files.clone(),
            self.state_file.clone(),
            self.hooks.clone(),
        );
        for (i, g) in next.spec.gateways.iter().enumerate() {
            let Some(j) = self.spec.gateways.iter().position(|o| o.name == g.name) else {
                continue;
            };
            if let Some(h) = &g.health {
                let mut q = self.qualities[j].clone();
                q.set_thresholds(thresholds(h));
                next.qualities[i] = q;
            }
            next.details[i] = self.details[j].clone();
            next.since[i] = self.since[j];
            next.transitions[i] = self.transitions[j];
            next.rounds[i] = self.rounds[j];
        }
        self.spec = next.spec;
        self.source = next.source;
        self.qualities = next.qualities;
        self.details = next.details;
        self.since = next.since;
        self.transitions = next.transitions;
        self.rounds = next.rounds;
    }

    fn observed(&self) -> std::collections::BTreeMap<String, health::State> {
        self.spec
            .gateways
            .iter()
            .zip(&self.qualities)
            .map(|(g, q)| (g.name.clone(), q.state()))
            .collect()
    }

    /// A probe result; on a state change the state file is written at once (before the
    /// table changes: `status` shows what was observed even if the change is pending).
    fn record(&mut self, i: usize, round: Round) -> bool {
        let now = Instant::now();
        self.rounds[i] += 1;
        let q = &mut self.qualities[i];
        let change = q.record(round.answer, now);
        self.details[i] = match q.good_since() {
            // Down, good again, in its hold-down: say so in `status`
            Some(since) => format!(
                "{}; recovering: good for {} ms of hold_down {} ms",
                round.detail,
                now.saturating_duration_since(since).as_millis(),
                q.thresholds().hold_down.as_millis()
            ),
            None => round.detail,
        };
        let Some(t) = change else {
            // Loss, latency and round counts move with every round.
            self.write_state();
            return false;
        };
        let g = &self.spec.gateways[i];
        self.transitions[i] += 1;
        self.since[i] = state::now();
        let q = &self.qualities[i];
        self.hooks.fire(HookEvent::Gateway(GatewayChange {
            name: g.name.clone(),
            interface: g.interface.clone(),
            from: t.from,
            to: t.to,
            since: self.since[i],
            detail: self.details[i].clone(),
            loss_percent: q.loss_percent().map(u32::from),
            rtt_ms: q.median_rtt().map(|d| d.as_millis() as u32),
        }));
        log::warn!(
            "gateway {} ({}): {t} ({})",
            g.name,
            g.interface,
            self.details[i]
        );
        if t.to == health::State::Down && g.flush_conntrack {
            let deleted = nft_socket().and_then(|s| {
                conntrack::delete_by_mark(&s, g.mark, self.spec.mark_mask)
                    .context("deleting the gateway's connections")
            });
            match deleted {
                Ok(n) => log::warn!(
                    "gateway {}: deleted {n} connections (flush_conntrack)",
                    g.name
                ),
                Err(e) => log::error!("gateway {}: {e:#}", g.name),
            }
        }
        self.next_attempt = Instant::now();
        self.write_state();
        true
    }

    /// The wanted split from routing's view now and the observed states.
    fn wanted(&self, unrouted: &std::collections::BTreeSet<String>) -> Availability {
        decide::availability(&self.spec, &self.observed(), unrouted, &self.in_force)
    }

    /// Brings the table to the wanted split when it differs; on failure the change stays
    /// pending and is retried with a growing pause. Err only when it can never succeed (the
    /// lock file is unusable). Returns whether the spec changed (an apply happened meanwhile).
    fn reconcile(&mut self) -> anyhow::Result<bool> {
        if Instant::now() < self.next_attempt {
            return Ok(false);
        }
        let pending_before = self.pending.clone();
        let result = self.step();
        self.next_attempt = Instant::now() + RECHECK;
        let changed = match result {
            Ok(changed) => {
                if self.pending.take().is_some() {
                    log::warn!("the pending change is done");
                }
                self.failures = 0;
                changed
            }
            Err(e) if is_unusable_lock(&e) => return Err(e),
            Err(e) => {
                let why = format!("{e:#}");
                if self.pending.as_deref() != Some(why.as_str()) || self.failures.is_multiple_of(30)
                {
                    log::error!("{why}; retrying until it is done");
                }
                self.pending = Some(why);
                self.failures += 1;
                self.next_attempt = Instant::now() + (RECHECK * self.failures).min(MAX_BACKOFF);
                false
            }
        };
        if changed || self.pending != pending_before {
            self.write_state();
        }
        Ok(changed)
    }

    /// One reconcile step: follow an apply, then change the split if it is not the wanted one.
    fn step(&mut self) -> anyhow::Result<bool> {
        let mut changed = false;
        if stamp(&self.files.applied()) != self.applied_stamp {
            // Read without the lock first: cheap, and read again under it before a change.
            changed = self.follow_applied()?;
        }
        if self.current.is_none() {
            return Ok(changed);
        }
        if self.woken || self.checked.elapsed() >= BACKSTOP {
            // Cleared only when the check went through: a failed one is retried.
            let checked = self.repair()?;
            changed |= checked == Checked::SpecChanged;
            (self.woken, self.checked) = (checked != Checked::Done, Instant::now());
        }
        if self.current.is_none() {
            return Ok(changed);
        }
        let links = routing::Links::read(&route_socket()?).context("reading the interfaces")?;
        let unrouted = routing::plan(&self.spec).unroutable_gateways(&links);
        if self.wanted(&unrouted) == self.in_force && self.pending.is_none() {
            return Ok(changed);
        }
        let in_force = self.in_force.clone();
        changed |= self.transition()?;
        if self.in_force != in_force {
            self.write_state();
        }
        Ok(changed)
    }

    /// Finds what someone else changed in the owned routing or the table and puts it back,
    /// one log line per repair saying what it repaired. Cheap when nothing changed: the
    /// owned rules and routes are read, the table only when the nftables generation moved.
    fn repair(&mut self) -> anyhow::Result<Checked> {
        let Some(current) = self.current.clone() else {
            return Ok(Checked::Done);
        };
        let rsock = route_socket()?;
        let view = repair::read_routing(&rsock, &self.spec)?;
        let seen = Some((view.links.clone(), view.learned.clone()));
        if self.seen != seen {
            // Uplinks came, went or changed address: a repeat repair is no fight.
            if self.seen.as_ref().map(|s| &s.1) != Some(&view.learned) {
                for line in view.learned.describe(&self.spec.gateways) {
                    log::warn!("gateway {line}");
                }
            }
            self.pacing.forget();
            self.seen = seen;
        }
        let socket = nft_socket()?;
        let generation = socket
            .generation()
            .context("reading the nftables generation")?;
        let table = if self.known_generation == Some(generation) {
            Vec::new()
        } else {
            repair::table_differences(&socket, &current)?
        };
        if table.is_empty() {
            self.known_generation = Some(generation);
        }
        let now = Instant::now();
        self.pacing.expire(now);
        let fix_routing = !view.differences.is_empty()
            && self.pacing.due(&routing_object(&view.differences), now);
        let fix_table = !table.is_empty() && self.pacing.due(TABLE_OBJECT, now);
        // A difference not due yet is looked at again at the next round.
        let checked = if (!view.differences.is_empty() && !fix_routing)
            || (!table.is_empty() && !fix_table)
        {
            Checked::Deferred
        } else {
            Checked::Done
        };
        if !fix_routing && !fix_table {
            return Ok(checked);
        }
        let _lock = self.lock_briefly()?;
        self.settle_journal();
        // An apply or a flush may be what changed things: follow it, never undo it.
        if self.follow_applied()? || self.current.as_ref() != Some(&current) {
            self.known_generation = None;
            return Ok(Checked::SpecChanged);
        }
        if fix_routing {
            self.repair_routing(&rsock, now)?;
        }
        if fix_table {
            self.repair_table(&socket, &current, now)?;
        }
        Ok(checked)
    }

    /// The routing part of [`Session::repair`], under the lock: read again, then repaired.
    fn repair_routing(&mut self, rsock: &routing::Socket, now: Instant) -> anyhow::Result<()> {
        let view = repair::read_routing(rsock, &self.spec)?;
        if view.differences.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let report = repair::repair_routing(rsock, &view)?;
        log::warn!(
            "repaired the routing of table {} {} in {} ms: {}{}",
            self.spec.family,
            self.spec.table,
            started.elapsed().as_millis(),
            first_lines(&view.differences, 4),
            if report.warnings.is_empty() {
                String::new()
            } else {
                format!(" ({} routes wait for their link)", report.warnings.len())
            }
        );
        if let Some(note) = self
            .pacing
            .repaired(&routing_object(&view.differences), now)
        {
            log::warn!("{note}");
        }
        Ok(())
    }

    /// The table part of [`Session::repair`], under the lock: read again, then ONE
    /// transaction that replaces it (its counters and sets start afresh: they are gone).
    fn repair_table(
        &mut self,
        socket: &nftbalance_netlink::Socket,
        current: &Ruleset,
        now: Instant,
    ) -> anyhow::Result<()> {
        let table = repair::table_differences(socket, current)?;
        if !table.is_empty() {
            let started = Instant::now();
            repair::replace_table(socket, current)?;
            log::warn!(
                "repaired table {} {} in {} ms (one transaction): {}",
                self.spec.family,
                self.spec.table,
                started.elapsed().as_millis(),
                first_lines(&table, 3)
            );
            if let Some(note) = self.pacing.repaired(TABLE_OBJECT, now) {
                log::warn!("{note}");
            }
        }
        self.known_generation = Some(
            socket
                .generation()
                .context("reading the nftables generation")?,
        );
        Ok(())
    }

    /// The table's lock for a change watch can retry later: waits only briefly.
    fn lock_briefly(&self) -> anyhow::Result<TableLock> {
        Ok(TableLock::acquire(
            &self.files.lock(),
            &format!("table {} {}", self.spec.family, self.spec.table),
            TRANSITION_LOCK_WAIT,
            &log_say(),
        )?)
    }

    /// The kernel reported a change: check at once, unless a failing change is backing off.
    fn wake(&mut self) {
        self.woken = true;
        if self.failures == 0 {
            self.next_attempt = Instant::now();
        }
    }

    /// One change of the split under the lock: routing repaired, then ONE transaction.
    fn transition(&mut self) -> anyhow::Result<bool> {
        let _lock = self.lock_briefly()?;
        self.settle_journal();
        // An apply may have committed while we waited: follow it before building on it.
        let changed = self.follow_applied()?;
        let Some(current) = self.current.clone() else {
            return Ok(changed);
        };
        let rsock = route_socket()?;
        let links = routing::Links::read(&rsock).context("reading the network interfaces")?;
        // Routes vanish with links; putting them back is idempotent and cheap.
        let (plan, _) = repair::routing_plan(&rsock, &self.spec, &links)?;
        let report = routing::apply(&rsock, &plan, &links)?;
        let wanted = self.wanted(&report.unrouted_gateways());
        if wanted == self.in_force {
            return Ok(changed);
        }
        let next = ruleset::compile_with(&self.spec, &wanted);
        let socket = nft_socket()?;
        let started = Instant::now();
        if update_table(&socket, &current, &next, &|_| {})? == Updated::Replaced {
            log::warn!("the table was not as watch left it (edited meanwhile?): replaced it");
        }
        let live: Vec<&str> = self
            .spec
            .gateways
            .iter()
            .filter(|g| !wanted.unavailable.contains(&g.name))
            .map(|g| g.name.as_str())
            .collect();
        log::warn!(
            "new connections now use: {} ({} ms)",
            if live.is_empty() {
                "the main table".to_string()
            } else {
                live.join(", ")
            },
            started.elapsed().as_millis()
        );
        self.last_update_ms = u64::try_from(started.elapsed().as_millis()).ok();
        self.fire_policy_changes(&wanted);
        self.current = Some(next);
        self.in_force = wanted;
        self.record_applied();
        Ok(changed)
    }

    /// One hook event per policy whose active tier or members change with `wanted`.
    fn fire_policy_changes(&self, wanted: &Availability) {
        for (key, was, now) in decide::policy_changes(&self.spec, &self.in_force, wanted) {
            let members: Vec<String> = now.members().iter().map(|m| m.gateway.clone()).collect();
            log::warn!(
                "policy {}: tier {} -> {} ({})",
                key,
                tier_text(was.tier()),
                tier_text(now.tier()),
                if members.is_empty() {
                    "its last resort".to_string()
                } else {
                    members.join(", ")
                }
            );
            self.hooks.fire(HookEvent::Policy(PolicyChange {
                policy: key,
                from_tier: was.tier(),
                to_tier: now.tier(),
                members,
                since: state::now(),
            }));
        }
    }

    fn record_applied(&mut self) {
        let record = Applied {
            version: state::APPLIED_VERSION,
            backend: BackendKind::Nftables,
            spec: self.source.clone(),
            unavailable: self.in_force.unavailable.clone(),
            kept: self.in_force.kept.clone(),
            netns_cookie: netns_cookie(),
            at: state::now(),
            duration_ms: self.last_update_ms,
            pid: std::process::id(),
            // Unknown here, so the next apply reads the table back; watch's updates leave
            // the gateway chains alone, so their counters count since the last apply's time.
            generation: None,
            counters_since: Applied::read(&self.files.applied())
                .ok()
                .and_then(|a| a.counters_since),
        };
        if let Err(e) = record.write(&self.files.applied()) {
            log::warn!("{e:#}");
        }
        self.applied_stamp = stamp(&self.files.applied());
    }

    fn write_state(&self) {
        let gateways = self
            .spec
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| GatewayState {
                name: g.name.clone(),
                state: self.qualities[i].state().as_str().to_string(),
                checked: g.health.is_some(),
                available: self.current.is_some() && !self.in_force.unavailable.contains(&g.name),
                since: self.since[i],
                last_probe: self.details[i].clone(),
                loss: g.health.as_ref().and(self.qualities[i].loss_percent()),
                rtt_ms: g
                    .health
                    .as_ref()
                    .and(self.qualities[i].median_rtt())
                    .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
                transitions: self.transitions[i],
                rounds: self.rounds[i],
            })
            .collect();
        let doc = WatchState {
            version: state::STATE_VERSION,
            family: self.spec.family.as_str().to_string(),
            table: self.spec.table.clone(),
            pid: std::process::id(),
            netns_cookie: netns_cookie(),
            updated: state::now(),
            gateways,
            pending: self.pending.clone(),
        };
        if let Err(e) = doc.write(&self.state_file) {
            log::warn!("{e:#}");
        }
        if let Some(p) = &self.published {
            if let Ok(mut slot) = p.lock() {
                *slot = Some((self.spec.clone(), doc));
            }
        }
    }
}

/// What a repair check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// Nothing to repair, or all repaired.
    Done,
    /// A difference waits for its pause (pacing): check again at the next round.
    Deferred,
    /// An apply or flush changed what is in force: nothing repaired, follow it.
    SpecChanged,
}

/// What the table's repairs are paced as.
const TABLE_OBJECT: &str = "the table";

/// What a routing repair is paced as: the differences it puts right, so that the same rule
/// or route removed again and again backs off while a new difference is repaired at once.
fn routing_object(differences: &[String]) -> String {
    format!("the routing ({})", first_lines(differences, 2))
}

fn is_unusable_lock(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<LockError>(),
        Some(LockError::Unusable { .. })
    )
}

/// Probes every checked gateway on its own interval until `stop`.
fn start_probers(spec: &Spec, stop: &Arc<AtomicBool>) -> mpsc::Receiver<(usize, Round)> {
    let (tx, rx) = mpsc::channel();
    for (i, g) in spec.gateways.iter().enumerate() {
        let Some(h) = &g.health else { continue };
        let (spec, g, tx, stop) = (spec.clone(), g.clone(), tx.clone(), stop.clone());
        let interval = Duration::from_millis(h.interval_ms.into());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if let Some(round) = probe_once(&spec, &g) {
                    if tx.send((i, round)).is_err() {
                        return;
                    }
                }
                while started.elapsed() < interval && !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20).min(interval));
                }
            }
        });
    }
    rx
}

/// What stops or reloads a running watch (signal flags the binary sets).
#[derive(Debug, Clone)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

/// Runs until `control.stop`; `control.reload` re-reads the spec with `read_spec`.
pub fn run(
    read_spec: &dyn Fn() -> anyhow::Result<(Spec, String)>,
    state_file: Option<PathBuf>,
    control: &Control,
    published: Option<Published>,
) -> anyhow::Result<()> {
    let (mut spec, mut source) = read_spec()?;
    let kernel_changed = events::listen();
    loop {
        let files = TableFiles::of(&spec);
        let file = state_file.clone().unwrap_or_else(|| files.state());
        hooks::check_hooks(&spec)?;
        let runner = Arc::new(HookRunner::for_spec(&spec).context("starting the hook runner")?);
        let mut session = Session::new(spec.clone(), source.clone(), files, file, runner);
        session.published = published.clone();
        session.start()?;
        log::warn!(
            "watching {} gateways of table {} {}",
            spec.gateways.iter().filter(|g| g.health.is_some()).count(),
            spec.family,
            spec.table
        );
        let mut stop = Arc::new(AtomicBool::new(false));
        let mut results = start_probers(&session.spec, &stop);
        loop {
            if control.stop.load(Ordering::Relaxed) {
                stop.store(true, Ordering::Relaxed);
                log::warn!("stopping; the ruleset stays as it is");
                return Ok(());
            }
            if control.reload.swap(false, Ordering::Relaxed) {
                stop.store(true, Ordering::Relaxed);
                match read_spec().and_then(|(new, text)| {
                    hooks::check_hooks(&new)?;
                    Ok((new, text))
                }) {
                    Ok((new, text)) => {
                        log::warn!("reload: applying the spec file again");
                        (spec, source) = (new, text);
                    }
                    Err(e) => {
                        log::error!("reload: keeping the running spec: {e:#}");
                        (spec, source) = (session.spec.clone(), session.source.clone());
                    }
                }
                break;
            }
            match results.recv_timeout(Duration::from_millis(100)) {
                Ok((i, round)) => {
                    session.record(i, round);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(100))
                }
            }
            if kernel_changed.take() {
                session.wake();
            }
            if session.reconcile()? {
                // The spec changed under us: probe its gateways from now on.
                stop.store(true, Ordering::Relaxed);
                stop = Arc::new(AtomicBool::new(false));
                results = start_probers(&session.spec, &stop);
            }
        }
    }
}
