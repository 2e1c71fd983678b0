//! The typed files that processes of one table share: what `watch` observes and has applied
//! (the state file, read by `status` and by `apply`), and what the last apply committed (the
//! applied record, which a running watch follows). Each carries a `version`; a reader refuses
//! another version or a damaged file instead of guessing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use nftbalance_health::State;
use nftbalance_ruleset::Availability;
use serde::{Deserialize, Serialize};

use crate::files::write_atomically;
use crate::BackendKind;

/// The state file's format version.
pub const STATE_VERSION: u32 = 2;
/// The applied record's format version.
pub const APPLIED_VERSION: u32 = 1;

/// What a running `watch` knows: per gateway the state its probes observed and whether the
/// ruleset in force gives it new connections. The two differ while a change is pending (a
/// transition not yet applied, with `pending` saying why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchState {
    pub version: u32,
    pub family: String,
    pub table: String,
    pub pid: u32,
    /// The network namespace the watch runs in; another namespace's file is not ours.
    pub netns_cookie: Option<u64>,
    /// Unix seconds of the last write.
    pub updated: u64,
    pub gateways: Vec<GatewayState>,
    /// Why the wanted split is not in force yet (lock busy, transaction refused), if it is not.
    #[serde(default)]
    pub pending: Option<String>,
}

/// One gateway in [`WatchState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayState {
    pub name: String,
    /// Observed: `up`, `down` or `unknown` (see [`State`]).
    pub state: String,
    /// Whether the gateway has health checks (else it is always `up`).
    pub checked: bool,
    /// Applied: whether the ruleset in force gives it new connections.
    pub available: bool,
    /// Unix seconds of the last change of `state`.
    pub since: u64,
    pub last_probe: String,
    /// Failed probe rounds in the health window, percent; none before the first round or
    /// without health checks.
    #[serde(default)]
    pub loss: Option<u8>,
    /// Median round-trip time of the window's answered rounds, milliseconds.
    #[serde(default)]
    pub rtt_ms: Option<u32>,
    /// State changes since watch started (for metrics).
    #[serde(default)]
    pub transitions: u64,
    /// Probe rounds since watch started (for metrics).
    #[serde(default)]
    pub rounds: u64,
}

/// A file of this module: JSON with a `version` field.
trait Versioned: Serialize + for<'de> Deserialize<'de> {
    const VERSION: u32;
    /// What the file is called in messages.
    const WHAT: &'static str;
    fn version(&self) -> u32;

    fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        write_atomically(path, text.as_bytes())
            .with_context(|| format!("writing the {} {}", Self::WHAT, path.display()))
    }

    /// The file at `path`, if it is one of this version.
    fn read(path: &Path) -> anyhow::Result<Self> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the {} {shown}", Self::WHAT))?;
        let doc: Self = serde_json::from_str(&text)
            .with_context(|| format!("the {} {shown} is damaged", Self::WHAT))?;
        if doc.version() != Self::VERSION {
            anyhow::bail!(
                "the {} {shown} has version {}, this nftbalance reads {}",
                Self::WHAT,
                doc.version(),
                Self::VERSION
            );
        }
        Ok(doc)
    }
}

impl Versioned for WatchState {
    const VERSION: u32 = STATE_VERSION;
    const WHAT: &'static str = "state file";
    fn version(&self) -> u32 {
        self.version
    }
}

impl Versioned for Applied {
    const VERSION: u32 = APPLIED_VERSION;
    const WHAT: &'static str = "applied record";
    fn version(&self) -> u32 {
        self.version
    }
}

impl WatchState {
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        Versioned::write(self, path)
    }

    pub fn read(path: &Path) -> anyhow::Result<WatchState> {
        <WatchState as Versioned>::read(path)
    }

    /// The state file of a watch that runs now in this network namespace, if there is one.
    pub fn of_running_watch(path: &Path, netns_cookie: Option<u64>) -> Option<WatchState> {
        let s = WatchState::read(path).ok()?;
        let same_netns = match (s.netns_cookie, netns_cookie) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        (same_netns && process_alive(s.pid)).then_some(s)
    }

    /// Observed states by gateway name.
    pub fn observed(&self) -> BTreeMap<String, State> {
        self.gateways
            .iter()
            .filter_map(|g| Some((g.name.clone(), State::parse(&g.state)?)))
            .collect()
    }
}

