//! A small interpreter of mangle chains for what happens to ONE new connection: mark matches,
//! statistic (nth with the kernel's per-rule counters, random as weighted branches), HMARK as
//! a uniform choice, CONNMARK/MARK with their exact masks, jumps, RETURN and ACCEPT. Used to
//! read the split of a balance chain, whatever its shape, as the kernel would run it.

use std::collections::{BTreeMap, BTreeSet};

use crate::iptables::{CtState, Match, RecentAction, Target};
use crate::script::Table;

/// The marks of a connection under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conn {
    pub ct: u32,
    pub nf: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Next,
    Return,
    Accept,
    Drop,
}

/// Chooses the branch of each random decision; enumerates all of them across runs.
#[derive(Debug, Default)]
struct Oracle {
    prefix: Vec<usize>,
    taken: Vec<(usize, usize)>,
    prob: f64,
}

impl Oracle {
    fn choose(&mut self, arity: usize, probs: &dyn Fn(usize) -> f64) -> usize {
        let k = self.taken.len();
        let c = self.prefix.get(k).copied().unwrap_or(0);
        self.taken.push((c, arity));
        self.prob *= probs(c);
        c
    }
}

/// What running a chain does to new connections.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Deterministic per connection (nth counters or none): the mark of each connection in
    /// order over one full period of all counters.
    Sequence(Vec<u32>),
    /// Random or hash: the probability of each resulting mark.
    Distribution(Vec<(u32, f64)>),
}

/// Result of simulating a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    pub outcome: Outcome,
    /// Every (chain, rule index) the simulation read (the split's rules).
    pub rules: BTreeSet<(String, usize)>,
    pub chains: BTreeSet<String>,
    pub random: bool,
    pub nth: bool,
    /// HMARK (modulus, rnd, offset).
    pub hmark: Option<(u32, u32, u32)>,
    /// `-m recent --update --seconds S`: sticky.
    pub sticky_seconds: Option<u32>,
}

struct Sim<'a> {
    table: &'a Table,
    counters: BTreeMap<(String, usize), u64>,
    rules: BTreeSet<(String, usize)>,
    chains: BTreeSet<String>,
    random: bool,
    nth: bool,
    hmark: Option<(u32, u32, u32)>,
    sticky: Option<u32>,
}

const MAX_PATHS: usize = 4096;
const MAX_PERIOD: usize = 5040;

/// Simulates `chain` from rule `skip` on. `None` when a rule uses something the interpreter
/// does not model (addresses, ports, interfaces: then it is not a pure split).
pub fn simulate(table: &Table, chain: &str, skip: usize) -> Option<Simulation> {
    let mut sim = Sim {
        table,
        counters: BTreeMap::new(),
        rules: BTreeSet::new(),
        chains: BTreeSet::new(),
        random: false,
        nth: false,
        hmark: None,
        sticky: None,
    };
    // First connection: enumerate the random branches.
    let first = sim.paths(chain, skip)?;
    let branched = first.len() > 1;
    if sim.nth && branched {
        return None;
    }
    let outcome = if branched {
        let mut dist: Vec<(u32, f64)> = Vec::new();
        for (p, m) in first {
            match dist.iter_mut().find(|(k, _)| *k == m) {
                Some(e) => e.1 += p,
                None => dist.push((m, p)),
            }
        }
        Outcome::Distribution(dist)
    } else {
        let mut seq = vec![first[0].1];
        while !sim.counters_at_start() {
            if seq.len() >= MAX_PERIOD {
                return None;
            }
            let next = sim.paths(chain, skip)?;
            if next.len() != 1 {
                return None;
            }
            seq.push(next[0].1);
        }
        Outcome::Sequence(seq)
    };
    Some(Simulation {
        outcome,
        rules: sim.rules,
        chains: sim.chains,
        random: sim.random,
        nth: sim.nth,
        hmark: sim.hmark,
        sticky_seconds: sim.sticky,
    })
}

