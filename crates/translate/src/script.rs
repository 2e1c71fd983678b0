//! Input files -> the rulesets they build (tables, chains, rules in final order), the ip
//! rules and routes they add, and what every line was. Shell lines are read, never run.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

use crate::error::{Loc, TranslateError};
use crate::iptables::{self, Command, Rule, Target, Unsupported};
use crate::shell::{self, Part, SimpleCommand, Word};

/// One input file.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Shown in messages (`seed.sh:12`).
    pub name: &'a str,
    pub text: &'a str,
}

/// A rule with the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleAt {
    pub loc: Loc,
    /// The input line, shared with its [`Line`] and its report entry.
    pub text: Arc<str>,
    pub rule: Rule,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub name: String,
    pub builtin: bool,
    pub policy: Option<String>,
    pub rules: Vec<RuleAt>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
    fn chain_mut(&mut self, name: &str) -> &mut Chain {
        if let Some(i) = self.chains.iter().position(|c| c.name == name) {
            return &mut self.chains[i];
        }
        let builtin = builtins(&self.name).contains(&name);
        self.chains.push(Chain {
            name: name.to_string(),
            builtin,
            policy: None,
            rules: Vec::new(),
        });
        self.chains.last_mut().expect("just pushed")
    }
}

/// The built-in chains of each IPv4 table, in iptables-save's order.
pub fn builtins(table: &str) -> &'static [&'static str] {
    match table {
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        _ => &[],
    }
}

/// `ip rule add ...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRule {
    pub loc: Loc,
    pub fwmark: Option<(u32, u32)>,
    pub from: Option<Ipv4Net>,
    pub table: u32,
    /// Selectors the spec has no field for (`to`, `iif`, `suppress_prefixlength`, ...).
    pub other: Vec<String>,
}

/// `ip route add ...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRoute {
    pub loc: Loc,
    pub table: u32,
    pub default: bool,
    pub via: Option<Ipv4Addr>,
    pub dev: Option<String>,
    pub src: Option<Ipv4Addr>,
}

/// A gateway as `nftbalance dump --format iptables` describes it in its header comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderGateway {
    pub loc: Loc,
    pub name: String,
    pub interface: String,
    pub mark: u32,
    pub weight: u32,
    pub route_table: u32,
    pub address: Option<Ipv4Addr>,
    pub via: Option<Ipv4Addr>,
}

/// What a line of the input is, before recognition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// Table, chain and commit lines, `-N`, `-F`, `-X`, `-P`, `-Z`, assignments.
    Structure(String),
    /// Comment lines (the nftbalance header comments are `Header`).
    Comment,
    Header,
    /// A rule: its role is decided by the recogniser.
    Rule,
    IpRule,
    IpRoute,
    RtTables,
    /// Not part of the model, with why.
    Outside(String),
    /// Outside the model and not translatable rule by rule (`--to nft` stops on it).
    Untranslatable(Unsupported),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub loc: Loc,
    pub text: Arc<str>,
    pub kind: LineKind,
}

/// Everything the inputs build.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Script {
    pub tables: Vec<Table>,
    pub ip_rules: Vec<IpRule>,
    pub ip_routes: Vec<IpRoute>,
    pub header_table: Option<(Loc, String)>,
    pub header_family: Option<String>,
    pub header_gateways: Vec<HeaderGateway>,
    pub lines: Vec<Line>,
    /// Remarks about lines read in a way iptables would not (kept for the report).
    pub notes: Vec<(Loc, String)>,
}

impl Script {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
    fn table_mut(&mut self, name: &str) -> &mut Table {
        if let Some(i) = self.tables.iter().position(|t| t.name == name) {
            return &mut self.tables[i];
        }
        self.tables.push(Table {
            name: name.to_string(),
            chains: Vec::new(),
        });
        self.tables.last_mut().expect("just pushed")
    }
}

const IPTABLES: &[&str] = &["iptables", "iptables-legacy", "iptables-nft"];
const RESTORE: &[&str] = &[
    "iptables-restore",
    "iptables-legacy-restore",
    "iptables-nft-restore",
];
const IP6TABLES: &[&str] = &["ip6tables", "ip6tables-legacy", "ip6tables-nft"];

