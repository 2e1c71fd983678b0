//! Rule by rule: iptables rules as nft commands in tables and chains of the same names, with
//! the kernel's exact mark semantics. What cannot be translated exactly is an error.

use std::collections::BTreeSet;
use std::fmt::Write;

use nftbalance_spec::name;

use crate::error::{Loc, TranslateError};
use crate::iptables::{Dir, Match, Neg, Rule, Target};
use crate::recognise::RuleId;
use crate::script::{LineKind, RuleAt, Script, Table};

fn base_chain(table: &str, chain: &str) -> Option<(&'static str, &'static str, i32)> {
    let hook = match chain {
        "PREROUTING" => "prerouting",
        "INPUT" => "input",
        "FORWARD" => "forward",
        "OUTPUT" => "output",
        "POSTROUTING" => "postrouting",
        _ => return None,
    };
    Some(match table {
        "filter" => ("filter", hook, 0),
        "mangle" if chain == "OUTPUT" => ("route", hook, -150),
        "mangle" => ("filter", hook, -150),
        "nat" if matches!(chain, "PREROUTING" | "OUTPUT") => ("nat", hook, -100),
        "nat" => ("nat", hook, 100),
        "raw" => ("filter", hook, -300),
        _ => return None,
    })
}

fn err(loc: &Loc, option: &str, message: &str) -> TranslateError {
    TranslateError::Option {
        loc: loc.clone(),
        option: option.to_string(),
        message: message.to_string(),
    }
}

/// Appends to `out` the nft commands for every rule not in `skip`, in tables and chains
/// named as in iptables. With an empty `skip` this is the whole input, rule by rule. Written
/// into the caller's text so a 100,000-rule translation is never copied whole.
pub fn literal(
    script: &Script,
    skip: &BTreeSet<RuleId>,
    out: &mut String,
) -> Result<(), TranslateError> {
    for l in &script.lines {
        if let LineKind::Untranslatable(u) = &l.kind {
            return Err(err(&l.loc, &u.option, &u.message));
        }
    }
    let whole = skip.is_empty();
    for table in &script.tables {
        let skipped: std::collections::BTreeMap<&str, BTreeSet<usize>> = skip
            .iter()
            .filter(|(t, _, _)| *t == table.name)
            .fold(Default::default(), |mut m, (_, c, i)| {
                m.entry(c.as_str()).or_insert_with(BTreeSet::new).insert(*i);
                m
            });
        let foreign = |c: &str, i: usize| !skipped.get(c).is_some_and(|s| s.contains(&i));
        // Chains to declare: all (whole input), else those with foreign rules, those they
        // jump to, and built-in chains with a policy other than ACCEPT.
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for c in &table.chains {
            let has = c.rules.iter().enumerate().any(|(i, _)| foreign(&c.name, i));
            let policy = c.policy.as_deref().is_some_and(|p| p != "ACCEPT");
            if whole || has || policy {
                wanted.insert(c.name.clone());
            }
        }
        let mut more: Vec<String> = wanted.iter().cloned().collect();
        while let Some(c) = more.pop() {
            let Some(ch) = table.chain(&c) else { continue };
            for (i, r) in ch.rules.iter().enumerate() {
                if !foreign(&c, i) {
                    continue;
                }
                if let Some(Target::Jump(t) | Target::Goto(t)) = &r.rule.target {
                    if table.chain(t).is_none() {
                        return Err(err(
                            &r.loc,
                            &format!("-j {t}"),
                            "jumps to a chain the input never creates",
                        ));
                    }
                    if skipped.contains_key(t.as_str()) && !whole {
                        return Err(err(&r.loc, &format!("-j {t}"), "jumps to a chain that became part of the spec; this rule cannot be kept rule by rule (use --literal to translate everything rule by rule)"));
                    }
                    if wanted.insert(t.clone()) {
                        more.push(t.clone());
                    }
                }
            }
        }
        if wanted.is_empty() {
            continue;
        }
        writeln!(out, "add table ip {}", table.name).expect("string");
        for c in table.chains.iter().filter(|c| wanted.contains(&c.name)) {
            match (c.builtin, base_chain(&table.name, &c.name)) {
                (true, Some((ty, hook, prio))) => {
                    let policy = c.policy.as_deref().unwrap_or("ACCEPT").to_ascii_lowercase();
                    writeln!(
                        out,
                        "add chain ip {} {} {{ type {ty} hook {hook} priority {prio}; policy {policy}; }}",
                        table.name, c.name
                    )
                    .expect("string");
                }
                _ => writeln!(out, "add chain ip {} {}", table.name, c.name).expect("string"),
            }
        }
        for c in table.chains.iter().filter(|c| wanted.contains(&c.name)) {
            for (i, r) in c.rules.iter().enumerate() {
                if foreign(&c.name, i) {
                    let text = rule(table, r)?;
                    writeln!(out, "add rule ip {} {} {text}", table.name, c.name).expect("string");
                }
            }
        }
    }
    Ok(())
}

