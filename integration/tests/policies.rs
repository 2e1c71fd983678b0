//! Issue 16 on real traffic: policies with failover tiers under `nftbalance watch`. New
//! connections split over the active tier's live members by weight, move to the next tier
//! within interval x down + 1 s when a tier dies, come back when it recovers, and take the
//! policy's last resort when no member is left; streams on surviving uplinks are untouched,
//! `diff` is clean after every watch-driven change and `status` shows the gateway states.
//! Also: uplinks sharing one next hop (`Topology::with_next_hops`), and the quality health
//! fields on real probes (loss, latency over an HTTP target, reliability).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nftbalance_integration::cli::{nftbalance, text};
use nftbalance_integration::topology::{Topology, Which, SERVER, SERVER_EXCLUDED};
use nftbalance_integration::watch::{status, wait_for, TempFile, Watch};
use serde_json::Value;

const INTERVAL_MS: u64 = 300;
const UP: u64 = 2;
const DOWN: u64 = 2;

/// The acceptance bound of a failover: interval x down + 1 s.
fn failover_bound() -> Duration {
    Duration::from_millis(INTERVAL_MS * DOWN + 1000)
}

/// A generous limit for anything that should happen within a few probe rounds.
const LIMIT: Duration = Duration::from_secs(15);

/// Health of every gateway: ICMP echo to the server through its uplink.
fn icmp_health() -> String {
    format!(
        r#"{{ "targets": ["{SERVER}"], "interval": "{INTERVAL_MS}ms", "timeout": "250ms",
             "up": {UP}, "down": {DOWN} }}"#
    )
}

/// A spec of the topology's uplinks (gateways `isp1`..), gateway i probing with `health(i)`
/// (1-based), with `policies` (the object's members) and `forward` selectors.
fn spec_with(
    topo: &Topology,
    health: impl Fn(usize) -> String,
    policies: &str,
    forward: &str,
) -> String {
    let gws: Vec<String> = (topo.uplinks.iter().enumerate())
        .map(|(k, up)| {
            let i = k + 1;
            format!(
                r#"{{ "name": "isp{i}", "interface": "{}", "mark": {i}, "address": "{}",
                     "via": "{}", "route_table": {}, "health": {} }}"#,
                up.interface,
                up.address,
                up.gateway,
                100 + i,
                health(i)
            )
        })
        .collect();
    format!(
        r#"{{ "gateways": [ {} ],
             "policies": {{ {policies} }},
             "balance": {{ "forward": [ {forward} ], "exclude": [ "192.168.0.0/16" ] }} }}"#,
        gws.join(", ")
    )
}

fn spec(topo: &Topology, policies: &str, forward: &str) -> String {
    spec_with(topo, |_| icmp_health(), policies, forward)
}

/// Applies `spec`, serves TCP on the server's `ports`, starts watch with the table's own state
/// file (so `diff` and `status` see its states) and waits for its first verdicts.
fn start(topo: &mut Topology, tag: &str, spec: &str, ports: &[u16]) -> (TempFile, Watch) {
    topo.apply(spec);
    for port in ports {
        topo.serve(Which::Server, &format!("{SERVER}:{port}"), false);
    }
    let file = TempFile::new(tag, spec);
    let watch = Watch::start(
        topo,
        &file,
        None,
        Duration::from_millis(INTERVAL_MS * UP + 300),
    );
    (file, watch)
}

/// `n` new connections from the LAN to the server's `port` (TCP, or UDP), each given
/// `timeout_ms`: how many each uplink carried, failed ones under `None`.
fn split_on(
    topo: &Topology,
    port: u16,
    udp: bool,
    n: usize,
    timeout_ms: u64,
) -> BTreeMap<Option<usize>, usize> {
    let (target, count, timeout) = (
        format!("{SERVER}:{port}"),
        n.to_string(),
        timeout_ms.to_string(),
    );
    let mut args = vec![
        "connect",
        target.as_str(),
        "--count",
        &count,
        "--timeout-ms",
        &timeout,
    ];
    if udp {
        args.push("--udp");
    }
    let mut m = BTreeMap::new();
    for r in topo.traffic(Which::Lan, &args) {
        let via = (r["ok"] == true)
            .then(|| topo.uplink_of(r["seen"].as_str().unwrap()))
            .flatten();
        *m.entry(via).or_default() += 1;
    }
    m
}

