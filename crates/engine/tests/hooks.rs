//! The hook runner of issue 16 with real processes: a `/bin/sh` script the test writes
//! records what it got. The scripts run as `/bin/sh SCRIPT DIR` rather than being executed
//! themselves: a script just written by one test thread could otherwise be "text file busy"
//! while another thread forks.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nftbalance_engine::hooks::{
    check_hooks, GatewayChange, HookEvent, HookRunner, PolicyChange, QUEUE_CAPACITY,
};
use nftbalance_health::State;
use nftbalance_spec::{Hooks, PolicyKey, Spec};

/// What the runner logged, for every test of this binary (each uses its own table name).
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = format!("{} {}", record.level(), record.args());
        LOGGED.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// The lines logged for `table` so far.
fn logged(table: &str) -> Vec<String> {
    let prefix = format!("table {table}:");
    LOGGED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|l| l.contains(&prefix))
        .cloned()
        .collect()
}

/// A directory of its own for one test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("nbhooks-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Hooks that run `body` as a /bin/sh script with this directory as `$1`.
    fn hooks(&self, body: &str, timeout_ms: u32) -> Hooks {
        let script = self.0.join("hook.sh");
        fs::write(&script, body).unwrap();
        Hooks {
            on_change: vec![
                "/bin/sh".into(),
                script.display().to_string(),
                self.0.display().to_string(),
            ],
            timeout_ms,
        }
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.0.join(file)).unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Waits up to 10 s for `done`.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        // "PID (comm) STATE ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('Z'),
    }
}

fn gateway(name: &str, from: State, to: State) -> HookEvent {
    HookEvent::Gateway(GatewayChange {
        name: name.into(),
        interface: "eth1".into(),
        from,
        to,
        since: 1_700_000_000,
        detail: "3 consecutive failures: no answer from 192.0.2.1".into(),
        loss_percent: Some(100),
        rtt_ms: None,
    })
}

/// Fires `event` and checks that it returned at once (a generous bound for a loaded machine).
fn fire(runner: &HookRunner, event: HookEvent) {
    let started = Instant::now();
    runner.fire(event);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(10), "fire took {took:?}");
}

#[test]
fn each_transition_runs_the_hook_with_the_documented_environment_in_order() {
    capture_logs();
    let dir = TempDir::new("env");
    let hooks = dir.hooks(
        r#"{ env | grep '^NFTBALANCE_' | sort; echo --; } >> "$1/env"
           env | grep -v '^NFTBALANCE_' | cut -d= -f1 >> "$1/other"
           echo "hook says hello""#,
        5_000,
    );
    let runner = HookRunner::start("hook-env", Some(&hooks), QUEUE_CAPACITY).unwrap();
    fire(&runner, gateway("fibre", State::Up, State::Down));
    fire(
        &runner,
        HookEvent::Policy(PolicyChange {
            policy: PolicyKey::Named("office".into()),
            from_tier: Some(1),
            to_tier: Some(2),
            members: vec!["lte".into(), "dsl".into()],
            since: 1_700_000_003,
        }),
    );
    wait_for("two runs", || dir.read("env").matches("--\n").count() == 2);
    let expected = "\
NFTBALANCE_DETAIL=3 consecutive failures: no answer from 192.0.2.1
NFTBALANCE_EVENT=gateway
NFTBALANCE_GATEWAY=fibre
NFTBALANCE_INTERFACE=eth1
NFTBALANCE_LOSS_PERCENT=100
NFTBALANCE_MEMBERS=
NFTBALANCE_POLICY=
NFTBALANCE_PREVIOUS_STATE=up
NFTBALANCE_PREVIOUS_TIER=
NFTBALANCE_RTT_MS=
NFTBALANCE_STATE=down
NFTBALANCE_TABLE=hook-env
NFTBALANCE_TIER=
NFTBALANCE_TIME=1700000000
--
NFTBALANCE_DETAIL=
NFTBALANCE_EVENT=policy
NFTBALANCE_GATEWAY=
NFTBALANCE_INTERFACE=
NFTBALANCE_LOSS_PERCENT=
NFTBALANCE_MEMBERS=lte,dsl
NFTBALANCE_POLICY=office
NFTBALANCE_PREVIOUS_STATE=
NFTBALANCE_PREVIOUS_TIER=1
NFTBALANCE_RTT_MS=
NFTBALANCE_STATE=
NFTBALANCE_TABLE=hook-env
NFTBALANCE_TIER=2
NFTBALANCE_TIME=1700000003
--
";
    assert_eq!(dir.read("env"), expected);
    // Nothing of the test's own environment: PATH, and what sh itself may export.
    for name in dir.read("other").lines() {
        assert!(
            ["PATH", "PWD", "OLDPWD", "SHLVL", "_"].contains(&name),
            "the hook inherited {name}"
        );
    }
    assert!(dir.read("other").lines().any(|l| l == "PATH"));
    // Its output is logged with its exit status.
    wait_for("the second run's log", || logged("hook-env").len() >= 4);
    let log = logged("hook-env");
    assert!(
        log[0].starts_with(
            "INFO table hook-env: hook /bin/sh for gateway fibre up -> down: exit status 0 after "
        ),
        "{log:?}"
    );
    assert!(
        log[1].ends_with("gateway fibre up -> down: stdout: hook says hello"),
        "{log:?}"
    );
    assert!(
        log[2].contains("for policy office tier 1 -> 2: exit status 0"),
        "{log:?}"
    );
}

