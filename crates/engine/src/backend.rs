//! Where the rules go: one nftables transaction, or iptables-legacy chains. The apply
//! protocol, settling and flush say what they need once, through [`Backend`].

use std::cell::Cell;

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
    /// Only the chains whose rules changed were replaced: counters and sets kept.
    Delta,
    /// The live table was not the one the update was computed from: replaced whole.
    Replaced,
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
    let attempt = Cell::new(0);
    let replaced = Cell::new(false);
    let updated = transaction::run(socket, Commit::Yes, || {
        attempt.set(attempt.get() + 1);
        let live_is_current =
            attempt.get() == 1 || read::diff(socket, current).is_ok_and(|d| d.is_empty());
        replaced.set(!live_is_current);
        let batch = if live_is_current {
            lower::update_batch(current, next)
        } else {
            lower::replace_batch(next)
        };
        after_build(attempt.get());
        batch
    });
    match updated {
        Ok(_) if replaced.get() => Ok(Updated::Replaced),
        Ok(_) => Ok(Updated::Delta),
        Err(e) => {
            log::warn!("update refused ({e}); replacing the table");
            transaction::run(socket, Commit::Yes, || lower::replace_batch(next))?;
            Ok(Updated::Replaced)
        }
    }
}