/// Reads the inputs in order (later files see earlier files' tables and variables).
/// `defines` give variables their values and win over the script's own assignments.
pub fn read(
    inputs: &[Input<'_>],
    defines: &BTreeMap<String, String>,
) -> Result<Script, TranslateError> {
    let mut s = Script::default();
    s.lines
        .reserve(inputs.iter().map(|i| i.text.lines().count()).sum());
    let mut vars = shell::Vars::new(defines);
    let mut rt_tables: BTreeMap<String, u32> = BTreeMap::new();
    let mut lines = 0;
    for input in inputs {
        let n = input.text.lines().count();
        if lines + n > crate::MAX_LINES {
            return Err(TranslateError::LineLimit {
                loc: Loc {
                    file: input.name.into(),
                    line: crate::MAX_LINES - lines + 1,
                },
                limit: crate::MAX_LINES,
            });
        }
        lines += n;
        let mut section: Option<String> = None;
        let mut depth = 0usize;
        let file: std::sync::Arc<str> = input.name.into();
        for ll in shell::logical_lines(input.text) {
            let loc = Loc {
                file: file.clone(),
                line: ll.line,
            };
            let text: Arc<str> = ll.text.trim().into();
            if text.is_empty() {
                continue;
            }
            // A here-document is its program's data; iptables-restore's is rules as in a file.
            if let Some(program) = ll.heredoc.filter(|p| !RESTORE.contains(&p.as_str())) {
                let why = format!("here-document body (input of {program}): data, not commands");
                s.lines.push(Line {
                    loc,
                    text,
                    kind: LineKind::Outside(why),
                });
                continue;
            }
            let kind = if text.starts_with('#') {
                header(&mut s, &loc, &text)
            } else if let Some(name) = text.strip_prefix('*') {
                section = Some(name.trim().to_string());
                if builtins(name.trim()).is_empty() {
                    return Err(TranslateError::Option {
                        loc,
                        option: text.to_string(),
                        message: "only the filter, mangle, nat and raw tables are read".into(),
                    });
                }
                s.table_mut(name.trim());
                LineKind::Structure("table".into())
            } else if &*text == "COMMIT" {
                section = None;
                LineKind::Structure("commit".into())
            } else if let Some(decl) = text.strip_prefix(':') {
                let table = section.clone().ok_or_else(|| TranslateError::Syntax {
                    loc: loc.clone(),
                    message: "chain declaration outside a *table section".into(),
                })?;
                let mut parts = decl.split_whitespace();
                let name = parts.next().unwrap_or_default().to_string();
                crate::names::chain(&loc, ":", &name)?;
                let policy = parts.next().unwrap_or("-");
                crate::names::policy(&loc, ":", policy)?;
                let policy = Some(policy).filter(|p| *p != "-").map(str::to_string);
                let chain = s.table_mut(&table).chain_mut(&name);
                chain.policy = policy;
                LineKind::Structure("chain declaration".into())
            } else if text.starts_with('-') || text.starts_with('[') {
                restore_line(&mut s, &loc, &text, section.as_deref())?
            } else {
                shell_line(
                    &mut s,
                    &loc,
                    &text,
                    &mut vars,
                    defines,
                    &mut rt_tables,
                    &mut depth,
                )?
            };
            s.lines.push(Line { loc, text, kind });
        }
    }
    // A jump to no chain of the table is a target the parser does not know.
    for t in &mut s.tables {
        let names: Vec<String> = t.chains.iter().map(|c| c.name.clone()).collect();
        for c in &mut t.chains {
            for r in &mut c.rules {
                if let Some(Target::Jump(j) | Target::Goto(j)) = &r.rule.target {
                    if !names.contains(j) && r.rule.unsupported.is_none() {
                        r.rule.unsupported = Some(Box::new(Unsupported {
                            option: format!("-j {j}"),
                            message:
                                "not a chain of this table, and not a target that is translated"
                                    .into(),
                        }));
                    }
                }
            }
        }
    }
    Ok(s)
}

fn header(s: &mut Script, loc: &Loc, text: &str) -> LineKind {
    let body = text.trim_start_matches('#').trim();
    if let Some(rest) = body.strip_prefix("nftbalance: table ") {
        let name = rest.split([',', ' ']).next().unwrap_or_default();
        if !name.is_empty() {
            s.header_table = Some((loc.clone(), name.to_string()));
            if let Some(f) = rest.split(", ").find_map(|p| p.strip_prefix("family ")) {
                s.header_family = Some(f.trim().to_string());
            }
            return LineKind::Header;
        }
    }
    if let Some(rest) = body.strip_prefix("gateway ") {
        let words: Vec<&str> = rest.split_whitespace().collect();
        if let Some(g) = header_gateway(loc, &words) {
            s.header_gateways.push(g);
            return LineKind::Header;
        }
    }
    LineKind::Comment
}

fn header_gateway(loc: &Loc, w: &[&str]) -> Option<HeaderGateway> {
    let name = w.first()?.to_string();
    let mut g = HeaderGateway {
        loc: loc.clone(),
        name,
        interface: String::new(),
        mark: 0,
        weight: 1,
        route_table: 0,
        address: None,
        via: None,
    };
    let mut i = 1;
    while i + 1 < w.len() + 1 && i < w.len() {
        let v = w.get(i + 1)?;
        match w[i] {
            "interface" => g.interface = v.to_string(),
            "mark" => g.mark = iptables::number(v)?,
            "weight" => g.weight = v.parse().ok()?,
            "route_table" => g.route_table = v.parse().ok()?,
            "address" => g.address = Some(v.parse().ok()?),
            "via" => g.via = Some(v.parse().ok()?),
            _ => return None,
        }
        i += 2;
    }
    (!g.interface.is_empty() && g.mark != 0).then_some(g)
}

/// An iptables-restore line (`-A ...`, `[0:0] -A ...`) inside a `*table` section.
fn restore_line(
    s: &mut Script,
    loc: &Loc,
    text: &Arc<str>,
    section: Option<&str>,
) -> Result<LineKind, TranslateError> {
    let body = if text.starts_with('[') {
        text.split_once(']').map_or("", |(_, r)| r.trim())
    } else {
        text
    };
    let table = section.ok_or_else(|| TranslateError::Syntax {
        loc: loc.clone(),
        message:
            "iptables-restore rule outside a *table section (add `*mangle`, `*nat`, ... before it)"
                .into(),
    })?;
    // Most saved rules have no quoting, variables or operators: their words are the
    // whitespace-separated fields (no tokenizer and no per-character parts).
    let plain = !body.contains([
        '"', '\'', '\\', '$', '`', ';', '|', '&', '<', '>', '(', ')', '#',
    ]);
    let args: Vec<String> = if plain {
        body.split_whitespace().map(str::to_string).collect()
    } else {
        shell::tokenize(body, false)
            .into_iter()
            .filter_map(|t| match t {
                shell::Token::Word(w) => w.literal(),
                _ => None,
            })
            .collect()
    };
    apply(s, loc, text, table.to_string(), &args, false)
}

/// Applies one iptables command to the tables.
fn apply(
    s: &mut Script,
    loc: &Loc,
    text: &Arc<str>,
    default_table: String,
    args: &[String],
    shell_form: bool,
) -> Result<LineKind, TranslateError> {
    let (table, command) = match iptables::parse_command(args) {
        Ok(x) => x,
        Err(u) => {
            return Err(TranslateError::Option {
                loc: loc.clone(),
                option: u.option,
                message: u.message,
            })
        }
    };
    crate::names::command(loc, &command)?;
    let explicit = table.is_some();
    let mut table = table.unwrap_or(default_table);
    if builtins(&table).is_empty() {
        return Err(TranslateError::Option {
            loc: loc.clone(),
            option: format!("-t {table}"),
            message: "only the filter, mangle, nat and raw tables are read".into(),
        });
    }
    let rule_lines = |chain: &str, rules: Vec<Rule>| -> Vec<RuleAt> {
        let _ = chain;
        rules
            .into_iter()
            .map(|rule| RuleAt {
                loc: loc.clone(),
                text: text.clone(),
                rule,
            })
            .collect()
    };
    match command {
        Command::Append { chain, rules } | Command::Insert { chain, rules, .. }
            if shell_form
                && !explicit
                && table == "filter"
                && matches!(chain.as_str(), "PREROUTING" | "POSTROUTING")
                && rules.iter().any(|r| {
                    matches!(
                        r.target,
                        Some(Target::Snat(_) | Target::Dnat(_) | Target::Masquerade(_))
                    )
                }) =>
        {
            s.notes.push((
                loc.clone(),
                format!("no `-t nat`: iptables would refuse this line (the filter table has no {chain}); read as -t nat"),
            ));
            table = "nat".into();
            let rules = rule_lines(&chain, rules);
            s.table_mut(&table).chain_mut(&chain).rules.extend(rules);
            Ok(LineKind::Rule)
        }
        Command::Append { chain, rules } => {
            if shell_form
                && !builtins(&table).contains(&chain.as_str())
                && s.table(&table).is_none_or(|t| t.chain(&chain).is_none())
            {
                s.notes.push((
                    loc.clone(),
                    format!("chain {chain} is used before any `-N {chain}`: iptables would refuse this line; read as if it had been created"),
                ));
            }
            let rules = rule_lines(&chain, rules);
            s.table_mut(&table).chain_mut(&chain).rules.extend(rules);
            Ok(LineKind::Rule)
        }
        Command::Insert { chain, pos, rules } => {
            let rules = rule_lines(&chain, rules);
            let c = s.table_mut(&table).chain_mut(&chain);
            let at = pos.saturating_sub(1).min(c.rules.len());
            c.rules.splice(at..at, rules);
            Ok(LineKind::Rule)
        }
        Command::NewChain(chain) => {
            s.table_mut(&table).chain_mut(&chain);
            Ok(LineKind::Structure("new chain".into()))
        }
        Command::Policy { chain, policy } => {
            s.table_mut(&table).chain_mut(&chain).policy = Some(policy);
            Ok(LineKind::Structure("policy".into()))
        }
        Command::Flush(chain) => {
            let t = s.table_mut(&table);
            for c in &mut t.chains {
                if chain.as_deref().is_none_or(|n| n == c.name) {
                    c.rules.clear();
                }
            }
            Ok(LineKind::Structure("flush".into()))
        }
        Command::DeleteChain(chain) => {
            let t = s.table_mut(&table);
            t.chains
                .retain(|c| c.builtin || chain.as_deref().is_some_and(|n| n != c.name));
            Ok(LineKind::Structure("delete chain".into()))
        }
        Command::Zero => Ok(LineKind::Structure("zero counters".into())),
    }
}

fn is_assignment(w: &Word) -> Option<(String, Word)> {
    let Some(Part::Lit(first)) = w.parts.first() else {
        return None;
    };
    let (name, value) = first.split_once('=')?;
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return None;
    }
    let mut parts = vec![Part::Lit(value.to_string())];
    parts.extend(w.parts[1..].iter().cloned());
    Some((name.to_string(), Word { parts }))
}

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

