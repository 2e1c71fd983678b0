//! `nftbalance watch` under adversity: other programs removing its ip rules, routes and
//! table while traffic runs (repaired within a second, measured), a PPP-like uplink that
//! comes back with a new address and next hop, a boot with every uplink down, a kill -9 and
//! restart, and a storm of link flaps. The tests of this file run in parallel: the storm
//! takes a minute by itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nftbalance_integration::cli;
use nftbalance_integration::topology::{Topology, TrafficRun, Which, LAN_ROUTER, SERVER};
use nftbalance_integration::watch::{self, probed_spec, table_handle, TempFile, Watch};
use serde_json::Value;

const INTERVAL_MS: u64 = 300;
const UP: u64 = 2;
const DOWN: u64 = 2;
/// How long a repair may take in these tests: the guarantee is one second, measured and
/// printed; the bound leaves room for a machine busy with other tests.
const REPAIR_BOUND: Duration = Duration::from_secs(5);

fn log_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("nbt-adversity-{tag}-{}.log", std::process::id()))
}

/// A topology of `n` uplinks with the probed spec applied, its spec and state files, the
/// server listening, and the path for watch's log (files tagged per test: the tests of this
/// file run in parallel in one process).
fn applied(n: usize, tag: &str) -> (Topology, TempFile, TempFile, PathBuf) {
    let mut topo = Topology::new(n);
    let spec = probed_spec(n as u32, INTERVAL_MS, UP, DOWN);
    topo.apply(&spec);
    let spec_file = TempFile::new(&format!("spec-{tag}"), &spec);
    let state_file = TempFile::new(&format!("state-{tag}"), "{}");
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    (topo, spec_file, state_file, log_path(tag))
}

fn start_watch(topo: &Topology, spec: &TempFile, state: &TempFile, log: &Path) -> Watch {
    Watch::start_logged(
        topo,
        spec,
        Some(state),
        Duration::from_millis(INTERVAL_MS * UP + 500),
        log,
    )
}

/// Whether `nftbalance diff` finds the table and the owned routing as apply would make them.
fn in_order(topo: &Topology, spec: &TempFile) -> bool {
    cli::nftbalance(&topo.router, &["diff", spec.path()])
        .status
        .code()
        == Some(0)
}

/// Polls `check` every 20 ms for at most `limit`; the time it took.
fn time_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The source addresses the server saw for `n` new connections from the LAN (failed ones
/// left out).
fn sources(topo: &Topology, n: usize) -> Vec<String> {
    watch::connect(topo, n, 1000)
        .iter()
        .filter(|r| r["ok"] == true)
        .filter_map(|r| r["seen"].as_str().map(str::to_string))
        .collect()
}

/// The uplinks (indexes) that `n` new connections used.
fn uplinks_used(topo: &Topology, n: usize) -> BTreeSet<usize> {
    sources(topo, n)
        .iter()
        .filter_map(|s| topo.uplink_of(s))
        .collect()
}

/// New connections from the LAN all the time, one after another, until dropped.
fn new_connections(topo: &Topology) -> TrafficRun {
    topo.spawn_traffic(
        Which::Lan,
        &[
            "connect",
            &format!("{SERVER}:80"),
            "--count",
            "100000",
            "--timeout-ms",
            "500",
        ],
    )
}

fn streams(topo: &Topology, count: u32, seconds: u32) -> TrafficRun {
    topo.spawn_traffic(
        Which::Lan,
        &[
            "stream",
            &format!("{SERVER}:80"),
            "--count",
            &count.to_string(),
            "--seconds",
            &seconds.to_string(),
        ],
    )
}

fn watch_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Deletes every ip rule in nftbalance's priority range (1000-1199), as `ip rule flush`
/// would, in one `ip -batch`.
fn flush_owned_rules(topo: &Topology) {
    let rules: Value =
        serde_json::from_str(&topo.router.ip(&["-j", "-4", "rule", "list"])).unwrap();
    let batch: String = rules
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["priority"].as_u64())
        .filter(|p| (1000..=1199).contains(p))
        .map(|p| format!("rule del priority {p}\n"))
        .collect();
    assert!(!batch.is_empty(), "no owned rules to flush");
    let out = topo
        .router
        .exec("ip", &["-4", "-batch", "-"], Some(batch.as_bytes()));
    assert!(out.status.success(), "{}", cli::text(&out.stderr));
}

