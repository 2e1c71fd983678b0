//! One iptables rule, parsed from its arguments into typed matches and a target, with the
//! kernel's semantics of every mark operation (the masks as the kernel applies them).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A value with its negation (`! -s 10.0.0.0/8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neg<T> {
    pub neg: bool,
    pub value: T,
}

/// Connection tracking states of `-m state` / `-m conntrack --ctstate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtState {
    Invalid,
    New,
    Established,
    Related,
    Untracked,
}

impl CtState {
    pub fn nft(self) -> &'static str {
        match self {
            CtState::Invalid => "invalid",
            CtState::New => "new",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::Untracked => "untracked",
        }
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

impl Ports {
    pub fn nft(self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}-{}", self.first, self.last)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Src,
    Dst,
}

/// A match of a rule (besides the built-in -s -d -i -o -p).
#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    /// `-m tcp/udp --sport/--dport` (one port or range), or `-m multiport` (a list).
    Ports {
        dir: Dir,
        neg: bool,
        ports: Vec<Ports>,
        multiport: bool,
    },
    /// `-m state --state` or `-m conntrack --ctstate`.
    State {
        neg: bool,
        states: Vec<CtState>,
    },
    /// `-m connmark --mark V/M`: (ctmark & M) == V.
    Connmark {
        neg: bool,
        value: u32,
        mask: u32,
    },
    /// `-m mark --mark V/M`: (nfmark & M) == V.
    Mark {
        neg: bool,
        value: u32,
        mask: u32,
    },
    /// `-m statistic --mode nth --every N --packet P`: the P-th of every N packets (from 0).
    Nth {
        neg: bool,
        every: u32,
        packet: u32,
    },
    /// `-m statistic --mode random --probability P`, as the kernel stores it (P * 2^31).
    Random {
        neg: bool,
        probability: f64,
    },
    Comment(String),
    /// `-m recent`: the options, for sticky; no literal translation.
    Recent {
        name: String,
        action: RecentAction,
        seconds: Option<u32>,
        rsource: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecentAction {
    Set,
    Update,
    Rcheck,
    Remove,
}

/// The target of a rule, with the kernel's mark semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Accept,
    Drop,
    Return,
    Reject(Option<String>),
    Jump(String),
    Goto(String),
    /// CONNMARK set: ctmark = (ctmark & !mask) ^ value.
    SetConnmark {
        value: u32,
        mask: u32,
    },
    /// CONNMARK --save-mark: ctmark = (ctmark & !ctmask) ^ (nfmark & nfmask).
    SaveMark {
        nfmask: u32,
        ctmask: u32,
    },
    /// CONNMARK --restore-mark: nfmark = (nfmark & !nfmask) ^ (ctmark & ctmask).
    RestoreMark {
        nfmask: u32,
        ctmask: u32,
    },
    /// MARK: nfmark = (nfmark & !mask) ^ value.
    SetMark {
        value: u32,
        mask: u32,
    },
    Snat(String),
    Dnat(String),
    Masquerade(Option<String>),
    Redirect(Option<String>),
    Log {
        prefix: Option<String>,
        level: Option<u8>,
    },
    /// HMARK over the source address: nfmark = offset + hash(src, rnd) % modulus.
    Hmark {
        modulus: u32,
        rnd: u32,
        offset: u32,
    },
}

/// An option the parser could not take: the rule cannot be translated exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub option: String,
    pub message: String,
}

/// One rule as iptables holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub protocol: Option<Neg<String>>,
    pub src: Option<Neg<Ipv4Net>>,
    pub dst: Option<Neg<Ipv4Net>>,
    pub iif: Option<Neg<String>>,
    pub oif: Option<Neg<String>>,
    pub matches: Vec<Match>,
    pub target: Option<Target>,
    /// Set when an option could not be read: the rule is outside the model, and `--to nft`
    /// stops with this option.
    /// Boxed: rare, and 40 bytes less in each of 100,000 rules.
    pub unsupported: Option<Box<Unsupported>>,
}

impl Rule {
    fn empty() -> Rule {
        Rule {
            protocol: None,
            src: None,
            dst: None,
            iif: None,
            oif: None,
            matches: Vec::new(),
            target: None,
            unsupported: None,
        }
    }

