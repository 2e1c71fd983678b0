//! `nftbalance watch`: health checks per gateway and, on a state change, ONE transaction
//! that replaces only the balance decision (the chains whose rules change), never the table:
//! counters, sets and sticky sources keep their contents. Also writes the state file that
//! `status` reads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use nftbalance_health as health;
use nftbalance_netlink::{conntrack, lower, read, transaction, Commit, Socket};
use nftbalance_routing as routing;
use nftbalance_ruleset::{self as ruleset, Availability, Ruleset};
use nftbalance_spec::{AllDown, Gateway, Spec};
use serde_json::json;

use crate::{privilege, read_spec};

/// Where `watch` writes gateway states, unless told otherwise.
pub fn default_state_file(spec: &Spec) -> PathBuf {
    Path::new(crate::control::RUN_DIR).join(format!("{}.state.json", spec.table))
}

/// One probe round of a gateway: through its interface, with its mark and source address.
pub fn probe(spec: &Spec, g: &Gateway) -> Option<(bool, String)> {
    let h = g.health.as_ref()?;
    let targets = h
        .targets
        .iter()
        .map(|t| match t {
            nftbalance_spec::HealthTarget::Icmp(a) => health::Target::Icmp(*a),
            nftbalance_spec::HealthTarget::Tcp(s) => health::Target::Tcp(*s),
        })
        .collect();
    let source = g
        .address
        .map(std::net::IpAddr::V4)
        .or(g.address6.map(std::net::IpAddr::V6));
    let p = health::Probe {
        interface: g.interface.clone(),
        mark: g.mark & spec.mark_mask,
        source,
        targets,
        timeout: Duration::from_millis(h.timeout_ms.into()),
    };
    let outcome = health::probe(&p);
    let detail = outcome
        .reason()
        .unwrap_or_else(|| format!("answered in {} ms", outcome.elapsed.as_millis()));
    Some((outcome.ok, detail))
}