#[test]
fn a_hook_past_its_timeout_is_killed_with_its_children_and_the_next_runs_right_after() {
    capture_logs();
    let dir = TempDir::new("timeout");
    let hooks = dir.hooks(
        r#"if [ "$NFTBALANCE_GATEWAY" = slow ]; then
               echo $$ > "$1/slow.pid"
               sleep 60 &
               echo $! > "$1/child.pid"
               sleep 60
           fi
           echo "$NFTBALANCE_GATEWAY" >> "$1/ran""#,
        300,
    );
    let runner = HookRunner::start("hook-timeout", Some(&hooks), QUEUE_CAPACITY).unwrap();
    let fired = Instant::now();
    fire(&runner, gateway("slow", State::Up, State::Down));
    fire(&runner, gateway("next", State::Down, State::Up));
    wait_for("the next event's hook", || dir.read("ran") == "next\n");
    let took = fired.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    for pid in ["slow.pid", "child.pid"] {
        let pid = dir.read(pid);
        assert!(!pid.is_empty());
        wait_for(&format!("process {pid} to end"), || ended(&pid));
    }
    let log = logged("hook-timeout");
    assert!(
        log.iter().any(|l| l.starts_with("WARN ")
            && l.ends_with("gateway slow up -> down: not finished at its timeout (300 ms): killed its process group (killed by signal 9)")),
        "{log:?}"
    );
}

