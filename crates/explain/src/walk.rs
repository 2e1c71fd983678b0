//! A new connection's first packet walked through the compiled ruleset model, rule by rule,
//! as the kernel evaluates it: matches, marks, map lookups, jumps and returns. Where the rules
//! split (numgen or jhash over weight ranges) the walk forks, one branch per range, each with
//! its share. Pure: it reads the model only, so it cannot disagree with what `apply` loads.

use std::net::IpAddr;

use nftbalance_ruleset::{
    names, CtKey, CtState, Expr, Field, IpFamily, MapRef, Match, MetaKey, NumgenMode, Protocol,
    Reject, Rule, Ruleset, SelectorRef, SetRef, Stmt, Value, Verdict,
};

/// The packet: what the rules can look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub saddr: Option<IpAddr>,
    pub daddr: IpAddr,
    pub protocol: Protocol,
    pub dport: Option<u16>,
}

impl Packet {
    fn v6(&self) -> bool {
        self.daddr.is_ipv6()
    }
}

/// One rule that matched on the way, as `nft list` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    pub chain: String,
    /// Position in its chain, from 0.
    pub rule: usize,
    pub text: String,
}

/// How a branch of the walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Left the hook's chain accepted (a mark or none).
    Accepted,
    /// Refused at once (`reject`).
    Refused,
}

/// Where the split came from, for the branch that took one of its ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    RoundRobin,
    Random,
    SourceHash,
}

/// One way the walk ends, with the share of new connections that take it.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    pub ct_mark: u32,
    pub share: f64,
    pub end: End,
    /// The selector rule that matched, if any.
    pub selector: Option<SelectorRef>,
    /// The set of excluded destinations that returned the connection unmarked, if any.
    pub excluded_by: Option<String>,
    /// The connection got its mark from the ingress map (it arrived on an uplink).
    pub inbound: bool,
    pub split: Option<SplitKind>,
    /// A sticky set was consulted: a recent source would keep its earlier uplink.
    pub sticky: bool,
    pub steps: Vec<Step>,
}

/// A value at packet time.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Num(u32),
    Name(String),
    Addr(IpAddr),
    Port(u16),
    Proto(Protocol),
    Family(IpFamily),
    Verdict(Verdict),
}

/// What an expression gives: a value, nothing (the field is not in this packet, or a map
/// lookup missed: the rule stops there), or one of several values by share.
enum Eval {
    Known(Val),
    Absent,
    Split(SplitKind, Vec<(Val, f64)>),
}

/// The state of one branch of the walk.
#[derive(Debug, Clone)]
struct State {
    /// (chain, next rule) frames; the last is where the walk is.
    stack: Vec<(usize, usize)>,
    ct_mark: u32,
    meta_mark: u32,
    branch: Branch,
}

/// Rule walks in one hook never take more steps than this: the model has no loops, so this
/// only bounds a corrupt model.
const MAX_STEPS: usize = 100_000;

/// Walks the base chain `chain` (prerouting or output) for the first packet of a new
/// connection without a mark; one branch per way it can end.
pub fn walk(rs: &Ruleset, chain: &str, packet: &Packet) -> Vec<Branch> {
    let Some(start) = rs.chains.iter().position(|c| c.name == chain) else {
        return Vec::new();
    };
    let mut todo = vec![State {
        stack: vec![(start, 0)],
        ct_mark: 0,
        meta_mark: 0,
        branch: walk_root(),
    }];
    let mut done = Vec::new();
    let mut steps = 0;
    while let Some(mut s) = todo.pop() {
        steps += 1;
        if steps > MAX_STEPS {
            break;
        }
        let Some(&mut (c, ref mut r)) = s.stack.last_mut() else {
            s.branch.ct_mark = s.ct_mark;
            done.push(s.branch);
            continue;
        };
        let chain = &rs.chains[c];
        let Some(rule) = chain.rules.get(*r) else {
            // End of a chain: a regular chain returns, a base chain accepts.
            s.stack.pop();
            if chain.base.is_some() {
                s.stack.clear();
            }
            todo.push(s);
            continue;
        };
        let index = *r;
        *r += 1;
        if !rule.matches.iter().all(|m| matches(rs, m, packet, &mut s)) {
            todo.push(s);
            continue;
        }
        s.branch.steps.push(Step {
            chain: chain.name.clone(),
            rule: index,
            text: nftbalance_ruleset::nft::rule(rule),
        });
        note_rule(rule, &mut s.branch);
        todo.extend(run_statements(rs, rule, 0, packet, s));
    }
    // Depth-first from a stack: put the branches back in rule order.
    done.reverse();
    done
}

