//! apply, watch, flush, recover and status agree about one table (issue 22's defects 2, 3,
//! 4, 8 and 10): the table is always the last applied spec under the gateway states watch
//! observes, a change watch cannot make now is retried, an interrupted apply is settled
//! even when its uplink is gone, and the files of one namespace are not another's.

use std::collections::BTreeMap;
use std::time::Duration;

use nftbalance_integration::cli::{nftbalance, ok, text};
use nftbalance_integration::netns::Netns;
use nftbalance_integration::target_binary;
use nftbalance_integration::topology::{Topology, Which, SERVER};
use nftbalance_integration::watch::{probed_spec, status, uplinks, wait_for, TempFile, Watch};

const INTERVAL_MS: u64 = 300;
const UP: u64 = 2;
const DOWN: u64 = 2;

fn settle(threshold: u64) {
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * threshold + 1000));
}

/// Two probed uplinks, applied, a server, and watch with the table's own state file.
fn router(tag: &str) -> (Topology, TempFile, Watch) {
    let mut topo = Topology::new(2);
    let spec = probed_spec(2, INTERVAL_MS, UP, DOWN);
    topo.apply(&spec);
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let file = TempFile::new(tag, &spec);
    let watch = Watch::start(
        &topo,
        &file,
        None,
        Duration::from_millis(INTERVAL_MS * UP + 300),
    );
    (topo, file, watch)
}

