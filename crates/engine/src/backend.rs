//! Where the rules go: one nftables transaction, or iptables-legacy chains. The apply
//! protocol, settling and flush say what they need once, through [`Backend`].

use std::cell::{Cell, RefCell};

use anyhow::Context;
use nftbalance_legacy as legacy;
use nftbalance_netlink::{lower, read, transaction, Commit, Socket};
use nftbalance_ruleset::{self as ruleset, Availability, Ruleset};
use nftbalance_spec::Spec;
use serde::{Deserialize, Serialize};

/// The backends, as named on the command line and in the files under /run/nftbalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    Nftables,
    IptablesLegacy,
}

impl BackendKind {
    pub fn backend(self) -> Box<dyn Backend> {
        match self {
            BackendKind::Nftables => Box::new(Nftables),
            BackendKind::IptablesLegacy => Box::new(IptablesLegacy),
        }
    }
}

/// What the apply protocol needs of a backend.
pub trait Backend {
    fn kind(&self) -> BackendKind;
    /// The kernel (or iptables-restore) validates the rules; nothing changes.
    fn check(&self, spec: &Spec, availability: &Availability) -> anyhow::Result<String>;
    /// A marker that moves with every commit (the nftables generation), if the backend has
    /// one: while it has not moved, nothing was committed.
    fn generation(&self) -> anyhow::Result<Option<u32>>;
    /// Replaces the tool's rules with the spec's, compiled for `availability`.
    fn replace(&self, spec: &Spec, availability: &Availability) -> anyhow::Result<String>;
    /// Brings the tool's rules to the spec's, compiled for `availability`, changing only
    /// what differs from `last` where the backend can prove the live rules are `last`.
    /// Backends without a delta replace.
    fn apply_over(
        &self,
        spec: &Spec,
        _source: &str,
        availability: &Availability,
        _last: Option<&LastCommit>,
    ) -> anyhow::Result<Outcome> {
        Ok(Outcome {
            summary: self.replace(spec, availability)?,
            generation: None,
            counters_reset: true,
        })
    }
    /// Removes the tool's rules (twice is fine).
    fn remove(&self, spec: &Spec) -> anyhow::Result<String>;
    /// For an apply that died after its routing step: whether its rules are now in force,
    /// completing them where the backend cannot tell (iptables-legacy has no commit point).
    fn complete_interrupted(
        &self,
        spec: &Spec,
        availability: &Availability,
        generation: Option<u32>,
    ) -> anyhow::Result<bool>;
    /// Whether the tool's table (or chains) for this spec exist.
    fn exists(&self, spec: &Spec) -> anyhow::Result<bool>;
}

/// What the last apply (or watch) committed, from the applied record.
#[derive(Debug, Clone)]
pub struct LastCommit {
    /// The spec text it applied (lists written out).
    pub source: String,
    /// The availability it compiled the spec for.
    pub availability: Availability,
    /// The generation right after its commit, if known: while the kernel's generation is
    /// still this, nothing has been committed since, so the live table is its ruleset.
    pub generation: Option<u32>,
}

impl LastCommit {
    /// The ruleset it committed, compiled again; none if its text is no longer a valid spec.
    fn ruleset(&self) -> Option<Ruleset> {
        let spec = Spec::from_json(&self.source).ok()?;
        Some(ruleset::compile_with(&spec, &self.availability))
    }
}

pub(crate) fn forced_full_replace() -> bool {
    std::env::var(FULL_REPLACE_ENV).is_ok_and(|v| v == "1")
}

/// What [`Backend::apply_over`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub summary: String,
    /// See [`Update::generation`].
    pub generation: Option<u32>,
    /// Whether counters may have started again from zero.
    pub counters_reset: bool,
}

/// Test and bench switch: `NFTBALANCE_FULL_REPLACE=1` makes `apply` replace the table whole
/// as before incremental apply existed (for comparing the two, and as a way out).
pub const FULL_REPLACE_ENV: &str = "NFTBALANCE_FULL_REPLACE";

/// The ruleset the live table provably holds: `last`, when the generation has not moved
/// since its commit or a read-back finds no difference; else why not.
fn proven_basis(socket: &Socket, last: Option<&LastCommit>) -> Result<Ruleset, String> {
    if forced_full_replace() {
        return Err(format!("{FULL_REPLACE_ENV}=1 is set"));
    }
    let last = last.ok_or("no record of a previous apply of this table")?;
    let ruleset = last
        .ruleset()
        .ok_or("the record of the previous apply is not a valid spec")?;
    let now = socket
        .generation()
        .map_err(|e| format!("reading the nftables generation failed: {e}"))?;
    if last.generation == Some(now) {
        return Ok(ruleset);
    }
    match read::diff(socket, &ruleset) {
        Ok(d) if d.is_empty() => Ok(ruleset),
        Ok(d) => Err(format!(
            "the live table is not the one last applied ({} difference{}, first: {})",
            d.len(),
            if d.len() == 1 { "" } else { "s" },
            d[0]
        )),
        Err(e) => Err(format!("reading the live table back failed: {e}")),
    }
}

