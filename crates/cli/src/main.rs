//! The `nftbalance` command: argument parsing and output, over the library crates.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use nftbalance_engine::{self as engine, BackendKind, Say};
use nftbalance_legacy as legacy;
use nftbalance_routing as routing;
use nftbalance_ruleset as ruleset;
use nftbalance_spec::Spec;

/// Multi-uplink load balancing for Linux routers, on nftables.
///
/// nftbalance spreads the new outgoing connections of a router with several uplinks across
/// them, keeps every connection on the uplink it started on, answers inbound connections
/// through the uplink they arrived on, and moves new connections off an uplink that fails its
/// health checks. One JSON spec describes it all (`nftbalance schema` prints its JSON
/// Schema): `dump` shows the ruleset it compiles to, `apply` puts it into the kernel, `watch`
/// checks the uplinks and fails over, `status` shows how traffic is spread.
#[derive(Debug, Parser)]
#[command(name = "nftbalance", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Put the spec's ruleset into the kernel as one nftables transaction.
    ///
    /// The transaction creates the tool's table if it is missing, deletes it and re-creates it
    /// with all chains, sets, maps and rules, so the kernel switches from the old ruleset to
    /// the new one at once, and re-applying gives the same state. No other table is touched.
    /// If another program commits in between, the transaction is rebuilt and retried.
    /// The policy routing (ip rules, a table per uplink) goes in beside the old before the
    /// commit, and the old goes after it; if apply dies in between, see `recover`.
    /// Needs CAP_NET_ADMIN (root).
    Apply {
        /// The spec file (JSON); `-` reads standard input.
        spec: PathBuf,
        /// Let the kernel validate the whole transaction, then abort it: nothing changes.
        /// Exit status 0 when the kernel accepts it, 2 with its objections.
        #[arg(long)]
        check: bool,
        /// Where the rules go.
        #[arg(long, value_enum, default_value_t = Backend::Nftables)]
        backend: Backend,
    },
    /// Compare the live table and policy routing with the spec's and print every difference.
    ///
    /// Exit status 0 when they are the same, 1 when they differ (or the table is missing),
    /// 2 on error. Elements of sets filled from the packet path (sticky) are state, not
    /// configuration, and are not compared. Needs CAP_NET_ADMIN (root).
    Diff {
        /// The spec file (JSON); `-` reads standard input.
        spec: PathBuf,
    },
    /// Check each gateway's health and move new connections off dead uplinks, and back.
    ///
    /// Every gateway with a `health` section is probed through its own uplink (bound to its
    /// interface, with its mark and source address) every `interval` (ICMP, TCP, DNS or
    /// HTTP targets; `reliability` of them must answer). After `down` consecutive failures,
    /// or loss or median latency over the `window` above `max_loss`/`max_latency`, it is
    /// down; it is up again after `up` successes within the `recover_*` thresholds and
    /// `hold_down`. Each policy then splits over its lowest tier with a usable member, or
    /// falls back to its `last_resort`. On a change ONE transaction replaces only the
    /// chains whose rules change: the table is not re-created, so counters, sets and sticky
    /// sources keep their contents; a change that cannot be made now is retried until done.
    /// `hooks.on_change` runs on every gateway and policy change without blocking. watch
    /// follows a spec that `apply` changed, and `apply` keeps the gateways watch finds down
    /// out. Writes the state file `status` reads. SIGHUP reloads the spec file; SIGTERM
    /// stops, leaving the ruleset as it is. Needs CAP_NET_ADMIN (root).
    Watch {
        /// The spec file (JSON).
        spec: PathBuf,
        /// Where to write the gateway states [default:
        /// /run/nftbalance/NETNS-FAMILY-TABLE.state.json, per network namespace].
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off by default; e.g.
        /// 127.0.0.1:9786). The same metrics as `status --format prometheus`.
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Show each gateway's state, weight, traffic, new and live connections and shares.
    ///
    /// States come from the running `watch` (its state file), or else from one probe round
    /// now. Traffic and new connections are the ruleset's per-gateway counters (since the
    /// last full apply); live connections are conntrack entries with the gateway's mark.
    /// Needs CAP_NET_ADMIN (root).
    Status {
        /// The spec file (JSON).
        spec: PathBuf,
        /// JSON instead of a table (the same as `--format json`).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Output format: `prometheus` is the text exposition format, for node_exporter's
        /// textfile collector (write it to a file there, atomically).
        #[arg(long, value_enum, default_value_t = status::Format::Table)]
        format: status::Format,
        /// The state file of `watch` [default: the table's own in this network namespace].
        #[arg(long)]
        state_file: Option<PathBuf>,
    },
    /// Remove the spec's table and the policy routing apply put in for it.
    ///
    /// The rules go first, so nothing is marked for routing that is gone; then the ip rules
    /// and per-uplink routes, unless another table's rules are in force and the routing is
    /// theirs (flush says so). Running it twice is fine. Needs CAP_NET_ADMIN (root).
    Flush {
        /// The spec file (JSON); `-` reads standard input.
        spec: PathBuf,
        /// Which rules to remove.
        #[arg(long, value_enum, default_value_t = Backend::Nftables)]
        backend: Backend,
    },
    /// Settle an apply that died halfway (kill -9, OOM) in this network namespace.
    ///
    /// apply changes the routing first, then commits the rules; it keeps a journal in
    /// /run/nftbalance while it does. If it died in between, this completes the routing when
    /// the rules had gone in, and puts the routing back as it was when they had not, so rules
    /// and routing match again. apply, flush and watch do the same on their own before they
    /// start. Needs CAP_NET_ADMIN (root).
    Recover,
    /// Print the ruleset a spec compiles to, without touching the system (a dry run).
    ///
    /// The nft output is a script that `nft -f` loads as one transaction replacing the tool's
    /// table (it creates the table when missing, deletes it and re-creates it), so loading it
    /// twice leaves one copy. The json output is the same in libnftables JSON (`nft -j -f`).
    Dump {
        /// The spec file (JSON); `-` reads standard input.
        spec: PathBuf,
        /// What to print.
        #[arg(long, short, value_enum, default_value_t = DumpFormat::Nft)]
        format: DumpFormat,
        #[command(flatten)]
        pair: ha_cmd::PairArgs,
    },
    /// Run by keepalived's notify on a VRRP transition of the router pair (spec `ha`).
    ///
    /// master: commit conntrackd's external cache (the connections the peer replicated, with
    /// their marks and NAT bindings) to the kernel, flush its caches, resync with the kernel,
    /// send a bulk update to the peer, then re-apply the spec (table and routing). backup:
    /// check conntrackd (`-s`) and request a resync from the peer (`-n`). fault: `-s`.
    /// Every step runs even when one fails; exit 2 if any did. `dump --format keepalived`
    /// writes the notify commands.
    Ha {
        /// The state keepalived reports.
        #[arg(value_enum)]
        state: ha_cmd::Transition,
        /// The spec file (JSON).
        spec: PathBuf,
        /// conntrackd's configuration file (`conntrackd -C`), which names its control socket.
        #[arg(long, default_value = "/etc/conntrackd/conntrackd.conf")]
        conntrackd_config: String,
        /// The conntrackd binary.
        #[arg(long, default_value = "/usr/sbin/conntrackd")]
        conntrackd: String,
    },
    /// Read legacy iptables rules, or an mwan3 configuration, and print the balancer they
    /// implement as a spec, or as nft.
    ///
    /// The spec goes to standard output, the report (what became of every input line or UCI
    /// option, with its file and line) to standard error.
    ///
    /// With `--from mwan3`, FILE is an OpenWrt /etc/config/mwan3: interfaces become gateways
    /// with their tracking, members and policies policies in tiers, rules selectors. The
    /// network side the file does not hold comes from `--define`: IFACE.device=DEV,
    /// IFACE.address=A, IFACE.via=A, IFACE.address6=A, IFACE.via6=A, IFACE.table=N per mwan3
    /// interface (two interfaces given one device become one dual-stack gateway), and
    /// exclude=PREFIX[,PREFIX] for your connected networks; what is not given is assumed and
    /// listed under "needs your input". Exit 2 when a rule mwan3 applies cannot be imported,
    /// naming it (`--partial` prints the spec without it).
    Translate(translate_cmd::TranslateArgs),
    /// Say what happens to a new connection now: the selector that matches, its policy and
    /// active tier, the gateway or the split it takes part in (each member's share), or the
    /// exclusion that keeps it on the main table; its mark, routing table, next hop and
    /// source address.
    ///
    /// The answer comes from the ruleset in force (the spec compiled for the gateways the
    /// running watch or the last apply gave new connections), walked rule by rule as the
    /// kernel walks it. With `--live`, lists the existing conntrack entries of the tuple and
    /// the uplink each is on, by its mark (needs CAP_NET_ADMIN).
    Explain(explain_cmd::ExplainArgs),
    /// Show what the shares per policy become when gateways go down, and how many live
    /// connections those gateways hold (flushed with `flush_conntrack`, else kept on them).
    ///
    /// Nothing changes. Counting connections needs CAP_NET_ADMIN; without it only the shares
    /// are shown.
    Simulate(explain_cmd::SimulateArgs),
    /// Print the JSON Schema of the spec, for editors to check and complete spec files.
    ///
    /// The schema (JSON Schema draft 2020-12) says every field, its type, its default and
    /// what it means. It checks each value on its own; what depends on other values (unique
    /// marks, known gateway names, a mark inside mark_mask) only nftbalance checks, so run
    /// `nftbalance dump SPEC` before `apply`. A spec may name the schema in a "$schema" key,
    /// which nftbalance ignores.
    Schema,
    /// Write the man pages, shell completions and schema the package ships into DIR.
    #[command(hide = true)]
    PackageFiles {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DumpFormat {
    /// nft script for `nft -f`.
    Nft,
    /// libnftables JSON for `nft -j -f`.
    Json,
    /// iptables-restore input for the legacy backend (IPv4 mangle and nat chains named
    /// NFTBALANCE-*, with one jump from each built-in chain).
    Iptables,
    /// The policy routing `apply` programs (ip rules, per-uplink tables), for review: an
    /// `ip -batch` section for IPv4 and an `ip -6 -batch` section for IPv6.
    Ip,
    /// keepalived.conf of one router of the pair (`--node`): VRRP instances with the
    /// floating addresses, notify commands running `nftbalance ha`.
    Keepalived,
    /// conntrackd.conf of one router of the pair (`--node`): FT-FW replication to the peer
    /// over the sync link.
    Conntrackd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    /// One nftables netlink transaction (the default).
    Nftables,
    /// The classic recipe as iptables-legacy chains, loaded with
    /// `iptables-legacy-restore --noflush`, for kernels without nftables. IPv4 only.
    IptablesLegacy,
}

mod ha_cmd;
mod package_files;
mod privilege;

// diff and apply at 100k rules build and free millions of small attribute buffers: glibc's
// malloc took 40% of diff's time there, mimalloc about a third of that (README, Dependencies).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
mod explain_cmd;
mod status;
mod translate_cmd;
mod watch;

/// Exit statuses: 0 ok, 1 a check found a difference, 2 an error.
pub(crate) const EXIT_DIFFERENT: u8 = 1;
/// Problems listed one a line before the rest are only counted (hostile input can have
/// millions).
const MAX_LISTED_PROBLEMS: usize = 100;
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nftbalance: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

impl Backend {
    fn kind(self) -> BackendKind {
        match self {
            Backend::Nftables => BackendKind::Nftables,
            Backend::IptablesLegacy => BackendKind::IptablesLegacy,
        }
    }
}

fn warn(m: &str) {
    eprintln!("nftbalance: warning: {m}");
}

fn note(m: &str) {
    eprintln!("nftbalance: {m}");
}

const SAY: Say<'static> = Say {
    note: &note,
    warn: &warn,
};

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Apply {
            spec,
            check,
            backend,
        } => {
            let (spec, source) = read_spec(&spec)?;
            privilege::require_net_admin("apply")?;
            // watch runs the hooks, but a spec naming a missing program is wrong as a whole.
            engine::hooks::check_hooks(&spec)?;
            let done = if check {
                engine::apply::check(&spec, backend.kind(), &SAY)?
            } else {
                engine::apply::apply(&spec, &source, backend.kind(), &SAY)?
            };
            println!("{}", done.summary);
        }
        Command::Diff { spec } => {
            let spec = load_spec(&spec)?;
            privilege::require_net_admin("diff")?;
            if let Some(w) = engine::apply::interrupted_warning(&spec) {
                warn(&w);
            }
            return diff(&spec);
        }
        Command::Watch {
            spec,
            state_file,
            metrics,
        } => watch::watch(&spec, state_file, metrics)?,
        Command::Status {
            spec,
            json,
            format,
            state_file,
        } => {
            let format = if json { status::Format::Json } else { format };
            return status::status(&spec, format, state_file.as_deref());
        }
        Command::Explain(args) => return explain_cmd::explain(&args),
        Command::Simulate(args) => return explain_cmd::simulate(&args),
        Command::Flush { spec, backend } => {
            let spec = load_spec(&spec)?;
            privilege::require_net_admin("flush")?;
            let f = engine::apply::flush(&spec, backend.kind(), &SAY)?;
            println!("{}", f.rules);
            match (f.routing, f.routing_owner) {
                (Some((rules, routes)), _) => {
                    println!("routing: removed {rules} ip rules and {routes} routes")
                }
                (None, owner) => println!(
                    "routing: left as it is: it belongs to {}",
                    owner.unwrap_or_default()
                ),
            }
        }
        Command::Translate(args) => return translate_cmd::run(&args),
        Command::Schema => {
            let mut text = serde_json::to_string_pretty(&nftbalance_spec::json_schema())?;
            text.push('\n');
            write_stdout(&text)?;
        }
        Command::PackageFiles { dir } => {
            for path in package_files::write(Cli::command(), &dir)? {
                println!("{}", path.display());
            }
        }
        Command::Recover => {
            privilege::require_net_admin("recover")?;
            let lines = engine::apply::recover(&SAY)?;
            if lines.is_empty() {
                println!("nothing to recover: no interrupted apply in this network namespace");
            }
            for l in lines {
                println!("{l}");
            }
        }
        Command::Ha {
            state,
            spec,
            conntrackd_config,
            conntrackd,
        } => return ha_cmd::transition(state, &spec, &conntrackd_config, &conntrackd),
        Command::Dump {
            spec: path,
            format,
            pair,
        } => {
            let text = match format {
                DumpFormat::Keepalived => {
                    ha_cmd::dump(&path, ha_cmd::PairFormat::Keepalived, &pair)?
                }
                DumpFormat::Conntrackd => {
                    ha_cmd::dump(&path, ha_cmd::PairFormat::Conntrackd, &pair)?
                }
                _ => dump_ruleset(&load_spec(&path)?, format)?,
            };
            write_stdout(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The ruleset or routing of a spec in one of the single-router formats.
fn dump_ruleset(spec: &Spec, format: DumpFormat) -> anyhow::Result<String> {
    let rs = ruleset::compile(spec);
    Ok(match format {
        DumpFormat::Nft => ruleset::nft::render(&rs),
        DumpFormat::Json => {
            let mut s = serde_json::to_string_pretty(&ruleset::json::render(&rs))?;
            s.push('\n');
            s
        }
        DumpFormat::Iptables => legacy::render(spec)?,
        DumpFormat::Ip => routing::render_ip_batch(&routing::plan(spec)),
        DumpFormat::Keepalived | DumpFormat::Conntrackd => {
            anyhow::bail!("{format:?} is a configuration of the pair, not a ruleset")
        }
    })
}

/// `diff`: exit 0 when the table and routing are the spec's, 1 with every difference.
fn diff(spec: &Spec) -> anyhow::Result<ExitCode> {
    let differences = engine::inspect::diff(spec)?;
    let table = format!("table {} {}", spec.family, spec.table);
    if differences.is_empty() {
        println!("{table}: same as the spec");
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!(
        "{table}: {} difference(s) from the spec\n",
        differences.len()
    );
    for d in &differences {
        text.push_str(&format!("  {d}\n"));
    }
    write_stdout(&text)?;
    Ok(ExitCode::from(EXIT_DIFFERENT))
}

/// Reads and validates a spec; every problem is listed, one a line, prefixed by the file.
pub(crate) fn load_spec(path: &Path) -> anyhow::Result<Spec> {
    read_spec(path).map(|(spec, _)| spec)
}

/// The largest spec read: 100k exclusion prefixes take about 3 MB, so this leaves room for
/// several times that while keeping hostile input (`yes |`, /dev/zero) from exhausting memory.
pub(crate) const MAX_SPEC_BYTES: u64 = 64 << 20;

/// Reads a whole input file (`-` is standard input), refusing one over `limit` bytes before
/// holding more than that in memory.
pub(crate) fn read_input(path: &Path, what: &str, limit: u64) -> anyhow::Result<String> {
    let shown = path.display();
    let (reader, size): (Box<dyn Read>, u64) = if path == Path::new("-") {
        (Box::new(io::stdin()), 0)
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("reading {what} {shown}"))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(file), size)
    };
    // Sized from the start: `take` hides the size, and growing a large spec by doubling
    // copies it several times over.
    let mut bytes = Vec::with_capacity(usize::try_from(size.min(limit + 1)).unwrap_or(0));
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what} {shown}"))?;
    if bytes.len() as u64 > limit {
        anyhow::bail!(
            "{what} {shown} is larger than {} MiB; nftbalance reads at most that much",
            limit >> 20
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} {shown} is not valid UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// [`load_spec`], and the text it was read from.
pub(crate) fn read_spec(path: &Path) -> anyhow::Result<(Spec, String)> {
    let shown = path.display();
    let text = read_input(path, "spec", MAX_SPEC_BYTES)?;
    let mut lists = FileLists {
        dir: match path.parent() {
            Some(d) if path != Path::new("-") => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        },
    };
    let (spec, written_out) = Spec::from_json_with_lists(&text, &mut lists).map_err(|errors| {
        let count = errors.0.len();
        let mut lines: Vec<String> = errors
            .0
            .iter()
            .take(MAX_LISTED_PROBLEMS)
            .map(|e| format!("{shown}: {e}"))
            .collect();
        if count > MAX_LISTED_PROBLEMS {
            lines.push(format!(
                "{shown}: ... and {} more",
                count - MAX_LISTED_PROBLEMS
            ));
        }
        let head = if count == 1 {
            "invalid spec".to_string()
        } else {
            format!("invalid spec ({count} problems)")
        };
        anyhow::anyhow!("{head}\n{}", lines.join("\n"))
    })?;
    // With lists from files, what was applied is the text with the lists written out.
    Ok((spec, written_out.unwrap_or(text)))
}

/// The lists of `"@PATH"` entries: files, a relative PATH taken from the spec's directory.
struct FileLists {
    dir: std::path::PathBuf,
}

impl nftbalance_spec::lists::ListSource for FileLists {
    fn open(&mut self, name: &str) -> io::Result<Box<dyn io::BufRead + '_>> {
        let file = std::fs::File::open(self.dir.join(name))?;
        Ok(Box::new(io::BufReader::with_capacity(64 << 10, file)))
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to standard output"),
    }
}
