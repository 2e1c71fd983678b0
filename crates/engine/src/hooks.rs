//! The `hooks.on_change` runner of `watch` (issue 16): runs the spec's program, without a
//! shell, on every gateway state change and every policy tier change, one event after another
//! in one background thread. It must never block probing or failover: [`HookRunner::fire`]
//! only queues, and a hook past its timeout is killed with its whole process group.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nftbalance_health::State;
use nftbalance_spec::{Hooks, PolicyKey, Spec, SpecError, SpecErrors};

/// Events waiting for the hook thread. A hook that hangs until its timeout holds the queue up;
/// past this many waiting events the oldest is dropped (and logged) so that `fire` never waits
/// and memory stays bounded. 64 is far more transitions than a sane timeout lets pile up.
pub const QUEUE_CAPACITY: usize = 64;

/// The `PATH` a hook gets when `watch` itself has none (systemd always sets one).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How often a running hook is checked for exit, timeout and a stopping runner.
const POLL: Duration = Duration::from_millis(10);
/// How long, after a hook was killed, its output pipes may take to close (a process that left
/// the group can hold them open; its output is then not waited for).
const OUTPUT_GRACE: Duration = Duration::from_millis(200);
/// The first lines of each stream of a hook that are logged, each cut at [`LINE_MAX`] bytes.
const LINES_LOGGED: usize = 5;
const LINE_MAX: usize = 200;

/// The environment variables every hook gets, in the order [`HookEvent::environment`] lists
/// them. Every variable is set for every event, empty when it does not apply, so a script can
/// run under `set -u`. Besides these the hook gets only `PATH`.
///
/// | variable | value |
/// |---|---|
/// | `NFTBALANCE_EVENT` | `gateway` (a gateway changed state) or `policy` (a policy's active tier changed) |
/// | `NFTBALANCE_TABLE` | the spec's `table` (which balancer, when several run) |
/// | `NFTBALANCE_TIME` | when the change happened, in Unix seconds (not when the hook runs: it may have waited in the queue) |
/// | `NFTBALANCE_GATEWAY` | gateway events: the gateway's name |
/// | `NFTBALANCE_INTERFACE` | gateway events: its interface |
/// | `NFTBALANCE_STATE` | gateway events: the new state, `up`, `down` or `unknown` |
/// | `NFTBALANCE_PREVIOUS_STATE` | gateway events: the state before |
/// | `NFTBALANCE_DETAIL` | gateway events: the last probe's result in words (e.g. why it failed) |
/// | `NFTBALANCE_LOSS_PERCENT` | gateway events: the measured packet loss in percent, when measured |
/// | `NFTBALANCE_RTT_MS` | gateway events: the measured round-trip time in milliseconds, when measured |
/// | `NFTBALANCE_POLICY` | policy events: the policy's name; `(default)` for the implicit default policy, `(pin:NAME)` for a selector's `gateway` pin (parentheses are never in a name) |
/// | `NFTBALANCE_TIER` | policy events: the tier now in use (1-16); empty when no member is live (the policy's `last_resort` is in force) |
/// | `NFTBALANCE_PREVIOUS_TIER` | policy events: the tier in use before; empty when none was |
/// | `NFTBALANCE_MEMBERS` | policy events: the gateways now taking the policy's new connections, comma-separated, in spec order; empty when none |
pub const HOOK_VARIABLES: [&str; 14] = [
    "NFTBALANCE_EVENT",
    "NFTBALANCE_TABLE",
    "NFTBALANCE_TIME",
    "NFTBALANCE_GATEWAY",
    "NFTBALANCE_INTERFACE",
    "NFTBALANCE_STATE",
    "NFTBALANCE_PREVIOUS_STATE",
    "NFTBALANCE_DETAIL",
    "NFTBALANCE_LOSS_PERCENT",
    "NFTBALANCE_RTT_MS",
    "NFTBALANCE_POLICY",
    "NFTBALANCE_TIER",
    "NFTBALANCE_PREVIOUS_TIER",
    "NFTBALANCE_MEMBERS",
];

