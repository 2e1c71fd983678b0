//! The names and free-text values an iptables command brings in, checked (with
//! `nftbalance_spec::name`) as the command is read, so no later stage sees one that could
//! break out of nft text. A refusal names the line: nothing is translated around it.

use nftbalance_spec::name::{self, NameError};

use crate::error::{Loc, TranslateError};
use crate::iptables::{Command, Match, Rule, Target};

fn refuse(loc: &Loc, option: &str, value: &str, e: NameError) -> TranslateError {
    TranslateError::Option {
        loc: loc.clone(),
        option: option.to_string(),
        message: format!("{} {e}", shown(value)),
    }
}

/// The value as a message shows it: escaped, and cut short when huge.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(64).collect();
    if cut.len() < value.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

fn check(
    loc: &Loc,
    option: &str,
    value: &str,
    r: Result<(), NameError>,
) -> Result<(), TranslateError> {
    r.map_err(|e| refuse(loc, option, value, e))
}

/// A chain policy: iptables knows ACCEPT and DROP (and `-` for a user chain in a save file).
pub fn policy(loc: &Loc, option: &str, policy: &str) -> Result<(), TranslateError> {
    match policy {
        "ACCEPT" | "DROP" | "-" => Ok(()),
        p => Err(TranslateError::Option {
            loc: loc.clone(),
            option: option.to_string(),
            message: format!("{} is not a policy (ACCEPT or DROP)", shown(p)),
        }),
    }
}

/// A chain name (`-N`, `-A`, `:NAME` in a save file, a jump target).
pub fn chain(loc: &Loc, option: &str, chain: &str) -> Result<(), TranslateError> {
    check(loc, option, chain, name::chain(chain))
}

/// Every name and free-text value of one command.
pub fn command(loc: &Loc, command: &Command) -> Result<(), TranslateError> {
    match command {
        Command::Append { chain: c, rules }
        | Command::Insert {
            chain: c, rules, ..
        } => {
            let opt = if matches!(command, Command::Append { .. }) {
                "-A"
            } else {
                "-I"
            };
            chain(loc, opt, c)?;
            rules.iter().try_for_each(|r| rule(loc, r))
        }
        Command::NewChain(c) => chain(loc, "-N", c),
        Command::Policy {
            chain: c,
            policy: p,
        } => {
            chain(loc, "-P", c)?;
            policy(loc, "-P", p)
        }
        Command::Flush(Some(c)) => chain(loc, "-F", c),
        Command::DeleteChain(Some(c)) => chain(loc, "-X", c),
        Command::Flush(None) | Command::DeleteChain(None) | Command::Zero => Ok(()),
    }
}

fn rule(loc: &Loc, r: &Rule) -> Result<(), TranslateError> {
    if let Some(p) = &r.protocol {
        // Protocol names and numbers (/etc/protocols): plain words nft reads as such.
        let plain = !p.value.is_empty()
            && p.value.len() <= 32
            && p.value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !plain {
            return Err(TranslateError::Option {
                loc: loc.clone(),
                option: "-p".into(),
                message: format!("{} is not a protocol name or number", shown(&p.value)),
            });
        }
    }
    if let Some(i) = &r.iif {
        check(loc, "-i", &i.value, name::interface_pattern(&i.value))?;
    }
    if let Some(o) = &r.oif {
        check(loc, "-o", &o.value, name::interface_pattern(&o.value))?;
    }
    for m in &r.matches {
        if let Match::Comment(c) = m {
            check(
                loc,
                "--comment",
                c,
                name::text(c, name::IPTABLES_COMMENT_MAX),
            )?;
        }
    }
    target(loc, r.target.as_ref())
}

fn target(loc: &Loc, t: Option<&Target>) -> Result<(), TranslateError> {
    // Addresses and port ranges: `1.2.3.4-1.2.3.9:1000-2000` has no other characters.
    let address = |option: &str, v: &str, extra: &[char]| {
        if v.chars().all(|c| c.is_ascii_digit() || extra.contains(&c)) {
            Ok(())
        } else {
            Err(TranslateError::Option {
                loc: loc.clone(),
                option: option.to_string(),
                message: format!("{} is not an address or port range", shown(v)),
            })
        }
    };
    match t {
        Some(Target::Jump(c)) => chain(loc, "-j", c),
        Some(Target::Goto(c)) => chain(loc, "-g", c),
        Some(Target::Log {
            prefix: Some(p), ..
        }) => check(loc, "--log-prefix", p, name::text(p, name::LOG_PREFIX_MAX)),
        Some(Target::Snat(to) | Target::Dnat(to)) => address("--to", to, &['.', ':', '-']),
        Some(Target::Masquerade(Some(p)) | Target::Redirect(Some(p))) => {
            address("--to-ports", p, &['-'])
        }
        _ => Ok(()),
    }
}