/// What a matching rule says about the connection, beyond its effect.
fn note_rule(rule: &Rule, b: &mut Branch) {
    // The first selector that matches decides: later ones find the connection marked (or
    // excluded) and return.
    if b.selector.is_none() {
        b.selector = rule.selector;
    }
    let is_return = rule.stmts.last() == Some(&Stmt::Verdict(Verdict::Return));
    for m in &rule.matches {
        if let Match::InSet {
            set: SetRef::Named(set),
            ..
        } = m
        {
            if set.starts_with("exclude_") && is_return {
                b.excluded_by = Some(set.clone());
            }
        }
    }
}

/// Whether a map is the ingress map: a mark from it means the connection came in on an uplink.
fn is_ingress(map: &MapRef) -> bool {
    *map == MapRef::Named(names::INGRESS_MARK.into())
}

/// Runs the statements of a matched rule from `from`; the states that go on (more than one
/// after a split, none when the rule ended the walk's branch).
fn run_statements(rs: &Ruleset, rule: &Rule, from: usize, p: &Packet, mut s: State) -> Vec<State> {
    for (i, stmt) in rule.stmts.iter().enumerate().skip(from) {
        match stmt {
            Stmt::Mangle { target, value } => match eval(rs, value, p, &s) {
                Eval::Known(Val::Num(n)) => {
                    if matches!(value, Expr::Map { map, .. } if is_ingress(map)) {
                        s.branch.inbound = true;
                    }
                    set_mark(target, n, &mut s)
                }
                Eval::Known(_) | Eval::Absent => return vec![missed(s, i)],
                Eval::Split(kind, values) => {
                    return fork(kind, values, &mut s, |v, st| match v {
                        Val::Num(n) => {
                            set_mark(target, n, st);
                            run_statements(rs, rule, i + 1, p, st.clone())
                        }
                        _ => vec![st.clone()],
                    })
                }
            },
            Stmt::VerdictMap { key, map } => {
                let looked_up = match eval(rs, key, p, &s) {
                    Eval::Known(k) => lookup(rs, map, &k),
                    Eval::Absent => None,
                    Eval::Split(kind, keys) => {
                        let verdicts: Vec<(Val, f64)> = keys
                            .into_iter()
                            .filter_map(|(k, share)| Some((lookup(rs, map, &k)?, share)))
                            .collect();
                        return fork(kind, verdicts, &mut s, |v, st| match v {
                            Val::Verdict(v) => verdict(rs, &v, st.clone()),
                            _ => vec![st.clone()],
                        });
                    }
                };
                match looked_up {
                    Some(Val::Verdict(v)) => {
                        s.branch.inbound |= is_ingress(map);
                        return verdict(rs, &v, s);
                    }
                    _ => return vec![missed(s, i)],
                }
            }
            Stmt::SetUpdate { .. } | Stmt::Counter => {}
            // Source NAT sits in postrouting, which this walk does not enter.
            Stmt::Snat { .. } | Stmt::Masquerade => {}
            Stmt::Reject(Reject::TcpReset | Reject::IcmpxHostUnreachable) => {
                s.branch.end = End::Refused;
                s.branch.ct_mark = s.ct_mark;
                s.stack.clear();
                return vec![s];
            }
            Stmt::Verdict(v) => return verdict(rs, v, s),
        }
    }
    vec![s]
}

/// A map lookup that found nothing stops its rule (nft's NFT_BREAK). When that was the
/// rule's first statement, the rule did nothing and leaves the list of rules that acted.
fn missed(mut s: State, statement: usize) -> State {
    if statement == 0 {
        s.branch.steps.pop();
    }
    s
}

/// One state per value of a split, each with its share.
fn fork(
    kind: SplitKind,
    values: Vec<(Val, f64)>,
    s: &mut State,
    mut each: impl FnMut(Val, &mut State) -> Vec<State>,
) -> Vec<State> {
    let mut out = Vec::new();
    for (v, share) in values {
        let mut st = s.clone();
        st.branch.share *= share;
        st.branch.split = Some(kind);
        out.extend(each(v, &mut st));
    }
    out
}

fn set_mark(target: &Expr, n: u32, s: &mut State) {
    match target {
        Expr::Ct(CtKey::Mark) => s.ct_mark = n,
        Expr::Meta(MetaKey::Mark) => s.meta_mark = n,
        _ => {}
    }
}

fn verdict(rs: &Ruleset, v: &Verdict, mut s: State) -> Vec<State> {
    let to = |name: &str| rs.chains.iter().position(|c| c.name == name);
    match v {
        Verdict::Accept => s.stack.clear(),
        Verdict::Return => {
            s.stack.pop();
        }
        Verdict::Jump(name) => match to(name) {
            Some(c) => s.stack.push((c, 0)),
            None => return Vec::new(),
        },
        Verdict::Goto(name) => match to(name) {
            Some(c) => {
                s.stack.pop();
                s.stack.push((c, 0));
            }
            None => return Vec::new(),
        },
    }
    vec![s]
}