/// `n` TCP connections to port 80.
fn split(topo: &Topology, n: usize) -> BTreeMap<Option<usize>, usize> {
    split_on(topo, 80, false, n, 1500)
}

/// All of `n` connections on uplink `k`.
fn all_on(k: usize, n: usize) -> BTreeMap<Option<usize>, usize> {
    BTreeMap::from([(Some(k), n)])
}

/// Polls batches of `n` short connections to `port` until they split as `want`; the time
/// since `since`. Panics after `LIMIT`.
fn time_until(
    topo: &Topology,
    since: Instant,
    port: u16,
    udp: bool,
    want: &BTreeMap<Option<usize>, usize>,
) -> Duration {
    let n = want.values().sum();
    let mut last = BTreeMap::new();
    while since.elapsed() < LIMIT {
        last = split_on(topo, port, udp, n, 300);
        if &last == want {
            return since.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("port {port}: never {want:?} within {LIMIT:?}; last {last:?}");
}

/// Drops what `rule` matches in provider `k`'s forward path (before the ingress filter).
/// `DEAD` kills the upstream behind a live link; `PROBES_DEAD` only the ICMP probes, so the
/// gateway is judged down while TCP through it still works.
fn blackhole(topo: &Topology, k: usize, rule: &str) {
    let nft = format!(
        "table inet blackhole {{\n chain forward {{ type filter hook forward priority -10; {rule}\n }}\n}}\n"
    );
    let out = topo.isps[k].exec("nft", &["-f", "-"], Some(nft.as_bytes()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const DEAD: &str = "drop";
const PROBES_DEAD: &str = "meta l4proto icmp drop";

fn revive(topo: &Topology, k: usize) {
    topo.isps[k].ok("nft", &["delete", "table", "inet", "blackhole"]);
}

/// The observed state of each gateway, from `status --json`.
fn states(topo: &Topology, spec: &TempFile) -> Vec<String> {
    let doc = status(topo, spec, None);
    assert_eq!(doc["state_source"], "watch", "{doc:#}");
    (doc["gateways"].as_array().unwrap().iter())
        .map(|g| g["state"].as_str().unwrap().to_string())
        .collect()
}

/// `nftbalance diff SPEC` finds the table and routing as apply would program them now.
fn assert_diff_clean(topo: &Topology, spec: &TempFile) {
    let out = nftbalance(&topo.router, &["diff", spec.path()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if out.status.code() != Some(0) || !stdout.contains("same as the spec") {
        let table = topo
            .router
            .ok("nft", &["-a", "list", "table", "inet", "nftbalance"]);
        panic!(
            "diff exited {:?}: {stdout}{stderr}\nthe table:\n{table}",
            out.status.code()
        );
    }
}

/// A stream's uplink, if it got one.
fn stream_uplink(topo: &Topology, r: &Value) -> Option<usize> {
    topo.uplink_of(r["seen"].as_str().unwrap_or(""))
}

fn streams(topo: &Topology, port: u16, count: usize, seconds: u64) -> impl FnOnce() -> Vec<Value> {
    let run = topo.spawn_traffic(
        Which::Lan,
        &[
            "stream",
            &format!("{SERVER}:{port}"),
            "--count",
            &count.to_string(),
            "--seconds",
            &seconds.to_string(),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    move || run.finish()
}

/// Acceptance 1: isp1 (weight 3) and isp2 (weight 2) in tier 1, isp3 in tier 2.
#[test]
fn tiers_split_by_weight_fail_over_to_the_backup_tier_and_back() {
    let mut topo = Topology::new(3);
    let spec = spec(
        &topo,
        r#""tiers": { "members": [ { "gateway": "isp1", "weight": 3 },
                                    { "gateway": "isp2", "weight": 2 },
                                    { "gateway": "isp3", "tier": 2 } ] }"#,
        r#"{ "iif": "eth0", "protocol": "tcp", "policy": "tiers" }"#,
    );
    let (file, _watch) = start(&mut topo, "pol-tiers", &spec, &[80]);
    assert_eq!(
        split(&topo, 10),
        BTreeMap::from([(Some(0), 6), (Some(1), 4)]),
        "all up: 3:2 over tier 1, none on isp3"
    );
    assert_eq!(states(&topo, &file), ["up", "up", "up"]);

    // isp2's upstream dies: tier 1 is isp1 alone; isp1's streams keep going.
    let first_streams = streams(&topo, 80, 5, 4);
    let t = Instant::now();
    blackhole(&topo, 1, DEAD);
    let took = time_until(&topo, t, 80, false, &all_on(0, 5));
    eprintln!("isp2 dead: tier 1 is isp1 alone after {took:?}");
    assert_eq!(split(&topo, 10), all_on(0, 10), "isp3 must get none");
    assert_eq!(states(&topo, &file), ["up", "down", "up"]);
    assert_diff_clean(&topo, &file);
    let results = first_streams();
    assert!(results.iter().any(|r| stream_uplink(&topo, r) == Some(0)));
    for r in &results {
        if stream_uplink(&topo, r) == Some(0) {
            assert_eq!(r["ok"], true, "a stream on isp1 was disturbed: {r}");
        }
    }

    // isp1's upstream dies too: every new connection goes via isp3.
    let t = Instant::now();
    blackhole(&topo, 0, DEAD);
    let took = time_until(&topo, t, 80, false, &all_on(2, 1));
    eprintln!(
        "tier 1 dead: isp3 takes new connections after {took:?} (bound {:?})",
        failover_bound()
    );
    assert!(
        took < failover_bound() + Duration::from_secs(1),
        "failover to tier 2 took {took:?}"
    );
    assert_eq!(split(&topo, 10), all_on(2, 10));
    assert_eq!(states(&topo, &file), ["down", "down", "up"]);
    assert_diff_clean(&topo, &file);

    // isp1 comes back: isp3 gets no new connections; the streams on isp3 are not reset.
    let backup_streams = streams(&topo, 80, 3, 5);
    let t = Instant::now();
    revive(&topo, 0);
    let took = time_until(&topo, t, 80, false, &all_on(0, 5));
    eprintln!("isp1 back: tier 1 again after {took:?}");
    assert_eq!(split(&topo, 10), all_on(0, 10), "isp3 still used");
    assert_eq!(states(&topo, &file), ["up", "down", "up"]);
    assert_diff_clean(&topo, &file);
    for r in backup_streams() {
        assert_eq!(stream_uplink(&topo, &r), Some(2), "{r}");
        assert_eq!(r["ok"], true, "a stream on isp3 was disturbed: {r}");
    }
}

/// Acceptance 2: udp/5060 prefers isp2 then isp1; tcp balances isp1 and isp2 with isp3 as
/// the backup. isp2's death moves only what isp2 carried.
#[test]
fn two_policies_fail_over_independently() {
    let mut topo = Topology::new(3);
    let spec = spec(
        &topo,
        r#""voip": { "members": [ { "gateway": "isp2" }, { "gateway": "isp1", "tier": 2 } ] },
           "web": { "members": [ { "gateway": "isp1" }, { "gateway": "isp2" },
                                 { "gateway": "isp3", "tier": 2 } ] }"#,
        r#"{ "iif": "eth0", "protocol": "udp", "dports": [5060], "policy": "voip" },
           { "iif": "eth0", "protocol": "tcp", "policy": "web" }"#,
    );
    let (file, _watch) = start(&mut topo, "pol-two", &spec, &[80]);
    topo.serve(Which::Server, &format!("{SERVER}:5060"), true);
    assert_eq!(split_on(&topo, 5060, true, 6, 1500), all_on(1, 6));
    assert_eq!(
        split(&topo, 10),
        BTreeMap::from([(Some(0), 5), (Some(1), 5)])
    );

    let tcp_streams = streams(&topo, 80, 4, 5);
    let t = Instant::now();
    topo.isps[1].ok("ip", &["link", "set", "rtr", "down"]);
    let took = time_until(&topo, t, 5060, true, &all_on(0, 2));
    eprintln!("isp2 down: voip on isp1 after {took:?}");
    assert_eq!(split_on(&topo, 5060, true, 6, 1500), all_on(0, 6));
    assert_eq!(split(&topo, 10), all_on(0, 10), "web: isp1 only, isp3 none");
    assert_eq!(states(&topo, &file), ["up", "down", "up"]);
    assert_diff_clean(&topo, &file);
    let results = tcp_streams();
    assert_eq!(
        (results.iter())
            .filter(|r| stream_uplink(&topo, r) == Some(0))
            .count(),
        2,
        "{results:?}"
    );
    for r in &results {
        if stream_uplink(&topo, r) == Some(0) {
            assert_eq!(r["ok"], true, "a stream on isp1 was disturbed: {r}");
        }
    }

    topo.isps[1].ok("ip", &["link", "set", "rtr", "up"]);
    let t = Instant::now();
    let took = time_until(&topo, t, 5060, true, &all_on(1, 2));
    eprintln!("isp2 up: voip back on isp2 after {took:?}");
    assert_eq!(
        split(&topo, 10),
        BTreeMap::from([(Some(0), 5), (Some(1), 5)])
    );
    assert_diff_clean(&topo, &file);
}

/// A last-resort policy: members isp2 then isp3, so isp1 (the main table's default route,
/// and a gateway that stays up, so that not every gateway is down) is not a member.
fn resort_policy(name: &str, resort: &str) -> String {
    format!(
        r#""{name}": {{ "members": [ {{ "gateway": "isp2" }}, {{ "gateway": "isp3", "tier": 2 }} ],
                       "last_resort": "{resort}" }}"#
    )
}

/// The selector of a last-resort policy: TCP to `port`.
fn resort_selector(port: u16, name: &str) -> String {
    format!(r#"{{ "iif": "eth0", "protocol": "tcp", "dports": [{port}], "policy": "{name}" }}"#)
}

/// New connections each gateway took, from `status --json` (the `account` chain).
fn new_connections(topo: &Topology, spec: &TempFile) -> Vec<u64> {
    let doc = status(topo, spec, None);
    (doc["gateways"].as_array().unwrap().iter())
        .map(|g| g["new_connections"].as_u64().unwrap())
        .collect()
}

/// Three uplinks under `spec`, TCP served on `ports` (the first one's policy checked), then
/// the members' probes dropped: isp2 first (tier 2 takes over), then isp3 (no member left).
/// TCP through isp2 and isp3 still works, so where connections go stays visible.
fn members_down(
    tag: &str,
    spec: impl Fn(&Topology) -> String,
    ports: &[u16],
) -> (Topology, TempFile, Watch) {
    let mut topo = Topology::new(3);
    let spec = spec(&topo);
    let (file, watch) = start(&mut topo, tag, &spec, ports);
    for &port in ports {
        assert_eq!(
            split_on(&topo, port, false, 3, 1500),
            all_on(1, 3),
            "port {port}"
        );
    }
    let t = Instant::now();
    blackhole(&topo, 1, PROBES_DEAD);
    let took = time_until(&topo, t, ports[0], false, &all_on(2, 2));
    eprintln!("{tag}: isp2 probes dead: tier 2 after {took:?}");
    for &port in ports {
        assert_eq!(
            split_on(&topo, port, false, 3, 1500),
            all_on(2, 3),
            "port {port}"
        );
    }
    let t = Instant::now();
    blackhole(&topo, 2, PROBES_DEAD);
    assert!(
        wait_for(LIMIT, || states(&topo, &file) == ["up", "down", "down"]).is_some(),
        "isp3 not down: {:?}",
        states(&topo, &file)
    );
    eprintln!(
        "{tag}: isp3 probes dead: both members down after {:?}",
        t.elapsed()
    );
    // Give watch's one transaction a moment after the state file says so.
    std::thread::sleep(Duration::from_millis(500));
    (topo, file, watch)
}

/// Acceptance 6, main-table and keep-last: with every member down, `main-table` routes a
/// new connection by the main table, unmarked, and `keep-last` keeps the members in use
/// last (the tier-2 backup, not tier 1); when a member is back, both use it again.
#[test]
fn last_resorts_main_table_and_keep_last() {
    let spec = |topo: &Topology| {
        let policies = [
            resort_policy("main", "main-table"),
            resort_policy("keep", "keep-last"),
        ];
        let selectors = [resort_selector(81, "main"), resort_selector(82, "keep")];
        spec(topo, &policies.join(", "), &selectors.join(", "))
    };
    let (topo, file, _watch) = members_down("pol-resort", spec, &[81, 82]);
    assert_diff_clean(&topo, &file);

    // main-table: by the main table's default route (isp1), unmarked.
    let before = new_connections(&topo, &file);
    assert_eq!(split_on(&topo, 81, false, 3, 1500), all_on(0, 3));
    let after = new_connections(&topo, &file);
    assert_eq!(after, before, "main-table connections were marked");

    // keep-last: the members in use last (isp3), not tier 1 (isp2).
    assert_eq!(split_on(&topo, 82, false, 3, 1500), all_on(2, 3));

    // isp3 back: both policies on tier 2 again.
    revive(&topo, 2);
    let t = Instant::now();
    let took = time_until(&topo, t, 81, false, &all_on(2, 2));
    eprintln!("isp3 back: tier 2 after {took:?}");
    assert_eq!(split_on(&topo, 82, false, 3, 1500), all_on(2, 3));
    assert_eq!(states(&topo, &file), ["up", "down", "up"]);
    assert_diff_clean(&topo, &file);
}

/// Acceptance 6, unreachable: with every member down a new TCP connection is refused at
/// once (a reset: "Connection refused"), and a member back takes connections again.
#[test]
fn an_unreachable_last_resort_refuses_new_connections_at_once() {
    let spec = |topo: &Topology| {
        spec(
            topo,
            &resort_policy("refuse", "unreachable"),
            &resort_selector(80, "refuse"),
        )
    };
    let (topo, file, _watch) = members_down("pol-refuse", spec, &[80]);
    for _ in 0..3 {
        let t = Instant::now();
        let out = topo.traffic(
            Which::Lan,
            &["connect", &format!("{SERVER}:80"), "--timeout-ms", "3000"],
        );
        let took = t.elapsed();
        eprintln!("unreachable: connect failed after {took:?}: {}", out[0]);
        assert_eq!(out[0]["ok"], false, "{}", out[0]);
        assert!(took < Duration::from_secs(1), "refusal took {took:?}");
    }
    revive(&topo, 2);
    let t = Instant::now();
    let took = time_until(&topo, t, 80, false, &all_on(2, 2));
    eprintln!("isp3 back: tier 2 after {took:?}");
    assert_eq!(states(&topo, &file), ["up", "down", "up"]);
    assert_diff_clean(&topo, &file);
}

/// Acceptance 6, unreachable: `diff` is clean while the refusal is in force.
#[test]
fn diff_is_clean_while_an_unreachable_last_resort_is_in_force() {
    let spec = |topo: &Topology| {
        spec(
            topo,
            &resort_policy("refuse", "unreachable"),
            &resort_selector(80, "refuse"),
        )
    };
    let (topo, file, _watch) = members_down("pol-refuse-diff", spec, &[80]);
    assert_eq!(
        split_on(&topo, 80, false, 1, 3000),
        BTreeMap::from([(None, 1)])
    );
    assert_diff_clean(&topo, &file);
}
/// Acceptance 6, main-table: a connection of the policy follows the main table even when a
/// later selector (here a catch-all of the default policy) matches it too.
#[test]
fn a_main_table_last_resort_is_not_balanced_by_a_later_selector() {
    let spec = |topo: &Topology| {
        let selectors = [
            resort_selector(81, "main"),
            r#"{ "iif": "eth0", "protocol": "tcp" }"#.to_string(),
        ];
        spec(
            topo,
            &resort_policy("main", "main-table"),
            &selectors.join(", "),
        )
    };
    let (topo, file, _watch) = members_down("pol-main-later", spec, &[81]);
    assert_diff_clean(&topo, &file);
    let before = new_connections(&topo, &file);
    assert_eq!(split_on(&topo, 81, false, 3, 1500), all_on(0, 3));
    let after = new_connections(&topo, &file);
    assert_eq!(
        after, before,
        "main-table connections were marked by the later selector"
    );
}

/// Acceptance 9: two uplinks whose next hops are the same address on different interfaces
/// (two LTE dongles both handing out 10.8.0.1): they balance and fail over either way.
#[test]
fn uplinks_with_the_same_next_hop_balance_and_fail_over() {
    let hop = Ipv4Addr::new(10, 8, 0, 1);
    let mut topo = Topology::with_next_hops(&[hop, hop]);
    let spec = spec(
        &topo,
        r#""both": { "members": [ { "gateway": "isp1" }, { "gateway": "isp2" } ] }"#,
        r#"{ "iif": "eth0", "protocol": "tcp", "policy": "both" }"#,
    );
    let (file, _watch) = start(&mut topo, "pol-samehop", &spec, &[80]);
    let even = BTreeMap::from([(Some(0), 5), (Some(1), 5)]);
    assert_eq!(split(&topo, 10), even);
    assert_eq!(
        topo.ingress_drops(),
        [0, 0],
        "a packet left by the wrong uplink"
    );

    for (dead, live) in [(1, 0), (0, 1)] {
        let t = Instant::now();
        topo.isps[dead].ok("ip", &["link", "set", "rtr", "down"]);
        let took = time_until(&topo, t, 80, false, &all_on(live, 4));
        eprintln!(
            "same next hop: isp{} down, all on isp{} after {took:?}",
            dead + 1,
            live + 1
        );
        assert_eq!(split(&topo, 10), all_on(live, 10));
        let mut want = vec!["up", "up"];
        want[dead] = "down";
        assert_eq!(states(&topo, &file), want);
        assert_diff_clean(&topo, &file);

        topo.isps[dead].ok("ip", &["link", "set", "rtr", "up"]);
        let t = Instant::now();
        let took = time_until(&topo, t, 80, false, &even);
        eprintln!("same next hop: isp{} back after {took:?}", dead + 1);
        assert_diff_clean(&topo, &file);
    }
    assert_eq!(
        topo.ingress_drops(),
        [0, 0],
        "a packet left by the wrong uplink"
    );
}

/// isp1 and isp2 in tier 1 of one policy for all TCP; isp2 probed by `health2`.
fn pair_spec(topo: &Topology, health2: &str) -> String {
    spec_with(
        topo,
        |i| {
            if i == 2 {
                health2.to_string()
            } else {
                icmp_health()
            }
        },
        r#""pair": { "members": [ { "gateway": "isp1" }, { "gateway": "isp2" } ] }"#,
        r#"{ "iif": "eth0", "protocol": "tcp", "policy": "pair" }"#,
    )
}

/// Waits until `status` shows the states `want`; the time it took.
fn time_until_states(topo: &Topology, file: &TempFile, want: &[&str], limit: Duration) -> Duration {
    let mut last = Vec::new();
    wait_for(limit, || {
        last = states(topo, file);
        last == want
    })
    .unwrap_or_else(|| panic!("states never {want:?} within {limit:?}; last {last:?}"))
}

/// Acceptance 3: 30% of isp2's probes lost with max_loss 20 over a window of 10 takes it out
/// of the split; without the loss (recover_loss 5) it comes back only after hold_down.
#[test]
fn loss_over_max_loss_takes_a_gateway_out_until_it_recovers_and_holds() {
    let mut topo = Topology::new(2);
    // down 20: the consecutive rule stays out of it; the loss decides.
    let health2 = format!(
        r#"{{ "targets": ["{SERVER}"], "interval": "200ms", "timeout": "150ms", "up": 2,
             "down": 20, "window": 10, "max_loss": 20, "recover_loss": 5, "hold_down": "2s" }}"#
    );
    let spec = pair_spec(&topo, &health2);
    let (file, _watch) = start(&mut topo, "pol-loss", &spec, &[80]);
    assert_eq!(
        split(&topo, 10),
        BTreeMap::from([(Some(0), 5), (Some(1), 5)])
    );

    let t = Instant::now();
    blackhole(&topo, 1, "meta l4proto icmp numgen random mod 10 < 3 drop");
    time_until_states(&topo, &file, &["up", "down"], Duration::from_secs(40));
    eprintln!("30% loss: isp2 down after {:?}", t.elapsed());
    let doc = status(&topo, &file, None);
    eprintln!("status of isp2: {:#}", doc["gateways"][1]);
    assert_eq!(split(&topo, 10), all_on(0, 10));
    assert_diff_clean(&topo, &file);

    let t = Instant::now();
    revive(&topo, 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        states(&topo, &file),
        ["up", "down"],
        "back before hold_down"
    );
    assert_eq!(split(&topo, 6), all_on(0, 6), "back before hold_down");
    time_until_states(&topo, &file, &["up", "up"], LIMIT);
    let took = t.elapsed();
    eprintln!("loss gone: isp2 up after {took:?} (hold_down 2s)");
    assert!(
        took >= Duration::from_secs(2),
        "up after {took:?}, before hold_down"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        split(&topo, 10),
        BTreeMap::from([(Some(0), 5), (Some(1), 5)])
    );
    assert_diff_clean(&topo, &file);
}

/// Acceptance 5: three targets, reliability 2: one dead target keeps isp2 up, two take it
/// down.
#[test]
fn reliability_two_of_three_targets() {
    let mut topo = Topology::new(2);
    let third = "198.51.100.30";
    topo.server
        .ok("ip", &["addr", "add", &format!("{third}/32"), "dev", "lo"]);
    let health2 = format!(
        r#"{{ "targets": ["{SERVER}", "{SERVER_EXCLUDED}", "{third}"], "reliability": 2,
             "interval": "{INTERVAL_MS}ms", "timeout": "250ms", "up": {UP}, "down": {DOWN} }}"#
    );
    let spec = pair_spec(&topo, &health2);
    let (file, _watch) = start(&mut topo, "pol-rel", &spec, &[80]);
    let even = BTreeMap::from([(Some(0), 5), (Some(1), 5)]);
    assert_eq!(split(&topo, 10), even);

    blackhole(
        &topo,
        1,
        &format!("ip daddr {SERVER_EXCLUDED} meta l4proto icmp drop"),
    );
    std::thread::sleep(failover_bound() * 2);
    assert_eq!(
        states(&topo, &file),
        ["up", "up"],
        "one dead target of three"
    );
    assert_eq!(split(&topo, 10), even);

    revive(&topo, 1);
    let t = Instant::now();
    blackhole(
        &topo,
        1,
        &format!("ip daddr {{ {SERVER_EXCLUDED}, {third} }} meta l4proto icmp drop"),
    );
    let took = time_until(&topo, t, 80, false, &all_on(0, 4));
    eprintln!("two dead targets of three: isp2 out after {took:?}");
    assert_eq!(states(&topo, &file), ["up", "down"]);
    assert_eq!(split(&topo, 10), all_on(0, 10));
    assert_diff_clean(&topo, &file);

    revive(&topo, 1);
    time_until_states(&topo, &file, &["up", "up"], LIMIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(split(&topo, 10), even);
    assert_diff_clean(&topo, &file);
}

/// A tiny HTTP responder on the server: answers `204` to every request, after `delay_ms`
/// when the request comes from `slow_source`. Stopped (its socket closed) on drop.
struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start(topo: &Topology, addr: &str, slow_source: &str, delay_ms: Arc<AtomicU64>) -> Self {
        let addr = addr.to_string();
        let listener = topo.server.run(move || TcpListener::bind(&addr).unwrap());
        listener.set_nonblocking(true).unwrap();
        let slow: IpAddr = slow_source.parse().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut conn, peer)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let delay = Arc::clone(&delay_ms);
                std::thread::spawn(move || {
                    conn.set_nonblocking(false).ok();
                    conn.set_read_timeout(Some(Duration::from_secs(2))).ok();
                    let mut buf = [0u8; 1024];
                    let _ = conn.read(&mut buf);
                    if peer.ip() == slow {
                        std::thread::sleep(Duration::from_millis(delay.load(Ordering::Relaxed)));
                    }
                    let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
                });
            }
        });
        Responder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Acceptance 4: isp2's probes answered late (median over max_latency) take it out of the
