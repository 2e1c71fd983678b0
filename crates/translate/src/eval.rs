//! The evaluator of the mangle table: what a hook chain (PREROUTING or OUTPUT) and every
//! chain it reaches do to new connections, per class of connection. Classes partition the
//! packet space on the values the rules actually test (input interface, protocol, destination
//! port interval, destination and source prefix regions), so their number follows the rules,
//! not the packet space. Each class runs with the kernel's semantics: rules in order, jumps,
//! gotos, RETURN, ACCEPT and DROP, non-terminating targets, masked marks, per-rule nth
//! counters (over a full period of the class's connections) and every random branch.
//!
//! Pure: reads the parsed table only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::iptables::{CtState, Dir, Match, RecentAction, Rule, Target};
use crate::script::Table;

/// One rule of the table: (chain index, rule index).
pub type RuleRef = (usize, usize);

/// Most classes one hook may have (the product of its dimensions).
pub const MAX_CLASSES: usize = 200_000;
/// Longest nth period followed (lcm of the counters a class reaches).
const MAX_PERIOD: usize = 5040;
/// Most random branches of one connection.
const MAX_PATHS: usize = 4096;
const MAX_DEPTH: usize = 32;

/// A region of addresses: the addresses in `prefix` (None: all) that are in none of the more
/// specific prefixes the rules test. `rep` is one address of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub prefix: Option<Ipv4Net>,
    pub rep: Ipv4Addr,
}

/// An input interface class: an exact name the rules test, one matching a wildcard only, or
/// none of them (`rep` is then a name no rule names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iif {
    pub rep: String,
    /// The exact name (not a wildcard's, not the "other" class).
    pub exact: Option<String>,
}

/// Protocol and destination port class: `proto` is "tcp", "udp", another name the rules test,
/// or "" for every other protocol; `ports` the interval of tcp/udp destination ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoPorts {
    pub proto: String,
    pub ports: Option<(u16, u16)>,
}

/// The dimensions of one hook's classes.
#[derive(Debug, Clone, Default)]
pub struct Dims {
    /// Empty for OUTPUT (no input interface).
    pub iifs: Vec<Iif>,
    pub protos: Vec<ProtoPorts>,
    pub dsts: Vec<Region>,
    pub srcs: Vec<Region>,
}

/// One class: an index into each dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Class {
    pub iif: Option<usize>,
    pub proto: usize,
    pub dst: usize,
    pub src: usize,
}

/// How the outcome of a class was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The same marks every time.
    Fixed,
    /// nth counters: exact shares over the period.
    Nth,
    /// Random branches: shares as probabilities.
    Random,
    /// HMARK: a hash of the source (modulus, rnd, offset).
    Hash { rnd: u32 },
}

/// What a class's new connections end with.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The mark each connection routes by (its connection mark, else its packet mark) and
    /// its share; sorted by mark.
    pub marks: Vec<(u32, f64)>,
    /// The connection marks, in order, over one period (nth), for the report.
    pub order: Vec<u32>,
    pub kind: Kind,
    /// Rules whose target ran for some connection of the class.
    pub ran: BTreeSet<RuleRef>,
    /// A rule with a condition the evaluator does not model decided (or may have decided)
    /// what happens: the outcome is not known.
    pub unknown: Option<RuleRef>,
    /// Some connections were dropped (DROP or REJECT in mangle).
    pub dropped: bool,
    /// `-m recent --update/--rcheck --seconds S`: sticky for S seconds.
    pub sticky: Option<u32>,
}

impl Outcome {
    /// The one mark of every connection, if there is one.
    pub fn fixed(&self) -> Option<u32> {
        match self.marks.as_slice() {
            [(m, _)] => Some(*m),
            _ => None,
        }
    }
}

/// One hook evaluated: its dimensions and every class with its outcome.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub dims: Dims,
    pub classes: Vec<(Class, Outcome)>,
    /// Every rule reachable from the hook.
    pub reached: BTreeSet<RuleRef>,
}

/// A packet standing for its class.
#[derive(Debug, Clone, Copy)]
struct Packet<'a> {
    iif: Option<&'a str>,
    proto: &'a str,
    dport: Option<u16>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

