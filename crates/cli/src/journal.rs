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
//! Files are named by the network namespace's inode number, which a later namespace may get
//! again; the journal also keeps the namespace's cookie, and one from another namespace is
//! removed unsettled.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nftbalance_legacy as legacy;
use nftbalance_netlink::{read, Socket};
use nftbalance_routing as routing;
use nftbalance_ruleset::{self as ruleset, Availability};
use nftbalance_spec::Spec;
use serde_json::{json, Value};

use crate::Backend;

const VERSION: u64 = 1;
const SUFFIX: &str = ".journal";

/// An apply's journal file; dropping it leaves the file (only [`Journal::finish`] removes it).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    doc: Value,
}

impl Journal {
    /// Records, before the routing changes, what to go back to.
    pub fn begin(
        path: PathBuf,
        source: &str,
        backend: Backend,
        before: &routing::OwnedState,
    ) -> anyhow::Result<Journal> {
        let netns = netns_cookie();
        let hex = |msgs: Vec<Vec<u8>>| -> Vec<String> { msgs.iter().map(|m| hex(m)).collect() };
        let (rules, routes) = before.to_wire();
        let doc = json!({
            "version": VERSION,
            "pid": std::process::id(),
            "netns_cookie": netns,
            "backend": backend_name(backend),
            "spec": source,
            "routing_before": { "rules": hex(rules), "routes": hex(routes) },
            "unavailable": null,
        });
        let j = Journal { path, doc };
        j.write()?;
        Ok(j)
    }

    /// Records, once the routing is in and before the rules go in, which gateways the ruleset
    /// is compiled without, and the nftables generation now (if the backend has one). Without
    /// this record the rules cannot have been committed; while the generation is unchanged,
    /// nothing has been committed since.
    pub fn routing_done(
        &mut self,
        unavailable: &BTreeSet<String>,
        generation: Option<u32>,
    ) -> anyhow::Result<()> {
        self.doc["unavailable"] = json!(unavailable);
        self.doc["generation"] = json!(generation);
        self.write()
    }

    /// The apply is over (committed, or its routing put back).
    pub fn finish(self) -> anyhow::Result<()> {
        std::fs::remove_file(&self.path)
            .with_context(|| format!("removing the journal {}", self.path.display()))
    }

    fn write(&self) -> anyhow::Result<()> {
        // Written aside and renamed: a crash leaves the old journal or the new one, whole.
        let tmp = self.path.with_extension("journal.tmp");
        std::fs::write(&tmp, self.doc.to_string())
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .with_context(|| format!("writing the journal {}", self.path.display()))
    }
}

/// This network namespace's cookie, if the kernel tells (5.14 and later): file names carry
/// the namespace's inode number, which a later namespace may get again.
fn netns_cookie() -> Option<u64> {
    Socket::open().and_then(|s| s.netns_cookie()).ok()
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Nftables => "nftables",
        Backend::IptablesLegacy => "iptables-legacy",
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
/// namespace's part of the file names).
pub fn left_behind(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(SUFFIX))
        })
        .collect();
    found.sort();
    found
}

/// What an interrupted apply left: its spec, backend, routing snapshot and (if it got that
/// far) the availability its ruleset was compiled for.
#[derive(Debug)]
pub struct Interrupted {
    pub path: PathBuf,
    pub pid: u64,
    pub spec: Spec,
    backend: Backend,
    before: routing::OwnedState,
    unavailable: Option<BTreeSet<String>>,
    generation: Option<u32>,
    netns_cookie: Option<u64>,
}