fn not(neg: bool) -> &'static str {
    if neg {
        "!= "
    } else {
        ""
    }
}

fn mask_match(what: &str, neg: bool, value: u32, mask: u32) -> String {
    if mask == u32::MAX {
        format!("{what} {}{value:#x}", not(neg))
    } else {
        let op = if neg { "!=" } else { "==" };
        format!("{what} and {mask:#x} {op} {value:#x}")
    }
}

/// `reg = (reg & !mask) ^ value` in nft: `and` before `xor`, as the kernel's bitwise does it.
fn set_masked(stmt: &str, reg: &str, value: u32, mask: u32) -> String {
    match (mask, value) {
        (u32::MAX, v) => format!("{stmt} set {v:#x}"),
        (0, v) => format!("{stmt} set {reg} xor {v:#x}"),
        (m, 0) => format!("{stmt} set {reg} and {:#x}", !m),
        (m, v) => format!("{stmt} set {reg} and {:#x} xor {v:#x}", !m),
    }
}

/// One rule in nft words, in the order iptables-translate uses (so both load alike).
pub fn rule(table: &Table, r: &RuleAt) -> Result<String, TranslateError> {
    let loc = &r.loc;
    if let Some(u) = &r.rule.unsupported {
        return Err(err(loc, &u.option, &u.message));
    }
    let mut parts = header_words(&r.rule);
    let comment = match_words(&r.rule, loc, &mut parts)?;
    parts.push("counter".into());
    if let Some(t) = &r.rule.target {
        parts.push(target_words(table, t, loc)?);
    }
    if let Some(c) = comment {
        parts.push(format!("comment {}", name::nft_quoted(&c)));
    }
    Ok(parts.join(" "))
}

/// Interfaces, addresses and the protocol, as iptables-translate writes them.
fn header_words(r: &Rule) -> Vec<String> {
    let Rule {
        protocol,
        src,
        dst,
        iif,
        oif,
        matches,
        ..
    } = r;
    let mut parts: Vec<String> = Vec::new();
    if let Some(Neg { neg, value }) = iif {
        parts.push(format!(
            "iifname {}{}",
            not(*neg),
            name::nft_interface(value)
        ));
    }
    if let Some(Neg { neg, value }) = oif {
        parts.push(format!(
            "oifname {}{}",
            not(*neg),
            name::nft_interface(value)
        ));
    }
    let net = |n: &ipnet::Ipv4Net| {
        if n.prefix_len() == 32 {
            n.addr().to_string()
        } else {
            n.to_string()
        }
    };
    if let Some(Neg { neg, value }) = src {
        parts.push(format!("ip saddr {}{}", not(*neg), net(value)));
    }
    if let Some(Neg { neg, value }) = dst {
        parts.push(format!("ip daddr {}{}", not(*neg), net(value)));
    }
    let single_port = matches.iter().any(|m| {
        matches!(
            m,
            Match::Ports {
                multiport: false,
                ..
            }
        )
    });
    if let Some(Neg { neg, value }) = protocol {
        if value != "all" && (*neg || !single_port) {
            parts.push(format!("ip protocol {}{value}", not(*neg)));
        }
    }
    parts
}

/// The match modules' words, appended to `parts`; the comment, which nft puts last.
fn match_words(
    r: &Rule,
    loc: &Loc,
    parts: &mut Vec<String>,
) -> Result<Option<String>, TranslateError> {
    let l4 = r
        .protocol
        .as_ref()
        .filter(|p| !p.neg)
        .map(|p| p.value.as_str());
    let mut comment = None;
    for m in &r.matches {
        match m {
            Match::Ports { dir, neg, ports, multiport } => {
                let Some(p @ ("tcp" | "udp")) = l4 else {
                    return Err(err(loc, "--dport/--sport", "ports need -p tcp or -p udp"));
                };
                let field = if *dir == Dir::Dst { "dport" } else { "sport" };
                let list: Vec<String> = ports.iter().map(|x| x.nft()).collect();
                let v = if *multiport { format!("{{ {} }}", list.join(", ")) } else { list.join(", ") };
                parts.push(format!("{p} {field} {}{v}", not(*neg)));
            }
            Match::State { neg, states } => {
                let s: Vec<&str> = states.iter().map(|s| s.nft()).collect();
                parts.push(format!("ct state {}{}", if *neg { "! " } else { "" }, s.join(",")));
            }
            Match::Connmark { neg, value, mask } => parts.push(mask_match("ct mark", *neg, *value, *mask)),
            Match::Mark { neg, value, mask } => parts.push(mask_match("meta mark", *neg, *value, *mask)),
            Match::Nth { neg, every, packet } => {
                parts.push(format!("numgen inc mod {every} {}{packet}", not(*neg)))
            }
            Match::Random { neg, probability } => {
                let x = (probability * 2_147_483_648.0).round() as u64;
                let op = if *neg { ">=" } else { "<" };
                parts.push(format!("meta random & 2147483647 {op} {x}"));
            }
            // Characters were checked as the line was read; nft keeps fewer bytes than iptables.
            Match::Comment(c) if c.len() > name::NFT_COMMENT_MAX => {
                return Err(err(loc, "--comment", &format!("nft keeps at most {} bytes of a comment", name::NFT_COMMENT_MAX)));
            }
            Match::Comment(c) => comment = Some(c.clone()),
            Match::Recent { .. } => {
                return Err(err(loc, "-m recent", "xt_recent lists have no exact nft translation (nftbalance's sticky does this with dynamic sets)"))
            }
        }
    }
    Ok(comment)
}

