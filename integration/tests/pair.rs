//! Issue 20: a redundant router pair on keepalived (VRRP) and conntrackd, both real, in
//! namespaces. A is master and balances; B holds A's connections with their marks; A dies
//! and B carries every long-lived stream on, on the same uplink with the same public address,
//! within the takeover time plus 2 s; A comes back without taking anything away (no
//! preemption); an uplink that fails while B is master is handled by B's watch.

use std::collections::BTreeMap;
use std::time::Duration;

use nftbalance_integration::cli::text;
use nftbalance_integration::netns::Netns;
use nftbalance_integration::pair::{Pair, ADVERT_MS, NODES, PRIORITIES};
use nftbalance_integration::target_binary;
use nftbalance_integration::topology::{nbtraffic, SERVER};
use nftbalance_integration::watch::wait_for;
use serde_json::Value;

const STREAM_PORT: u16 = 7000;
const CONNECT_PORT: u16 = 80;
const STREAMS: usize = 24;

/// A tracked TCP connection as `conntrack -L` shows it: (LAN source, source port) ->
/// (connection mark, public source address after NAT).
type Tracked = BTreeMap<(String, u16), (u32, String)>;

/// The pair's established TCP connections to `port` in `ns`'s conntrack table.
fn tracked(ns: &Netns, port: u16) -> Tracked {
    let out = ns.exec(
        "conntrack",
        &[
            "-L",
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
            "--state",
            "ESTABLISHED",
        ],
        None,
    );
    let mut m = Tracked::new();
    for line in text(&out.stdout).lines() {
        let field = |key: &str, nth: usize| {
            line.split_whitespace()
                .filter_map(|w| w.strip_prefix(key))
                .nth(nth)
                .map(String::from)
        };
        let (Some(src), Some(sport), Some(public)) =
            (field("src=", 0), field("sport=", 0), field("dst=", 1))
        else {
            continue;
        };
        let mark = field("mark=", 0).and_then(|m| m.parse().ok()).unwrap_or(0);
        m.insert((src, sport.parse().unwrap()), (mark, public));
    }
    m
}

/// VRRP's takeover time: three missed adverts plus the backup's skew, (256 - priority)/256
/// of an interval (RFC 5798 Master_Down_Interval).
fn takeover_bound() -> Duration {
    let skew = ADVERT_MS * (256 - u64::from(PRIORITIES[1])) / 256;
    Duration::from_millis(3 * ADVERT_MS + skew)
}