/// A change `watch` tells the hook about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    /// A gateway's health state changed.
    Gateway(GatewayChange),
    /// The tier a policy's new connections use changed.
    Policy(PolicyChange),
}

/// A gateway's state change (`NFTBALANCE_EVENT=gateway`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayChange {
    /// The gateway's name.
    pub name: String,
    /// Its interface.
    pub interface: String,
    pub from: State,
    pub to: State,
    /// When the new state began, in Unix seconds.
    pub since: u64,
    /// The last probe's result in words.
    pub detail: String,
    /// Packet loss over the health window in percent, where the health check measures it.
    pub loss_percent: Option<u32>,
    /// Round-trip time in milliseconds, where the health check measures it.
    pub rtt_ms: Option<u32>,
}

/// A policy's active tier change (`NFTBALANCE_EVENT=policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChange {
    pub policy: PolicyKey,
    /// The tier in use before; None when no member was live.
    pub from_tier: Option<u8>,
    /// The tier in use now; None when no member is live (the last resort is in force).
    pub to_tier: Option<u8>,
    /// The gateways now taking the policy's new connections, in spec order.
    pub members: Vec<String>,
    /// When the change happened, in Unix seconds.
    pub since: u64,
}

impl HookEvent {
    /// The hook's `NFTBALANCE_*` variables for this event, in [`HOOK_VARIABLES`] order, each
    /// one present. Pure: the table comes from the runner, the time from the event.
    pub fn environment(&self, table: &str) -> Vec<(&'static str, String)> {
        let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
        let tier = |t: Option<u8>| t.map(|t| t.to_string()).unwrap_or_default();
        let (kind, since, gateway, policy) = match self {
            HookEvent::Gateway(g) => ("gateway", g.since, Some(g), None),
            HookEvent::Policy(p) => ("policy", p.since, None, Some(p)),
        };
        let values = [
            kind.to_string(),
            table.to_string(),
            since.to_string(),
            gateway.map(|g| g.name.clone()).unwrap_or_default(),
            gateway.map(|g| g.interface.clone()).unwrap_or_default(),
            gateway.map(|g| g.to.to_string()).unwrap_or_default(),
            gateway.map(|g| g.from.to_string()).unwrap_or_default(),
            gateway.map(|g| g.detail.clone()).unwrap_or_default(),
            opt(gateway.and_then(|g| g.loss_percent)),
            opt(gateway.and_then(|g| g.rtt_ms)),
            policy.map(|p| p.policy.to_string()).unwrap_or_default(),
            tier(policy.and_then(|p| p.to_tier)),
            tier(policy.and_then(|p| p.from_tier)),
            policy.map(|p| p.members.join(",")).unwrap_or_default(),
        ];
        // A NUL cannot be passed in the environment (and no name or probe result holds one).
        HOOK_VARIABLES
            .into_iter()
            .zip(values.map(|v| v.replace('\0', "")))
            .collect()
    }

    /// For logs: `gateway fibre up -> down`, `policy office tier 1 -> 2`.
    pub fn describe(&self) -> String {
        match self {
            HookEvent::Gateway(g) => format!("gateway {} {} -> {}", g.name, g.from, g.to),
            HookEvent::Policy(p) => {
                let tier = |t: Option<u8>| t.map_or("none".to_string(), |t| t.to_string());
                format!(
                    "policy {} tier {} -> {}",
                    p.policy,
                    tier(p.from_tier),
                    tier(p.to_tier)
                )
            }
        }
    }
}