/// The chains reachable from `hook`, and their rules.
pub fn reachable(table: &Table, hook: &str) -> BTreeSet<RuleRef> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<usize> = table
        .chains
        .iter()
        .position(|c| c.name == hook)
        .into_iter()
        .collect();
    let mut seen = BTreeSet::new();
    while let Some(c) = todo.pop() {
        if !seen.insert(c) {
            continue;
        }
        for (i, r) in table.chains[c].rules.iter().enumerate() {
            out.insert((c, i));
            if let Some(Target::Jump(t) | Target::Goto(t)) = &r.rule.target {
                if let Some(j) = table.chains.iter().position(|x| x.name == *t) {
                    todo.push(j);
                }
            }
        }
    }
    out
}

/// Evaluates `hook` (PREROUTING: forwarded and inbound; OUTPUT: local) over every class.
/// `uplinks`: interface names to give classes of their own even where no rule tests them.
pub fn evaluate(table: &Table, hook: &str, uplinks: &[String]) -> Result<Evaluation, String> {
    let reached = reachable(table, hook);
    let rules: Vec<&Rule> = reached
        .iter()
        .map(|&(c, i)| &table.chains[c].rules[i].rule)
        .collect();
    let dims = dims(&rules, hook == "PREROUTING", uplinks);
    let iifs: Vec<Option<usize>> = if dims.iifs.is_empty() {
        vec![None]
    } else {
        (0..dims.iifs.len()).map(Some).collect()
    };
    let total = iifs.len() * dims.protos.len() * dims.dsts.len() * dims.srcs.len();
    if total > MAX_CLASSES {
        return Err(format!(
            "{hook} tests too many values together ({total} classes of connections, at most {MAX_CLASSES})"
        ));
    }
    let Some(start) = table.chains.iter().position(|c| c.name == hook) else {
        return Ok(Evaluation {
            dims,
            classes: Vec::new(),
            reached,
        });
    };
    let mut classes = Vec::with_capacity(total);
    for &iif in &iifs {
        for proto in 0..dims.protos.len() {
            for dst in 0..dims.dsts.len() {
                for src in 0..dims.srcs.len() {
                    let class = Class {
                        iif,
                        proto,
                        dst,
                        src,
                    };
                    let p = &dims.protos[proto];
                    let packet = Packet {
                        iif: iif.map(|i| dims.iifs[i].rep.as_str()),
                        proto: &p.proto,
                        dport: p.ports.map(|(a, _)| a),
                        src: dims.srcs[src].rep,
                        dst: dims.dsts[dst].rep,
                    };
                    classes.push((class, Runner::new(table).class(start, &packet)));
                }
            }
        }
    }
    Ok(Evaluation {
        dims,
        classes,
        reached,
    })
}

/// The values the rules test, as classes.
fn dims(rules: &[&Rule], forward: bool, uplinks: &[String]) -> Dims {
    let mut names: BTreeSet<String> = uplinks.iter().cloned().collect();
    let mut protos = BTreeSet::new();
    let mut bounds = BTreeSet::from([0u32, 65536]);
    let (mut dsts, mut srcs) = (BTreeSet::new(), BTreeSet::new());
    for r in rules {
        if let Some(i) = &r.iif {
            names.insert(i.value.clone());
        }
        if let Some(p) = &r.protocol {
            protos.insert(proto_name(&p.value));
        }
        if let Some(n) = &r.dst {
            dsts.insert(n.value.trunc());
        }
        if let Some(n) = &r.src {
            srcs.insert(n.value.trunc());
        }
        for m in &r.matches {
            if let Match::Ports {
                dir: Dir::Dst,
                ports,
                ..
            } = m
            {
                for p in ports {
                    bounds.insert(u32::from(p.first));
                    bounds.insert(u32::from(p.last) + 1);
                }
            }
        }
    }
    protos.remove("all");
    protos.insert("tcp".into());
    protos.insert("udp".into());
    let bounds: Vec<u32> = bounds.into_iter().collect();
    let mut out = Dims {
        iifs: if forward {
            iif_classes(&names)
        } else {
            Vec::new()
        },
        dsts: regions(&dsts),
        srcs: regions(&srcs),
        ..Dims::default()
    };
    for p in &protos {
        if p == "tcp" || p == "udp" {
            for w in bounds.windows(2) {
                let ports = (w[0] as u16, (w[1] - 1) as u16);
                out.protos.push(ProtoPorts {
                    proto: p.clone(),
                    ports: Some(ports),
                });
            }
        } else {
            out.protos.push(ProtoPorts {
                proto: p.clone(),
                ports: None,
            });
        }
    }
    out.protos.push(ProtoPorts {
        proto: String::new(),
        ports: None,
    });
    out
}

/// Protocol names as iptables-save prints them (numbers of the two port protocols named).
fn proto_name(p: &str) -> String {
    match p.to_ascii_lowercase().as_str() {
        "6" => "tcp".into(),
        "17" => "udp".into(),
        "0" => "all".into(),
        other => other.to_string(),
    }
}