    /// The states this rule requires, if it has exactly one non-negated state match.
    pub fn states(&self) -> Option<Vec<CtState>> {
        let mut found = None;
        for m in &self.matches {
            if let Match::State { neg, states } = m {
                if *neg || found.is_some() {
                    return None;
                }
                let mut s = states.clone();
                s.sort();
                s.dedup();
                found = Some(s);
            }
        }
        found
    }

    /// The matches other than state and comment.
    pub fn other_matches(&self) -> impl Iterator<Item = &Match> {
        self.matches
            .iter()
            .filter(|m| !matches!(m, Match::State { .. } | Match::Comment(_)))
    }
}

/// The parsed arguments of an iptables command line or iptables-restore line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Append {
        chain: String,
        rules: Vec<Rule>,
    },
    Insert {
        chain: String,
        pos: usize,
        rules: Vec<Rule>,
    },
    NewChain(String),
    Policy {
        chain: String,
        policy: String,
    },
    Flush(Option<String>),
    DeleteChain(Option<String>),
    Zero,
}

/// Parses a whole iptables argument list (without the program name); returns the table
/// (`-t`, default filter) and the command. Errors are about the command itself (a rule's
/// unknown options are recorded in the rule instead).
pub fn parse_command(args: &[String]) -> Result<(Option<String>, Command), Unsupported> {
    let mut table = None;
    let mut rest = Vec::new();
    let mut command: Option<(String, Vec<String>)> = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        match a.as_str() {
            "-t" | "--table" => {
                table = Some(need(args, i, a)?.to_string());
                i += 2;
                continue;
            }
            "-A" | "--append" | "-I" | "--insert" | "-N" | "--new-chain" | "--new" | "-P"
            | "--policy" | "-F" | "--flush" | "-X" | "--delete-chain" | "-Z" | "--zero"
                if command.is_none() =>
            {
                let mut operands = Vec::new();
                let mut j = i + 1;
                // Chain (and insert position / policy) follow the command.
                let max = match a.as_str() {
                    "-I" | "--insert" | "-P" | "--policy" => 2,
                    _ => 1,
                };
                while j < args.len() && operands.len() < max && !args[j].starts_with('-') {
                    if (a == "-I" || a == "--insert")
                        && operands.len() == 1
                        && args[j].parse::<usize>().is_err()
                    {
                        break;
                    }
                    if args[j] == "!" {
                        break;
                    }
                    operands.push(args[j].clone());
                    j += 1;
                }
                command = Some((a.clone(), operands));
                i = j;
                continue;
            }
            "-D" | "--delete" | "-R" | "--replace" | "-E" | "--rename-chain" | "-L" | "--list"
            | "-S" | "--list-rules" | "-C" | "--check" => {
                return Err(Unsupported {
                    option: a.clone(),
                    message: "only commands that build a ruleset (-A -I -N -P -F -X -Z) are read"
                        .into(),
                })
            }
            _ => rest.push(a.clone()),
        }
        i += 1;
    }
    let (cmd, operands) = command.ok_or_else(|| Unsupported {
        option: args.first().cloned().unwrap_or_default(),
        message: "no iptables command (-A, -I, -N, -P, -F, -X) in this line".into(),
    })?;
    let chain = operands.first().cloned();
    let need_chain = |c: Option<String>| {
        c.ok_or_else(|| Unsupported {
            option: cmd.clone(),
            message: "needs a chain name".into(),
        })
    };
    let command = match cmd.as_str() {
        "-A" | "--append" => Command::Append {
            chain: need_chain(chain)?,
            rules: parse_rule(&rest),
        },
        "-I" | "--insert" => Command::Insert {
            chain: need_chain(chain)?,
            pos: operands.get(1).and_then(|p| p.parse().ok()).unwrap_or(1),
            rules: parse_rule(&rest),
        },
        "-N" | "--new-chain" | "--new" => Command::NewChain(need_chain(chain)?),
        "-P" | "--policy" => Command::Policy {
            chain: need_chain(chain)?,
            policy: operands.get(1).cloned().ok_or_else(|| Unsupported {
                option: cmd.clone(),
                message: "needs a policy".into(),
            })?,
        },
        "-F" | "--flush" => Command::Flush(chain),
        "-X" | "--delete-chain" => Command::DeleteChain(chain),
        _ => Command::Zero,
    };
    Ok((table, command))
}