#[test]
fn dropping_the_runner_kills_the_running_hook() {
    capture_logs();
    let dir = TempDir::new("drop");
    let hooks = dir.hooks(r#"echo $$ > "$1/pid"; exec sleep 60"#, 60_000);
    let runner = HookRunner::start("hook-drop", Some(&hooks), QUEUE_CAPACITY).unwrap();
    fire(&runner, gateway("fibre", State::Up, State::Down));
    fire(&runner, gateway("fibre", State::Down, State::Up));
    wait_for("the hook to start", || dir.read("pid").ends_with('\n'));
    let started = Instant::now();
    drop(runner);
    assert!(started.elapsed() < Duration::from_secs(1));
    let pid = dir.read("pid");
    wait_for("the hook to end", || ended(&pid));
    let log = logged("hook-drop");
    assert!(
        log.iter().any(|l| l.contains("1 queued events not run")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("watch is stopping: killed its process group")),
        "{log:?}"
    );
}

#[test]
fn a_missing_program_is_logged_not_a_panic() {
    capture_logs();
    let hooks = Hooks {
        on_change: vec!["/nonexistent/nftbalance-hook".into()],
        timeout_ms: 1_000,
    };
    let runner = HookRunner::start("hook-missing", Some(&hooks), QUEUE_CAPACITY).unwrap();
    fire(&runner, gateway("fibre", State::Up, State::Down));
    fire(&runner, gateway("fibre", State::Down, State::Up));
    wait_for("two log lines", || logged("hook-missing").len() == 2);
    let log = logged("hook-missing");
    assert_eq!(
        log[0],
        "ERROR table hook-missing: hook /nonexistent/nftbalance-hook for gateway fibre up -> down: cannot start it: No such file or directory (os error 2)"
    );
    drop(runner);
}

#[test]
fn many_events_never_block_and_a_full_queue_drops_the_oldest() {
    capture_logs();
    let dir = TempDir::new("queue");
    // The first run holds the thread until the test says go, so the queue fills up.
    let hooks = dir.hooks(
        r#"echo "$NFTBALANCE_GATEWAY" >> "$1/ran"
           if [ "$NFTBALANCE_GATEWAY" = first ]; then
               while [ ! -e "$1/go" ]; do sleep 0.01; done
           fi"#,
        10_000,
    );
    let runner = HookRunner::start("hook-queue", Some(&hooks), QUEUE_CAPACITY).unwrap();
    fire(&runner, gateway("first", State::Up, State::Down));
    wait_for("the first hook", || dir.read("ran") == "first\n");
    for i in 0..100 {
        fire(&runner, gateway(&format!("g{i}"), State::Up, State::Down));
    }
    assert_eq!(runner.dropped(), 100 - QUEUE_CAPACITY as u64);
    fs::write(dir.0.join("go"), "").unwrap();
    let expected: Vec<String> = std::iter::once("first".to_string())
        .chain((100 - QUEUE_CAPACITY..100).map(|i| format!("g{i}")))
        .collect();
    wait_for("the queued hooks", || {
        dir.read("ran").lines().count() == expected.len()
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(dir.read("ran").lines().collect::<Vec<_>>(), expected);
    let log = logged("hook-queue");
    assert!(
        log.contains(&"WARN table hook-queue: hook queue full (64 events waiting): not running the hook for gateway g0 up -> down".to_string()),
        "{log:?}"
    );
}

fn spec_with_hook(program: &Path) -> Spec {
    let text = format!(
        r#"{{ "gateways": [ {{ "name": "isp1", "interface": "ppp0", "mark": 1, "route_table": 101 }} ],
              "balance": {{ "forward": [ {{ "iif": "eth0" }} ] }},
              "hooks": {{ "on_change": [ {:?}, "--flag" ] }} }}"#,
        program.display().to_string()
    );
    Spec::from_json(&text).unwrap()
}

#[test]
fn check_hooks_wants_an_existing_executable_file() {
    let dir = TempDir::new("check");
    assert!(check_hooks(&spec_with_hook(Path::new("/bin/sh"))).is_ok());
    let missing = dir.0.join("missing");
    assert_eq!(
        check_hooks(&spec_with_hook(&missing))
            .unwrap_err()
            .to_string(),
        format!(
            "hooks.on_change[0]: {:?} does not exist",
            missing.display().to_string()
        )
    );
    let plain = dir.0.join("plain");
    fs::write(&plain, "#!/bin/sh\n").unwrap();
    assert_eq!(
        check_hooks(&spec_with_hook(&plain))
            .unwrap_err()
            .to_string(),
        format!(
            "hooks.on_change[0]: {:?} is not an executable file",
            plain.display().to_string()
        )
    );
    assert!(check_hooks(&spec_with_hook(&dir.0)).is_err());
    let spec = Spec::from_json(
        r#"{ "gateways": [ { "name": "isp1", "interface": "ppp0", "mark": 1, "route_table": 101 } ],
             "balance": { "forward": [ { "iif": "eth0" } ] } }"#,
    )
    .unwrap();
    assert!(check_hooks(&spec).is_ok());
}
