//! Issue 16, acceptance 7 and 8 on real traffic under `nftbalance watch`.
//!
//! 7. Hooks: a gateway going down runs the `on_change` program once for the gateway and once
//!    for the policy whose members changed, with the `NFTBALANCE_*` variables of
//!    `nftbalance_engine::hooks::HOOK_VARIABLES` (every one set, empty when it does not apply).
//!    A hook that never finishes is killed at its timeout with its children, and never holds
//!    up a failover: the next transition still takes effect within interval x down + 1 s.
//! 8. Flap damping: a gateway with `hold_down` whose link flaps gets no new connections from
//!    its first failure until it has stayed up for the hold-down, then gets them again; the
//!    flapping costs at most two update transactions per flap (in practice, two in all).
//!
//! The tests of this file take turns (timing is measured; the machine may have two cores).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nftbalance_engine::hooks::HOOK_VARIABLES;
use nftbalance_integration::netns::PATH;
use nftbalance_integration::topology::{Topology, Which, SERVER};
use nftbalance_integration::watch::{probed_spec, status, uplinks, wait_for, TempFile, Watch};

/// One test at a time: they measure how long things take.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A generous limit for anything that should happen within a few probe rounds.
const LIMIT: Duration = Duration::from_secs(20);

/// A file in /tmp (a hook script or its log), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("nbt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Scratch(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
    fn read(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A `#!/bin/sh` script of `body`, mode 755.
fn script(name: &str, body: &str) -> Scratch {
    let s = Scratch::new(name);
    std::fs::write(&s.0, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    s
}

/// `probed_spec` (two uplinks, ICMP to the server every 300 ms, up 2, down 2) with a hook.
const INTERVAL_MS: u64 = 300;
const UP: u64 = 2;
const DOWN: u64 = 2;

fn hooked_spec(program: &str, timeout: &str) -> String {
    let plain = probed_spec(2, INTERVAL_MS, UP, DOWN);
    let spec = plain.replacen(
        r#"{ "gateways""#,
        &format!(
            r#"{{ "hooks": {{ "on_change": ["{program}"], "timeout": "{timeout}" }}, "gateways""#
        ),
        1,
    );
    assert_ne!(spec, plain, "no place for the hooks in {plain}");
    spec
}

/// Applies `spec`, serves TCP on the server's port 80, starts watch (stderr to `log`, if
/// given) and waits for its first verdicts.
fn start(
    topo: &mut Topology,
    tag: &str,
    spec: &str,
    state: &TempFile,
    settle: Duration,
    log: Option<&Scratch>,
) -> (TempFile, Watch) {
    topo.apply(spec);
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let file = TempFile::new(tag, spec);
    let watch = match log {
        Some(log) => Watch::start_logged(topo, &file, Some(state), settle, &log.0),
        None => Watch::start(topo, &file, Some(state), settle),
    };
    (file, watch)
}

/// `ip link set rtr up|down` in provider `k` (the far end of the router's uplink `k + 1`).
fn link(topo: &Topology, k: usize, up: bool) {
    topo.isps[k].ok(
        "ip",
        &["link", "set", "rtr", if up { "up" } else { "down" }],
    );
}

/// `n` new TCP connections from the LAN to the server, each given `timeout_ms`: how many
/// each uplink carried, failed ones under `None`.
fn split(topo: &Topology, n: usize, timeout_ms: u64) -> BTreeMap<Option<usize>, usize> {
    let (target, count, timeout) = (
        format!("{SERVER}:80"),
        n.to_string(),
        timeout_ms.to_string(),
    );
    let mut m = BTreeMap::new();
    for r in topo.traffic(
        Which::Lan,
        &[
            "connect",
            &target,
            "--count",
            &count,
            "--timeout-ms",
            &timeout,
        ],
    ) {
        let via = (r["ok"] == true)
            .then(|| topo.uplink_of(r["seen"].as_str().unwrap()))
            .flatten();
        *m.entry(via).or_default() += 1;
    }
    m
}

/// Polls batches of 6 short connections until `done` holds for one; the time since `since`.
fn time_until(
    topo: &Topology,
    since: Instant,
    what: &str,
    done: impl Fn(&BTreeMap<Option<usize>, usize>) -> bool,
) -> Duration {
    let mut last = BTreeMap::new();
    let took = wait_for(LIMIT, || {
        last = split(topo, 6, 300);
        done(&last)
    });
    assert!(
        took.is_some(),
        "{what}: not within {LIMIT:?}; last {last:?}"
    );
    since.elapsed()
}

fn all_on_isp1(m: &BTreeMap<Option<usize>, usize>) -> bool {
    m.keys().all(|k| *k == Some(0))
}

fn both_and_no_failure(m: &BTreeMap<Option<usize>, usize>) -> bool {
    m.contains_key(&Some(0)) && m.contains_key(&Some(1)) && !m.contains_key(&None)
}

/// The hook log's records: the `NAME=value` lines between separator lines.
fn records(log: &str) -> Vec<BTreeMap<String, String>> {
    log.split("----\n")
        .filter(|r| !r.trim().is_empty())
        .map(|r| {
            r.lines()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or((l, ""));
                    (k.to_string(), v.to_string())
                })
                .collect()
        })
        .collect()
}

