//! The `nftbalance` command: argument parsing and output, over the library crates.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use nftbalance_ruleset as ruleset;
use nftbalance_spec::Spec;

/// Spread new outgoing connections of a multi-uplink router across its uplinks, keep every
/// connection on the uplink it started on, and answer inbound connections through the uplink
/// they arrived on, natively on nftables, from one JSON spec.
#[derive(Debug, Parser)]
#[command(name = "nftbalance", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the ruleset a spec compiles to, without touching the system (a dry run).
    ///
    /// The nft output is a script that `nft -f` loads as one transaction replacing the tool's
    /// table (it creates the table when missing, deletes it and re-creates it), so loading it
    /// twice leaves one copy. The json output is the same in libnftables JSON (`nft -j -f`).
    Dump {
        /// The spec file (JSON); `-` reads standard input.
        spec: PathBuf,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = DumpFormat::Nft)]
        format: DumpFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DumpFormat {
    /// nft script for `nft -f`.
    Nft,
    /// libnftables JSON for `nft -j -f`.
    Json,
}

/// Exit statuses: 0 ok, 1 a check found a difference, 2 an error.
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dump { spec, format } => {
            let spec = load_spec(&spec)?;
            let rs = ruleset::compile(&spec);
            let text = match format {
                DumpFormat::Nft => ruleset::nft::render(&rs),
                DumpFormat::Json => {
                    let mut s = serde_json::to_string_pretty(&ruleset::json::render(&rs))?;
                    s.push('\n');
                    s
                }
            };
            write_stdout(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads and validates a spec; every problem is listed, one a line, prefixed by the file.
fn load_spec(path: &Path) -> anyhow::Result<Spec> {
    let shown = path.display();
    let text = if path == Path::new("-") {
        let mut s = String::new();
        io::stdin()
            .read_to_string(&mut s)
            .context("reading the spec from standard input")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading spec {shown}"))?
    };
    Spec::from_json(&text).map_err(|errors| {
        let lines: Vec<String> = errors.0.iter().map(|e| format!("{shown}: {e}")).collect();
        let count = lines.len();
        let head = if count == 1 {
            "invalid spec".to_string()
        } else {
            format!("invalid spec ({count} problems)")
        };
        anyhow::anyhow!("{head}\n{}", lines.join("\n"))
    })
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to standard output"),
    }
}
