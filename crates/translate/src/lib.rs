//! `nftbalance translate`: legacy iptables rules (iptables-save output or shell scripts with
//! their `ip rule`/`ip route` lines) read as a balancer spec, or as exact nft rule by rule.
//!
//! Pure: reads only the text it is given; no syscalls, environment or clock.

mod error;
mod eval;
pub mod iptables;
mod names;
mod nft;
mod recognise;
mod report;
pub mod script;
pub mod shell;

use std::collections::{BTreeMap, BTreeSet};

use nftbalance_spec::Spec;

pub use error::{Loc, TranslateError};
pub use report::{Entry, Report, What};
pub use script::{Input, Script};

/// `NAME=VALUE` strings (from `--define`) as a variable map.
pub fn defines<S: AsRef<str>>(items: &[S]) -> Result<BTreeMap<String, String>, TranslateError> {
    let mut out = BTreeMap::new();
    for d in items {
        let d = d.as_ref();
        match d.split_once('=') {
            Some((n, v))
                if !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                out.insert(n.to_string(), v.to_string());
            }
            _ => return Err(TranslateError::Define(d.to_string())),
        }
    }
    Ok(out)
}

/// Most bytes translate reads, all inputs together. An iptables-save of a router with 100,000
/// rules is about 10 MiB; the parser holds a few times its input.
pub const MAX_INPUT: usize = 16 * 1024 * 1024;
/// Most lines translate reads, all inputs together: each line costs about half a KiB of
/// parse tree and report, so 200,000 (twice that 100,000-rule router) stay near 100 MiB.
pub const MAX_LINES: usize = 200_000;

/// Reads the inputs into tables, ip rules and routes (the parser; the fuzz target's entry).
pub fn parse(
    inputs: &[Input<'_>],
    defines: &BTreeMap<String, String>,
) -> Result<Script, TranslateError> {
    if inputs.iter().map(|i| i.text.len()).sum::<usize>() > MAX_INPUT {
        return Err(TranslateError::InputLimit { limit: MAX_INPUT });
    }
    script::read(inputs, defines)
}

/// `--to spec`: the balancer as a spec, and the report.
pub fn to_spec(
    inputs: &[Input<'_>],
    defines: &BTreeMap<String, String>,
) -> Result<(Spec, Report), TranslateError> {
    let script = parse(inputs, defines)?;
    let mut report = Report::default();
    let rec = recognise::recognise(&script, &mut report)?;
    report.finish(&script);
    Ok((rec.spec, report))
}

/// `--to nft`: the recognised balancer compiled from its spec, then every other rule rule by
/// rule. With `literal`, nothing is recognised: every rule is translated rule by rule.
pub fn to_nft(
    inputs: &[Input<'_>],
    defines: &BTreeMap<String, String>,
    literal: bool,
) -> Result<(String, Report), TranslateError> {
    let script = parse(inputs, defines)?;
    let mut report = Report::default();
    // About the input's size; reserved once rather than grown by doubling and copying.
    let mut out = String::with_capacity(inputs.iter().map(|i| i.text.len()).sum::<usize>() * 5 / 4);
    if literal {
        nft::literal(&script, &BTreeSet::new(), &mut out)?;
        finish(script, &mut report);
        return Ok((out, report));
    }
    let rec = match recognise::recognise(&script, &mut report) {
        Ok(rec) => rec,
        // No balancer: everything is translated rule by rule.
        Err(TranslateError::NoBalancer(why)) => {
            let mut report = Report::default();
            report.note(format!(
                "no balancer recognised ({why}): every rule is translated rule by rule"
            ));
            nft::literal(&script, &BTreeSet::new(), &mut out)?;
            finish(script, &mut report);
            return Ok((out, report));
        }
        Err(e) => return Err(e),
    };
    out.push_str(&nftbalance_ruleset::nft::render(
        &nftbalance_ruleset::compile(&rec.spec),
    ));
    let head = out.len();
    out.push_str("\n# Rules outside the balancer, rule by rule (same tables, chains and order as the input).\n");
    let body = out.len();
    nft::literal(&script, &rec.consumed, &mut out)?;
    if out.len() == body {
        out.truncate(head);
    }
    drop(rec);
    finish(script, &mut report);
    Ok((out, report))
}

/// The report's entries, after the parsed rules are freed: the report needs only the lines,
/// and the rules and their entries together were most of translate's peak memory.
fn finish(mut script: Script, report: &mut Report) {
    script.tables = Vec::new();
    report.finish(&script);
}
