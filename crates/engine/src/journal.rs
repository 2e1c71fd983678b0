//! The journal of an apply in progress.
//!
//! Routing and the ruleset live in two kernel subsystems, so no single step changes both.
//! `apply` writes this journal before it touches the routing, records the availability it
//! compiled for once the routing is in, and removes the journal when the transaction has
//! committed or the routing has been put back. A journal left behind means that apply died in
//! between (kill -9, OOM). The next apply, flush or watch of the same table settles it first,
//! under the lock, and so does `nftbalance recover`:
//!
//! * nftables: the transaction is the commit point. If the nftables generation has not moved
//!   since the routing step, nothing was committed; otherwise, if the live table is the
//!   journal's ruleset, the routing is completed to the journal's plan. Else the routing is
//!   put back as it was before that apply.
//! * iptables-legacy has no single commit point (mangle and nat are committed one after the
//!   other), so an apply that got as far as its rules is redone, routing included; one that
//!   did not gets its routing put back.
//!
//! Settling never depends on an uplink: a route whose link has gone is skipped with a
//! warning, as apply skips it. Files are named by the network namespace's inode number,
//! which a later namespace may get again; the journal also keeps the namespace's cookie, and
//! one from another namespace is removed unsettled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nftbalance_routing as routing;
use nftbalance_ruleset::Availability;
use nftbalance_spec::Spec;
use serde::{Deserialize, Serialize};

use crate::files::{netns_cookie, write_atomically};
use crate::BackendKind;

/// The journal's format version (1: the same fields, walked by hand before typed files).
pub const VERSION: u32 = 1;
pub const SUFFIX: &str = ".journal";

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    version: u32,
    pid: u32,
    netns_cookie: Option<u64>,
    backend: BackendKind,
    /// The spec's text, as applied.
    spec: String,
    /// The owned rules and routes before the apply, as hex rtnetlink messages.
    routing_before: WireRouting,
    /// Set once the routing is in: the gateways the ruleset is compiled without.
    unavailable: Option<BTreeSet<String>>,
    /// With it: the members keep-last policies kept (see [`Availability::kept`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    kept: BTreeMap<String, BTreeSet<String>>,
    /// The nftables generation when the routing was in (backends that have one).
    #[serde(default)]
    generation: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireRouting {
    rules: Vec<String>,
    routes: Vec<String>,
}

/// An apply's journal file; dropping it leaves the file (only [`Journal::finish`] removes it).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    record: Record,
}

impl Journal {
    /// Records, before the routing changes, what to go back to.
    pub fn begin(
        path: PathBuf,
        source: &str,
        backend: BackendKind,
        before: &routing::OwnedState,
    ) -> anyhow::Result<Journal> {
        let (rules, routes) = before.to_wire();
        let record = Record {
            version: VERSION,
            pid: std::process::id(),
            netns_cookie: netns_cookie(),
            backend,
            spec: source.to_string(),
            routing_before: WireRouting {
                rules: rules.iter().map(|m| hex(m)).collect(),
                routes: routes.iter().map(|m| hex(m)).collect(),
            },
            unavailable: None,
            kept: BTreeMap::new(),
            generation: None,
        };
        let j = Journal { path, record };
        j.write()?;
        Ok(j)
    }

    /// Records, once the routing is in and before the rules go in, which gateways the ruleset
    /// is compiled without, and the nftables generation now (if the backend has one). Without
    /// this record the rules cannot have been committed; while the generation is unchanged,
    /// nothing has been committed since.
    pub fn routing_done(
        &mut self,
        availability: &Availability,
        generation: Option<u32>,
    ) -> anyhow::Result<()> {
        self.record.unavailable = Some(availability.unavailable.clone());
        self.record.kept = availability.kept.clone();
        self.record.generation = generation;
        self.write()
    }

    /// The apply is over (committed, or its routing put back).
    pub fn finish(self) -> anyhow::Result<()> {
        std::fs::remove_file(&self.path)
            .with_context(|| format!("removing the journal {}", self.path.display()))
    }

