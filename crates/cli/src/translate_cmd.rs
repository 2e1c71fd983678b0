//! `nftbalance translate`: legacy iptables rules or an mwan3 configuration -> spec (stdout)
//! and report (stderr).

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use nftbalance_translate as translate;

/// Read legacy iptables rules and print the balancer they implement as a spec, or as nft.
///
/// The input is iptables-save output, or a shell script with iptables, iptables-legacy,
/// /sbin/iptables or $IPT lines and its `ip rule` / `ip route` lines.
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
    /// The rules: iptables-save output or a shell script (`--from mwan3`: one UCI file);
    /// `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// What FILE holds.
    #[arg(long, value_enum, default_value_t = From::Iptables)]
    from: From,
    /// Print the spec even when some rules mark connections in a way it does not reproduce
    /// (iptables), or could not be imported (`--from mwan3`); they are listed in the report.
    /// Without it, that is an error (exit 2).
    #[arg(long)]
    partial: bool,
    /// What to print.
    #[arg(long, value_enum, default_value_t = To::Spec)]
    to: To,
    /// With `--to nft`: recognise nothing, translate every rule rule by rule.
    #[arg(long)]
    literal: bool,
    /// Give a shell variable the script uses but does not set (repeatable). With
    /// `--from mwan3`: IFACE.KEY=VALUE (keys device, address, via, address6, via6, table) or
    /// exclude=PREFIX[,PREFIX].
    #[arg(long = "define", short = 'D', value_name = "NAME=VALUE")]
    defines: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum From {
    /// iptables-save output or shell scripts with iptables and ip lines.
    Iptables,
    /// An OpenWrt mwan3 configuration (/etc/config/mwan3).
    Mwan3,
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
    if args.from == From::Mwan3 {
        return mwan3(args);
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
    print_out(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn print_out(out: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to standard output"),
    }
}

/// `--from mwan3`: one UCI file -> spec (or nft) on stdout, report on stderr.
fn mwan3(args: &TranslateArgs) -> anyhow::Result<ExitCode> {
    use nftbalance_mwan3 as mwan3;
    let [file] = &args.files[..] else {
        anyhow::bail!("--from mwan3 reads one file (/etc/config/mwan3)");
    };
    let name = file.display().to_string();
    // One byte past the limit, so that the parser reports the file as too long.
    let limit = mwan3::uci::MAX_INPUT as u64 + 1;
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("reading {name}"))?;
        f.take(limit).read_to_end(&mut bytes)
    }
    .with_context(|| format!("reading {name}"))?;
    let text = String::from_utf8(bytes).with_context(|| format!("{name} is not UTF-8 text"))?;
    let net = mwan3::network::parse(&args.defines)?;
    let import = mwan3::import(&name, &text, &net)?;
    eprint!("{}", import.report);
    let dropped: Vec<String> = (import.report.dropped())
        .map(|e| format!("  {}: {}", e.loc, e.text))
        .collect();
    if !dropped.is_empty() && !args.partial {
        anyhow::bail!(
            "{} value(s) of rules mwan3 applies could not be imported (listed above as NOT \
             IMPORTED); nothing printed. --partial prints the spec without them:\n{}",
            dropped.len(),
            dropped.join("\n")
        );
    }
    let out = match args.to {
        To::Spec => {
            let mut s = serde_json::to_string_pretty(&import.spec)?;
            s.push('\n');
            s
        }
        To::Nft => nftbalance_ruleset::nft::render(&nftbalance_ruleset::compile(&import.spec)),
    };
    print_out(&out)?;
    Ok(ExitCode::SUCCESS)
}