fn iif_classes(names: &BTreeSet<String>) -> Vec<Iif> {
    let mut out: Vec<Iif> = (names.iter())
        .filter(|n| !n.ends_with('+'))
        .map(|n| Iif {
            rep: n.clone(),
            exact: Some(n.clone()),
        })
        .collect();
    // A wildcard's own class: a name it matches that no exact name equals.
    for w in names.iter().filter(|n| n.ends_with('+')) {
        let stem = w.trim_end_matches('+');
        let rep = (0..)
            .map(|k| format!("{stem}~{k}"))
            .find(|c| !names.contains(c))
            .expect("unbounded");
        out.push(Iif { rep, exact: None });
    }
    out.push(Iif {
        rep: "~other".into(),
        exact: None,
    });
    out
}

/// The regions the tested prefixes cut the address space into, the most general last.
fn regions(prefixes: &BTreeSet<Ipv4Net>) -> Vec<Region> {
    let mut out: Vec<Region> = Vec::new();
    for p in prefixes {
        let inner: Vec<Ipv4Net> = prefixes
            .iter()
            .filter(|q| *q != p && p.contains(*q))
            .copied()
            .collect();
        if let Some(rep) = uncovered(*p, &inner) {
            out.push(Region {
                prefix: Some(*p),
                rep,
            });
        }
    }
    let all: Vec<Ipv4Net> = prefixes.iter().copied().collect();
    let any = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid");
    if let Some(rep) = uncovered(any, &all) {
        out.push(Region { prefix: None, rep });
    }
    out
}

/// An address of `net` in none of `holes`.
fn uncovered(net: Ipv4Net, holes: &[Ipv4Net]) -> Option<Ipv4Addr> {
    let overlapping: Vec<Ipv4Net> = holes
        .iter()
        .filter(|h| h.contains(&net) || net.contains(*h))
        .copied()
        .collect();
    if overlapping.is_empty() {
        // Not the network address: a host address stands for the region in real traffic too.
        let a = u32::from(net.network());
        return Some(Ipv4Addr::from(if net.prefix_len() < 31 {
            a + 1
        } else {
            a
        }));
    }
    if overlapping.iter().any(|h| h.contains(&net)) {
        return None;
    }
    let halves = net.subnets(net.prefix_len() + 1).ok()?;
    halves.into_iter().find_map(|h| uncovered(h, &overlapping))
}

/// How one rule's conditions apply to a packet.
enum Test {
    Match,
    NoMatch,
    /// A condition the evaluator does not model.
    Unknown,
}

/// Runs new connections of one class through the chains.
struct Runner<'a> {
    table: &'a Table,
    counters: BTreeMap<RuleRef, u64>,
    nth_seen: bool,
    random_seen: bool,
    hash: Option<u32>,
    ran: BTreeSet<RuleRef>,
    unknown: Option<RuleRef>,
    sticky: Option<u32>,
}

/// Chooses the branch of each random decision; enumerates all of them across runs.
#[derive(Debug, Default)]
struct Oracle {
    prefix: Vec<usize>,
    taken: Vec<(usize, usize)>,
    prob: f64,
}

impl Oracle {
    fn choose(&mut self, arity: usize, prob: impl Fn(usize) -> f64) -> usize {
        let c = self.prefix.get(self.taken.len()).copied().unwrap_or(0);
        self.taken.push((c, arity));
        self.prob *= prob(c);
        c
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    ct: u32,
    nf: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Next,
    Return,
    /// ACCEPT: the hook is done with the packet.
    Stop,
    Drop,
}

impl<'a> Runner<'a> {
    fn new(table: &'a Table) -> Self {
        Runner {
            table,
            counters: BTreeMap::new(),
            nth_seen: false,
            random_seen: false,
            hash: None,
            ran: BTreeSet::new(),
            unknown: None,
            sticky: None,
        }
    }