#[allow(clippy::too_many_arguments)]
fn shell_line(
    s: &mut Script,
    loc: &Loc,
    text: &Arc<str>,
    vars: &mut shell::Vars,
    defines: &BTreeMap<String, String>,
    rt_tables: &mut BTreeMap<String, u32>,
    depth: &mut usize,
) -> Result<LineKind, TranslateError> {
    let cmds = shell::commands(shell::tokenize(text, true));
    let first_words: Vec<Option<String>> = cmds
        .iter()
        .map(|c| c.words.first().and_then(Word::literal))
        .collect();
    let was = *depth;
    for w in first_words.iter().flatten() {
        match w.as_str() {
            "while" | "for" | "until" | "if" | "case" | "select" => *depth += 1,
            "done" | "fi" | "esac" => *depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if was > 0 || *depth > was {
        return Ok(LineKind::Outside(
            "inside a shell loop or condition: not evaluated".into(),
        ));
    }
    // The routing table names: `echo "101 isp1" >> /etc/iproute2/rt_tables` or `| tee`.
    let mentions_rt = cmds.iter().any(|c| {
        c.words
            .iter()
            .chain(&c.redirects)
            .any(|w| w.literal().is_some_and(|l| l.ends_with("rt_tables")))
    });
    if mentions_rt && matches!(first_words.first(), Some(Some(w)) if w == "echo" || w == "printf") {
        let words: Vec<String> = cmds[0]
            .words
            .iter()
            .skip(1)
            .map(|w| w.expand(vars, loc))
            .collect::<Result<_, _>>()?;
        let escapes =
            words.iter().any(|w| w == "-e") || first_words[0].as_deref() == Some("printf");
        let body = words
            .iter()
            .filter(|w| !w.starts_with('-'))
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        let body = if escapes {
            body.replace("\\n", "\n").replace("\\t", "\t")
        } else {
            body
        };
        for entry in body.lines() {
            let mut p = entry.split_whitespace();
            if let (Some(n), Some(name)) = (p.next(), p.next()) {
                if let Ok(n) = n.parse() {
                    rt_tables.insert(name.to_string(), n);
                }
            }
        }
        return Ok(LineKind::RtTables);
    }
    let pipeline = cmds.iter().any(|c| c.then == Some("|"));
    let mut kind: Option<LineKind> = None;
    for cmd in &cmds {
        if pipeline {
            break;
        }
        let k = simple_command(s, loc, text, cmd, vars, defines, rt_tables)?;
        // `cmd || true`: the rest of the list is not part of the model but harmless.
        if kind.is_none()
            || matches!(kind, Some(LineKind::Outside(_))) && !matches!(k, LineKind::Outside(_))
        {
            kind = Some(k);
        }
        if matches!(cmd.then, Some("||")) {
            break;
        }
    }
    Ok(kind.unwrap_or_else(|| LineKind::Outside("shell command outside the model".into())))
}

fn simple_command(
    s: &mut Script,
    loc: &Loc,
    text: &Arc<str>,
    cmd: &SimpleCommand,
    vars: &mut shell::Vars,
    defines: &BTreeMap<String, String>,
    rt_tables: &BTreeMap<String, u32>,
) -> Result<LineKind, TranslateError> {
    let mut words: &[Word] = &cmd.words;
    while let Some(w) = words.first().and_then(Word::literal) {
        if matches!(
            w.as_str(),
            "sudo" | "command" | "exec" | "export" | "readonly" | "local"
        ) {
            words = &words[1..];
        } else {
            break;
        }
    }
    if words.is_empty() {
        return Ok(LineKind::Outside("shell command outside the model".into()));
    }
    let assignments: Vec<(String, Word)> = words.iter().map_while(is_assignment).collect();
    if assignments.len() == words.len() {
        for (name, value) in assignments {
            let v = value.expand(vars, loc)?;
            if !defines.contains_key(&name) {
                vars.set(name, v, loc)?;
            }
        }
        return Ok(LineKind::Structure("assignment".into()));
    }
    let program = words[0].expand(vars, loc)?;
    let base = basename(&program);
    if IPTABLES.contains(&base) {
        let args: Vec<String> = words[1..]
            .iter()
            .map(|w| w.expand(vars, loc))
            .collect::<Result<_, _>>()?;
        return apply(s, loc, text, "filter".into(), &args, true);
    }
    if IP6TABLES.contains(&base) {
        return Ok(LineKind::Untranslatable(Unsupported {
            option: base.to_string(),
            message: "IPv6 rules are not read (the balancer's iptables form is IPv4)".into(),
        }));
    }
    if base == "ip" {
        let args: Vec<String> = words[1..]
            .iter()
            .map(|w| w.literal().unwrap_or_default())
            .collect();
        let obj = args
            .iter()
            .find(|a| !a.starts_with('-'))
            .cloned()
            .unwrap_or_default();
        let pos = args.iter().position(|a| !a.starts_with('-')).unwrap_or(0);
        let action = args.get(pos + 1).cloned().unwrap_or_default();
        let is_rule = matches!(obj.as_str(), "rule" | "ru");
        let is_route = matches!(obj.as_str(), "route" | "ro" | "r");
        let adds = matches!(
            action.as_str(),
            "add" | "a" | "replace" | "append" | "change"
        );
        if args.iter().any(|a| a == "-6") || !(is_rule || is_route) || !adds {
            return Ok(LineKind::Outside("ip command outside the model".into()));
        }
        let args: Vec<String> = words[1..]
            .iter()
            .map(|w| w.expand(vars, loc))
            .collect::<Result<_, _>>()?;
        let rest = &args[pos + 2..];
        return if is_rule {
            ip_rule(s, loc, rest, rt_tables)
        } else {
            ip_route(s, loc, rest, rt_tables)
        };
    }
    Ok(LineKind::Outside("shell command outside the model".into()))
}

fn table_id(
    loc: &Loc,
    name: &str,
    rt_tables: &BTreeMap<String, u32>,
) -> Result<u32, TranslateError> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    match name {
        "main" => Ok(254),
        "local" => Ok(255),
        "default" => Ok(253),
        n => rt_tables.get(n).copied().ok_or_else(|| TranslateError::Option {
            loc: loc.clone(),
            option: format!("table {n}"),
            message: "unknown routing table name: give it a number, or add the script's `echo \"NUMBER NAME\" >> /etc/iproute2/rt_tables` line to the input".into(),
        }),
    }
}

fn ip_rule(
    s: &mut Script,
    loc: &Loc,
    args: &[String],
    rt: &BTreeMap<String, u32>,
) -> Result<LineKind, TranslateError> {
    let mut r = IpRule {
        loc: loc.clone(),
        fwmark: None,
        from: None,
        table: 254,
        other: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "fwmark" => {
                let (m, mask) = match v.split_once('/') {
                    Some((m, k)) => (iptables::number(m), iptables::number(k)),
                    None => (iptables::number(&v), Some(u32::MAX)),
                };
                match (m, mask) {
                    (Some(m), Some(k)) => r.fwmark = Some((m, k)),
                    _ => {
                        return Err(TranslateError::Option {
                            loc: loc.clone(),
                            option: format!("fwmark {v}"),
                            message: "not a mark".into(),
                        })
                    }
                }
            }
            "from" => {
                if v != "all" {
                    r.from = Some(
                        v.parse()
                            .or_else(|_| v.parse::<Ipv4Addr>().map(Ipv4Net::from))
                            .map_err(|_| TranslateError::Option {
                                loc: loc.clone(),
                                option: format!("from {v}"),
                                message: "not an IPv4 address or prefix".into(),
                            })?,
                    );
                }
            }
            "lookup" | "table" => r.table = table_id(loc, &v, rt)?,
            "priority" | "pref" | "preference" | "order" => {}
            other => r.other.push(format!("{other} {v}")),
        }
        i += 2;
    }
    s.ip_rules.push(r);
    Ok(LineKind::IpRule)
}