/// The target's words.
fn target_words(table: &Table, target: &Target, loc: &Loc) -> Result<String, TranslateError> {
    let nat = table.name == "nat";
    let words = match target {
        Target::Accept => "accept".into(),
        Target::Drop => "drop".into(),
        Target::Return => "return".into(),
        Target::Jump(c) => format!("jump {c}"),
        Target::Goto(c) => format!("goto {c}"),
        Target::Reject(with) => match with.as_deref() {
            None | Some("icmp-port-unreachable") => "reject".into(),
            Some("tcp-reset") => "reject with tcp reset".into(),
            Some(w @ ("icmp-net-unreachable" | "icmp-host-unreachable" | "icmp-proto-unreachable" | "icmp-net-prohibited" | "icmp-host-prohibited" | "icmp-admin-prohibited")) => {
                let t = w.trim_start_matches("icmp-").replace("proto-", "prot-");
                format!("reject with icmp type {t}")
            }
            Some(w) => return Err(err(loc, &format!("--reject-with {w}"), "not translated")),
        },
        Target::SetConnmark { value, mask } => set_masked("ct mark", "ct mark", *value, *mask),
        Target::SetMark { value, mask } => set_masked("meta mark", "meta mark", *value, *mask),
        Target::SaveMark { nfmask, ctmask } => match (*ctmask, *nfmask) {
            (u32::MAX, u32::MAX) => "ct mark set meta mark".into(),
            (u32::MAX, m) => format!("ct mark set meta mark and {m:#x}"),
            (c, 0) => format!("ct mark set ct mark and {:#x}", !c),
            _ => return Err(err(loc, "--save-mark --ctmask", "ctmark = (ctmark & ~ctmask) ^ (nfmark & nfmask) mixes two registers, which nft 1.0 cannot express; with the full --ctmask it can")),
        },
        Target::RestoreMark { nfmask, ctmask } => match (*nfmask, *ctmask) {
            (u32::MAX, u32::MAX) => "meta mark set ct mark".into(),
            (u32::MAX, m) => format!("meta mark set ct mark and {m:#x}"),
            (n, 0) => format!("meta mark set meta mark and {:#x}", !n),
            _ => return Err(err(loc, "--restore-mark --nfmask", "nfmark = (nfmark & ~nfmask) ^ (ctmark & ctmask) mixes two registers, which nft 1.0 cannot express; with the full --nfmask it can")),
        },
        Target::Snat(to) if nat => format!("snat to {to}"),
        Target::Dnat(to) if nat => format!("dnat to {to}"),
        Target::Masquerade(p) if nat => match p {
            Some(p) => format!("masquerade to :{p}"),
            None => "masquerade".into(),
        },
        Target::Redirect(p) if nat => match p {
            Some(p) => format!("redirect to :{p}"),
            None => "redirect".into(),
        },
        Target::Log { prefix, level } => {
            let mut s = String::from("log");
            if let Some(p) = prefix {
                write!(s, " prefix {}", name::nft_quoted(p)).expect("string");
            }
            match level {
                None | Some(4) => {}
                Some(l) => {
                    let name = ["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"][usize::from(*l)];
                    write!(s, " level {name}").expect("string");
                }
            }
            s
        }
        Target::Hmark { .. } => {
            return Err(err(loc, "-j HMARK", "HMARK's hash has no nft equivalent (nftbalance's source-hash uses jhash)"))
        }
        t => return Err(err(loc, &format!("{t:?}"), "this target belongs in the nat table")),
    };
    Ok(words)
}