// Out of `make test` (run by `make stress`): one run in three here an established stream on
// a live uplink was reset during the five events, cause not yet found (issue 18 stays open).
#[test]
#[ignore = "a rare stream reset during the five events is not yet explained; make stress runs it"]
fn rules_routes_and_the_table_removed_by_others_are_repaired_within_a_second() {
    let (topo, spec_file, state_file, log) = applied(2, "repair");
    let _watch = start_watch(&topo, &spec_file, &state_file, &log);
    assert_eq!(uplinks_used(&topo, 10), BTreeSet::from([0, 1]));

    let streams = streams(&topo, 20, 14);
    let load = new_connections(&topo);
    std::thread::sleep(Duration::from_millis(500));
    type Event = fn(&Topology);
    let events: [(&str, Event); 5] = [
        ("ip rule flush of the owned range", flush_owned_rules),
        ("deletion of isp2's default route", |t| {
            t.router.ip(&["route", "del", "default", "table", "102"]);
        }),
        ("nft flush chain inet nftbalance balance", |t| {
            t.router
                .nft(&["flush", "chain", "inet", "nftbalance", "balance"]);
        }),
        ("nft delete table inet nftbalance", |t| {
            t.router.nft(&["delete", "table", "inet", "nftbalance"]);
        }),
        ("nft flush ruleset", |t| {
            t.router.nft(&["flush", "ruleset"]);
        }),
    ];
    for (what, event) in events {
        assert!(in_order(&topo, &spec_file), "not in order before: {what}");
        event(&topo);
        let took = time_until(REPAIR_BOUND, || in_order(&topo, &spec_file))
            .unwrap_or_else(|| panic!("{what}: not repaired within {REPAIR_BOUND:?}"));
        eprintln!("{what}: repaired {} ms after the event", took.as_millis());
        assert_eq!(
            uplinks_used(&topo, 10),
            BTreeSet::from([0, 1]),
            "{what}: new connections not balanced again"
        );
    }
    // Someone removes the same rule again and again: watch repairs it, then backs off.
    let started = Instant::now();
    for _ in 0..5 {
        topo.router.ip(&["rule", "del", "priority", "1001"]);
        time_until(REPAIR_BOUND, || in_order(&topo, &spec_file)).expect("not repaired");
    }
    eprintln!(
        "the same rule removed 5 times: all repaired after {} ms",
        started.elapsed().as_millis()
    );
    drop(load);
    let text = watch_log(&log);
    assert!(
        text.matches("repaired the routing").count() >= 2
            && text.matches("repaired table").count() >= 3,
        "watch did not say what it repaired:\n{text}"
    );
    assert!(
        text.contains("backing off"),
        "watch did not back off:\n{text}"
    );
    for r in streams.finish() {
        assert_eq!(r["ok"], true, "an established stream broke: {r}");
    }
    let _ = std::fs::remove_file(&log);
}

/// A gateway without `address` and `via`, on a point-to-point link as pppd sets one up.
fn ppp_spec() -> String {
    let spec: Value = serde_json::from_str(&probed_spec(2, INTERVAL_MS, UP, DOWN)).unwrap();
    let mut spec = spec;
    let gw = spec["gateways"][1].as_object_mut().unwrap();
    gw.remove("address");
    gw.remove("via");
    spec.to_string()
}

/// Gives uplink 2 point-to-point addresses: the router `local`, the provider `peer`.
fn dial(topo: &Topology, local: &str, peer: &str) {
    topo.router.ip(&[
        "addr",
        "add",
        local,
        "peer",
        &format!("{peer}/32"),
        "dev",
        "ppp1",
    ]);
    topo.isps[1].ip(&[
        "addr",
        "add",
        peer,
        "peer",
        &format!("{local}/32"),
        "dev",
        "rtr",
    ]);
    topo.router.ip(&["link", "set", "ppp1", "up"]);
    topo.isps[1].ip(&["link", "set", "rtr", "up"]);
}

