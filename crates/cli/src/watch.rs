//! `nftbalance watch`: signals to flags, then the engine's watch session.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use nftbalance_engine::watch::{self, Control};

use crate::{privilege, read_spec};

/// Runs until SIGTERM/SIGINT; SIGHUP reloads the spec file.
pub fn watch(path: &Path, state_file: Option<PathBuf>) -> anyhow::Result<()> {
    privilege::require_net_admin("watch")?;
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
    watch::run(&|| read_spec(path), state_file, &control)
}
