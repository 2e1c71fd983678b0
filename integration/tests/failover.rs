//! `nftbalance watch` and `status` on real traffic: a dead uplink stops getting new
//! connections within interval x down + 1 s and gets them back when it recovers, with one
//! update transaction that keeps the table and its counters.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nftbalance_integration::netns::PATH;
use nftbalance_integration::target_binary;
use nftbalance_integration::topology::{Topology, Which, SERVER};
use serde_json::Value;

const INTERVAL_MS: u64 = 300;
const DOWN: u64 = 2;
const UP: u64 = 2;

fn spec() -> String {
    let gw = |i: u32| {
        format!(
            r#"{{ "name": "isp{i}", "interface": "ppp{}", "mark": {i}, "address": "100.0.{i}.1",
                 "via": "100.0.{i}.254", "route_table": {},
                 "health": {{ "targets": ["{SERVER}"], "interval": "{INTERVAL_MS}ms",
                              "timeout": "250ms", "up": {UP}, "down": {DOWN} }} }}"#,
            i - 1,
            100 + i
        )
    };
    format!(
        r#"{{ "gateways": [ {}, {} ],
             "balance": {{ "forward": [ {{ "iif": "eth0", "protocol": "tcp" }} ],
                           "exclude": [ "192.168.0.0/16" ] }} }}"#,
        gw(1),
        gw(2)
    )
}

/// A file the router's nftbalance can read (namespaces share the file system).
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(tag: &str, text: &str) -> TempFile {
        let p = std::env::temp_dir().join(format!("nbt-{tag}-{}.json", std::process::id()));
        std::fs::write(&p, text).unwrap();
        TempFile(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `nftbalance watch` running in the router; stopped with SIGTERM on drop.
struct Watch(Child);

impl Watch {
    fn start(topo: &Topology, spec: &TempFile, state: &TempFile) -> Watch {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                topo.router.name(),
                &target_binary("nftbalance"),
            ])
            .args(["watch", spec.path(), "--state-file", state.path()])
            .env("PATH", PATH)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // The first verdicts need `up` rounds; until then the split is as applied.
        std::thread::sleep(Duration::from_millis(INTERVAL_MS * UP + 300));
        Watch(child)
    }
}

impl Watch {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
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

fn uplinks(topo: &Topology, n: usize) -> BTreeMap<usize, usize> {
    let results = topo.traffic(
        Which::Lan,
        &[
            "connect",
            &format!("{SERVER}:80"),
            "--count",
            &n.to_string(),
            "--timeout-ms",
            "1500",
        ],
    );
    let mut m = BTreeMap::new();
    for r in &results {
        assert_eq!(r["ok"], true, "{r}");
        let u = topo.uplink_of(r["seen"].as_str().unwrap()).unwrap();
        *m.entry(u).or_default() += 1;
    }
    m
}

fn settle(threshold: u64) {
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * threshold + 1000));
}