    fn write(&self) -> anyhow::Result<()> {
        let text = serde_json::to_string(&self.record)?;
        write_atomically(&self.path, text.as_bytes())
            .with_context(|| format!("writing the journal {}", self.path.display()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The journals left in `dir` by applies in this network namespace (`prefix` is the
/// namespace's part of the file names). A directory that cannot be read is an error, not
/// "nothing to recover".
pub fn left_behind(dir: &Path, prefix: &str) -> anyhow::Result<Vec<PathBuf>> {
    match crate::files::of_this_netns(dir, prefix, SUFFIX) {
        Ok(found) => Ok(found),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("listing journals in {}", dir.display())),
    }
}

/// What an interrupted apply left: its spec, backend, routing snapshot and (if it got that
/// far) the availability its ruleset was compiled for.
#[derive(Debug)]
pub struct Interrupted {
    pub path: PathBuf,
    pub pid: u32,
    pub spec: Spec,
    backend: BackendKind,
    before: routing::OwnedState,
    /// The availability the ruleset was compiled for, once the routing was in.
    availability: Option<Availability>,
    generation: Option<u32>,
    netns_cookie: Option<u64>,
}

impl Interrupted {
    pub fn read(path: &Path) -> anyhow::Result<Interrupted> {
        let shown = path.display();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading journal {shown}"))?;
        let bad = |what: &str| {
            anyhow::anyhow!(
                "journal {shown}: {what} is missing or malformed; remove it and apply again"
            )
        };
        let version = serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|_| bad("the JSON"))?
            .get("version")
            .and_then(|v| v.as_u64());
        if version != Some(u64::from(VERSION)) {
            return Err(bad("version"));
        }
        let r: Record = serde_json::from_str(&text).map_err(|e| bad(&format!("a field ({e})")))?;
        let spec = Spec::from_json(&r.spec).map_err(|_| bad("spec"))?;
        let msgs = |list: &[String]| -> anyhow::Result<Vec<Vec<u8>>> {
            list.iter()
                .map(|s| unhex(s).ok_or_else(|| bad("routing_before")))
                .collect()
        };
        let before = routing::OwnedState::from_wire(
            &msgs(&r.routing_before.rules)?,
            &msgs(&r.routing_before.routes)?,
        )
        .map_err(|e| bad(&format!("routing_before ({e})")))?;
        Ok(Interrupted {
            path: path.to_path_buf(),
            pid: r.pid,
            spec,
            backend: r.backend,
            before,
            availability: r.unavailable.map(|unavailable| Availability {
                unavailable,
                kept: r.kept,
            }),
            generation: r.generation,
            netns_cookie: r.netns_cookie,
        })
    }

    /// Brings routing and rules to one consistent state (see the module docs), removes the
    /// journal and says what it did, warnings included. Run under the table's lock; running
    /// it twice is fine.
    pub fn settle(self) -> anyhow::Result<Settled> {
        let table = format!("table {} {}", self.spec.family, self.spec.table);
        if let (Some(then), Some(now)) = (self.netns_cookie, netns_cookie()) {
            if then != now {
                self.remove()?;
                return Ok(Settled::said(format!(
                    "{table}: removed the journal {} of an apply in a network namespace that \
                     no longer exists",
                    self.path.display()
                )));
            }
        }
        let rsock = routing::Socket::open().context("opening the rtnetlink socket")?;
        let forward = match &self.availability {
            None => false,
            Some(availability) => self.backend.backend().complete_interrupted(
                &self.spec,
                availability,
                self.generation,
            )?,
        };
        let mut settled = if forward {
            let links = routing::Links::read(&rsock).context("reading the network interfaces")?;
            let (plan, _) = crate::repair::routing_plan(&rsock, &self.spec, &links)?;
            let report = routing::apply(&rsock, &plan, &links)?;
            let mut s = Settled::said(format!(
                "{table}: an apply (pid {}) was interrupted after its rules went in; \
                 completed its routing",
                self.pid
            ));
            s.warnings = report.warnings.iter().map(|w| w.to_string()).collect();
            s
        } else {
            let skipped = routing::restore(&rsock, &self.before).with_context(|| {
                format!(
                    "putting back the routing of an interrupted apply (journal {})",
                    self.path.display()
                )
            })?;
            let mut s = Settled::said(format!(
                "{table}: an apply (pid {}) was interrupted before its rules went in; \
                 put its routing back",
                self.pid
            ));
            s.warnings = skipped;
            s
        };
        self.remove()?;
        settled.forward = forward;
        Ok(settled)
    }

    fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                bail!("removing the journal {}: {e}", self.path.display())
            }
            _ => Ok(()),
        }
    }
}