pub fn nft_socket() -> anyhow::Result<Socket> {
    Socket::open().context("opening the netfilter netlink socket")
}

/// `N chains, N sets and maps, N rules`.
pub fn summary(rs: &Ruleset) -> String {
    let rules: usize = rs.chains.iter().map(|c| c.rules.len()).sum();
    format!(
        "{} chains, {} sets and maps, {rules} rules",
        rs.chains.len(),
        rs.sets.len()
    )
}

#[derive(Debug)]
pub struct Nftables;

impl Backend for Nftables {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    fn check(&self, spec: &Spec, availability: &Availability) -> anyhow::Result<String> {
        let rs = ruleset::compile_with(spec, availability);
        transaction::run(&nft_socket()?, Commit::CheckOnly, || {
            lower::replace_batch(&rs)
        })?;
        Ok(format!(
            "table {} {}: the kernel accepts the ruleset ({}); nothing was changed",
            rs.family,
            rs.table,
            summary(&rs)
        ))
    }

    fn generation(&self) -> anyhow::Result<Option<u32>> {
        let g = nft_socket()?
            .generation()
            .context("reading the nftables generation")?;
        Ok(Some(g))
    }

    fn replace(&self, spec: &Spec, availability: &Availability) -> anyhow::Result<String> {
        let rs = ruleset::compile_with(spec, availability);
        transaction::run(&nft_socket()?, Commit::Yes, || lower::replace_batch(&rs))?;
        Ok(format!(
            "table {} {}: applied ({})",
            rs.family,
            rs.table,
            summary(&rs)
        ))
    }

    fn apply_over(
        &self,
        spec: &Spec,
        source: &str,
        availability: &Availability,
        last: Option<&LastCommit>,
    ) -> anyhow::Result<Outcome> {
        let socket = nft_socket()?;
        // The same text for the same gateways over an untouched table: nothing to compile.
        if let Some(last) = last.filter(|l| {
            !forced_full_replace() && l.source == source && l.availability == *availability
        }) {
            let now = socket
                .generation()
                .context("reading the nftables generation")?;
            if last.generation == Some(now) {
                let summary = format!(
                    "table {} {}: unchanged, nothing sent (incremental apply)",
                    spec.family, spec.table
                );
                log::info!("{summary}");
                return Ok(Outcome {
                    summary,
                    generation: Some(now),
                    counters_reset: false,
                });
            }
        }
        let rs = ruleset::compile_with(spec, availability);
        let basis = proven_basis(&socket, last);
        let u = update(&socket, basis.as_ref().map_err(Clone::clone), &rs, &|_| {})?;
        let table = format!("table {} {}", rs.family, rs.table);
        let summary = match (&u.how, &u.why_replaced) {
            (Updated::Unchanged, _) => {
                format!("{table}: unchanged, nothing sent (incremental apply)")
            }
            (Updated::Delta, _) => format!(
                "{table}: applied incrementally ({}{})",
                u.changes,
                if u.changes.counters_reset {
                    "; counters of refilled chains restart"
                } else {
                    "; counters kept"
                }
            ),
            (Updated::Replaced, why) => format!(
                "{table}: applied ({}; full replace: {})",
                summary(&rs),
                why.as_deref().unwrap_or("")
            ),
        };
        log::info!("{summary}");
        Ok(Outcome {
            summary,
            generation: u.generation,
            counters_reset: u.counters_reset(),
        })
    }

    fn remove(&self, spec: &Spec) -> anyhow::Result<String> {
        transaction::run(&nft_socket()?, Commit::Yes, || {
            lower::delete_batch(spec.family, &spec.table)
        })?;
        Ok(format!("table {} {}: removed", spec.family, spec.table))
    }

    fn complete_interrupted(
        &self,
        spec: &Spec,
        availability: &Availability,
        generation: Option<u32>,
    ) -> anyhow::Result<bool> {
        let socket = nft_socket()?;
        // Nothing committed since the routing step: the rules cannot be in. (Reading the
        // table back is the slow part with large sets.)
        let now = socket
            .generation()
            .context("reading the nftables generation")?;
        if generation == Some(now) {
            return Ok(false);
        }
        let rs = ruleset::compile_with(spec, availability);
        Ok(read::diff(&socket, &rs)?.is_empty())
    }

    fn exists(&self, spec: &Spec) -> anyhow::Result<bool> {
        Ok(read::table_exists(
            &nft_socket()?,
            spec.family,
            &spec.table,
        )?)
    }
}

#[derive(Debug)]
pub struct IptablesLegacy;

impl Backend for IptablesLegacy {
    fn kind(&self) -> BackendKind {
        BackendKind::IptablesLegacy
    }

    fn check(&self, spec: &Spec, availability: &Availability) -> anyhow::Result<String> {
        legacy::load::apply(spec, &availability.unavailable, true)?;
        Ok("iptables-legacy: the rules load; nothing was changed".into())
    }

    fn generation(&self) -> anyhow::Result<Option<u32>> {
        Ok(None)
    }