fn ip_route(
    s: &mut Script,
    loc: &Loc,
    args: &[String],
    rt: &BTreeMap<String, u32>,
) -> Result<LineKind, TranslateError> {
    let mut r = IpRoute {
        loc: loc.clone(),
        table: 254,
        default: false,
        via: None,
        dev: None,
        src: None,
    };
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        let addr = |v: &str| {
            v.parse::<Ipv4Addr>().map_err(|_| TranslateError::Option {
                loc: loc.clone(),
                option: v.to_string(),
                message: "not an IPv4 address".into(),
            })
        };
        match args[i].as_str() {
            "default" | "0.0.0.0/0" => {
                r.default = true;
                i += 1;
                continue;
            }
            "via" => r.via = Some(addr(&v)?),
            "dev" | "oif" => r.dev = Some(v),
            "src" => r.src = Some(addr(&v)?),
            "table" => r.table = table_id(loc, &v, rt)?,
            "proto" | "protocol" | "metric" | "scope" | "preference" | "realm" | "mtu" => {}
            "onlink" | "unicast" => {
                i += 1;
                continue;
            }
            _ => {
                // A destination prefix or host.
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    s.ip_routes.push(r);
    Ok(LineKind::IpRoute)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read1(text: &str) -> Result<Script, TranslateError> {
        read(&[Input { name: "t.sh", text }], &BTreeMap::new())
    }

    #[test]
    fn input_limit_lines_limit_and_variables_limit() {
        let big = "#".repeat(crate::MAX_INPUT + 1);
        let e = crate::parse(
            &[Input {
                name: "in",
                text: &big,
            }],
            &BTreeMap::new(),
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "the input is longer than 16777216 bytes, translate's limit"
        );
        let many = "\n".repeat(crate::MAX_LINES + 1);
        let e = read1(&many).unwrap_err().to_string();
        assert_eq!(
            e,
            "t.sh:200001: the input has more than 200000 lines, translate's limit"
        );
        // Many variables, each under the word limit, together over the variables' limit.
        let mut text = format!("A={}\n", "x".repeat(60_000));
        for i in 0..100 {
            text.push_str(&format!("B{i}=$A\n"));
        }
        let e = read1(&text).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "t.sh:70: the script's variables together would be longer than 4194304 bytes"
            ),
            "{e}"
        );
    }

    #[test]
    fn heredoc_bodies_are_data_not_rules() {
        let text = "cat >/etc/x.sh <<EOF\n\
                    iptables -t mangle -A PREROUTING -j MARK --set-mark 1\n\
                    EOF\n\
                    cat <<-'END' | tee /tmp/y\n\
                    \tiptables -N Y\n\
                    \tEND\n\
                    cat << \"Q\" >/dev/null\n\
                    *mangle\n\
                    -A PREROUTING -j ACCEPT\n\
                    Q\n\
                    iptables -t mangle -A PREROUTING -j ACCEPT\n";
        let s = read1(text).unwrap();
        let pre = s.table("mangle").unwrap().chain("PREROUTING").unwrap();
        assert_eq!(pre.rules.len(), 1);
        assert_eq!(pre.rules[0].loc.line, 11);
        assert!(s.table("filter").is_none_or(|t| t.chain("Y").is_none()));
        assert!(matches!(&s.lines[1].kind, LineKind::Outside(w) if w.contains("here-document")));
        // iptables-restore's here-document is its rules, read as a save file is.
        let s = read1("iptables-restore <<EOF\n*mangle\n-A PREROUTING -j ACCEPT\nCOMMIT\nEOF\n")
            .unwrap();
        assert_eq!(
            s.table("mangle")
                .unwrap()
                .chain("PREROUTING")
                .unwrap()
                .rules
                .len(),
            1
        );
    }

    #[test]
    fn variables_programs_and_insert() {
        let s = read1(
            "IPT=/sbin/iptables\n$IPT -t mangle -A PREROUTING -j RETURN\n\
             iptables-legacy -t mangle -I PREROUTING -i eth0 -j ACCEPT\n",
        )
        .unwrap();
        let c = s.table("mangle").unwrap().chain("PREROUTING").unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].loc.line, 3);
    }

    #[test]
    fn an_unset_variable_names_itself_and_its_line() {
        let e = read1("# x\nip route add table $TABLE1 default via 1.2.3.4\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.sh:2: $TABLE1 is not set in the script; give its value with --define TABLE1=VALUE"
        );
    }

    #[test]
    fn rt_tables_and_ip_lines() {
        let s = read1(
            "echo -e \"101 connection1\\n102 connection2\" | sudo tee -a /etc/iproute2/rt_tables\n\
             ip rule add fwmark 2 lookup connection2\n\
             ip route add table connection1 default via 100.0.1.254\n",
        )
        .unwrap();
        assert_eq!(s.ip_rules[0].table, 102);
        assert_eq!(s.ip_routes[0].table, 101);
    }
}