fn need<'a>(args: &'a [String], i: usize, opt: &str) -> Result<&'a str, Unsupported> {
    args.get(i + 1)
        .map(String::as_str)
        .ok_or_else(|| Unsupported {
            option: opt.to_string(),
            message: "needs a value".into(),
        })
}

/// A number as iptables reads it (strtoul base 0: 0x hex, leading 0 octal, else decimal).
pub fn number(s: &str) -> Option<u32> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// `V[/M]`, M defaulting to all bits.
fn value_mask(s: &str) -> Option<(u32, u32, bool)> {
    match s.split_once('/') {
        Some((v, m)) => Some((number(v)?, number(m)?, true)),
        None => Some((number(s)?, u32::MAX, false)),
    }
}

fn port(s: &str) -> Option<u16> {
    if let Ok(p) = s.parse() {
        return Some(p);
    }
    Some(match s {
        "ftp" => 21,
        "ssh" => 22,
        "telnet" => 23,
        "smtp" => 25,
        "domain" => 53,
        "http" | "www" => 80,
        "pop3" => 110,
        "ntp" => 123,
        "imap" | "imap2" => 143,
        "https" => 443,
        "submission" => 587,
        "imaps" => 993,
        "pop3s" => 995,
        _ => return None,
    })
}

/// `P`, `P:Q`, `:Q`, `P:` (iptables also takes `P-Q` in multiport? no: only `:`).
fn port_range(s: &str) -> Option<Ports> {
    match s.split_once(':') {
        Some((a, b)) => {
            let first = if a.is_empty() { 0 } else { port(a)? };
            let last = if b.is_empty() { 65535 } else { port(b)? };
            (first <= last).then_some(Ports { first, last })
        }
        None => port(s).map(|p| Ports { first: p, last: p }),
    }
}

fn states(s: &str) -> Option<Vec<CtState>> {
    s.split(',')
        .map(|x| {
            Some(match x.to_ascii_uppercase().as_str() {
                "NEW" => CtState::New,
                "ESTABLISHED" => CtState::Established,
                "RELATED" => CtState::Related,
                "INVALID" => CtState::Invalid,
                "UNTRACKED" => CtState::Untracked,
                _ => return None,
            })
        })
        .collect()
}

/// An IPv4 address or prefix as iptables reads it (host bits cleared, dotted masks taken).
fn net(s: &str) -> Option<Ipv4Net> {
    let (a, len) = match s.split_once('/') {
        Some((a, m)) => {
            let len = match m.parse::<u8>() {
                Ok(l) if l <= 32 => l,
                Ok(_) => return None,
                Err(_) => {
                    let mask: Ipv4Addr = m.parse().ok()?;
                    let bits = u32::from(mask);
                    if bits.leading_ones() + bits.trailing_zeros() != 32 {
                        return None;
                    }
                    bits.leading_ones() as u8
                }
            };
            (a, len)
        }
        None => (s, 32),
    };
    let addr: Ipv4Addr = a.parse().ok()?;
    Ipv4Net::new(addr, len).ok().map(|n| n.trunc())
}

