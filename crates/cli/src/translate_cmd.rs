//! `nftbalance translate`: legacy iptables rules -> spec (stdout) and report (stderr).

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use nftbalance_translate as translate;

/// Read iptables rules (iptables-save output, or a shell script with iptables, iptables-legacy,
/// /sbin/iptables or $IPT lines and its `ip rule` / `ip route` lines) and print the balancer
/// they implement as a spec (JSON), or as nft text.
///
/// The spec goes to standard output; the report to standard error: which input lines became
/// which part of the spec, which were redundant, and every line outside the model, with its
/// file and line. Several FILEs are read in order as one input (for example an
/// iptables-save capture and the script with its ip lines). Exit status 0 when translated
/// (the spec does everything the input's marking did), 2 when something cannot be read or
/// translated exactly, or when a rule marks connections in a way the spec does not
/// (`--partial` prints the spec anyway): nothing is dropped silently.
#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// The rules: iptables-save output or a shell script; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// What to print.
    #[arg(long, value_enum, default_value_t = To::Spec)]
    to: To,
    /// With `--to nft`: recognise nothing, translate every rule rule by rule.
    #[arg(long)]
    literal: bool,
    /// Print the spec even when some rules mark connections in a way it does not reproduce
    /// (they are listed in the report). Without it, that is an error (exit 2).
    #[arg(long)]
    partial: bool,
    /// Give a shell variable the script uses but does not set (repeatable).
    #[arg(long = "define", short = 'D', value_name = "NAME=VALUE")]
    defines: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum To {
    /// The balancer as an nftbalance spec (JSON).
    Spec,
    /// nft commands: the balancer compiled from its spec, every other rule rule by rule.
    Nft,
}

/// Reads at most `left` bytes (the inputs share translate's limit), so `yes | nftbalance
/// translate -` stops at the limit instead of filling memory.
fn bounded(input: impl Read, left: &mut usize) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    input.take(*left as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > *left {
        anyhow::bail!(
            "the input is longer than {} bytes, translate's limit",
            translate::MAX_INPUT
        );
    }
    *left -= bytes.len();
    String::from_utf8(bytes).context("the input is not UTF-8 text")
}

pub fn run(args: &TranslateArgs) -> anyhow::Result<ExitCode> {
    if args.literal && args.to != To::Nft {
        anyhow::bail!("--literal needs --to nft");
    }
    let mut texts = Vec::new();
    let mut left = translate::MAX_INPUT;
    for f in &args.files {
        let text = if f.as_os_str() == "-" {
            bounded(io::stdin().lock(), &mut left).context("reading standard input")?
        } else {
            let file =
                std::fs::File::open(f).with_context(|| format!("reading {}", f.display()))?;
            bounded(file, &mut left).with_context(|| format!("reading {}", f.display()))?
        };
        texts.push((f.display().to_string(), text));
    }
    let inputs: Vec<translate::Input<'_>> = texts
        .iter()
        .map(|(name, text)| translate::Input { name, text })
        .collect();
    let defines = translate::defines(&args.defines)?;
    let (out, report) = match args.to {
        To::Spec => {
            let (spec, report) = translate::to_spec(&inputs, &defines)?;
            let mut s = serde_json::to_string_pretty(&spec)?;
            s.push('\n');
            (s, report)
        }
        To::Nft => translate::to_nft(&inputs, &defines, args.literal)?,
    };
    // Buffered: a report of 100,000 lines would otherwise be 100,000 unbuffered writes.
    let mut stderr = io::BufWriter::new(io::stderr().lock());
    write!(stderr, "{report}")
        .and_then(|()| stderr.flush())
        .context("writing the report")?;
    drop(stderr);
    let marking: Vec<String> = report.marking().map(|e| e.loc.to_string()).collect();
    if !marking.is_empty() && !args.partial {
        eprintln!(
            "error: these rules mark connections in a way the spec does not reproduce: {} (--partial prints the spec anyway)",
            marking.join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        r => r.context("writing to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}
