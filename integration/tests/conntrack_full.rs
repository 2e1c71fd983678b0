//! Reliability (issue 10): the router's conntrack table is full. The kernel drops the first
//! packet of every new connection, but established connections keep flowing on their uplinks,
//! `apply` and `status` keep working, and new connections work again once there is room.
//!
//! `nf_conntrack_max` is global and read-only inside a namespace, but the count is per
//! namespace: the router namespace is filled to the host's max with assured filler entries
//! (see `conntrack_fill`), which leaves the host's table alone and goes with the namespace.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nftbalance_integration::conntrack_fill;
use nftbalance_integration::topology::{Topology, Which, SERVER};
use nftbalance_integration::{repo_root, target_binary};
use nftbalance_netlink::{conntrack, Socket};
use serde_json::Value;

/// Connection mark of the filler entries: no gateway's (checked against the spec).
const FILLER_MARK: u32 = 0x7700;
const STREAMS: usize = 20;
/// Long enough to cover filling, the checks while full, and a margin.
const STREAM_SECONDS: u64 = 20;

fn seed() -> String {
    std::fs::read_to_string(repo_root().join("fixtures/specs/seed.json")).unwrap()
}

/// `nftbalance status [--json]` on the router, spec on stdin, no watch state.
fn status(topo: &Topology, spec: &str, json: bool) -> String {
    let state = std::env::temp_dir().join(format!("nbt-ctfull-{}.none", std::process::id()));
    let mut args = vec!["status", "-", "--state-file", state.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    let out = topo
        .router
        .exec(&target_binary("nftbalance"), &args, Some(spec.as_bytes()));
    assert!(
        out.status.success(),
        "nftbalance status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn status_json(topo: &Topology, spec: &str) -> Value {
    serde_json::from_str(&status(topo, spec, true)).unwrap()
}

fn live(doc: &Value) -> Vec<u64> {
    doc["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["live_connections"].as_u64().unwrap())
        .collect()
}

fn bytes(doc: &Value) -> u64 {
    doc["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["bytes"].as_u64().unwrap())
        .sum()
}

/// The router's conntrack count, read by a process in its namespace.
fn ct_count(topo: &Topology) -> u64 {
    let text = topo
        .router
        .ok("cat", &["/proc/sys/net/netfilter/nf_conntrack_count"]);
    text.trim().parse().unwrap()
}

/// Sums of the router's per-CPU conntrack statistics `drop` and `early_drop`.
fn ct_drops(topo: &Topology) -> (u64, u64) {
    let text = topo.router.ok("cat", &["/proc/net/stat/nf_conntrack"]);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (drop, early) = (col("drop"), col("early_drop"));
    lines.fold((0, 0), |(d, e), l| {
        let v: Vec<&str> = l.split_whitespace().collect();
        let hex = |i: usize| u64::from_str_radix(v[i], 16).unwrap();
        (d + hex(drop), e + hex(early))
    })
}

/// `n` new connections from the LAN with a short timeout; the JSON line of each.
fn connect(topo: &Topology, n: usize, timeout_ms: u64) -> Vec<Value> {
    topo.traffic(
        Which::Lan,
        &[
            "connect",
            &format!("{SERVER}:443"),
            "--count",
            &n.to_string(),
            "--timeout-ms",
            &timeout_ms.to_string(),
        ],
    )
}

#[test]
fn a_full_conntrack_table_drops_new_connections_and_moves_no_established_one() {
    let started = Instant::now();
    let mut topo = Topology::new(2);
    let spec = seed();
    let parsed = nftbalance_spec::Spec::from_json(&spec).unwrap();
    for g in &parsed.gateways {
        assert_ne!(
            FILLER_MARK & parsed.mark_mask,
            g.mark,
            "filler mark is {}'s",
            g.name
        );
    }
    topo.apply(&spec);
    topo.serve(Which::Server, &format!("{SERVER}:443"), false);

    // 1. Long-lived streams, half on each uplink (round robin).
    let streams = topo.spawn_traffic(
        Which::Lan,
        &[
            "stream",
            &format!("{SERVER}:443"),
            "--count",
            &STREAMS.to_string(),
            "--seconds",
            &STREAM_SECONDS.to_string(),
            "--timeout-ms",
            "2000",
        ],
    );
    let streams_started = Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    let before = status_json(&topo, &spec);
    assert_eq!(live(&before), [10, 10], "streams per uplink: {before:#}");

    // 2. Fill the router's table up to the (global) max with assured entries.
    let t = Instant::now();
    let fill = topo
        .router
        .run(|| conntrack_fill::fill_to_max(FILLER_MARK))
        .expect("filling the conntrack table");
    eprintln!("filled in {:?}: {fill:?}", t.elapsed());
    let max = fill.max;
    assert_eq!(fill.count, max, "{fill:?}");
    assert_eq!(ct_count(&topo), max);
    let fillers = topo.router.run(|| {
        let s = Socket::open().unwrap();
        conntrack::count_by_mark(&s, FILLER_MARK, u32::MAX).unwrap()
    });
    assert_eq!(fillers, fill.created);
    let (drops_full, early_full) = ct_drops(&topo);

    // 3. New connections fail: their first packet finds no room and nothing to evict.
    let refused = connect(&topo, 3, 700);
    for r in &refused {
        assert_eq!(
            r["ok"], false,
            "a new connection got through a full table: {r}"
        );
    }
    let (drops, early) = ct_drops(&topo);
    eprintln!("while full: drop {drops_full} -> {drops}, early_drop {early_full} -> {early}");
    assert!(
        drops >= drops_full + 3,
        "drop counter {drops_full} -> {drops}"
    );
    assert_eq!(early, early_full, "the kernel evicted an entry");
    // The ruleset still changes (netlink needs no conntrack entry): weights 3:1.
    let weighted = spec.replacen(r#""mark": 1, "weight": 1"#, r#""mark": 1, "weight": 3"#, 1);
    assert_ne!(weighted, spec);
    topo.apply(&weighted);
    let text = status(&topo, &weighted, false);
    let line =
        format!("conntrack: {max} of {max} entries (full: the kernel drops new connections)");
    assert!(text.contains(&line), "{text}");
    let full = status_json(&topo, &weighted);
    assert_eq!(full["conntrack"]["count"], max, "{full:#}");
    assert_eq!(full["conntrack"]["max"], max, "{full:#}");
    assert_eq!(
        live(&full),
        live(&before),
        "a stream changed its connection mark"
    );
    std::thread::sleep(Duration::from_millis(500));
    let later = status_json(&topo, &weighted);
    assert!(
        bytes(&later) > bytes(&full),
        "no bytes flowed while the table was full"
    );
    eprintln!(
        "checks while full done {:?} after the streams started",
        streams_started.elapsed()
    );
    assert!(
        streams_started.elapsed() < Duration::from_secs(STREAM_SECONDS - 2),
        "the checks while full took {:?}: raise STREAM_SECONDS so the streams outlive them",
        streams_started.elapsed()
    );

    // Still full while the streams run (once they close, the gc may evict their entries).
    assert_eq!(ct_count(&topo), max, "the table did not stay full");

    // 4. Every stream lived through it, on the uplink it started on.
    let results = streams.finish();
    assert_eq!(results.len(), STREAMS);
    let mut per_uplink: BTreeMap<usize, u64> = BTreeMap::new();
    for r in &results {
        assert_eq!(r["ok"], true, "a stream broke: {r}");
        assert!(r["bytes"].as_u64().unwrap() > 0, "{r}");
        let u = topo.uplink_of(r["seen"].as_str().unwrap()).unwrap();
        *per_uplink.entry(u).or_default() += 1;
    }
    assert_eq!(
        per_uplink.values().copied().collect::<Vec<_>>(),
        live(&before)
    );
    // A connection that switched uplink would leave with the other uplink's source address.
    assert_eq!(topo.ingress_drops(), [0, 0], "a connection switched uplink");

    // 5. Room again: new connections work and use both uplinks (3:1).
    let t = Instant::now();
    let deleted = topo.router.run(|| {
        let s = Socket::open().unwrap();
        conntrack::delete_by_mark(&s, FILLER_MARK, u32::MAX).unwrap()
    });
    eprintln!("deleted {deleted} fillers in {:?}", t.elapsed());
    assert_eq!(deleted, fill.created);
    assert!(ct_count(&topo) < 100, "fillers left: {}", ct_count(&topo));
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for r in connect(&topo, 12, 1500) {
        assert_eq!(r["ok"], true, "{r}");
        *seen
            .entry(topo.uplink_of(r["seen"].as_str().unwrap()).unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        seen,
        BTreeMap::from([(0, 9), (1, 3)]),
        "after the fillers left"
    );
    eprintln!("conntrack_full took {:?}", started.elapsed());
}