/// Parses a rule's options. Comma lists in -s/-d give one rule per address, as iptables does.
pub fn parse_rule(args: &[String]) -> Vec<Rule> {
    let mut r = Rule::empty();
    let mut srcs: Vec<Ipv4Net> = Vec::new();
    let mut dsts: Vec<Ipv4Net> = Vec::new();
    let mut src_neg = false;
    let mut dst_neg = false;
    let mut ctx = Ctx::None;
    let mut neg = false;
    let mut i = 0;
    // Target state while reading CONNMARK options.
    let mut connmark_mode: Option<&str> = None;
    let mut nfmask = u32::MAX;
    let mut ctmask = u32::MAX;
    let mut recent: Option<(String, Option<RecentAction>, Option<u32>, bool)> = None;
    let mut hmark = (0u32, 0u32, 0u32, false);
    let mut log = (None, None);
    let mut stat: (Option<String>, Option<u32>, Option<u32>, Option<f64>, bool) =
        (None, None, None, None, false);
    macro_rules! bad {
        ($opt:expr, $msg:expr) => {{
            if r.unsupported.is_none() {
                r.unsupported = Some(Box::new(Unsupported {
                    option: $opt.to_string(),
                    message: $msg.to_string(),
                }));
            }
        }};
    }
    while i < args.len() {
        let a = args[i].as_str();
        let val = args.get(i + 1).map(String::as_str);
        let mut take = 1;
        if a == "!" {
            neg = true;
            i += 1;
            continue;
        }
        let mut consumed_neg = false;
        // Options that take a value: read it or mark the rule.
        macro_rules! v {
            () => {{
                take = 2;
                match val {
                    Some(v) => v,
                    None => {
                        bad!(a, "needs a value");
                        ""
                    }
                }
            }};
        }
        match (a, ctx) {
            ("-p" | "--protocol", _) => {
                let p = v!().to_ascii_lowercase();
                r.protocol = Some(Neg { neg, value: p });
                consumed_neg = true;
            }
            ("-s" | "--source" | "--src", _) => {
                let v = v!();
                src_neg = neg;
                consumed_neg = true;
                for part in v.split(',') {
                    match net(part) {
                        Some(n) => srcs.push(n),
                        None => bad!(a, format!("{part} is not an IPv4 address or prefix")),
                    }
                }
            }
            ("-d" | "--destination" | "--dst", _) => {
                let v = v!();
                dst_neg = neg;
                consumed_neg = true;
                for part in v.split(',') {
                    match net(part) {
                        Some(n) => dsts.push(n),
                        None => bad!(a, format!("{part} is not an IPv4 address or prefix")),
                    }
                }
            }
            ("-i" | "--in-interface", _) => {
                r.iif = Some(Neg {
                    neg,
                    value: v!().to_string(),
                });
                consumed_neg = true;
            }
            ("-o" | "--out-interface", _) => {
                r.oif = Some(Neg {
                    neg,
                    value: v!().to_string(),
                });
                consumed_neg = true;
            }
            ("-m" | "--match", _) => {
                let m = v!();
                ctx = match m {
                    "tcp" | "udp" => Ctx::Proto,
                    "multiport" => Ctx::Multiport,
                    "state" | "conntrack" => Ctx::State,
                    "connmark" => Ctx::Connmark,
                    "mark" => Ctx::Mark,
                    "statistic" => Ctx::Statistic,
                    "comment" => Ctx::Comment,
                    "recent" => {
                        recent = Some((String::from("DEFAULT"), None, None, false));
                        Ctx::Recent
                    }
                    other => {
                        bad!(format!("-m {other}"), "this match module is not translated");
                        Ctx::Unknown
                    }
                };
            }
            ("-j" | "--jump" | "-g" | "--goto", _) => {
                let t = v!();
                let goto = a == "-g" || a == "--goto";
                ctx = Ctx::Target;
                r.target = Some(match t {
                    _ if goto => Target::Goto(t.to_string()),
                    "ACCEPT" => Target::Accept,
                    "DROP" => Target::Drop,
                    "RETURN" => Target::Return,
                    "REJECT" => Target::Reject(None),
                    "CONNMARK" => {
                        ctx = Ctx::ConnmarkTarget;
                        Target::SetConnmark { value: 0, mask: 0 }
                    }
                    "MARK" => {
                        ctx = Ctx::MarkTarget;
                        Target::SetMark { value: 0, mask: 0 }
                    }
                    "SNAT" => Target::Snat(String::new()),
                    "DNAT" => Target::Dnat(String::new()),
                    "MASQUERADE" => Target::Masquerade(None),
                    "REDIRECT" => Target::Redirect(None),
                    "LOG" => Target::Log {
                        prefix: None,
                        level: None,
                    },
                    "HMARK" => Target::Hmark {
                        modulus: 0,
                        rnd: 0,
                        offset: 0,
                    },
                    other => Target::Jump(other.to_string()),
                });
            }
            ("-c" | "--set-counters", _) => take = 3,
            ("-4" | "--ipv4", _) => {}
            ("--dport" | "--destination-port" | "--sport" | "--source-port", _)
                if !matches!(
                    ctx,
                    Ctx::Multiport | Ctx::Target | Ctx::ConnmarkTarget | Ctx::MarkTarget
                ) =>
            {
                let v = v!();
                let dir = if a.contains('d') { Dir::Dst } else { Dir::Src };
                match port_range(v) {
                    Some(p) => r.matches.push(Match::Ports {
                        dir,
                        neg,
                        ports: vec![p],
                        multiport: false,
                    }),
                    None => bad!(a, format!("{v} is not a port or port range")),
                }
                consumed_neg = true;
            }
            (
                "--dports" | "--destination-ports" | "--sports" | "--source-ports",
                Ctx::Multiport,
            ) => {
                let v = v!();
                let dir = if a.contains('d') { Dir::Dst } else { Dir::Src };
                let ports: Option<Vec<Ports>> = v.split(',').map(port_range).collect();
                match ports {
                    Some(ports) => r.matches.push(Match::Ports {
                        dir,
                        neg,
                        ports,
                        multiport: true,
                    }),
                    None => bad!(a, format!("{v} is not a port list")),
                }
                consumed_neg = true;
            }
            ("--state" | "--ctstate", Ctx::State) => {
                let v = v!();
                match states(v) {
                    Some(s) => r.matches.push(Match::State { neg, states: s }),
                    None => bad!(a, format!("{v}: only NEW, ESTABLISHED, RELATED, INVALID, UNTRACKED are translated")),
                }
                consumed_neg = true;
            }
            ("--mark", Ctx::Connmark | Ctx::Mark) => {
                let v = v!();
                match value_mask(v) {
                    Some((value, mask, _)) => r.matches.push(if ctx == Ctx::Connmark {
                        Match::Connmark { neg, value, mask }
                    } else {
                        Match::Mark { neg, value, mask }
                    }),
                    None => bad!(a, format!("{v} is not a mark")),
                }
                consumed_neg = true;
            }
            ("--mode", Ctx::Statistic) => {
                stat.0 = Some(v!().to_string());
                stat.4 |= neg;
                consumed_neg = true;
            }
            ("--every", Ctx::Statistic) => stat.1 = number(v!()),
            ("--packet", Ctx::Statistic) => stat.2 = number(v!()),
            ("--probability", Ctx::Statistic) => stat.3 = v!().parse().ok(),
            ("--comment", Ctx::Comment) => r.matches.push(Match::Comment(v!().to_string())),
            ("--name", Ctx::Recent) => {
                let v = v!().to_string();
                if let Some(rc) = &mut recent {
                    rc.0 = v;
                }
            }
            ("--set" | "--update" | "--rcheck" | "--remove", Ctx::Recent) => {
                if let Some(rc) = &mut recent {
                    rc.1 = Some(match a {
                        "--set" => RecentAction::Set,
                        "--update" => RecentAction::Update,
                        "--rcheck" => RecentAction::Rcheck,
                        _ => RecentAction::Remove,
                    });
                }
                if neg {
                    bad!(a, "negated recent matches are not translated");
                }
                consumed_neg = true;
            }
            ("--seconds", Ctx::Recent) => {
                let s = number(v!());
                if let Some(rc) = &mut recent {
                    rc.2 = s;
                }
            }
            ("--rsource", Ctx::Recent) => {
                if let Some(rc) = &mut recent {
                    rc.3 = true;
                }
            }
            (
                "--set-xmark" | "--set-mark" | "--and-mark" | "--or-mark" | "--xor-mark",
                Ctx::ConnmarkTarget | Ctx::MarkTarget,
            ) => {
                let v = v!();
                let parsed = match a {
                    "--set-xmark" => value_mask(v).map(|(v, m, _)| (v, m)),
                    "--set-mark" => value_mask(v).map(|(v, m, _)| (v, v | m)),
                    "--and-mark" => number(v).map(|b| (0, !b)),
                    "--or-mark" => number(v).map(|b| (b, b)),
                    _ => number(v).map(|b| (b, 0)),
                };
                match parsed {
                    Some((value, mask)) => {
                        r.target = Some(if ctx == Ctx::ConnmarkTarget {
                            connmark_mode = Some("set");
                            Target::SetConnmark { value, mask }
                        } else {
                            Target::SetMark { value, mask }
                        })
                    }
                    None => bad!(a, format!("{v} is not a mark")),
                }
            }
            ("--save-mark" | "--restore-mark", Ctx::ConnmarkTarget) => {
                connmark_mode = Some(if a == "--save-mark" {
                    "save"
                } else {
                    "restore"
                });
            }
            ("--nfmask" | "--ctmask" | "--mask", Ctx::ConnmarkTarget) => {
                let v = v!();
                match number(v) {
                    Some(m) => {
                        if a != "--ctmask" {
                            nfmask = m;
                        }
                        if a != "--nfmask" {
                            ctmask = m;
                        }
                    }
                    None => bad!(a, format!("{v} is not a mask")),
                }
            }
            ("--to-source" | "--to" | "--to-destination" | "--to-ports", Ctx::Target) => {
                let v = v!().to_string();
                match &mut r.target {
                    Some(Target::Snat(s) | Target::Dnat(s)) if a != "--to-ports" => *s = v,
                    Some(Target::Masquerade(p) | Target::Redirect(p)) if a == "--to-ports" => {
                        *p = Some(v)
                    }
                    _ => bad!(a, "does not belong to this target"),
                }
            }
            ("--log-prefix", Ctx::Target) => log.0 = Some(v!().to_string()),
            ("--log-level", Ctx::Target) => {
                let v = v!();
                let level = match v {
                    "emerg" => Some(0),
                    "alert" => Some(1),
                    "crit" => Some(2),
                    "err" | "error" => Some(3),
                    "warning" | "warn" => Some(4),
                    "notice" => Some(5),
                    "info" => Some(6),
                    "debug" => Some(7),
                    n => n.parse::<u8>().ok().filter(|l| *l <= 7),
                };
                match level {
                    Some(l) => log.1 = Some(l),
                    None => bad!(a, format!("{v} is not a log level")),
                }
            }
            ("--reject-with", Ctx::Target) => {
                let v = v!().to_string();
                r.target = Some(Target::Reject(Some(v)));
            }
            ("--hmark-tuple", Ctx::Target) => {
                let v = v!();
                if v != "src" {
                    bad!(a, "only --hmark-tuple src is read");
                }
                hmark.3 = true;
            }
            ("--hmark-mod", Ctx::Target) => hmark.0 = number(v!()).unwrap_or(0),
            ("--hmark-rnd", Ctx::Target) => hmark.1 = number(v!()).unwrap_or(0),
            ("--hmark-offset", Ctx::Target) => hmark.2 = number(v!()).unwrap_or(0),
            ("--hmark-src-prefix", Ctx::Target) => {
                if v!() != "32" {
                    bad!(a, "only /32 is read");
                }
            }
            _ => {
                let known = ctx == Ctx::Unknown;
                if !known {
                    bad!(a, "this option is not translated");
                }
                // Skip a value if the next word is not an option.
                if val.is_some_and(|v| !v.starts_with('-') && v != "!") {
                    take = 2;
                }
            }
        }
        if neg && !consumed_neg {
            bad!(a, "this option cannot be negated here");
        }
        neg = false;
        i += take;
    }
    // Finish the targets and matches that take several options.
    match (&mut r.target, connmark_mode) {
        (Some(t @ Target::SetConnmark { .. }), Some("save")) => {
            *t = Target::SaveMark { nfmask, ctmask }
        }
        (Some(t @ Target::SetConnmark { .. }), Some("restore")) => {
            *t = Target::RestoreMark { nfmask, ctmask }
        }
        (Some(Target::SetConnmark { .. }), None) => bad!(
            "-j CONNMARK",
            "needs a mode (--set-xmark, --save-mark, --restore-mark, ...)"
        ),
        (Some(Target::Snat(s) | Target::Dnat(s)), _) if s.is_empty() => {
            bad!("-j SNAT/DNAT", "needs --to-source / --to-destination")
        }
        (Some(Target::Log { prefix, level }), _) => {
            *prefix = log.0.take();
            *level = log.1;
        }
        (
            Some(Target::Hmark {
                modulus,
                rnd,
                offset,
            }),
            _,
        ) => {
            if !hmark.3 || hmark.0 == 0 {
                bad!(
                    "-j HMARK",
                    "only --hmark-tuple src with --hmark-mod is read"
                );
            }
            *modulus = hmark.0;
            *rnd = hmark.1;
            *offset = hmark.2;
        }
        _ => {}
    }
    if let Some(mode) = &stat.0 {
        match (mode.as_str(), stat.1, stat.2, stat.3) {
            ("nth", Some(every), packet, _) if every > 0 && packet.unwrap_or(0) < every => {
                r.matches.push(Match::Nth {
                    neg: stat.4,
                    every,
                    packet: packet.unwrap_or(0),
                })
            }
            ("random", _, _, Some(p)) if (0.0..=1.0).contains(&p) => {
                r.matches.push(Match::Random {
                    neg: stat.4,
                    probability: p,
                })
            }
            _ => bad!(
                "-m statistic",
                "needs --mode nth --every N [--packet P] or --mode random --probability P"
            ),
        }
    }
    if let Some((name, action, seconds, rsource)) = recent {
        match action {
            Some(action) => r.matches.push(Match::Recent {
                name,
                action,
                seconds,
                rsource,
            }),
            None => bad!("-m recent", "needs --set, --update, --rcheck or --remove"),
        }
    }
    // One rule per source and destination, as iptables expands comma lists.
    let srcs: Vec<Option<Ipv4Net>> = if srcs.is_empty() {
        vec![None]
    } else {
        srcs.into_iter().map(Some).collect()
    };
    let dsts: Vec<Option<Ipv4Net>> = if dsts.is_empty() {
        vec![None]
    } else {
        dsts.into_iter().map(Some).collect()
    };
    if let ([s], [d]) = (srcs.as_slice(), dsts.as_slice()) {
        r.src = s.map(|value| Neg {
            neg: src_neg,
            value,
        });
        r.dst = d.map(|value| Neg {
            neg: dst_neg,
            value,
        });
        return vec![r];
    }
    let mut out = Vec::new();
    for s in &srcs {
        for d in &dsts {
            let mut rule = r.clone();
            rule.src = s.map(|value| Neg {
                neg: src_neg,
                value,
            });
            rule.dst = d.map(|value| Neg {
                neg: dst_neg,
                value,
            });
            out.push(rule);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    None,
    Proto,
    Multiport,
    State,
    Connmark,
    Mark,
    Statistic,
    Comment,
    Recent,
    Unknown,
    Target,
    ConnmarkTarget,
    MarkTarget,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Rule {
        let args: Vec<String> = s.split_whitespace().map(String::from).collect();
        let mut r = parse_rule(&args);
        assert_eq!(r.len(), 1);
        r.remove(0)
    }

    #[test]
    fn connmark_set_forms_have_the_kernels_masks() {
        let t = |s: &str| rule(s).target.unwrap();
        assert_eq!(
            t("-j CONNMARK --set-mark 1"),
            Target::SetConnmark {
                value: 1,
                mask: u32::MAX
            }
        );
        assert_eq!(
            t("-j CONNMARK --set-mark 1/0xff"),
            Target::SetConnmark {
                value: 1,
                mask: 0xff
            }
        );
        assert_eq!(
            t("-j CONNMARK --set-xmark 0x1/0xff"),
            Target::SetConnmark {
                value: 1,
                mask: 0xff
            }
        );
        assert_eq!(
            t("-j CONNMARK --and-mark 0xff"),
            Target::SetConnmark {
                value: 0,
                mask: 0xffffff00
            }
        );
        assert_eq!(
            t("-j MARK --or-mark 0x4"),
            Target::SetMark { value: 4, mask: 4 }
        );
        assert_eq!(
            t("-j CONNMARK --save-mark --mask 0xff"),
            Target::SaveMark {
                nfmask: 0xff,
                ctmask: 0xff
            }
        );
        assert_eq!(
            t("-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xff"),
            Target::RestoreMark {
                nfmask: u32::MAX,
                ctmask: 0xff
            }
        );
    }

    #[test]
    fn save_form_and_shell_form_parse_alike() {
        let a = rule("-i eth0 -p tcp -m tcp --dport 22 -m state --state NEW -j balance1");
        let b = rule("-i eth0 -p tcp --dport 22 -m state --state NEW -j balance1");
        assert_eq!(a, b);
        assert!(a.unsupported.is_none());
        let c = rule("-p tcp -m tcp --syn -j DROP");
        assert_eq!(c.unsupported.unwrap().option, "--syn");
        let n = rule("-m statistic --mode nth --every 2 --packet 1 -j ACCEPT");
        assert_eq!(
            n.matches,
            vec![Match::Nth {
                neg: false,
                every: 2,
                packet: 1
            }]
        );
    }

    #[test]
    fn commands_and_comma_lists() {
        let args: Vec<String> = "-t mangle -I PREROUTING 2 -s 1.2.3.4,10.0.0.0/8 -j RETURN"
            .split_whitespace()
            .map(String::from)
            .collect();
        let (t, c) = parse_command(&args).unwrap();
        assert_eq!(t.as_deref(), Some("mangle"));
        match c {
            Command::Insert { chain, pos, rules } => {
                assert_eq!((chain.as_str(), pos, rules.len()), ("PREROUTING", 2, 2));
            }
            other => panic!("{other:?}"),
        }
    }
}