    /// Connections of the class over one full period of the nth counters.
    fn class(mut self, start: usize, p: &Packet<'_>) -> Outcome {
        let mut shares: BTreeMap<u32, f64> = BTreeMap::new();
        let mut order = Vec::new();
        let mut dropped = false;
        loop {
            let paths = self.connection(start, p);
            let mut fixed = None;
            for (prob, mark, drop) in &paths {
                *shares.entry(*mark).or_default() += prob;
                dropped |= drop;
                fixed = Some(*mark);
            }
            if paths.len() != 1 {
                fixed = None;
            }
            order.extend(fixed);
            if self.at_start() || order.len() >= MAX_PERIOD || fixed.is_none() {
                break;
            }
        }
        let n = shares.values().sum::<f64>();
        let marks: Vec<(u32, f64)> = shares.into_iter().map(|(m, s)| (m, s / n)).collect();
        let kind = match (self.hash, self.random_seen, self.nth_seen) {
            _ if marks.len() == 1 => Kind::Fixed,
            (Some(rnd), false, _) => Kind::Hash { rnd },
            (_, true, false) => Kind::Random,
            (None, false, true) => Kind::Nth,
            _ => Kind::Random,
        };
        if self.nth_seen && (self.random_seen || self.hash.is_some()) && self.unknown.is_none() {
            // Counters that differ by branch: no exact period to read.
            self.unknown = self.ran.iter().next().copied();
        }
        if !self.at_start() && self.unknown.is_none() {
            self.unknown = self.ran.iter().next().copied();
        }
        Outcome {
            marks,
            order: if kind == Kind::Nth { order } else { Vec::new() },
            kind,
            ran: self.ran,
            unknown: self.unknown,
            dropped,
            sticky: self.sticky,
        }
    }

    fn at_start(&self) -> bool {
        self.counters.iter().all(|(&(c, i), n)| {
            let every = self.table.chains[c].rules[i]
                .rule
                .matches
                .iter()
                .find_map(|m| match m {
                    Match::Nth { every, .. } => Some(u64::from(*every)),
                    _ => None,
                });
            every.is_none_or(|e| n % e == 0)
        })
    }

    /// One new connection, every random branch: (probability, mark, dropped).
    fn connection(&mut self, start: usize, p: &Packet<'_>) -> Vec<(f64, u32, bool)> {
        let mut out = Vec::new();
        let saved = self.counters.clone();
        let mut prefix = Vec::new();
        let mut after = None;
        loop {
            self.counters = saved.clone();
            let mut o = Oracle {
                prefix,
                taken: Vec::new(),
                prob: 1.0,
            };
            let mut m = Marks::default();
            let flow = self.run(start, p, &mut m, &mut o, 0);
            let mark = if m.ct != 0 { m.ct } else { m.nf };
            out.push((o.prob, mark, flow == Flow::Drop));
            after.get_or_insert_with(|| self.counters.clone());
            let Some(j) = o.taken.iter().rposition(|(c, a)| c + 1 < *a) else {
                break;
            };
            if out.len() >= MAX_PATHS {
                self.unknown.get_or_insert((start, 0));
                break;
            }
            prefix = o.taken[..j].iter().map(|(c, _)| *c).collect();
            prefix.push(o.taken[j].0 + 1);
        }
        self.counters = after.unwrap_or(saved);
        out
    }

    fn run(
        &mut self,
        chain: usize,
        p: &Packet<'_>,
        m: &mut Marks,
        o: &mut Oracle,
        depth: usize,
    ) -> Flow {
        if depth > MAX_DEPTH {
            self.unknown.get_or_insert((chain, 0));
            return Flow::Stop;
        }
        let table = self.table;
        for (i, r) in table.chains[chain].rules.iter().enumerate() {
            let at = (chain, i);
            match self.test(at, &r.rule, p, m, o) {
                Test::NoMatch => continue,
                Test::Unknown => {
                    if writes_or_decides(&r.rule) {
                        self.unknown.get_or_insert(at);
                    }
                    continue;
                }
                Test::Match => {}
            }
            self.ran.insert(at);
            match self.target(at, &r.rule, p, m, o, depth) {
                Flow::Next => {}
                f => return f,
            }
        }
        Flow::Next
    }