fn status(topo: &Topology, spec: &TempFile, state: &TempFile) -> Value {
    let out = topo.router.exec(
        &target_binary("nftbalance"),
        &[
            "status",
            "--json",
            spec.path(),
            "--state-file",
            state.path(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn table_handle(topo: &Topology) -> Value {
    let doc: Value =
        serde_json::from_str(&topo.router.ok("nft", &["-j", "list", "tables"])).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("table"))
        .find(|t| t["name"] == "nftbalance")
        .map(|t| t["handle"].clone())
        .unwrap()
}

#[test]
fn a_dead_link_loses_new_connections_and_gets_them_back() {
    let mut topo = Topology::new(2);
    let spec = spec();
    topo.apply(&spec);
    let (spec_file, state_file) = (TempFile::new("spec", &spec), TempFile::new("state", "{}"));
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let _watch = Watch::start(&topo, &spec_file, &state_file);
    assert_eq!(uplinks(&topo, 10), BTreeMap::from([(0, 5), (1, 5)]));

    // Long-lived connections, half of them on uplink 1, across the failover.
    let streams = topo.spawn_traffic(
        Which::Lan,
        &[
            "stream",
            &format!("{SERVER}:80"),
            "--count",
            "4",
            "--seconds",
            "6",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let handle = table_handle(&topo);
    let before = status(&topo, &spec_file, &state_file);

    topo.isps[1].ok("ip", &["link", "set", "rtr", "down"]);
    settle(DOWN);
    assert_eq!(
        uplinks(&topo, 10),
        BTreeMap::from([(0, 10)]),
        "uplink 2 still used"
    );
    let after = status(&topo, &spec_file, &state_file);
    assert_eq!(after["gateways"][1]["state"], "down", "{after:#}");
    // One update transaction, not a new table: the counters kept counting.
    assert_eq!(table_handle(&topo), handle, "the table was re-created");
    let packets = |doc: &Value| doc["gateways"][0]["packets"].as_u64().unwrap();
    assert!(packets(&after) > packets(&before), "counters were reset");

    for r in streams.finish() {
        if topo.uplink_of(r["seen"].as_str().unwrap_or("")) == Some(0) {
            assert_eq!(r["ok"], true, "a connection on uplink 1 was disturbed: {r}");
        }
    }

    topo.isps[1].ok("ip", &["link", "set", "rtr", "up"]);
    settle(UP);
    assert_eq!(
        uplinks(&topo, 10),
        BTreeMap::from([(0, 5), (1, 5)]),
        "the split did not resume"
    );
}

#[test]
fn a_dead_upstream_behind_a_live_link_is_detected() {
    let mut topo = Topology::new(2);
    let spec = spec();
    topo.apply(&spec);
    let (spec_file, state_file) = (TempFile::new("spec2", &spec), TempFile::new("state2", "{}"));
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let _watch = Watch::start(&topo, &spec_file, &state_file);

    let blackhole = "table inet blackhole {\n chain forward { type filter hook forward priority -10; drop\n }\n}\n";
    let out = topo.isps[1].exec("nft", &["-f", "-"], Some(blackhole.as_bytes()));
    assert!(out.status.success());
    settle(DOWN);
    assert_eq!(uplinks(&topo, 10), BTreeMap::from([(0, 10)]));

    topo.isps[1].ok("nft", &["delete", "table", "inet", "blackhole"]);
    settle(UP);
    let resumed = uplinks(&topo, 10);
    assert_eq!(resumed.values().sum::<usize>(), 10);
    assert_eq!(resumed.len(), 2, "the split did not resume: {resumed:?}");
}

#[test]
fn status_json_reports_what_the_server_saw() {
    let mut topo = Topology::new(2);
    let spec = spec();
    topo.apply(&spec);
    let (spec_file, state_file) = (TempFile::new("spec3", &spec), TempFile::new("state3", "{}"));
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let seen = uplinks(&topo, 12);
    // No watch running: states come from one probe round.
    let doc = status(&topo, &spec_file, &state_file);
    for (i, g) in doc["gateways"].as_array().unwrap().iter().enumerate() {
        assert_eq!(g["state"], "up", "{doc:#}");
        assert_eq!(
            g["new_connections"].as_u64().unwrap() as usize,
            seen[&i],
            "{doc:#}"
        );
        assert_eq!(
            g["live_connections"].as_u64().unwrap() as usize,
            seen[&i],
            "{doc:#}"
        );
        assert!(g["bytes"].as_u64().unwrap() > 0);
        assert_eq!(g["new_connection_share"].as_f64().unwrap(), 50.0);
    }
}

#[test]
fn flush_conntrack_sighup_and_sigterm() {
    let mut topo = Topology::new(2);
    let spec = spec().replacen(
        r#""route_table": 102,"#,
        r#""route_table": 102, "flush_conntrack": true,"#,
        1,
    );
    assert!(spec.contains("flush_conntrack"));
    topo.apply(&spec);
    let (spec_file, state_file) = (TempFile::new("spec4", &spec), TempFile::new("state4", "{}"));
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let mut watch = Watch::start(&topo, &spec_file, &state_file);
    assert_eq!(uplinks(&topo, 10), BTreeMap::from([(0, 5), (1, 5)]));
    let live = |doc: &Value, i: usize| doc["gateways"][i]["live_connections"].as_u64().unwrap();
    let doc = status(&topo, &spec_file, &state_file);
    assert_eq!((live(&doc, 0), live(&doc, 1)), (5, 5), "{doc:#}");

    // Uplink 2 dies: its connections leave the conntrack table, uplink 1's stay.
    topo.isps[1].ok("ip", &["link", "set", "rtr", "down"]);
    settle(DOWN);
    let doc = status(&topo, &spec_file, &state_file);
    assert_eq!((live(&doc, 0), live(&doc, 1)), (5, 0), "{doc:#}");
    topo.isps[1].ok("ip", &["link", "set", "rtr", "up"]);
    settle(UP);

    // SIGHUP: the spec file now weighs 3:1.
    std::fs::write(
        &spec_file.0,
        spec.replacen(r#""mark": 1,"#, r#""mark": 1, "weight": 3,"#, 1),
    )
    .unwrap();
    watch.signal("HUP");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        uplinks(&topo, 8),
        BTreeMap::from([(0, 6), (1, 2)]),
        "the reload did not take"
    );

    // SIGTERM: watch exits cleanly and leaves the ruleset as it is.
    watch.signal("TERM");
    let status = watch.0.wait().unwrap();
    assert!(status.success(), "watch exited with {status}");
    let listing = topo
        .router
        .ok("nft", &["list", "chain", "inet", "nftbalance", "balance"]);
    assert!(listing.contains("numgen inc mod 4"), "{listing}");
}
