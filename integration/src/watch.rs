//! `nftbalance watch` and `status` in a topology's router: the spec and state files they
//! share, a watch process stopped on drop, and counting which uplink new connections take.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::netns::PATH;
use crate::target_binary;
use crate::topology::{Topology, Which, SERVER};

/// A spec of the topology's first `n` uplinks, each probing the server every `interval_ms`
/// with `up`/`down` thresholds, balancing the LAN's TCP connections.
pub fn probed_spec(n: u32, interval_ms: u64, up: u64, down: u64) -> String {
    let gw = |i: u32| {
        format!(
            r#"{{ "name": "isp{i}", "interface": "ppp{}", "mark": {i}, "address": "100.0.{i}.1",
                 "via": "100.0.{i}.254", "route_table": {},
                 "health": {{ "targets": ["{SERVER}"], "interval": "{interval_ms}ms",
                              "timeout": "250ms", "up": {up}, "down": {down} }} }}"#,
            i - 1,
            100 + i
        )
    };
    let gws: Vec<String> = (1..=n).map(gw).collect();
    format!(
        r#"{{ "gateways": [ {} ],
             "balance": {{ "forward": [ {{ "iif": "eth0", "protocol": "tcp" }} ],
                           "exclude": [ "192.168.0.0/16" ] }} }}"#,
        gws.join(", ")
    )
}

/// A file the router's nftbalance can read (namespaces share the file system).
#[derive(Debug)]
pub struct TempFile(pub std::path::PathBuf);

impl TempFile {
    pub fn new(tag: &str, text: &str) -> TempFile {
        let p = std::env::temp_dir().join(format!("nbt-{tag}-{}.json", std::process::id()));
        std::fs::write(&p, text).unwrap();
        TempFile(p)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `nftbalance watch` running in the router; stopped with SIGTERM on drop.
#[derive(Debug)]
pub struct Watch(pub Child);

impl Watch {
    /// Starts watch with `--state-file state` (or the table's own state file with None) and
    /// waits `settle` for its first verdicts.
    pub fn start(
        topo: &Topology,
        spec: &TempFile,
        state: Option<&TempFile>,
        settle: Duration,
    ) -> Watch {
        Watch::spawn(topo, spec, state, settle, Stdio::inherit(), &[])
    }

    /// As [`Watch::start`], with more arguments for watch (`--metrics ADDR`, say).
    pub fn start_with(
        topo: &Topology,
        spec: &TempFile,
        state: Option<&TempFile>,
        settle: Duration,
        extra: &[&str],
    ) -> Watch {
        Watch::spawn(topo, spec, state, settle, Stdio::inherit(), extra)
    }

    /// As [`Watch::start`], with watch's log (its stderr) written to the file `log`
    /// (created or truncated), for tests that read what watch said.
    pub fn start_logged(
        topo: &Topology,
        spec: &TempFile,
        state: Option<&TempFile>,
        settle: Duration,
        log: &std::path::Path,
    ) -> Watch {
        let file = std::fs::File::create(log).unwrap();
        Watch::spawn(topo, spec, state, settle, Stdio::from(file), &[])
    }

    fn spawn(
        topo: &Topology,
        spec: &TempFile,
        state: Option<&TempFile>,
        settle: Duration,
        stderr: Stdio,
        extra: &[&str],
    ) -> Watch {
        let mut args = vec!["watch".to_string(), spec.path().to_string()];
        if let Some(s) = state {
            args.extend(["--state-file".to_string(), s.path().to_string()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                topo.router.name(),
                &target_binary("nftbalance"),
            ])
            .args(&args)
            .env("PATH", PATH)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        std::thread::sleep(settle);
        Watch(child)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Whether the process has exited (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().unwrap()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// `n` new connections from the LAN to the server port 80, each given `timeout_ms`; the
/// traffic helper's line for each.
pub fn connect(topo: &Topology, n: usize, timeout_ms: u64) -> Vec<Value> {
    topo.traffic(
        Which::Lan,
        &[
            "connect",
            &format!("{SERVER}:80"),
            "--count",
            &n.to_string(),
            "--timeout-ms",
            &timeout_ms.to_string(),
        ],
    )
}

/// `n` new connections from the LAN to the server; how many each uplink carried.
pub fn uplinks(topo: &Topology, n: usize) -> BTreeMap<usize, usize> {
    let results = connect(topo, n, 1500);
    let mut m = BTreeMap::new();
    for r in &results {
        assert_eq!(r["ok"], true, "{r}");
        let u = topo.uplink_of(r["seen"].as_str().unwrap()).unwrap();
        *m.entry(u).or_default() += 1;
    }
    m
}

/// `status --json` in the router (with the given state file, else the table's own).
pub fn status(topo: &Topology, spec: &TempFile, state: Option<&TempFile>) -> Value {
    let mut args = vec!["status", "--json", spec.path()];
    if let Some(s) = state {
        args.extend(["--state-file", s.path()]);
    }
    let out = topo.router.exec(&target_binary("nftbalance"), &args, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The handle of the router's `nftbalance` table: a new one means the table was re-created.
pub fn table_handle(topo: &Topology) -> Value {
    table_handle_in(&topo.router)
}

/// The handle of the `nftbalance` table in `ns` (null when there is none).
pub fn table_handle_in(ns: &crate::netns::Netns) -> Value {
    let doc: Value = serde_json::from_str(&ns.ok("nft", &["-j", "list", "tables"])).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("table"))
        .find(|t| t["name"] == "nftbalance")
        .map(|t| t["handle"].clone())
        .unwrap_or(Value::Null)
}

/// Polls `check` every 100 ms until it holds or `limit` passes; the time it took.
pub fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
