//! The router pair (issue 20): `dump --format keepalived|conntrackd --node NAME`, and
//! `nftbalance ha master|backup|fault`, the command keepalived's notify runs on a transition.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::Context;
use clap::{Args, ValueEnum};
use nftbalance_engine::{self as engine, BackendKind};
use nftbalance_ha::{self as ha, Paths, Role, Step};

use crate::{privilege, read_spec, SAY};

/// Options of `dump --format keepalived|conntrackd`.
#[derive(Debug, Args)]
pub struct PairArgs {
    /// The router of the spec's `ha.nodes` to print the configuration of.
    #[arg(long)]
    pub node: Option<String>,
    /// conntrackd's configuration file, as the notify commands pass it to `conntrackd -C`.
    #[arg(long, default_value = "/etc/conntrackd/conntrackd.conf")]
    pub conntrackd_config: String,
    /// A directory for conntrackd's lock file, control socket and log [default: conntrackd's
    /// own places, /var/lock/conntrack.lock, /var/run/conntrackd.ctl, /var/log/conntrackd.log].
    #[arg(long)]
    pub run_dir: Option<String>,
    /// The nftbalance binary the notify commands run.
    #[arg(long, default_value = "/usr/sbin/nftbalance")]
    pub nftbalance: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairFormat {
    Keepalived,
    Conntrackd,
}

/// keepalived.conf or conntrackd.conf of one node, as text.
pub fn dump(spec_path: &Path, format: PairFormat, args: &PairArgs) -> anyhow::Result<String> {
    let (spec, _) = read_spec(spec_path)?;
    let node = args
        .node
        .as_deref()
        .context("--node NAME is required: the pair's two routers get different configurations")?;
    anyhow::ensure!(
        spec_path != Path::new("-"),
        "give the spec as a file, not `-`: keepalived's notify commands pass its path to `nftbalance ha`"
    );
    let abs = std::fs::canonicalize(spec_path)
        .with_context(|| format!("resolving {}", spec_path.display()))?;
    let abs = abs.to_str().context("the spec's path is not UTF-8")?;
    let mut paths = Paths::debian(abs);
    paths.conntrackd_config = args.conntrackd_config.clone();
    paths.nftbalance = args.nftbalance.clone();
    if let Some(dir) = &args.run_dir {
        paths = paths.with_run_dir(dir);
    }
    Ok(match format {
        PairFormat::Keepalived => ha::keepalived_conf(&spec, node, &paths)?.render(),
        PairFormat::Conntrackd => ha::conntrackd_conf(&spec, node, &paths)?.render(),
    })
}

/// The state keepalived reports.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Transition {
    /// This router took the floating addresses: commit the peer's connections, re-apply.
    Master,
    /// The peer is master: check conntrackd and request a resync from the peer.
    Backup,
    /// This router cannot serve (an interface is down): check conntrackd.
    Fault,
}

/// Runs every step of the transition, logging each; exit 2 when one failed (keepalived
/// ignores the status, the log does not).
pub fn transition(
    role: Transition,
    spec_path: &Path,
    conntrackd_config: &str,
    conntrackd: &str,
) -> anyhow::Result<ExitCode> {
    privilege::require_net_admin("ha")?;
    let role = match role {
        Transition::Master => Role::Master,
        Transition::Backup => Role::Backup,
        Transition::Fault => Role::Fault,
    };
    let mut failed = 0;
    for step in ha::steps(role) {
        let result = match step {
            Step::Conntrackd { flag, what } => run_conntrackd(conntrackd, conntrackd_config, flag)
                .with_context(|| format!("conntrackd {flag} ({what})")),
            Step::Apply => reapply(spec_path),
        };
        match result {
            Ok(line) => eprintln!("nftbalance: ha {role:?}: {line}"),
            Err(e) => {
                failed += 1;
                eprintln!("nftbalance: error: ha {role:?}: {e:#}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn run_conntrackd(bin: &str, config: &str, flag: &str) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(["-C", config, flag])
        .output()
        .with_context(|| format!("running {bin}"))?;
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    anyhow::ensure!(out.status.success(), "{}: {said}", out.status);
    Ok(format!("conntrackd {flag}: done"))
}

/// The spec's table and routing, as `apply` puts them.
fn reapply(spec_path: &Path) -> anyhow::Result<String> {
    let (spec, source) = read_spec(spec_path)?;
    let done = engine::apply::apply(&spec, &source, BackendKind::Nftables, &SAY)
        .context("re-applying the spec")?;
    Ok(done.summary)
}
