//! `nftbalance watch`: signals to flags, then the engine's watch session.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use std::net::SocketAddr;

use nftbalance_engine::inspect;
use nftbalance_engine::watch::{self, Control, Published};

use crate::{privilege, read_spec};

/// Runs until SIGTERM/SIGINT; SIGHUP reloads the spec file. With `metrics`, serves
/// Prometheus metrics there from the state watch publishes.
pub fn watch(
    path: &Path,
    state_file: Option<PathBuf>,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<()> {
    privilege::require_net_admin("watch")?;
    let published = match metrics {
        Some(addr) => Some(start_metrics(addr)?),
        None => None,
    };
    let control = Control {
        stop: Arc::new(AtomicBool::new(false)),
        reload: Arc::new(AtomicBool::new(false)),
    };
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, control.stop.clone())
            .context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, control.reload.clone())
        .context("installing signal handlers")?;
    watch::run(&|| read_spec(path), state_file, &control, published)
}

/// Binds the metrics endpoint (an error if it cannot: exit 2 before watch starts) and
/// serves it from one thread; each scrape reads the counters from the kernel.
fn start_metrics(addr: SocketAddr) -> anyhow::Result<Published> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("--metrics {addr}: cannot listen there"))?;
    let published: Published = Arc::default();
    let shared = published.clone();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            nftbalance_metrics::serve(listener, || {
                let snapshot = shared
                    .lock()
                    .map_err(|_| "watch stopped".to_string())?
                    .clone();
                let (spec, state) = snapshot.ok_or("watch has not started yet")?;
                let status =
                    inspect::status_from(&spec, Some(&state)).map_err(|e| format!("{e:#}"))?;
                Ok(nftbalance_metrics::render(&status))
            })
        })
        .context("starting the metrics thread")?;
    log::warn!("metrics at http://{addr}/metrics");
    Ok(published)
}