/// Refuses a spec whose hook program the host cannot run: [`Spec::hook_problems`] with the
/// real file system (the path exists), and the program is a file with an execute bit. The
/// error lists every problem at its JSON path. `watch` calls this before it starts (and on a
/// reload); `apply` does not run hooks and does not check them.
pub fn check_hooks(spec: &Spec) -> anyhow::Result<()> {
    let mut problems = spec.hook_problems(|p| p.exists());
    if problems.is_empty() {
        if let Some(program) = spec.hooks.as_ref().and_then(|h| h.on_change.first()) {
            let runnable = std::fs::metadata(program)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if !runnable {
                problems.push(SpecError::Invalid {
                    path: "hooks.on_change[0]".to_string(),
                    message: format!("{program:?} is not an executable file"),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SpecErrors(problems).into())
    }
}

/// The program a runner starts, and how.
#[derive(Debug, Clone)]
struct Hook {
    table: String,
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
    /// `PATH` as `watch` got it, passed on to the hook.
    path: String,
}

#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<HookEvent>,
    stopping: bool,
}

#[derive(Debug)]
struct Shared {
    hook: Hook,
    capacity: usize,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Set on drop: the thread kills a running hook and returns.
    stop: AtomicBool,
    dropped: AtomicU64,
}

/// Runs `hooks.on_change` for the events `watch` fires, in order, in one background thread.
/// Without hooks in the spec it does nothing. Dropping it stops the thread: a hook running
/// then is killed, events still queued are not run (and logged).
#[derive(Debug)]
pub struct HookRunner {
    worker: Option<(Arc<Shared>, JoinHandle<()>)>,
}

impl HookRunner {
    /// A runner that runs nothing (a spec without `hooks`).
    pub fn none() -> HookRunner {
        HookRunner { worker: None }
    }

    /// The runner for a spec's `hooks` (none without), with a queue of [`QUEUE_CAPACITY`].
    pub fn for_spec(spec: &Spec) -> std::io::Result<HookRunner> {
        HookRunner::start(&spec.table, spec.hooks.as_ref(), QUEUE_CAPACITY)
    }

    /// Starts the thread that runs `hooks` for the table `table`, with room for `capacity`
    /// waiting events (at least 1). Fails only when the thread cannot be created.
    pub fn start(
        table: &str,
        hooks: Option<&Hooks>,
        capacity: usize,
    ) -> std::io::Result<HookRunner> {
        let Some((program, args)) = hooks.and_then(|h| h.on_change.split_first()) else {
            return Ok(HookRunner::none());
        };
        let hook = Hook {
            table: table.to_string(),
            program: PathBuf::from(program),
            args: args.to_vec(),
            timeout: Duration::from_millis(hooks.map_or(0, |h| h.timeout_ms).into()),
            path: std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string()),
        };
        let shared = Arc::new(Shared {
            hook,
            capacity: capacity.max(1),
            queue: Mutex::default(),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("hooks".to_string())
                .spawn(move || run_queue(&shared))?
        };
        Ok(HookRunner {
            worker: Some((shared, thread)),
        })
    }

    /// Queues `event` for the hook and returns at once. When the queue is full the oldest
    /// waiting event is dropped and logged: a late notification is worth less than a blocked
    /// failover.
    pub fn fire(&self, event: HookEvent) {
        let Some((shared, _)) = &self.worker else {
            return;
        };
        let mut queue = lock(&shared.queue);
        let dropped = if queue.events.len() >= shared.capacity {
            queue.events.pop_front()
        } else {
            None
        };
        queue.events.push_back(event);
        drop(queue);
        shared.wake.notify_one();
        // Logged after the lock is released: the hook thread never waits for the logger.
        if let Some(old) = dropped {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "table {}: hook queue full ({} events waiting): not running the hook for {}",
                shared.hook.table,
                shared.capacity,
                old.describe()
            );
        }
    }

    /// How many events were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.worker
            .as_ref()
            .map_or(0, |(s, _)| s.dropped.load(Ordering::Relaxed))
    }
}