    fn replace(&self, spec: &Spec, availability: &Availability) -> anyhow::Result<String> {
        legacy::load::apply(spec, &availability.unavailable, false)?;
        Ok("iptables-legacy: applied the NFTBALANCE-* chains".into())
    }

    fn remove(&self, _spec: &Spec) -> anyhow::Result<String> {
        legacy::load::flush()?;
        Ok("iptables-legacy: removed the NFTBALANCE-* chains".into())
    }

    /// mangle and nat are committed one after the other, so there is no single commit
    /// point: the apply is redone.
    fn complete_interrupted(
        &self,
        spec: &Spec,
        availability: &Availability,
        _generation: Option<u32>,
    ) -> anyhow::Result<bool> {
        self.replace(spec, availability)?;
        Ok(true)
    }

    fn exists(&self, _spec: &Spec) -> anyhow::Result<bool> {
        Ok(legacy::load::installed()?)
    }
}

/// How [`update_table`] changed the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    /// Only what changed was sent: counters and sets of untouched chains and sets kept.
    Delta,
    /// The live table was not the one the update was computed from: replaced whole.
    Replaced,
    /// The rulesets are the same: nothing was sent.
    Unchanged,
}

/// What [`update`] did, in more detail than [`Updated`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub how: Updated,
    /// For [`Updated::Delta`], what the delta changed.
    pub changes: lower::Changes,
    /// For [`Updated::Replaced`], why the table was replaced whole.
    pub why_replaced: Option<String>,
    /// The generation right after the commit, when no other program can have committed
    /// since (as far as this process can tell); `None` when unknown.
    pub generation: Option<u32>,
}

impl Update {
    fn replaced(why: String, sent: transaction::Sent) -> Self {
        Update {
            how: Updated::Replaced,
            changes: lower::Changes::default(),
            why_replaced: Some(why),
            generation: Some(sent.committed()),
        }
    }

    /// Whether counters in the table may have started again from zero.
    pub fn counters_reset(&self) -> bool {
        match self.how {
            Updated::Replaced => true,
            Updated::Delta => self.changes.counters_reset,
            Updated::Unchanged => false,
        }
    }
}

/// Moves the live table from `current` to `next` in ONE transaction. The delta (only the
/// changed chains) is right only while the live table is `current`: when another program
/// commits between build and send (ERESTART), the retry reads the table again and replaces it
/// whole if it is no longer `current`, so a stale delta is never re-sent. A delta the kernel
/// refuses also falls back to a replace. `after_build` runs after each batch is built (attempt
/// number from 1): tests commit there.
pub fn update_table(
    socket: &Socket,
    current: &Ruleset,
    next: &Ruleset,
    after_build: &dyn Fn(usize),
) -> anyhow::Result<Updated> {
    update(socket, Ok(current), next, after_build).map(|u| u.how)
}

/// [`update_table`] where the caller may have no proven `current` (`Err` says why): then, or
/// when the change needs the table re-created, the table is replaced whole.
pub fn update(
    socket: &Socket,
    current: Result<&Ruleset, String>,
    next: &Ruleset,
    after_build: &dyn Fn(usize),
) -> anyhow::Result<Update> {
    let replace = |why: String| -> anyhow::Result<Update> {
        let sent = transaction::run_at(socket, Commit::Yes, || lower::replace_batch(next))?;
        Ok(Update::replaced(why, sent))
    };
    let current = match current {
        Ok(c) => c,
        Err(why) => return replace(why),
    };
    let before = socket
        .generation()
        .context("reading the nftables generation")?;
    let (first, changes) = match lower::delta_batch(current, next) {
        Ok(d) => d,
        Err(e) => return replace(e.to_string()),
    };
    if changes.is_empty() {
        let now = socket
            .generation()
            .context("reading the nftables generation")?;
        return Ok(Update {
            how: Updated::Unchanged,
            changes,
            why_replaced: None,
            generation: (now == before).then_some(now),
        });
    }
    let first = RefCell::new(Some(first));
    let attempt = Cell::new(0);
    let replaced = Cell::new(false);
    let sent = transaction::run_at(socket, Commit::Yes, || {
        attempt.set(attempt.get() + 1);
        let live_is_current =
            attempt.get() == 1 || read::diff(socket, current).is_ok_and(|d| d.is_empty());
        replaced.set(!live_is_current);
        let batch = match first.borrow_mut().take() {
            Some(batch) => Ok(batch),
            None if live_is_current => lower::update_batch(current, next),
            None => lower::replace_batch(next),
        };
        after_build(attempt.get());
        batch
    });
    match sent {
        Ok(sent) if replaced.get() => Ok(Update::replaced(
            "another program changed the table during the apply".into(),
            sent,
        )),
        Ok(sent) => Ok(Update {
            how: Updated::Delta,
            changes,
            why_replaced: None,
            generation: Some(sent.committed()),
        }),
        Err(e) => {
            log::warn!("update refused ({e}); replacing the table");
            replace(format!("the kernel refused the incremental change ({e})"))
        }
    }
}