fn is(r: &BTreeMap<String, String>, pairs: &[(&str, &str)]) -> bool {
    pairs
        .iter()
        .all(|(k, v)| r.get(*k).map(String::as_str) == Some(*v))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Acceptance 7, first half: the hook's environment for a gateway going down and back up,
/// and for the default policy's members changing with it.
#[test]
fn a_hook_sees_the_gateway_and_policy_events() {
    let _serial = serial();
    let log = Scratch::new("hook-env.log");
    let hook = script(
        "hook-env.sh",
        &format!(
            "{{ env | grep ^NFTBALANCE_ | sort; echo ----; }} >> {}\n",
            log.path()
        ),
    );
    let mut topo = Topology::new(2);
    let spec = hooked_spec(hook.path(), "1s");
    let state = TempFile::new("hook-env-state", "{}");
    let settle = Duration::from_millis(INTERVAL_MS * UP + 300);
    let (_spec_file, _watch) = start(&mut topo, "hook-env-spec", &spec, &state, settle, None);
    assert_eq!(uplinks(&topo, 10), BTreeMap::from([(0, 5), (1, 5)]));
    let started = unix_now();

    let gateway = |now: &str, previous: &str| {
        vec![
            ("NFTBALANCE_EVENT", "gateway"),
            ("NFTBALANCE_GATEWAY", "isp2"),
            ("NFTBALANCE_INTERFACE", "ppp1"),
            ("NFTBALANCE_STATE", now),
            ("NFTBALANCE_PREVIOUS_STATE", previous),
            ("NFTBALANCE_TABLE", "nftbalance"),
            ("NFTBALANCE_POLICY", ""),
            ("NFTBALANCE_TIER", ""),
            ("NFTBALANCE_PREVIOUS_TIER", ""),
            ("NFTBALANCE_MEMBERS", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect::<Vec<_>>()
    };
    let policy = |members: &str| {
        [
            ("NFTBALANCE_EVENT", "policy"),
            ("NFTBALANCE_POLICY", "(default)"),
            ("NFTBALANCE_TIER", "1"),
            ("NFTBALANCE_PREVIOUS_TIER", "1"),
            ("NFTBALANCE_MEMBERS", members),
            ("NFTBALANCE_TABLE", "nftbalance"),
            ("NFTBALANCE_GATEWAY", ""),
            ("NFTBALANCE_INTERFACE", ""),
            ("NFTBALANCE_STATE", ""),
            ("NFTBALANCE_PREVIOUS_STATE", ""),
            ("NFTBALANCE_DETAIL", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect::<Vec<_>>()
    };
    let find = |want: &[(&str, String)], after: usize| {
        let want: Vec<(&str, &str)> = want.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let all = records(&log.read());
        (all.iter().enumerate())
            .skip(after)
            .find(|(_, r)| is(r, &want))
            .map(|(i, r)| (i, r.clone()))
    };
    // Both events of a transition, the gateway's first; the records' indices.
    let both = |gw: &[(&str, String)], pol: &[(&str, String)], after: usize, what: &str| {
        let mut found = None;
        let took = wait_for(LIMIT, || {
            found = find(gw, after).and_then(|(g, gr)| find(pol, g).map(|p| (g, gr, p)));
            found.is_some()
        });
        let Some((g, gr, (p, pr))) = found else {
            panic!(
                "{what}: no gateway then policy event within {LIMIT:?}; the log:\n{}",
                log.read()
            );
        };
        eprintln!("{what}: both hook runs logged after {took:?}");
        for r in [&gr, &pr] {
            let names: Vec<&str> = r.keys().map(String::as_str).collect();
            let mut want = HOOK_VARIABLES.to_vec();
            want.sort_unstable();
            assert_eq!(names, want, "not exactly HOOK_VARIABLES: {r:#?}");
            let time: u64 = r["NFTBALANCE_TIME"].parse().expect("Unix seconds");
            assert!(
                (started..=unix_now()).contains(&time),
                "NFTBALANCE_TIME {time}, the test began at {started}: {r:#?}"
            );
        }
        assert!(!gr["NFTBALANCE_DETAIL"].is_empty(), "no detail: {gr:#?}");
        (g, p, gr)
    };

    link(&topo, 1, false);
    let (_, p, down) = both(&gateway("down", "up"), &policy("isp1"), 0, "uplink 2 down");
    eprintln!("gateway down event: {down:#?}");
    assert_eq!(uplinks(&topo, 6), BTreeMap::from([(0, 6)]));

    link(&topo, 1, true);
    let (_, _, up) = both(
        &gateway("up", "down"),
        &policy("isp1,isp2"),
        p + 1,
        "uplink 2 up",
    );
    eprintln!("gateway up event: {up:#?}");
    let back = uplinks(&topo, 10);
    assert_eq!(
        back,
        BTreeMap::from([(0, 5), (1, 5)]),
        "the split did not resume"
    );
    eprintln!("the hook log:\n{}", log.read());
}

/// `pgrep -f PATTERN`: how many processes match.
fn pgrep(pattern: &str) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .env("PATH", PATH)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Acceptance 7, second half: a hook that sleeps a minute, with a 1 s timeout, holds up
/// neither the failover nor the recovery, and leaves no process behind.
#[test]
fn a_hook_that_hangs_is_killed_and_holds_up_no_transition() {
    let _serial = serial();
    let hook_log = Scratch::new("hook-slow.log");
    let watch_log = Scratch::new("hook-slow-watch.log");
    // A duration no other process uses: the marker pgrep looks for.
    let marker = format!("59.{}", std::process::id());
    let pattern = format!("^sleep {}$", marker.replace('.', "\\."));
    let hook = script(
        "hook-slow.sh",
        &format!(
            "echo \"start $NFTBALANCE_EVENT $NFTBALANCE_GATEWAY $NFTBALANCE_STATE $NFTBALANCE_MEMBERS\" >> {log}\n\
             sleep {marker}\n\
             echo finished >> {log}\n",
            log = hook_log.path()
        ),
    );
    let mut topo = Topology::new(2);
    let spec = hooked_spec(hook.path(), "1s");
    let state = TempFile::new("hook-slow-state", "{}");
    let settle = Duration::from_millis(INTERVAL_MS * UP + 300);
    let (_spec_file, watch) = start(
        &mut topo,
        "hook-slow-spec",
        &spec,
        &state,
        settle,
        Some(&watch_log),
    );
    assert_eq!(uplinks(&topo, 10), BTreeMap::from([(0, 5), (1, 5)]));
    let bound = Duration::from_millis(INTERVAL_MS * DOWN + 1000);
    let generous = Duration::from_secs(3);

    // The start's events (unknown -> up) may still have a hook asleep.
    let asleep = pgrep(&pattern);
    let t = Instant::now();
    link(&topo, 1, false);
    let down = time_until(&topo, t, "uplink 2 down", all_on_isp1);
    eprintln!("uplink 2 down ({asleep} hook asleep): all on isp1 after {down:?} (bound {bound:?})");
    // The failure's hooks sleep for 2 s in all; the recovery must not wait for them.
    let asleep = wait_for(LIMIT, || pgrep(&pattern) == 1);
    assert!(asleep.is_some(), "no hook asleep:\n{}", hook_log.read());
    let t = Instant::now();
    link(&topo, 1, true);
    let up = time_until(&topo, t, "uplink 2 up", both_and_no_failure);
    let still = pgrep(&pattern);
    eprintln!(
        "uplink 2 up (a hook asleep): split resumed after {up:?} (bound {:?}); \
         {still} hook asleep then",
        Duration::from_millis(INTERVAL_MS * UP + 1000)
    );
    assert!(still <= 1, "{still} hook sleeps at once");
    assert!(down <= generous, "failover took {down:?}");
    assert!(up <= generous, "recovery took {up:?}");

    // Every event ran in turn (one at a time, each killed at 1 s): the last is the policy's
    // members back to both.
    let ran = wait_for(LIMIT, || {
        let log = hook_log.read();
        log.contains("start gateway isp2 down")
            && log.contains("start gateway isp2 up")
            && log.contains("start policy   isp1,isp2")
    });
    assert!(ran.is_some(), "hooks not run:\n{}", hook_log.read());
    let gone = wait_for(Duration::from_secs(5), || pgrep(&pattern) == 0);
    eprintln!(
        "all hook runs started after {ran:?}; no sleep left {gone:?} later; hook log:\n{}",
        hook_log.read()
    );
    assert!(gone.is_some(), "a hook's sleep outlived its timeout");

    // Stopping watch while a hook sleeps kills it (well before its timeout).
    link(&topo, 1, false);
    let asleep = wait_for(LIMIT, || {
        hook_log.read().matches("start gateway isp2 down").count() == 2 && pgrep(&pattern) == 1
    });
    assert!(asleep.is_some(), "no hook for the second failure");
    let t = Instant::now();
    drop(watch);
    let stopped = t.elapsed();
    let left = pgrep(&pattern);
    eprintln!("watch stopped {stopped:?} after SIGTERM, {left} hook sleeps left");
    assert_eq!(left, 0, "a hook's sleep outlived watch");
    assert!(
        watch_log
            .read()
            .contains("watch is stopping: killed its process group"),
        "watch said:\n{}",
        watch_log.read()
    );
    let log = hook_log.read();
    assert!(!log.contains("finished"), "a hook ran to its end:\n{log}");
    let said = watch_log.read();
    let kills = said.matches("not finished at its timeout").count();
    let runs = log.lines().count();
    eprintln!("{runs} hook runs, {kills} killed at the timeout, the last when watch stopped");
    assert!(kills >= 4 && kills < runs, "watch said:\n{said}");
}

/// Acceptance 8: isp2 (`hold_down` 3 s, probes every 200 ms, up 1, down 1) flaps every
/// 500 ms for 5 s: from its first failure until it has stayed up 3 s it gets no new
/// connections, then it gets them again; at most two transactions per flap.
#[test]
fn a_flapping_link_is_held_down_until_it_stays_up() {
    let _serial = serial();
    const FLAPS: u32 = 5;
    const HOLD: Duration = Duration::from_secs(3);
    let watch_log = Scratch::new("flap-watch.log");
    let mut topo = Topology::new(2);
    let health = |i: u32| {
        if i == 1 {
            // The steady uplink: a lost probe alone does not take it down.
            r#""interval": "200ms", "timeout": "150ms", "up": 1, "down": 3"#
        } else {
            r#""interval": "200ms", "timeout": "150ms", "up": 1, "down": 1, "hold_down": "3s""#
        }
    };
    let gws: Vec<String> = (1..=2u32)
        .map(|i| {
            format!(
                r#"{{ "name": "isp{i}", "interface": "ppp{}", "mark": {i}, "address": "100.0.{i}.1",
                     "via": "100.0.{i}.254", "route_table": {},
                     "health": {{ "targets": ["{SERVER}"], {} }} }}"#,
                i - 1,
                100 + i,
                health(i)
            )
        })
        .collect();
    let spec = format!(
        r#"{{ "gateways": [ {} ],
             "balance": {{ "forward": [ {{ "iif": "eth0", "protocol": "tcp" }} ],
                           "exclude": [ "192.168.0.0/16" ] }} }}"#,
        gws.join(", ")
    );
    let state = TempFile::new("flap-state", "{}");
    let (spec_file, watch) = start(
        &mut topo,
        "flap-spec",
        &spec,
        &state,
        Duration::from_millis(800),
        Some(&watch_log),
    );
    assert_eq!(uplinks(&topo, 10), BTreeMap::from([(0, 5), (1, 5)]));
    let updates = || watch_log.read().matches("new connections now use").count();
    let before = updates();

    // The flapper: down, 500 ms, up, 500 ms, FLAPS times; sends when it last brought it up.
    let isp2 = topo.isps[1].name().to_string();
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    let flapper = std::thread::spawn(move || {
        let set = |state: &str| {
            let _ = Command::new("ip")
                .args(["-n", &isp2, "link", "set", "rtr", state])
                .env("PATH", PATH)
                .status();
        };
        let mut last_up = Instant::now();
        for _ in 0..FLAPS {
            set("down");
            std::thread::sleep(Duration::from_millis(500));
            set("up");
            last_up = Instant::now();
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = tx.send(last_up);
    });

    // Its first failure takes it out of the split.
    let out = time_until(&topo, t0, "isp2 first down", all_on_isp1);
    eprintln!("flapping: isp2 out of the split after {out:?}");
    // From then until it has stayed up for nearly the hold-down: no new connection on isp2.
    let mut checks = 0;
    let mut bad = Vec::new();
    let mut last_up = None;
    let mut watched = Vec::new();
    while t0.elapsed() < LIMIT {
        if last_up.is_none() {
            last_up = rx.try_recv().ok();
        }
        if let Some(at) = last_up {
            if at.elapsed() > HOLD - Duration::from_millis(500) {
                break;
            }
        }
        let m = split(&topo, 4, 1000);
        checks += 1;
        if m != BTreeMap::from([(Some(0), 4)]) {
            bad.push((t0.elapsed(), m));
        }
        let doc = status(&topo, &spec_file, Some(&state));
        watched.push(
            doc["gateways"][1]["state"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        );
    }
    let last_up = last_up.expect("the flapper finished");
    flapper.join().unwrap();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &watched {
        *seen.entry(s.as_str()).or_default() += 1;
    }
    eprintln!(
        "{checks} checks while flapping and held down (until {:?} after the last up): \
         isp2 in status {seen:?}",
        last_up.elapsed()
    );
    assert!(checks >= 5, "only {checks} checks");
    assert!(
        bad.is_empty(),
        "new connections not all on isp1 while isp2 flapped or was held down: {bad:?}"
    );
    assert!(watched.iter().all(|s| s == "down"), "{watched:?}");

    // After it has stayed up for the hold-down, it takes new connections again.
    let back = time_until(&topo, last_up, "isp2 back after the hold-down", |m| {
        m.contains_key(&Some(1))
    });
    eprintln!("isp2 back {back:?} after its last up (hold_down {HOLD:?})");
    assert!(
        back >= HOLD - Duration::from_millis(500),
        "back {back:?} after the last up: before the hold-down"
    );
    assert!(
        back <= HOLD + Duration::from_secs(3),
        "back only after {back:?}"
    );
    assert_eq!(uplinks(&topo, 10), BTreeMap::from([(0, 5), (1, 5)]));

    drop(watch);
    let transactions = updates() - before;
    let said = watch_log.read();
    let lines: Vec<&str> = (said.lines())
        .filter(|l| l.contains("new connections now use"))
        .collect();
    eprintln!("{transactions} update transactions for {FLAPS} flaps: {lines:#?}");
    assert!(
        transactions as u32 <= 2 * FLAPS,
        "{transactions} transactions for {FLAPS} flaps:\n{said}"
    );
    assert!(
        transactions >= 2,
        "out and back in are two transactions:\n{said}"
    );
}