/// Whether a process runs with this pid (zombies included: close enough for a daemon).
pub fn process_alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// What the last apply committed: written after its commit, removed by `flush`. A running
/// watch follows it, so that the table is always the last applied spec under the gateway
/// states watch observes; apply reads a running watch's states the other way round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub version: u32,
    pub backend: BackendKind,
    /// The spec's text as applied.
    pub spec: String,
    /// Gateways the committed ruleset gives no new connections.
    pub unavailable: BTreeSet<String>,
    /// Per keep-last policy with no usable member, the members it kept using.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kept: BTreeMap<String, BTreeSet<String>>,
    /// The network namespace it was applied in.
    pub netns_cookie: Option<u64>,
    /// Unix seconds of the commit.
    pub at: u64,
    /// How long the change took, from the start of apply (or of watch's update) to the
    /// commit, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// pid of the process that applied it (apply, or watch after a failover).
    pub pid: u32,
    /// The nftables generation right after the commit, when no other commit can have come
    /// between: while the kernel's generation still reads this, the live table is exactly
    /// this record's ruleset, and the next apply sends only the difference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// Unix seconds since which the table's counters count (the last commit that re-created
    /// them); none when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters_since: Option<u64>,
}

impl Applied {
    /// The availability the committed ruleset was compiled for.
    pub fn availability(&self) -> Availability {
        Availability {
            unavailable: self.unavailable.clone(),
            kept: self.kept.clone(),
        }
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        Versioned::write(self, path)
    }

    pub fn read(path: &Path) -> anyhow::Result<Applied> {
        <Applied as Versioned>::read(path)
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("nbe-state-{}-{name}", std::process::id()))
    }

    fn sample() -> WatchState {
        WatchState {
            version: STATE_VERSION,
            family: "inet".into(),
            table: "nftbalance".into(),
            pid: std::process::id(),
            netns_cookie: Some(7),
            updated: 1,
            gateways: vec![GatewayState {
                name: "isp1".into(),
                state: "down".into(),
                checked: true,
                available: true,
                since: 1,
                last_probe: "no answer".into(),
                loss: Some(30),
                rtt_ms: Some(12),
                transitions: 1,
                rounds: 5,
            }],
            pending: Some("waiting for the lock".into()),
        }
    }

    #[test]
    fn a_state_file_reads_back_and_belongs_to_its_namespace() {
        let path = temp("roundtrip");
        sample().write(&path).unwrap();
        assert_eq!(WatchState::read(&path).unwrap(), sample());
        assert!(WatchState::of_running_watch(&path, Some(7)).is_some());
        assert!(
            WatchState::of_running_watch(&path, Some(8)).is_none(),
            "another namespace's watch is not ours (issue 22.8)"
        );
        assert_eq!(
            WatchState::read(&path).unwrap().observed()["isp1"],
            State::Down
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_state_file_without_loss_and_rtt_still_reads() {
        let path = temp("no-quality");
        let text = r#"{"version":2,"family":"inet","table":"t","pid":1,"netns_cookie":null,
            "updated":1,"gateways":[{"name":"isp1","state":"up","checked":true,
            "available":true,"since":1,"last_probe":"answered in 3 ms"}]}"#;
        std::fs::write(&path, text).unwrap();
        let g = &WatchState::read(&path).unwrap().gateways[0];
        assert_eq!((g.loss, g.rtt_ms), (None, None));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn older_or_damaged_state_files_are_refused() {
        let path = temp("old");
        for (text, says) in [
            // Version 1 (before this format) had no version field.
            (
                r#"{"table":"t","pid":1,"updated":1,"gateways":[]}"#,
                "damaged",
            ),
            (
                r#"{"version":1,"family":"inet","table":"t","pid":1,"netns_cookie":null,"updated":1,"gateways":[]}"#,
                "version 1",
            ),
            ("{", "damaged"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = format!("{:#}", WatchState::read(&path).unwrap_err());
            assert!(e.contains(says), "{text}: {e}");
            assert!(WatchState::of_running_watch(&path, None).is_none());
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_applied_record_reads_back() {
        let path = temp("applied");
        let a = Applied {
            version: APPLIED_VERSION,
            backend: BackendKind::Nftables,
            spec: "{}".into(),
            unavailable: ["isp2".to_string()].into(),
            kept: BTreeMap::new(),
            netns_cookie: None,
            at: 3,
            duration_ms: Some(12),
            pid: 4,
            generation: Some(5),
            counters_since: Some(2),
        };
        a.write(&path).unwrap();
        assert_eq!(Applied::read(&path).unwrap(), a);
        // A record from before generation and counters_since still reads.
        std::fs::write(
            &path,
            r#"{"version":1,"backend":"nftables","spec":"{}","unavailable":[],"netns_cookie":null,"at":3,"pid":4}"#,
        )
        .unwrap();
        assert_eq!(Applied::read(&path).unwrap().generation, None);
        std::fs::write(&path, r#"{"version":9}"#).unwrap();
        assert!(Applied::read(&path).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