#[test]
fn a_ppp_uplink_that_comes_back_with_a_new_address_takes_connections_again() {
    let mut topo = Topology::new(2);
    topo.router.ip(&["addr", "flush", "dev", "ppp1"]);
    topo.isps[1].ip(&["addr", "flush", "dev", "rtr"]);
    dial(&topo, "100.0.2.1", "100.0.2.254");
    let spec = ppp_spec();
    topo.apply(&spec);
    let (spec_file, state_file) = (
        TempFile::new("spec-ppp", &spec),
        TempFile::new("state-ppp", "{}"),
    );
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let log = log_path("ppp");
    let _watch = start_watch(&topo, &spec_file, &state_file, &log);
    let seen: BTreeSet<String> = sources(&topo, 10).into_iter().collect();
    assert!(
        seen.contains("100.0.2.1"),
        "learned uplink unused: {seen:?}"
    );

    // Hang up: the interface goes (with the provider's end), then comes back re-dialled.
    topo.router.ip(&["link", "del", "ppp1"]);
    // A redial takes seconds: watch takes the uplink out meanwhile.
    let out = time_until(Duration::from_secs(5), || {
        watch::status(&topo, &spec_file, Some(&state_file))["gateways"][1]["available"] == false
    });
    assert!(out.is_some(), "the hung-up uplink is still in the split");
    assert!(!sources(&topo, 4).iter().any(|s| s.starts_with("100.0.2.")));
    topo.router.ip(&[
        "link",
        "add",
        "ppp1",
        "type",
        "veth",
        "peer",
        "name",
        "rtr",
        "netns",
        topo.isps[1].name(),
    ]);
    dial(&topo, "100.0.2.50", "100.0.2.200");
    let bound = Duration::from_millis(INTERVAL_MS * UP + 1000);
    let back = time_until(bound + Duration::from_secs(4), || {
        sources(&topo, 4).iter().any(|s| s == "100.0.2.50")
    })
    .expect("the re-dialled uplink takes no connections with its new address");
    eprintln!(
        "ppp uplink back with its new address after {} ms (interval x up + 1 s = {} ms)",
        back.as_millis(),
        bound.as_millis()
    );
    assert!(
        in_order(&topo, &spec_file),
        "routing or table not as planned"
    );
    let rules = topo.router.ip(&["rule", "list"]);
    assert!(
        rules.contains("from 100.0.2.50 lookup 102") && !rules.contains("from 100.0.2.1 "),
        "the from rule did not follow the address:\n{rules}"
    );
    let text = watch_log(&log);
    assert!(
        text.contains("via 100.0.2.200"),
        "watch did not log what it learned:\n{text}"
    );
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_boot_with_every_uplink_down_brings_each_uplink_in_as_it_comes_up() {
    let mut topo = Topology::new(2);
    for dev in ["ppp0", "ppp1"] {
        topo.router.ip(&["link", "set", dev, "down"]);
    }
    let spec = probed_spec(2, INTERVAL_MS, UP, DOWN);
    let (spec_file, state_file) = (
        TempFile::new("spec-boot", &spec),
        TempFile::new("state-boot", "{}"),
    );
    let out = cli::nftbalance(&topo.router, &["apply", spec_file.path()]);
    assert_eq!(out.status.code(), Some(0), "{}", cli::text(&out.stderr));
    // The LAN reaches the router (a TCP connection to it).
    topo.serve(Which::Router, &format!("{LAN_ROUTER}:22"), false);
    let to_router = topo.traffic(
        Which::Lan,
        &["connect", &format!("{LAN_ROUTER}:22"), "--count", "1"],
    );
    assert_eq!(to_router[0]["ok"], true, "{to_router:?}");
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let log = log_path("boot");
    let _watch = start_watch(&topo, &spec_file, &state_file, &log);

    let mut wanted = BTreeSet::new();
    for (i, dev) in ["ppp0", "ppp1"].into_iter().enumerate() {
        topo.router.ip(&["link", "set", dev, "up"]);
        wanted.insert(i);
        let took = time_until(Duration::from_secs(10), || uplinks_used(&topo, 6) == wanted)
            .unwrap_or_else(|| panic!("{dev} up: new connections do not use {wanted:?}"));
        eprintln!(
            "{dev} up: taking new connections after {} ms",
            took.as_millis()
        );
    }
    let _ = std::fs::remove_file(&log);
}

fn gateway_packets(topo: &Topology, spec: &TempFile, state: &TempFile) -> Vec<u64> {
    let doc = watch::status(topo, spec, Some(state));
    doc["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["packets"].as_u64().unwrap())
        .collect()
}

#[test]
fn watch_killed_and_restarted_resumes_without_moving_anything() {
    let (topo, spec_file, state_file, log) = applied(3, "kill");
    let mut first = start_watch(&topo, &spec_file, &state_file, &log);
    // Uplink 3's provider dies: watch finds it down and takes it out.
    topo.isps[2].ip(&["link", "set", "rtr", "down"]);
    time_until(Duration::from_secs(5), || {
        uplinks_used(&topo, 6) == BTreeSet::from([0, 1])
    })
    .expect("uplink 3 not taken out");
    let streams = streams(&topo, 10, 6);
    std::thread::sleep(Duration::from_millis(500));
    let (handle, before) = (
        table_handle(&topo),
        gateway_packets(&topo, &spec_file, &state_file),
    );

    first.signal("KILL");
    let _ = first.0.wait();
    // Reaped: nothing left for its drop to stop.
    std::mem::forget(first);
    let log2 = log_path("kill2");
    let _second = start_watch(&topo, &spec_file, &state_file, &log2);
    assert_eq!(
        table_handle(&topo),
        handle,
        "the restart replaced the table"
    );
    // Still down after the restart: no probe round had to prove it again.
    assert_eq!(uplinks_used(&topo, 6), BTreeSet::from([0, 1]));
    std::thread::sleep(Duration::from_millis(500));
    let after = gateway_packets(&topo, &spec_file, &state_file);
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "counters did not keep counting: {before:?} -> {after:?}"
    );
    for r in streams.finish() {
        assert_eq!(r["ok"], true, "a connection moved or broke: {r}");
    }
    let text = watch_log(&log2);
    assert!(text.contains("resuming from"), "{text}");
    assert!(
        !text.contains("applying it"),
        "the restart re-applied:\n{text}"
    );
    for l in [log, log2] {
        let _ = std::fs::remove_file(l);
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// `count` flaps (down, then up) alternating between the two uplinks' router ends, one
/// every `every`.
fn flap(topo: &Topology, count: u32, every: Duration) {
    let started = Instant::now();
    for k in 0..count {
        let dev = if k % 2 == 0 { "ppp0" } else { "ppp1" };
        topo.router.ip(&["link", "set", dev, "down"]);
        std::thread::sleep(every / 3);
        topo.router.ip(&["link", "set", dev, "up"]);
        let next = every * (k + 1);
        if let Some(wait) = next.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

#[test]
fn a_storm_of_200_link_flaps_in_a_minute_leaves_watch_up_and_right() {
    let (topo, spec_file, state_file, log) = applied(2, "storm");
    let mut w = start_watch(&topo, &spec_file, &state_file, &log);
    let pid = w.0.id();
    let load = new_connections(&topo);
    // Warm up every path the storm takes, then measure.
    flap(&topo, 10, Duration::from_millis(300));
    std::thread::sleep(Duration::from_secs(3));
    let rss_before = vm_rss_kib(pid);

    let started = Instant::now();
    flap(&topo, 200, Duration::from_millis(300));
    eprintln!("200 flaps in {} ms", started.elapsed().as_millis());
    assert!(w.exited().is_none(), "watch died in the storm");
    drop(load);

    let settled = time_until(Duration::from_secs(10), || {
        in_order(&topo, &spec_file) && uplinks_used(&topo, 6) == BTreeSet::from([0, 1])
    });
    assert!(
        settled.is_some(),
        "not back to both uplinks after the storm"
    );
    let rss_after = vm_rss_kib(pid);
    eprintln!("watch VmRSS: {rss_before} KiB before the storm, {rss_after} KiB after");
    assert!(
        rss_after * 10 <= rss_before * 11,
        "resident memory grew more than 10%: {rss_before} -> {rss_after} KiB"
    );
    let text = watch_log(&log);
    assert!(
        !text.contains("retrying until it is done") && !text.contains("ERROR"),
        "a transaction failed in the storm:\n{text}"
    );
    let _ = std::fs::remove_file(&log);
}