    fn target(
        &mut self,
        at: RuleRef,
        rule: &Rule,
        p: &Packet<'_>,
        m: &mut Marks,
        o: &mut Oracle,
        depth: usize,
    ) -> Flow {
        match &rule.target {
            None | Some(Target::Log { .. }) => {}
            Some(Target::SetConnmark { value, mask }) => m.ct = (m.ct & !mask) ^ value,
            Some(Target::SetMark { value, mask }) => m.nf = (m.nf & !mask) ^ value,
            Some(Target::SaveMark { nfmask, ctmask }) => m.ct = (m.ct & !ctmask) ^ (m.nf & nfmask),
            Some(Target::RestoreMark { nfmask, ctmask }) => {
                m.nf = (m.nf & !nfmask) ^ (m.ct & ctmask)
            }
            Some(Target::Return) => return Flow::Return,
            Some(Target::Accept) => return Flow::Stop,
            Some(Target::Drop | Target::Reject(_)) => return Flow::Drop,
            Some(Target::Jump(c) | Target::Goto(c)) => {
                let Some(j) = self.table.chains.iter().position(|x| x.name == *c) else {
                    self.unknown.get_or_insert(at);
                    return Flow::Next;
                };
                let f = self.run(j, p, m, o, depth + 1);
                let goto = matches!(rule.target, Some(Target::Goto(_)));
                return match f {
                    Flow::Next | Flow::Return if goto => Flow::Return,
                    Flow::Next | Flow::Return => Flow::Next,
                    f => f,
                };
            }
            Some(Target::Hmark {
                modulus,
                rnd,
                offset,
            }) => {
                self.hash = Some(*rnd);
                let n = (*modulus).max(1) as usize;
                let c = o.choose(n, |_| 1.0 / n as f64);
                m.nf = offset.wrapping_add(c as u32);
            }
            Some(_) => {
                self.unknown.get_or_insert(at);
            }
        }
        Flow::Next
    }

    fn test(
        &mut self,
        at: RuleRef,
        rule: &Rule,
        p: &Packet<'_>,
        m: &Marks,
        o: &mut Oracle,
    ) -> Test {
        if rule.unsupported.is_some() || rule.oif.is_some() {
            return Test::Unknown;
        }
        if let Some(i) = &rule.iif {
            let hit = p.iif.is_some_and(|n| match i.value.strip_suffix('+') {
                Some(stem) => n.starts_with(stem),
                None => n == i.value,
            });
            if hit == i.neg {
                return Test::NoMatch;
            }
        }
        if let Some(pr) = &rule.protocol {
            let v = proto_name(&pr.value);
            if (v == "all" || v == p.proto) == pr.neg {
                return Test::NoMatch;
            }
        }
        for (net, a) in [(&rule.src, p.src), (&rule.dst, p.dst)] {
            if let Some(n) = net {
                if n.value.contains(&a) == n.neg {
                    return Test::NoMatch;
                }
            }
        }
        for x in &rule.matches {
            let hit = match x {
                Match::Connmark { neg, value, mask } => (m.ct & mask == *value) != *neg,
                Match::Mark { neg, value, mask } => (m.nf & mask == *value) != *neg,
                Match::State { neg, states } => states.contains(&CtState::New) != *neg,
                Match::Comment(_) => true,
                Match::Ports {
                    dir: Dir::Dst,
                    neg,
                    ports,
                    ..
                } => {
                    let Some(d) = p.dport else {
                        return Test::NoMatch;
                    };
                    ports.iter().any(|r| r.first <= d && d <= r.last) != *neg
                }
                Match::Ports { dir: Dir::Src, .. } => return Test::Unknown,
                Match::Nth { neg, every, packet } => {
                    self.nth_seen = true;
                    let c = self.counters.entry(at).or_insert(0);
                    let hit = *c % u64::from(*every) == u64::from(*packet);
                    *c += 1;
                    hit != *neg
                }
                Match::Random { neg, probability } => {
                    self.random_seen = true;
                    let q = *probability;
                    (o.choose(2, |c| if c == 0 { q } else { 1.0 - q }) == 0) != *neg
                }
                Match::Recent {
                    action, seconds, ..
                } => match action {
                    RecentAction::Set => true,
                    // A new source is in no list yet: the first connection never matches.
                    RecentAction::Update | RecentAction::Rcheck => {
                        self.sticky = self.sticky.or(*seconds);
                        false
                    }
                    RecentAction::Remove => return Test::Unknown,
                },
            };
            if !hit {
                return Test::NoMatch;
            }
        }
        Test::Match
    }
}

/// Whether a rule's target changes a mark or the path through the chains.
pub fn writes_or_decides(rule: &Rule) -> bool {
    rule.unsupported.is_some() || !matches!(rule.target, None | Some(Target::Log { .. }))
}

/// Whether a rule's target writes a mark (packet or connection).
pub fn writes_mark(rule: &Rule) -> bool {
    match &rule.target {
        Some(
            Target::SetConnmark { .. }
            | Target::SetMark { .. }
            | Target::SaveMark { .. }
            | Target::RestoreMark { .. }
            | Target::Hmark { .. },
        ) => true,
        // An option the parser could not read may be a mark target's.
        _ => rule
            .unsupported
            .as_ref()
            .is_some_and(|u| u.option.to_ascii_uppercase().contains("MARK")),
    }
}