fn lan_hosts() -> String {
    (10..20)
        .map(|h| format!("192.168.1.{h}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn streams(pair: &Pair, seconds: u64) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", pair.lan.name(), &nbtraffic(), "stream"])
        .arg(format!("{SERVER}:{STREAM_PORT}"))
        .args([
            "--count",
            &STREAMS.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .args(["--from", &lan_hosts(), "--timeout-ms", "8000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn stream_results(child: std::process::Child) -> Vec<Value> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nbtraffic: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `n` new connections from the LAN; how many each uplink (by public address) carried.
fn split(pair: &Pair, n: usize) -> BTreeMap<String, usize> {
    let out = pair.lan.exec(
        &nbtraffic(),
        &[
            "connect",
            &format!("{SERVER}:{CONNECT_PORT}"),
            "--count",
            &n.to_string(),
            "--timeout-ms",
            "2000",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut m = BTreeMap::new();
    for l in text(&out.stdout).lines() {
        let r: Value = serde_json::from_str(l).unwrap();
        assert_eq!(r["ok"], true, "{r}");
        *m.entry(r["seen"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

fn status(pair: &Pair, i: usize) -> Value {
    let out = pair.routers[i].exec(
        &target_binary("nftbalance"),
        &["status", "--json", pair.spec.path()],
        None,
    );
    assert!(out.status.success(), "status: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn gateway_state(pair: &Pair, i: usize, k: usize) -> String {
    status(pair, i)["gateways"][k]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn balanced_halves(split: &BTreeMap<String, usize>, n: usize) {
    let want = BTreeMap::from([
        ("100.0.1.1".to_string(), n / 2),
        ("100.0.2.1".to_string(), n / 2),
    ]);
    assert_eq!(
        split, &want,
        "new connections must split 1:1 over both uplinks"
    );
}

/// Both routers up, A elected; returns once A holds the floating addresses and both see
/// both uplinks up.
fn start_pair() -> Pair {
    let mut pair = Pair::new();
    pair.serve(STREAM_PORT);
    pair.serve(CONNECT_PORT);
    for i in 0..2 {
        pair.apply(i);
        // The generated configuration passes keepalived's own check, in the router's
        // namespace where its interfaces exist.
        let (conf, _) = pair.write_configs(i);
        let t = pair.routers[i].exec("keepalived", &["-t", "-f", &conf], None);
        assert!(
            t.status.success(),
            "keepalived -t: {}{}",
            text(&t.stdout),
            text(&t.stderr)
        );
    }
    pair.start(0);
    pair.start(1);
    let elected = wait_for(Duration::from_secs(15), || pair.is_master(0));
    assert!(
        elected.is_some(),
        "A never became master:\n{}",
        pair.log(0, "keepalived.out")
    );
    assert!(!pair.is_master(1), "B took the addresses too");
    for (i, node) in NODES.iter().enumerate() {
        let ready = wait_for(Duration::from_secs(10), || {
            (0..2).all(|k| gateway_state(&pair, i, k) == "up")
        });
        assert!(
            ready.is_some(),
            "{node}'s watch never saw both uplinks up: {:#}\n{}",
            status(&pair, i),
            pair.log(i, "watch.out")
        );
    }
    pair
}

/// Steady state: A balances 1:1 and B's kernel table holds A's streams with their marks.
fn steady_state(pair: &Pair) -> Tracked {
    balanced_halves(&split(pair, 10), 10);
    let mut on_a = Tracked::new();
    let synced = wait_for(Duration::from_secs(5), || {
        on_a = tracked(&pair.routers[0], STREAM_PORT);
        let on_b = tracked(&pair.routers[1], STREAM_PORT);
        on_a.len() >= STREAMS && on_a.iter().all(|(k, v)| on_b.get(k) == Some(v))
    });
    let on_b = tracked(&pair.routers[1], STREAM_PORT);
    assert!(
        synced.is_some(),
        "B does not hold A's streams with their marks:\nA {on_a:?}\nB {on_b:?}"
    );
    let marks: std::collections::BTreeSet<u32> = on_a.values().map(|(m, _)| *m).collect();
    assert_eq!(
        marks,
        [1, 2].into(),
        "the streams use both uplinks: {on_a:?}"
    );
    on_a
}

#[test]
fn a_pair_keeps_every_connection_on_its_uplink_through_failover_and_back() {
    let mut pair = start_pair();
    let first = streams(&pair, 9);
    std::thread::sleep(Duration::from_millis(1500));
    let before = steady_state(&pair);

    // A dies. B must take over and carry every stream on.
    pair.kill(0);
    let took = wait_for(Duration::from_secs(10), || pair.is_master(1))
        .unwrap_or_else(|| panic!("B never became master:\n{}", pair.log(1, "keepalived.out")));
    eprintln!(
        "takeover after {} ms (VRRP bound {} ms)",
        took.as_millis(),
        takeover_bound().as_millis()
    );
    // `nftbalance ha master` (keepalived's notify, started with the takeover) re-applies
    // the spec; the split is checked once it is done.
    std::thread::sleep(Duration::from_millis(500));
    let settled = wait_for(Duration::from_secs(10), || !pair.transition_running(1));
    assert!(settled.is_some(), "B's `nftbalance ha master` never ended");
    balanced_halves(&split(&pair, 10), 10);
    let results = stream_results(first);
    let allowed = took + Duration::from_secs(2);
    for r in &results {
        assert_eq!(r["ok"], true, "stream broken by the failover: {r}");
        let slowest = r["slowest_ms"].as_u64().unwrap();
        assert!(
            u128::from(slowest) <= allowed.as_millis(),
            "a stream stalled {slowest} ms, more than the takeover ({} ms) plus 2 s: {r}",
            took.as_millis()
        );
    }
    let stall = results
        .iter()
        .filter_map(|r| r["slowest_ms"].as_u64())
        .max();
    eprintln!(
        "longest stream stall across the failover: {stall:?} ms ({} streams)",
        results.len()
    );
    let after = tracked(&pair.routers[1], STREAM_PORT);
    for (k, v) in &before {
        if let Some(now) = after.get(k) {
            assert_eq!(now, v, "stream {k:?} changed uplink or public address on B");
        }
    }
    assert_eq!(
        pair.ingress_drops(),
        vec![0, 0],
        "a packet left by the wrong uplink"
    );
    let st = status(&pair, 1);
    let new: u64 = (0..2)
        .map(|k| st["gateways"][k]["new_connections"].as_u64().unwrap())
        .sum();
    assert!(
        new >= 10,
        "status on B does not show its new connections: {st:#}"
    );

    failback_without_preemption(&mut pair);
    uplink_failure_on_b(&pair);
}

/// A comes back (as after a reboot): nopreempt keeps B master, no stream through B breaks,
/// and A learns B's connections (conntrackd's startup resync).
fn failback_without_preemption(pair: &mut Pair) {
    let second = streams(pair, 6);
    std::thread::sleep(Duration::from_millis(1000));
    pair.reboot(0);
    let on_b = tracked(&pair.routers[1], STREAM_PORT);
    assert!(
        on_b.len() >= STREAMS,
        "B does not carry the streams: {on_b:?}"
    );
    let mut on_a = Tracked::new();
    let learned = wait_for(Duration::from_secs(8), || {
        on_a = tracked(&pair.routers[0], STREAM_PORT);
        on_b.iter().all(|(k, v)| on_a.get(k) == Some(v))
    });
    assert!(
        learned.is_some(),
        "A did not learn B's connections after its return:\nB {on_b:?}\nA {on_a:?}\n{}",
        pair.log(0, "conntrackd.log")
    );
    for r in stream_results(second) {
        assert_eq!(r["ok"], true, "stream broken by A's return: {r}");
    }
    assert!(
        pair.is_master(1) && !pair.is_master(0),
        "A took the addresses back (preempt is off)"
    );
    let log = pair.log(0, "keepalived.out");
    assert!(
        log.contains("Entering BACKUP STATE"),
        "A is not backup:\n{log}"
    );
}

/// isp1's upstream dies while B is master: B's watch moves new connections to isp2, and A,
/// the backup, sees the same (its view is ready for the next takeover).
fn uplink_failure_on_b(pair: &Pair) {
    pair.isps[0].cmd("ip link set wan down");
    for i in [1, 0] {
        let seen = wait_for(Duration::from_secs(5), || {
            gateway_state(pair, i, 0) == "down"
        });
        assert!(
            seen.is_some(),
            "{}'s watch did not see isp1 fail: {:#}",
            NODES[i],
            status(pair, i)
        );
    }
    let moved = wait_for(Duration::from_secs(3), || {
        status(pair, 1)["gateways"][0]["available"] == false
    });
    assert!(moved.is_some(), "B still gives isp1 new connections");
    assert_eq!(
        split(pair, 6),
        BTreeMap::from([("100.0.2.1".to_string(), 6)])
    );
    pair.isps[0].cmd("ip link set wan up");
}