impl Drop for HookRunner {
    fn drop(&mut self) {
        let Some((shared, thread)) = self.worker.take() else {
            return;
        };
        shared.stop.store(true, Ordering::Relaxed);
        let left = {
            let mut queue = lock(&shared.queue);
            queue.stopping = true;
            std::mem::take(&mut queue.events)
        };
        shared.wake.notify_one();
        if !left.is_empty() {
            log::warn!(
                "table {}: stopping hooks: {} queued events not run",
                shared.hook.table,
                left.len()
            );
        }
        if thread.join().is_err() {
            log::error!("table {}: the hook thread panicked", shared.hook.table);
        }
    }
}

/// A poisoned lock only means a panic elsewhere; the queue itself is always consistent.
fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// The hook thread: one event at a time, in the order fired, until the runner is dropped.
fn run_queue(shared: &Shared) {
    loop {
        let event = {
            let mut queue = lock(&shared.queue);
            loop {
                if queue.stopping {
                    return;
                }
                if let Some(e) = queue.events.pop_front() {
                    break e;
                }
                queue = shared.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        run_hook(&shared.hook, &event, &shared.stop);
    }
}

/// How a hook's run ended.
#[derive(Debug)]
enum Ending {
    /// It exited (or was killed by someone else) and closed its output.
    Exited(ExitStatus),
    /// Past its timeout: its process group was killed.
    TimedOut(Option<ExitStatus>),
    /// The runner was dropped while it ran: its process group was killed.
    Stopped(Option<ExitStatus>),
    /// Waiting for it failed (should not happen): its process group was killed.
    Lost(std::io::Error),
}

/// The first lines a hook wrote to one stream.
#[derive(Debug)]
struct Output {
    stream: &'static str,
    lines: Vec<String>,
    /// More lines (or bytes) followed than were kept.
    more: bool,
}

/// Runs the hook for one event, from spawn to its logged end.
///
/// The process gets an empty environment but `PATH` and the `NFTBALANCE_*` variables: watch
/// runs as root under systemd, and what it inherited (`NOTIFY_SOCKET`, `LISTEN_FDS`,
/// `INVOCATION_ID`, credentials, `LD_PRELOAD`) is not the hook's; the hook also sees the same
/// environment whether watch was started by hand or by the service manager. It runs in `/`,
/// stdin from /dev/null, stdout and stderr captured, in a process group of its own, so that
/// the timeout kills a script's children too.
///
/// A run lasts until the program has exited and its output is closed (children it left in the
/// background with our stdout hold the queue up to the timeout, then die with the group; ones
/// that redirected their output are left alone), or until the timeout.
fn run_hook(hook: &Hook, event: &HookEvent, stop: &AtomicBool) {
    let what = event.describe();
    let name = format!(
        "table {}: hook {} for {what}",
        hook.table,
        hook.program.display()
    );
    let started = Instant::now();
    let spawned = Command::new(&hook.program)
        .args(&hook.args)
        .env_clear()
        .env("PATH", &hook.path)
        .envs(event.environment(&hook.table))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            log::error!("{name}: cannot start it: {e}");
            return;
        }
    };
    let (tx, outputs) = mpsc::channel();
    let mut readers = 0;
    if let Some(out) = child.stdout.take() {
        readers += read_output("stdout", out, &tx) as usize;
    }
    if let Some(err) = child.stderr.take() {
        readers += read_output("stderr", err, &tx) as usize;
    }
    drop(tx);
    let mut collected = Vec::new();
    let ending = wait(
        &mut child,
        hook.timeout,
        stop,
        readers,
        &outputs,
        &mut collected,
    );
    if !matches!(ending, Ending::Exited(_)) {
        // The killed group closes its pipes at once, unless one of it left the group.
        let grace = Instant::now() + OUTPUT_GRACE;
        while collected.len() < readers {
            match outputs.recv_timeout(grace.saturating_duration_since(Instant::now())) {
                Ok(o) => collected.push(o),
                Err(_) => break,
            }
        }
    }
    let took = started.elapsed().as_millis();
    let (ok, summary) = match &ending {
        Ending::Exited(s) => (s.success(), format!("{} after {took} ms", describe(s))),
        Ending::TimedOut(s) => (
            false,
            format!(
                "not finished at its timeout ({} ms): killed its process group{}",
                hook.timeout.as_millis(),
                s.map(|s| format!(" ({})", describe(&s)))
                    .unwrap_or_default()
            ),
        ),
        Ending::Stopped(s) => (
            false,
            format!(
                "watch is stopping: killed its process group after {took} ms{}",
                s.map(|s| format!(" ({})", describe(&s)))
                    .unwrap_or_default()
            ),
        ),
        Ending::Lost(e) => (false, format!("cannot wait for it ({e}): killed it")),
    };
    let level = if ok {
        log::Level::Info
    } else {
        log::Level::Warn
    };
    log::log!(level, "{name}: {summary}");
    collected.sort_by_key(|o| o.stream);
    for o in &collected {
        for line in &o.lines {
            log::log!(level, "{name}: {}: {line}", o.stream);
        }
        if o.more {
            log::log!(level, "{name}: {}: ...", o.stream);
        }
    }
    if collected.len() < readers {
        log::log!(
            level,
            "{name}: its output is still open (a process that left its group?): not waiting"
        );
    }
}