fn matches(rs: &Ruleset, m: &Match, p: &Packet, s: &mut State) -> bool {
    match m {
        // The first packet of a new connection.
        Match::CtState(states) => states.contains(&CtState::New),
        Match::Cmp {
            left,
            negate,
            right,
        } => match eval(rs, left, p, s) {
            Eval::Known(v) => value_matches(&v, right) != *negate,
            _ => false,
        },
        Match::InSet { left, set } => {
            let v = match eval(rs, left, p, s) {
                Eval::Known(v) => v,
                _ => return false,
            };
            match set {
                SetRef::Anonymous(values) => values.iter().any(|x| value_matches(&v, x)),
                SetRef::Named(name) => {
                    let Some(set) = rs.set(name) else {
                        return false;
                    };
                    if set.dynamic.is_some() {
                        // Filled by earlier connections: unknown here.
                        s.branch.sticky = true;
                    }
                    set.elements.iter().any(|e| value_matches(&v, &e.key))
                }
            }
        }
    }
}

fn lookup(rs: &Ruleset, map: &MapRef, key: &Val) -> Option<Val> {
    let found = match map {
        MapRef::Anonymous(entries) => entries
            .iter()
            .find(|(k, _)| value_matches(key, k))
            .map(|(_, d)| d.clone()),
        MapRef::Named(name) => rs
            .set(name)?
            .elements
            .iter()
            .find_map(|e| value_matches(key, &e.key).then(|| e.data.clone()).flatten()),
    }?;
    constant(&found)
}

/// A constant of the model as a packet-time value.
fn constant(v: &Value) -> Option<Val> {
    Some(match v {
        Value::Mark(n) | Value::Int(n) => Val::Num(*n),
        Value::IfName(s) => Val::Name(s.clone()),
        Value::Ipv4(a) => Val::Addr(IpAddr::V4(*a)),
        Value::Ipv6(a) => Val::Addr(IpAddr::V6(*a)),
        Value::Port(p) => Val::Port(*p),
        Value::Verdict(v) => Val::Verdict(v.clone()),
        Value::NfProto(f) => Val::Family(*f),
        Value::L4Proto(p) => Val::Proto(*p),
        Value::Ipv4Net(_) | Value::Ipv6Net(_) | Value::Range(..) => return None,
    })
}

/// Whether a packet-time value equals a constant or lies in its prefix or range.
fn value_matches(v: &Val, c: &Value) -> bool {
    match (v, c) {
        (Val::Addr(IpAddr::V4(a)), Value::Ipv4Net(n)) => n.contains(a),
        (Val::Addr(IpAddr::V6(a)), Value::Ipv6Net(n)) => n.contains(a),
        (Val::Num(n), Value::Range(lo, hi)) => match (lo.as_ref(), hi.as_ref()) {
            (Value::Int(a) | Value::Mark(a), Value::Int(b) | Value::Mark(b)) => {
                (a..=b).contains(&n)
            }
            _ => false,
        },
        (Val::Port(x), Value::Range(lo, hi)) => match (lo.as_ref(), hi.as_ref()) {
            (Value::Port(a), Value::Port(b)) => (a..=b).contains(&x),
            _ => false,
        },
        _ => constant(c).as_ref() == Some(v),
    }
}

fn eval(rs: &Ruleset, e: &Expr, p: &Packet, s: &State) -> Eval {
    use Eval::*;
    match e {
        Expr::Meta(MetaKey::Mark) => Known(Val::Num(s.meta_mark)),
        Expr::Ct(CtKey::Mark) => Known(Val::Num(s.ct_mark)),
        Expr::Ct(CtKey::State) => Absent,
        Expr::Meta(MetaKey::IifName) => p.iif.clone().map_or(Absent, |n| Known(Val::Name(n))),
        Expr::Meta(MetaKey::OifName) => p.oif.clone().map_or(Absent, |n| Known(Val::Name(n))),
        Expr::Meta(MetaKey::NfProto) => Known(Val::Family(if p.v6() {
            IpFamily::V6
        } else {
            IpFamily::V4
        })),
        Expr::Meta(MetaKey::L4Proto) => Known(Val::Proto(p.protocol)),
        Expr::Payload(f) => field(*f, p).map_or(Absent, Known),
        Expr::Network {
            field: f,
            prefix_len,
        } => match field(*f, p) {
            Some(Val::Addr(a)) => match ipnet::IpNet::new(a, *prefix_len) {
                Ok(n) => Known(Val::Addr(n.network())),
                Err(_) => Absent,
            },
            _ => Absent,
        },
        Expr::Value(v) => constant(v).map_or(Absent, Known),
        Expr::And(inner, mask) => match eval(rs, inner, p, s) {
            Known(Val::Num(n)) => Known(Val::Num(n & mask)),
            _ => Absent,
        },
        Expr::Bits { expr, keep, set } => match eval(rs, expr, p, s) {
            Known(Val::Num(n)) => Known(Val::Num(n & keep | set)),
            _ => Absent,
        },
        Expr::Numgen { .. } | Expr::Jhash { .. } => Absent,
        Expr::Map { key, map } => match split_keys(key, p) {
            Some((kind, keys)) => Split(
                kind,
                keys.into_iter()
                    .filter_map(|(k, share)| Some((lookup(rs, map, &k)?, share)))
                    .collect(),
            ),
            None => match eval(rs, key, p, s) {
                Known(k) => lookup(rs, map, &k).map_or(Absent, Known),
                other => other,
            },
        },
    }
}