/// split; answered fast again (within recover_latency) it is back after hold_down.
#[test]
fn latency_over_max_latency_takes_a_gateway_out_until_it_recovers() {
    let mut topo = Topology::new(2);
    let delay = Arc::new(AtomicU64::new(0));
    let target = format!("{SERVER}:8080");
    let _responder = Responder::start(&topo, &target, "100.0.2.1", Arc::clone(&delay));
    let health2 = format!(
        r#"{{ "targets": ["http://{target}/"], "interval": "500ms", "timeout": "500ms",
             "up": 2, "down": 3, "window": 5, "max_latency": "200ms",
             "recover_latency": "100ms", "hold_down": "1s" }}"#
    );
    let spec = pair_spec(&topo, &health2);
    let (file, _watch) = start(&mut topo, "pol-rtt", &spec, &[80]);
    let even = BTreeMap::from([(Some(0), 5), (Some(1), 5)]);
    assert_eq!(split(&topo, 10), even);
    assert_eq!(states(&topo, &file), ["up", "up"]);

    let t = Instant::now();
    delay.store(350, Ordering::Relaxed);
    let took = time_until_states(&topo, &file, &["up", "down"], LIMIT);
    eprintln!("350 ms answers: isp2 down after {took:?}");
    let doc = status(&topo, &file, None);
    eprintln!("status of isp2: {:#}", doc["gateways"][1]);
    assert!(t.elapsed() < LIMIT);
    assert_eq!(split(&topo, 10), all_on(0, 10));
    assert_diff_clean(&topo, &file);

    let t = Instant::now();
    delay.store(0, Ordering::Relaxed);
    time_until_states(&topo, &file, &["up", "up"], LIMIT);
    let took = t.elapsed();
    eprintln!("fast answers: isp2 up after {took:?} (hold_down 1s)");
    assert!(
        took >= Duration::from_secs(1),
        "up after {took:?}, before hold_down"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(split(&topo, 10), even);
    assert_diff_clean(&topo, &file);
}