impl Sim<'_> {
    fn counters_at_start(&self) -> bool {
        self.counters.iter().all(|((c, i), n)| {
            let every = self.table.chain(c).and_then(|ch| {
                ch.rules[*i].rule.matches.iter().find_map(|m| match m {
                    Match::Nth { every, .. } => Some(*every),
                    _ => None,
                })
            });
            every.is_none_or(|e| n % u64::from(e) == 0)
        })
    }

    /// One new connection, every random branch: (probability, resulting mark).
    fn paths(&mut self, chain: &str, skip: usize) -> Option<Vec<(f64, u32)>> {
        let mut out = Vec::new();
        let mut prefix: Vec<usize> = Vec::new();
        let saved = self.counters.clone();
        loop {
            let mut o = Oracle {
                prefix: prefix.clone(),
                taken: Vec::new(),
                prob: 1.0,
            };
            let mut conn = Conn::default();
            if !out.is_empty() {
                // Counters belong to the first branch only (nth and random are not mixed).
                self.counters = saved.clone();
            }
            let flow = self.run(chain, skip, &mut conn, &mut o, 0)?;
            if flow == Flow::Drop {
                return None;
            }
            let mark = if conn.ct != 0 { conn.ct } else { conn.nf };
            out.push((o.prob, mark));
            if out.len() > MAX_PATHS {
                return None;
            }
            // Next branch: the last decision with an untried alternative.
            let j = match o.taken.iter().rposition(|(c, a)| c + 1 < *a) {
                Some(j) => j,
                None => break,
            };
            prefix = o.taken[..j].iter().map(|(c, _)| *c).collect();
            prefix.push(o.taken[j].0 + 1);
        }
        Some(out)
    }

    fn run(
        &mut self,
        chain: &str,
        skip: usize,
        conn: &mut Conn,
        o: &mut Oracle,
        depth: usize,
    ) -> Option<Flow> {
        if depth > 8 {
            return None;
        }
        let table = self.table;
        let ch = table.chain(chain)?;
        if ch.builtin {
            return None;
        }
        self.chains.insert(chain.to_string());
        for (i, r) in ch.rules.iter().enumerate().skip(skip) {
            let rule = &r.rule;
            self.rules.insert((chain.to_string(), i));
            if rule.unsupported.is_some()
                || rule.protocol.is_some()
                || rule.src.is_some()
                || rule.dst.is_some()
                || rule.iif.is_some()
                || rule.oif.is_some()
            {
                return None;
            }
            let mut matched = true;
            for m in &rule.matches {
                let hit = match m {
                    Match::Connmark { neg, value, mask } => (conn.ct & mask == *value) != *neg,
                    Match::Mark { neg, value, mask } => (conn.nf & mask == *value) != *neg,
                    Match::Nth { neg, every, packet } => {
                        self.nth = true;
                        let c = self.counters.entry((chain.to_string(), i)).or_insert(0);
                        let hit = *c % u64::from(*every) == u64::from(*packet);
                        *c += 1;
                        hit != *neg
                    }
                    Match::Random { neg, probability } => {
                        self.random = true;
                        let p = *probability;
                        let c = o.choose(2, &|c| if c == 0 { p } else { 1.0 - p });
                        (c == 0) != *neg
                    }
                    Match::State { neg, states } => states.contains(&CtState::New) != *neg,
                    Match::Comment(_) => true,
                    Match::Recent {
                        action, seconds, ..
                    } => match action {
                        RecentAction::Set => true,
                        RecentAction::Update | RecentAction::Rcheck => {
                            if let Some(s) = seconds {
                                self.sticky = Some(*s);
                            }
                            false
                        }
                        RecentAction::Remove => return None,
                    },
                    Match::Ports { .. } => return None,
                };
                if !hit {
                    matched = false;
                    break;
                }
            }
            if !matched {
                continue;
            }
            match &rule.target {
                None | Some(Target::Log { .. }) => {}
                Some(Target::SetConnmark { value, mask }) => conn.ct = (conn.ct & !mask) ^ value,
                Some(Target::SetMark { value, mask }) => conn.nf = (conn.nf & !mask) ^ value,
                Some(Target::SaveMark { nfmask, ctmask }) => {
                    conn.ct = (conn.ct & !ctmask) ^ (conn.nf & nfmask)
                }
                Some(Target::RestoreMark { nfmask, ctmask }) => {
                    conn.nf = (conn.nf & !nfmask) ^ (conn.ct & ctmask)
                }
                Some(Target::Return) => return Some(Flow::Return),
                Some(Target::Accept) => return Some(Flow::Accept),
                Some(Target::Drop | Target::Reject(_)) => return Some(Flow::Drop),
                Some(Target::Jump(c)) => match self.run(c, 0, conn, o, depth + 1)? {
                    Flow::Next | Flow::Return => {}
                    f => return Some(f),
                },
                Some(Target::Goto(c)) => {
                    return match self.run(c, 0, conn, o, depth + 1)? {
                        Flow::Next | Flow::Return => Some(Flow::Return),
                        f => Some(f),
                    }
                }
                Some(Target::Hmark {
                    modulus,
                    rnd,
                    offset,
                }) => {
                    self.hmark = Some((*modulus, *rnd, *offset));
                    let n = *modulus as usize;
                    let c = o.choose(n, &|_| 1.0 / n as f64);
                    conn.nf = offset.wrapping_add(c as u32);
                }
                Some(_) => return None,
            }
        }
        Some(Flow::Next)
    }
}