/// `exit status 0`, `killed by signal 9`.
fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Reads one output stream of a hook in a thread of its own: keeps the first lines, drains the
/// rest (so that a chatty hook never blocks on a full pipe) and sends what it kept at EOF.
/// False if the thread cannot be created (the pipe is then closed: the hook may get SIGPIPE).
fn read_output(
    stream: &'static str,
    pipe: impl Read + Send + 'static,
    tx: &mpsc::Sender<Output>,
) -> bool {
    let tx = tx.clone();
    let reader = move || {
        let mut pipe = BufReader::new(pipe);
        let mut output = Output {
            stream,
            lines: Vec::new(),
            more: false,
        };
        let mut line = Vec::new();
        loop {
            line.clear();
            // A line is cut at 4 KiB so that a hook without newlines costs no memory.
            match (&mut pipe).take(4096).read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if output.lines.len() < LINES_LOGGED {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                let cut = (0..=LINE_MAX.min(text.len()))
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                output.lines.push(text[..cut].to_string());
            } else {
                output.more = true;
            }
        }
        let _ = tx.send(output);
    };
    thread::Builder::new()
        .name(format!("hook {stream}"))
        .spawn(reader)
        .is_ok()
}

/// Waits for the hook to exit and close its output, up to `timeout` or until `stop`; then
/// kills its process group.
fn wait(
    child: &mut Child,
    timeout: Duration,
    stop: &AtomicBool,
    readers: usize,
    outputs: &mpsc::Receiver<Output>,
    collected: &mut Vec<Output>,
) -> Ending {
    let deadline = Instant::now() + timeout;
    let mut status = None;
    loop {
        if status.is_none() {
            match child.try_wait() {
                Ok(s) => status = s,
                Err(e) => {
                    kill_group(child);
                    let _ = child.wait();
                    return Ending::Lost(e);
                }
            }
        }
        if let Some(s) = status {
            if collected.len() >= readers {
                return Ending::Exited(s);
            }
        }
        let ending: Option<fn(Option<ExitStatus>) -> Ending> = if stop.load(Ordering::Relaxed) {
            Some(Ending::Stopped)
        } else if Instant::now() >= deadline {
            Some(Ending::TimedOut)
        } else {
            None
        };
        if let Some(ending) = ending {
            // Before reaping the leader, so that its pid (the group's id) cannot be reused.
            kill_group(child);
            return ending(status.or_else(|| child.wait().ok()));
        }
        match outputs.recv_timeout(POLL) {
            Ok(o) => collected.push(o),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => thread::sleep(POLL),
        }
    }
}