/// What settling did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    pub done: String,
    /// Routes that could not be put in (their links are gone or not ready).
    pub warnings: Vec<String>,
    /// Whether the interrupted apply's rules were in force (its routing was completed).
    pub forward: bool,
}

impl Settled {
    fn said(done: String) -> Settled {
        Settled {
            done,
            ..Settled::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("nbj-{}-{name}.journal", std::process::id()))
    }

    const SPEC: &str = r#"{ "gateways": [
        { "name": "isp1", "interface": "ppp0", "mark": 1, "route_table": 101 } ] }"#;

    #[test]
    fn a_journal_reads_back_as_written() {
        let path = temp("roundtrip");
        let mut j = Journal::begin(
            path.clone(),
            SPEC,
            BackendKind::Nftables,
            &routing::OwnedState::default(),
        )
        .unwrap();
        let early = Interrupted::read(&path).unwrap();
        assert_eq!(early.availability, None, "no rules before the routing step");
        assert_eq!(early.spec.gateways[0].name, "isp1");
        j.routing_done(&Availability::without(["isp1".to_string()].into()), Some(7))
            .unwrap();
        let late = Interrupted::read(&path).unwrap();
        assert_eq!(
            late.availability,
            Some(Availability::without(["isp1".to_string()].into()))
        );
        assert_eq!(late.generation, Some(7));
        assert_eq!(late.pid, std::process::id());
        j.finish().unwrap();
        assert!(!path.exists());
    }

    /// A journal written by the previous release (walked by hand, same fields) still reads.
    #[test]
    fn a_journal_of_the_previous_release_reads() {
        let path = temp("v1");
        let text = format!(
            r#"{{"version":1,"pid":42,"netns_cookie":null,"backend":"iptables-legacy",
                "spec":{},"routing_before":{{"rules":[],"routes":[]}},
                "unavailable":null,"generation":null}}"#,
            serde_json::to_string(SPEC).unwrap()
        );
        std::fs::write(&path, text).unwrap();
        let j = Interrupted::read(&path).unwrap();
        assert_eq!((j.pid, j.backend), (42, BackendKind::IptablesLegacy));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_damaged_journal_is_an_error_that_says_what_to_do() {
        let path = temp("damaged");
        for text in [
            "{",
            r#"{"version": 2}"#,
            r#"{"version": 1, "backend": "nftables", "spec": "{}"}"#,
            r#"{"version": 1, "pid": 1, "netns_cookie": null, "backend": "nftables", "spec": "x", "routing_before": {"rules": ["zz"], "routes": []}, "unavailable": null}"#,
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Interrupted::read(&path).unwrap_err().to_string();
            assert!(e.contains("remove it and apply again"), "{text}: {e}");
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_unreadable_journal_directory_is_an_error() {
        // A file where the directory should be: listing fails, which is not "nothing".
        let path = temp("notadir");
        std::fs::write(&path, "").unwrap();
        assert!(left_behind(&path, "1-").is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(
            left_behind(&path, "1-").unwrap().is_empty(),
            "missing dir: none"
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = vec![0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
    }
}