/// A numgen or jhash key: each of its values with its share (1/modulus each).
fn split_keys(key: &Expr, p: &Packet) -> Option<(SplitKind, Vec<(Val, f64)>)> {
    let (kind, modulus) = match key {
        Expr::Numgen { mode, modulus } => (
            match mode {
                NumgenMode::Inc => SplitKind::RoundRobin,
                NumgenMode::Random => SplitKind::Random,
            },
            *modulus,
        ),
        Expr::Jhash {
            field: f,
            modulus,
            seed,
        } => {
            // A hash of the source of another family never runs for this packet.
            let v6 = matches!(f, Field::Ip6Saddr | Field::Ip6Daddr);
            if v6 != p.v6() {
                return None;
            }
            if let Some(Val::Addr(a)) = field(*f, p) {
                // A known source: the one bucket the kernel computes.
                let bytes = match a {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                };
                let k = crate::jhash::bucket(&bytes, *seed, *modulus);
                return Some((SplitKind::SourceHash, vec![(Val::Num(k), 1.0)]));
            }
            (SplitKind::SourceHash, *modulus)
        }
        _ => return None,
    };
    let share = 1.0 / f64::from(modulus.max(1));
    Some((kind, (0..modulus).map(|k| (Val::Num(k), share)).collect()))
}

/// A header field of the packet, if the packet has it.
fn field(f: Field, p: &Packet) -> Option<Val> {
    let addr = |a: Option<IpAddr>, v6: bool| a.filter(|a| a.is_ipv6() == v6).map(Val::Addr);
    match f {
        Field::IpSaddr => addr(p.saddr, false),
        Field::Ip6Saddr => addr(p.saddr, true),
        Field::IpDaddr => addr(Some(p.daddr), false),
        Field::Ip6Daddr => addr(Some(p.daddr), true),
        Field::Dport(proto) => (proto == p.protocol).then_some(p.dport?).map(Val::Port),
    }
}

/// The source NAT of a packet of this family leaving by `oif`, from the postrouting chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Nat {
    /// `snat to ADDRESS`.
    To { address: IpAddr },
    /// `masquerade`: the primary address of the interface.
    Masquerade { interface: String },
    /// No source NAT.
    None,
}

pub fn source_nat(rs: &Ruleset, oif: &str, v6: bool) -> Nat {
    let Some(chain) = rs.chain(names::POSTROUTING) else {
        return Nat::None;
    };
    let daddr = if v6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    };
    let p = Packet {
        iif: None,
        oif: Some(oif.to_string()),
        saddr: None,
        daddr,
        protocol: Protocol::Tcp,
        dport: None,
    };
    let mut s = State {
        stack: Vec::new(),
        ct_mark: 0,
        meta_mark: 0,
        branch: walk_root(),
    };
    for rule in &chain.rules {
        if !rule.matches.iter().all(|m| matches(rs, m, &p, &mut s)) {
            continue;
        }
        for stmt in &rule.stmts {
            match stmt {
                Stmt::Snat { family, addr } if (*family == IpFamily::V6) == v6 => {
                    match eval(rs, addr, &p, &s) {
                        Eval::Known(Val::Addr(address)) => return Nat::To { address },
                        _ => break,
                    }
                }
                Stmt::Masquerade => {
                    return Nat::Masquerade {
                        interface: oif.to_string(),
                    }
                }
                _ => {}
            }
        }
    }
    Nat::None
}

fn walk_root() -> Branch {
    Branch {
        ct_mark: 0,
        share: 1.0,
        end: End::Accepted,
        selector: None,
        excluded_by: None,
        inbound: false,
        split: None,
        sticky: false,
        steps: Vec::new(),
    }
}
