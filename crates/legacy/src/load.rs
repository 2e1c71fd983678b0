//! Loading the rendered chains with `iptables-legacy-restore --noflush`: the one place the
//! product runs an external program, because that is the stable interface of the legacy
//! tables. Each table's change is one restore transaction (one kernel replace per table).

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use nftbalance_spec::Spec;

use crate::render::{render_with, LegacyError, CHAIN_PREFIX};

/// Root's tools live in sbin, which a service's PATH may lack.
const PATH: &str = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Unsupported(#[from] LegacyError),
    #[error("cannot run {program}: {source} (install the iptables package)")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("{program} refused the rules: {stderr}")]
    Refused {
        program: &'static str,
        stderr: String,
    },
}

const TABLES: [&str; 2] = ["mangle", "nat"];

/// The tool's chains and jump rules as they are now, per table.
#[derive(Debug, Default)]
struct Current {
    /// (table, chain) of every chain with the tool's prefix.
    chains: Vec<(String, String)>,
    /// (table, built-in chain, own chain) of every jump into the tool's chains.
    jumps: Vec<(String, String, String)>,
}

fn run(program: &'static str, args: &[&str], input: Option<&str>) -> Result<String, LoadError> {
    let mut child = Command::new(program)
        .args(args)
        .env("PATH", PATH)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LoadError::Spawn { program, source })?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A failed write shows up as the program's own error below.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| LoadError::Spawn { program, source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let stderr = if stderr.contains("Permission denied") || stderr.contains("you must be root")
        {
            format!("{stderr} (changing iptables needs CAP_NET_ADMIN: run as root)")
        } else {
            stderr
        };
        return Err(LoadError::Refused { program, stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn current() -> Result<Current, LoadError> {
    let mut c = Current::default();
    for table in TABLES {
        let text = run("iptables-legacy-save", &["-t", table], None)?;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(':') {
                let name = rest.split_whitespace().next().unwrap_or("");
                if name.starts_with(CHAIN_PREFIX) {
                    c.chains.push((table.into(), name.into()));
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let words: Vec<&str> = rest.split_whitespace().collect();
                if let [from, "-j", to] = words.as_slice() {
                    if !from.starts_with(CHAIN_PREFIX) && to.starts_with(CHAIN_PREFIX) {
                        c.jumps.push((table.into(), (*from).into(), (*to).into()));
                    }
                }
            }
        }
    }
    Ok(c)
}

/// The restore input that turns the current state into the spec's: the rendered rules, minus
/// jump rules that already exist, plus the removal of the tool's chains the spec no longer has.
fn replacement(
    spec: &Spec,
    unavailable: &BTreeSet<String>,
    now: &Current,
) -> Result<String, LoadError> {
    let rendered = render_with(spec, unavailable)?;
    let mut out = String::new();
    let mut table = String::new();
    let mut declared: Vec<String> = Vec::new();
    let mut sections_seen: Vec<String> = Vec::new();
    for line in rendered.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
            sections_seen.push(table.clone());
        }
        if line == "COMMIT" {
            out.push_str(&removals(&table, now, &declared));
            declared.clear();
        }
        if let Some(rest) = line.strip_prefix(':') {
            declared.push(rest.split_whitespace().next().unwrap_or("").to_string());
        }
        if let Some(rest) = line.strip_prefix("-A ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [from, "-j", to] = words.as_slice() {
                let exists = now
                    .jumps
                    .iter()
                    .any(|(t, f, j)| *t == table && f == from && j == to);
                if exists {
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    // Tables the spec no longer uses (snat switched off) lose the tool's chains too.
    for t in TABLES {
        if !sections_seen.iter().any(|s| s == t) {
            let r = removals(t, now, &[]);
            if !r.is_empty() {
                out.push_str(&format!("*{t}\n{r}COMMIT\n"));
            }
        }
    }
    Ok(out)
}

/// Lines removing the tool's chains of `table` that are not in `keep`, with their jumps.
fn removals(table: &str, now: &Current, keep: &[String]) -> String {
    let mut out = String::new();
    let stale: Vec<&String> = now
        .chains
        .iter()
        .filter(|(t, c)| t == table && !keep.contains(c))
        .map(|(_, c)| c)
        .collect();
    for (t, from, to) in &now.jumps {
        if t == table && stale.contains(&to) {
            out.push_str(&format!("-D {from} -j {to}\n"));
        }
    }
    for c in &stale {
        out.push_str(&format!("-F {c}\n"));
    }
    for c in &stale {
        out.push_str(&format!("-X {c}\n"));
    }
    out
}

/// Replaces the tool's chains and jump rules, the `unavailable` gateways left out of the
/// split; `check` only lets iptables test the input.
pub fn apply(spec: &Spec, unavailable: &BTreeSet<String>, check: bool) -> Result<(), LoadError> {
    let input = replacement(spec, unavailable, &current()?)?;
    let mut args = vec!["--noflush"];
    if check {
        args.push("--test");
    }
    run("iptables-legacy-restore", &args, Some(&input))?;
    Ok(())
}

/// Whether any chain with the tool's prefix exists.
pub fn installed() -> Result<bool, LoadError> {
    Ok(!current()?.chains.is_empty())
}

/// Removes every chain with the tool's prefix and the jumps into them. Twice is fine.
pub fn flush() -> Result<(), LoadError> {
    let now = current()?;
    let mut input = String::new();
    for t in TABLES {
        let r = removals(t, &now, &[]);
        if !r.is_empty() {
            input.push_str(&format!("*{t}\n{r}COMMIT\n"));
        }
    }
    if !input.is_empty() {
        run("iptables-legacy-restore", &["--noflush"], Some(&input))?;
    }
    Ok(())
}