/// The live state of a watch session.
struct Session {
    spec: Spec,
    /// The spec's text, for apply's journal.
    source: String,
    trackers: Vec<health::Tracker>,
    details: Vec<String>,
    since: Vec<u64>,
    current: Ruleset,
    availability: Availability,
    state_file: PathBuf,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Session {
    /// Takes over the table: if it is not what the spec compiles to for the gateways that
    /// are routed now, a full apply puts it right first.
    fn start(spec: Spec, source: String, state_file: PathBuf) -> anyhow::Result<Session> {
        let trackers = spec
            .gateways
            .iter()
            .map(|g| match &g.health {
                Some(h) => health::Tracker::new(h.up, h.down),
                None => health::Tracker::starting_as(health::State::Up, 1, 1),
            })
            .collect();
        let n = spec.gateways.len();
        let mut s = Session {
            trackers,
            details: vec![String::new(); n],
            since: vec![now(); n],
            current: ruleset::compile(&spec),
            availability: Availability::default(),
            spec,
            source,
            state_file,
        };
        let availability = s.wanted_availability()?;
        let rs = ruleset::compile_with(&s.spec, &availability);
        let socket = Socket::open().context("opening the netfilter netlink socket")?;
        if !read::diff(&socket, &rs)?.is_empty() {
            log::info!(
                "table {} {} differs from the spec: applying it",
                rs.family,
                rs.table
            );
            crate::control::apply(&s.spec, &s.source, false, crate::Backend::Nftables)?;
            // apply used the routing's view; take the compiled result as current.
        }
        s.current = rs;
        s.availability = availability;
        s.write_state();
        Ok(s)
    }

    /// Gateways that may take new connections: routed and not down, with the all-down policy.
    fn wanted_availability(&self) -> anyhow::Result<Availability> {
        let rsock = routing::Socket::open().context("opening the rtnetlink socket")?;
        let links = routing::Links::read(&rsock).context("reading the network interfaces")?;
        let plan = routing::plan(&self.spec);
        // Routes vanish with links; putting them back is idempotent and cheap.
        let report = routing::apply(&rsock, &plan, &links)?;
        let mut unavailable: BTreeSet<String> = report.unrouted_gateways();
        for (g, t) in self.spec.gateways.iter().zip(&self.trackers) {
            if !t.state().is_usable() {
                unavailable.insert(g.name.clone());
            }
        }
        let all = unavailable.len() == self.spec.gateways.len();
        if all && self.spec.watch.all_down == AllDown::KeepLast {
            log::warn!(
                "every gateway is down; keeping the last live set (watch.all_down: keep-last)"
            );
            return Ok(self.availability.clone());
        }
        Ok(Availability { unavailable })
    }

    fn record(&mut self, i: usize, ok: bool, detail: String) -> anyhow::Result<()> {
        self.details[i] = detail;
        let Some(t) = self.trackers[i].record(ok) else {
            return Ok(());
        };
        let g = self.spec.gateways[i].clone();
        self.since[i] = now();
        log::warn!(
            "gateway {} ({}): {} -> {} after {} {} ({})",
            g.name,
            g.interface,
            t.from,
            t.to,
            t.streak,
            if ok { "successes" } else { "failures" },
            self.details[i]
        );
        self.rebalance()?;
        if t.to == health::State::Down && g.flush_conntrack {
            let socket = Socket::open().context("opening the netfilter netlink socket")?;
            let n = conntrack::delete_by_mark(&socket, g.mark, self.spec.mark_mask)
                .context("deleting the gateway's connections")?;
            log::warn!(
                "gateway {}: deleted {n} connections (flush_conntrack)",
                g.name
            );
        }
        self.write_state();
        Ok(())
    }

    /// One transaction that moves the split to the available gateways.
    fn rebalance(&mut self) -> anyhow::Result<()> {
        // Locked before the routing is touched: an apply in progress keeps the old ip rules
        // until its commit, and must not see them removed under it.
        let _lock = crate::control::lock(&self.spec)?;
        let availability = self.wanted_availability()?;
        if availability == self.availability {
            return Ok(());
        }
        let next = ruleset::compile_with(&self.spec, &availability);
        let socket = Socket::open().context("opening the netfilter netlink socket")?;
        let started = Instant::now();
        let updated = transaction::run(&socket, Commit::Yes, || {
            lower::update_batch(&self.current, &next)
        });
        if let Err(e) = updated {
            // The live table is not what we last put there (flushed, edited): replace it.
            log::warn!("update refused ({e}); replacing the table");
            transaction::run(&socket, Commit::Yes, || lower::replace_batch(&next))?;
        }
        let live: Vec<&str> = self
            .spec
            .gateways
            .iter()
            .filter(|g| !availability.unavailable.contains(&g.name))
            .map(|g| g.name.as_str())
            .collect();
        log::warn!(
            "new connections now use: {} ({} ms)",
            if live.is_empty() {
                "the main table".to_string()
            } else {
                live.join(", ")
            },
            started.elapsed().as_millis()
        );
        self.current = next;
        self.availability = availability;
        Ok(())
    }

    fn write_state(&self) {
        let gateways: Vec<_> = self
            .spec
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| {
                json!({
                    "name": g.name,
                    "state": self.trackers[i].state().as_str(),
                    "checked": g.health.is_some(),
                    "available": !self.availability.unavailable.contains(&g.name),
                    "since": self.since[i],
                    "last_probe": self.details[i],
                })
            })
            .collect();
        let doc = json!({
            "table": self.spec.table,
            "pid": std::process::id(),
            "updated": now(),
            "gateways": gateways,
        });
        if let Err(e) = write_atomically(&self.state_file, &format!("{doc:#}\n")) {
            log::warn!(
                "cannot write the state file {}: {e}",
                self.state_file.display()
            );
        }
    }
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Probes every checked gateway on its own interval until `stop`.
fn start_probers(spec: &Spec, stop: &Arc<AtomicBool>) -> mpsc::Receiver<(usize, bool, String)> {
    let (tx, rx) = mpsc::channel();
    for (i, g) in spec.gateways.iter().enumerate() {
        let Some(h) = &g.health else { continue };
        let (spec, g, tx, stop) = (spec.clone(), g.clone(), tx.clone(), stop.clone());
        let interval = Duration::from_millis(h.interval_ms.into());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if let Some((ok, detail)) = probe(&spec, &g) {
                    if tx.send((i, ok, detail)).is_err() {
                        return;
                    }
                }
                while started.elapsed() < interval && !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20).min(interval));
                }
            }
        });
    }
    rx
}

/// Runs until SIGTERM/SIGINT; SIGHUP reloads the spec.
pub fn watch(path: &Path, state_file: Option<PathBuf>) -> anyhow::Result<()> {
    privilege::require_net_admin("watch")?;
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, term.clone()).context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .context("installing signal handlers")?;

    let (mut spec, mut source) = read_spec(path)?;
    loop {
        let file = state_file
            .clone()
            .unwrap_or_else(|| default_state_file(&spec));
        let mut session = Session::start(spec.clone(), source.clone(), file)?;
        log::warn!(
            "watching {} gateways of table {} {}",
            spec.gateways.iter().filter(|g| g.health.is_some()).count(),
            spec.family,
            spec.table
        );
        let stop = Arc::new(AtomicBool::new(false));
        let results = start_probers(&spec, &stop);
        loop {
            if term.load(Ordering::Relaxed) {
                stop.store(true, Ordering::Relaxed);
                log::warn!("stopping; the ruleset stays as it is");
                return Ok(());
            }
            if hup.swap(false, Ordering::Relaxed) {
                stop.store(true, Ordering::Relaxed);
                match read_spec(path) {
                    Ok((new, text)) => {
                        log::warn!("SIGHUP: reloading {}", path.display());
                        (spec, source) = (new, text);
                    }
                    Err(e) => log::error!("SIGHUP: keeping the running spec: {e:#}"),
                }
                break;
            }
            match results.recv_timeout(Duration::from_millis(100)) {
                Ok((i, ok, detail)) => {
                    if let Err(e) = session.record(i, ok, detail) {
                        log::error!("{e:#}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(100))
                }
            }
        }
    }
}