/// SIGKILL to the hook's process group (it is the group's leader), and to the hook itself in
/// case the group is gone.
fn kill_group(child: &mut Child) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway() -> HookEvent {
        HookEvent::Gateway(GatewayChange {
            name: "fibre".into(),
            interface: "eth1".into(),
            from: State::Up,
            to: State::Down,
            since: 1_700_000_000,
            detail: "3 consecutive failures: no answer".into(),
            loss_percent: None,
            rtt_ms: Some(12),
        })
    }

    fn env(e: &HookEvent) -> Vec<String> {
        e.environment("nftbalance")
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    #[test]
    fn a_gateway_event_sets_every_variable_and_leaves_the_policy_ones_empty() {
        assert_eq!(
            env(&gateway()),
            [
                "NFTBALANCE_EVENT=gateway",
                "NFTBALANCE_TABLE=nftbalance",
                "NFTBALANCE_TIME=1700000000",
                "NFTBALANCE_GATEWAY=fibre",
                "NFTBALANCE_INTERFACE=eth1",
                "NFTBALANCE_STATE=down",
                "NFTBALANCE_PREVIOUS_STATE=up",
                "NFTBALANCE_DETAIL=3 consecutive failures: no answer",
                "NFTBALANCE_LOSS_PERCENT=",
                "NFTBALANCE_RTT_MS=12",
                "NFTBALANCE_POLICY=",
                "NFTBALANCE_TIER=",
                "NFTBALANCE_PREVIOUS_TIER=",
                "NFTBALANCE_MEMBERS=",
            ]
        );
    }

    #[test]
    fn a_policy_event_names_its_tiers_and_members() {
        let e = HookEvent::Policy(PolicyChange {
            policy: PolicyKey::Named("office".into()),
            from_tier: Some(1),
            to_tier: Some(2),
            members: vec!["lte".into(), "dsl".into()],
            since: 5,
        });
        let got = env(&e);
        assert_eq!(got[0], "NFTBALANCE_EVENT=policy");
        assert_eq!(
            got[3..],
            [
                "NFTBALANCE_GATEWAY=",
                "NFTBALANCE_INTERFACE=",
                "NFTBALANCE_STATE=",
                "NFTBALANCE_PREVIOUS_STATE=",
                "NFTBALANCE_DETAIL=",
                "NFTBALANCE_LOSS_PERCENT=",
                "NFTBALANCE_RTT_MS=",
                "NFTBALANCE_POLICY=office",
                "NFTBALANCE_TIER=2",
                "NFTBALANCE_PREVIOUS_TIER=1",
                "NFTBALANCE_MEMBERS=lte,dsl",
            ]
        );
        assert_eq!(e.describe(), "policy office tier 1 -> 2");
    }

    #[test]
    fn implicit_policies_are_named_apart_from_any_policy_name() {
        assert_eq!(PolicyKey::Default.to_string(), "(default)");
        assert_eq!(PolicyKey::Pin("lte".into()).to_string(), "(pin:lte)");
        let none = HookEvent::Policy(PolicyChange {
            policy: PolicyKey::Default,
            from_tier: Some(1),
            to_tier: None,
            members: vec![],
            since: 5,
        });
        assert_eq!(none.describe(), "policy (default) tier 1 -> none");
        assert!(env(&none).contains(&"NFTBALANCE_TIER=".to_string()));
    }

    #[test]
    fn a_nul_byte_in_a_detail_is_dropped_rather_than_failing_the_spawn() {
        let HookEvent::Gateway(mut g) = gateway() else {
            unreachable!()
        };
        g.detail = "a\0b".into();
        assert!(env(&HookEvent::Gateway(g)).contains(&"NFTBALANCE_DETAIL=ab".to_string()));
    }

    #[test]
    fn the_readme_documents_exactly_these_variables() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<&str> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `NFTBALANCE_"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let names: Vec<String> = rows.iter().map(|r| format!("NFTBALANCE_{r}")).collect();
        assert_eq!(names, HOOK_VARIABLES);
    }

    #[test]
    fn without_hooks_the_runner_does_nothing() {
        let runner = HookRunner::start("t", None, 4).unwrap();
        for _ in 0..10 {
            runner.fire(gateway());
        }
        assert_eq!(runner.dropped(), 0);
    }
}