/// 22.2: the ip-up hook's apply during a failover used to put the dead uplink back into the
/// split while watch and status still said it was down.
#[test]
fn an_apply_during_a_failover_keeps_the_dead_uplink_out() {
    let (topo, spec, _watch) = router("apply-down");
    topo.isps[1].ok("ip", &["link", "set", "rtr", "down"]);
    settle(DOWN);
    assert_eq!(uplinks(&topo, 6), BTreeMap::from([(0, 6)]));

    let out = nftbalance(&topo.router, &["apply", spec.path()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("finds isp2 down"),
        "apply did not say it used watch's states: {}",
        text(&out.stderr)
    );
    assert_eq!(
        uplinks(&topo, 6),
        BTreeMap::from([(0, 6)]),
        "apply put the dead uplink back into the split"
    );
    assert!(ok(&topo.router, &["diff", spec.path()]).contains("same as the spec"));

    topo.isps[1].ok("ip", &["link", "set", "rtr", "up"]);
    settle(UP);
    assert_eq!(uplinks(&topo, 6), BTreeMap::from([(0, 3), (1, 3)]));
}

/// 22.2: after an apply of an edited spec, watch's next transition rewrote the split from its
/// stale spec, leaving a hybrid table.
#[test]
fn watch_follows_a_spec_that_apply_changed() {
    let (topo, spec, _watch) = router("follow");
    let edited = TempFile::new(
        "follow-edited",
        &probed_spec(2, INTERVAL_MS, UP, DOWN).replacen(
            r#""mark": 1,"#,
            r#""mark": 1, "weight": 3,"#,
            1,
        ),
    );
    ok(&topo.router, &["apply", edited.path()]);
    assert_eq!(uplinks(&topo, 8), BTreeMap::from([(0, 6), (1, 2)]));

    topo.isps[1].ok("ip", &["link", "set", "rtr", "down"]);
    settle(DOWN);
    assert_eq!(uplinks(&topo, 4), BTreeMap::from([(0, 4)]));
    topo.isps[1].ok("ip", &["link", "set", "rtr", "up"]);
    settle(UP);
    assert_eq!(
        uplinks(&topo, 8),
        BTreeMap::from([(0, 6), (1, 2)]),
        "the failback used the spec watch started with"
    );
    let out = ok(&topo.router, &["diff", edited.path()]);
    assert!(out.contains("same as the spec"), "{out}");
    let out = nftbalance(&topo.router, &["diff", spec.path()]);
    assert_eq!(out.status.code(), Some(1), "the old spec is not in force");
}

/// The lock file of the router's table, as nftbalance names it.
fn lock_path(topo: &Topology) -> String {
    let ino = topo
        .router
        .ok("stat", &["-L", "-c", "%i", "/proc/self/ns/net"]);
    format!("/run/nftbalance/{}-inet-nftbalance.lock", ino.trim())
}

/// 22.3: a failover that could not take the lock was dropped for good, and status kept
/// saying "up".
#[test]
fn a_failover_that_cannot_take_the_lock_is_retried_and_status_says_so() {
    let (topo, spec, _watch) = router("retry");
    // Another nftbalance (here: flock) holds the table's lock for 6 s.
    let lock = lock_path(&topo);
    let holder = std::process::Command::new("flock")
        .args([lock.as_str(), "sleep", "6"])
        .spawn()
        .unwrap();
    let holder = Reaped(holder);
    std::thread::sleep(Duration::from_millis(300));
    topo.isps[1].ok("ip", &["link", "set", "rtr", "down"]);
    settle(DOWN);
    // The failover waits a moment for the lock, then says it is pending and retries.
    wait_for(Duration::from_secs(4), || {
        status(&topo, &spec, None)["pending"].is_string()
    });
    let doc = status(&topo, &spec, None);
    let isp2 = &doc["gateways"][1];
    assert_eq!(isp2["state"], "down", "observed state not written: {doc:#}");
    assert_eq!(isp2["available"], true, "{doc:#}");
    assert!(doc["pending"].is_string(), "no pending change: {doc:#}");

    drop(holder);
    let took = wait_for(Duration::from_secs(15), || {
        status(&topo, &spec, None)["gateways"][1]["available"] == false
    });
    assert!(took.is_some(), "the failover was not retried");
    assert_eq!(uplinks(&topo, 6), BTreeMap::from([(0, 6)]));
    assert!(status(&topo, &spec, None)["pending"].is_null());
}

/// A child process killed and reaped on drop.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 22.8: the state file was per table, not per namespace: status in an empty namespace
/// reported another namespace's watch.
#[test]
fn status_in_another_namespace_does_not_see_this_watch() {
    let (topo, spec, _watch) = router("netns");
    assert_eq!(status(&topo, &spec, None)["state_source"], "watch");
    let other = Netns::new("other");
    let out = ok(&other, &["status", "--json", spec.path()]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["state_source"], "probe", "{doc:#}");
}

/// 22.4: an apply killed between routing and rules, then its uplink went down: every
/// command failed with "Network is unreachable" while putting the routing back.
#[test]
fn an_interrupted_apply_settles_after_its_uplink_went_down() {
    let topo = Topology::new(2);
    let spec = probed_spec(2, INTERVAL_MS, UP, DOWN);
    topo.apply(&spec);
    let moved = TempFile::new(
        "moved-tables",
        &spec
            .replace("\"route_table\": 101", "\"route_table\": 201")
            .replace("\"route_table\": 102", "\"route_table\": 202"),
    );
    let out = topo.router.exec(
        "env",
        &[
            "NFTBALANCE_FAILPOINT=after-routing",
            &target_binary("nftbalance"),
            "apply",
            moved.path(),
        ],
        None,
    );
    assert_eq!(out.status.code(), None, "the failpoint did not kill apply");
    // The PPP link drops: table 102's route (which settling must put back) cannot return.
    topo.router.ok("ip", &["link", "set", "ppp1", "down"]);
    let out = nftbalance(&topo.router, &["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("put its routing back"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("skipped"),
        "{}",
        text(&out.stderr)
    );
    let routes = topo.router.ok("ip", &["route", "show", "table", "101"]);
    assert!(routes.contains("default via 100.0.1.254"), "{routes}");
    let file = TempFile::new("moved-spec", &spec);
    ok(&topo.router, &["apply", file.path()]);
}

/// 22.10: watch kept running when it could never take the lock; flush during watch got a
/// message blaming missing modules, and watch then fought the flush.
#[test]
fn watch_stops_on_an_unusable_lock_and_idles_after_a_flush() {
    let (topo, spec, mut watch) = router("flush");
    let out = nftbalance(&topo.router, &["flush", spec.path()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("nft_"), "{}", text(&out.stderr));
    // A failover after the flush changes nothing: the table stays gone.
    topo.isps[1].ok("ip", &["link", "set", "rtr", "down"]);
    settle(DOWN);
    assert!(watch.exited().is_none(), "watch died after the flush");
    let tables = topo.router.ok("nft", &["list", "tables"]);
    assert!(
        !tables.contains("nftbalance"),
        "watch re-created the table: {tables}"
    );
    // The next apply is followed again.
    ok(&topo.router, &["apply", spec.path()]);
    let took = wait_for(Duration::from_secs(5), || {
        uplinks(&topo, 4) == BTreeMap::from([(0, 4)])
    });
    assert!(
        took.is_some(),
        "watch did not follow the apply after the flush"
    );
    drop(watch);

    // A lock path that can never be locked: watch says so and exits.
    let lock = lock_path(&topo);
    std::fs::remove_file(&lock).unwrap();
    std::fs::create_dir(&lock).unwrap();
    let mut watch = Watch::start(&topo, &spec, None, Duration::ZERO);
    let exited = wait_for(Duration::from_secs(10), || watch.exited().is_some());
    std::fs::remove_dir(&lock).unwrap();
    assert!(exited.is_some(), "watch kept running without a usable lock");
    assert_eq!(watch.exited().unwrap().code(), Some(2));
}
