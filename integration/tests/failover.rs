//! `nftbalance watch` and `status` on real traffic: a dead uplink stops getting new
//! connections within interval x down + 1 s and gets them back when it recovers, with one
//! update transaction that keeps the table and its counters.

use std::collections::BTreeMap;
use std::time::Duration;

use nftbalance_integration::topology::{Topology, Which, SERVER};
use nftbalance_integration::watch::{self, probed_spec, table_handle, uplinks, TempFile};
use serde_json::Value;

const INTERVAL_MS: u64 = 300;
const DOWN: u64 = 2;
const UP: u64 = 2;

fn spec() -> String {
    probed_spec(2, INTERVAL_MS, UP, DOWN)
}

/// The first verdicts need `up` rounds; until then the split is as applied.
fn start_watch(topo: &Topology, spec: &TempFile, state: &TempFile) -> watch::Watch {
    watch::Watch::start(
        topo,
        spec,
        Some(state),
        Duration::from_millis(INTERVAL_MS * UP + 300),
    )
}

fn status(topo: &Topology, spec: &TempFile, state: &TempFile) -> Value {
    watch::status(topo, spec, Some(state))
}

fn settle(threshold: u64) {
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * threshold + 1000));
}

#[test]
fn a_dead_link_loses_new_connections_and_gets_them_back() {
    let mut topo = Topology::new(2);
    let spec = spec();
    topo.apply(&spec);
    let (spec_file, state_file) = (TempFile::new("spec", &spec), TempFile::new("state", "{}"));
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let _watch = start_watch(&topo, &spec_file, &state_file);
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
    let _watch = start_watch(&topo, &spec_file, &state_file);

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
    let mut watch = start_watch(&topo, &spec_file, &state_file);
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