impl Interrupted {
    pub fn read(path: &Path) -> anyhow::Result<Interrupted> {
        let shown = path.display();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading journal {shown}"))?;
        let doc: Value = serde_json::from_str(&text)
            .with_context(|| format!("journal {shown} is not JSON; remove it and apply again"))?;
        let bad = |what: &str| {
            anyhow::anyhow!(
                "journal {shown}: {what} is missing or malformed; remove it and apply again"
            )
        };
        if doc["version"].as_u64() != Some(VERSION) {
            return Err(bad("version"));
        }
        let backend = match doc["backend"].as_str() {
            Some("nftables") => Backend::Nftables,
            Some("iptables-legacy") => Backend::IptablesLegacy,
            _ => return Err(bad("backend")),
        };
        let source = doc["spec"].as_str().ok_or_else(|| bad("spec"))?;
        let spec = Spec::from_json(source).map_err(|_| bad("spec"))?;
        let msgs = |key: &str| -> anyhow::Result<Vec<Vec<u8>>> {
            doc["routing_before"][key]
                .as_array()
                .ok_or_else(|| bad("routing_before"))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .and_then(unhex)
                        .ok_or_else(|| bad("routing_before"))
                })
                .collect()
        };
        let before = routing::OwnedState::from_wire(&msgs("rules")?, &msgs("routes")?)
            .map_err(|e| bad(&format!("routing_before ({e})")))?;
        let unavailable = match &doc["unavailable"] {
            Value::Null => None,
            Value::Array(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        n.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| bad("unavailable"))
                    })
                    .collect::<anyhow::Result<_>>()?,
            ),
            _ => return Err(bad("unavailable")),
        };
        Ok(Interrupted {
            path: path.to_path_buf(),
            pid: doc["pid"].as_u64().unwrap_or(0),
            spec,
            backend,
            before,
            unavailable,
            netns_cookie: doc["netns_cookie"].as_u64(),
            generation: doc["generation"]
                .as_u64()
                .and_then(|g| u32::try_from(g).ok()),
        })
    }

    /// Brings routing and rules to one consistent state (see the module docs), removes the
    /// journal and says what it did. Run under the table's lock; running it twice is fine.
    pub fn settle(self) -> anyhow::Result<String> {
        let table = format!("table {} {}", self.spec.family, self.spec.table);
        if let (Some(then), Some(now)) = (self.netns_cookie, netns_cookie()) {
            if then != now {
                self.remove()?;
                return Ok(format!(
                    "{table}: removed the journal {} of an apply in a network namespace that \
                     no longer exists",
                    self.path.display()
                ));
            }
        }
        let rsock = routing::Socket::open().context("opening the rtnetlink socket")?;
        let forward = match (&self.unavailable, self.backend) {
            (None, _) => false,
            (Some(unavailable), Backend::Nftables) => {
                let socket = Socket::open().context("opening the netfilter netlink socket")?;
                // Nothing committed since the routing step: the rules cannot be in. (Reading
                // the table back is the slow part with large sets.)
                let unchanged = match self.generation {
                    Some(g) => {
                        socket
                            .generation()
                            .context("reading the nftables generation")?
                            == g
                    }
                    None => false,
                };
                !unchanged && {
                    let availability = Availability {
                        unavailable: unavailable.clone(),
                    };
                    let rs = ruleset::compile_with(&self.spec, &availability);
                    read::diff(&socket, &rs)?.is_empty()
                }
            }
            (Some(_), Backend::IptablesLegacy) => {
                legacy::load::apply(&self.spec, false)?;
                true
            }
        };
        let done = if forward {
            let links = routing::Links::read(&rsock).context("reading the network interfaces")?;
            let report = routing::apply(&rsock, &routing::plan(&self.spec), &links)?;
            for w in &report.warnings {
                eprintln!("nftbalance: warning: {w}");
            }
            format!(
                "{table}: an apply (pid {}) was interrupted after its rules went in; \
                 completed its routing",
                self.pid
            )
        } else {
            routing::restore(&rsock, &self.before).with_context(|| {
                format!(
                    "putting back the routing of an interrupted apply (journal {})",
                    self.path.display()
                )
            })?;
            format!(
                "{table}: an apply (pid {}) was interrupted before its rules went in; \
                 put its routing back",
                self.pid
            )
        };
        self.remove()?;
        Ok(done)
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
            Backend::Nftables,
            &routing::OwnedState::default(),
        )
        .unwrap();
        let early = Interrupted::read(&path).unwrap();
        assert_eq!(early.unavailable, None, "no rules before the routing step");
        assert_eq!(early.spec.gateways[0].name, "isp1");
        j.routing_done(&["isp1".to_string()].into(), Some(7))
            .unwrap();
        let late = Interrupted::read(&path).unwrap();
        assert_eq!(late.unavailable, Some(["isp1".to_string()].into()));
        assert_eq!(late.generation, Some(7));
        assert_eq!(late.pid, u64::from(std::process::id()));
        j.finish().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_damaged_journal_is_an_error_that_says_what_to_do() {
        let path = temp("damaged");
        for text in [
            "{",
            r#"{"version": 2}"#,
            r#"{"version": 1, "backend": "nftables", "spec": "{}"}"#,
            r#"{"version": 1, "backend": "nftables", "spec": "x", "routing_before": {"rules": ["zz"], "routes": []}}"#,
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Interrupted::read(&path).unwrap_err().to_string();
            assert!(e.contains("remove it and apply again"), "{text}: {e}");
        }
        std::fs::remove_file(&path).unwrap();
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
