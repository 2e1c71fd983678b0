//! Spec -> ruleset. The semantics of the balancer live here; renderers only spell them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use nftbalance_spec::{AllDown, Family, Gateway, Method, Protocol, Selector, SelectorKind, Spec};

use crate::model::*;

/// Names of the objects the compiler creates. Fixed, so dumps are byte-stable.
pub mod names {
    pub const PREROUTING: &str = "prerouting";
    pub const OUTPUT: &str = "output";
    pub const POSTROUTING: &str = "postrouting";
    pub const BALANCE: &str = "balance";
    /// Maps from a connection's mark to its gateway's chains: established and related
    /// packets to [`gateway`], the first packet of a connection to [`gateway_new`].
    pub const BY_MARK: &str = "by_mark";
    pub const NEW_BY_MARK: &str = "new_by_mark";
    pub const EXCLUDE_V4: &str = "exclude_v4";
    pub const EXCLUDE_V6: &str = "exclude_v6";
    pub const INGRESS_MARK: &str = "ingress_mark";
    pub const SNAT_V4: &str = "snat_v4";
    pub const SNAT_V6: &str = "snat_v6";

    /// Chain of a named policy: its split over the active tier, or its last resort.
    pub fn policy(name: &str) -> String {
        format!("policy_{name}")
    }
    /// Chain that sends a pinned selector's connections through one gateway.
    pub fn pin(gateway: &str) -> String {
        format!("pin_{gateway}")
    }
    /// Narrow mark mask only: sets the gateway's bits of the connection mark.
    pub fn ct_mark(gateway: &str) -> String {
        format!("ct_{gateway}")
    }
    /// A packet of one of the gateway's connections: packet mark and traffic counter.
    pub fn gateway(gateway: &str) -> String {
        format!("gw_{gateway}")
    }
    /// The first packet of one of the gateway's connections: the new-connection counter,
    /// then on to [`gateway`].
    pub fn gateway_new(gateway: &str) -> String {
        format!("gw_new_{gateway}")
    }
    /// Excluded prefixes of one length, by their network address.
    pub fn exclude_by_length(v6: bool, prefix_len: u8) -> String {
        format!("exclude_v{}_{prefix_len}", if v6 { 6 } else { 4 })
    }
    /// The `index`-th chain of a base chain's selector rules, when there are too many for one
    /// (see [`super::SELECTORS_PER_CHAIN`]).
    pub fn selectors(base: &str, index: usize) -> String {
        format!("{base}_selectors_{index}")
    }
    /// Sources that keep this gateway while they are in the set.
    pub fn sticky(gateway: &str, v6: bool) -> String {
        format!("sticky_v{}_{gateway}", if v6 { 6 } else { 4 })
    }
}

/// Selector rules in one chain at most. The kernel lists a chain's rules in replies of about
/// 57 rules and walks the chain from its first rule for every reply, so reading a chain back
/// (`diff`, settling, `watch`'s start) is quadratic in its length: 100k rules in one chain take
/// the kernel 12 s to list. Longer selector lists go into chains of this many rules, each
/// reached by one jump, which matches the same connections in the same order.
pub const SELECTORS_PER_CHAIN: usize = 1000;

/// Compiles a validated spec with every gateway available. Infallible: the spec parser has
/// rejected everything the kernel would.
pub fn compile(spec: &Spec) -> Ruleset {
    compile_with(spec, &Availability::default())
}

/// Which gateways may take new balanced connections right now. Decided outside (routes
/// installed, health checks); the compiler only reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Availability {
    /// Gateways (by name) that get no new balanced or pinned connections: their routes are
    /// missing, or they are down. Their ingress marks and SNAT stay, so connections already
    /// on them, and inbound ones, keep working.
    pub unavailable: BTreeSet<String>,
    /// Per named policy whose `last_resort` is keep-last and whose members are all
    /// unavailable: the members it keeps splitting over (the ones in use before).
    pub kept: BTreeMap<String, BTreeSet<String>>,
}

impl Availability {
    /// Every gateway but `unavailable` may take new connections; nothing kept.
    pub fn without(unavailable: BTreeSet<String>) -> Availability {
        Availability {
            unavailable,
            kept: BTreeMap::new(),
        }
    }
}

/// Compiles a spec for the gateways that are available. With none available, balanced
/// connections are not marked (they follow the main table); pins to an unavailable gateway
/// are balanced instead.
pub fn compile_with(spec: &Spec, availability: &Availability) -> Ruleset {
    Compiler::new(spec, availability).ruleset()
}

struct Compiler<'s> {
    spec: &'s Spec,
    availability: &'s Availability,
    /// The gateways that take new connections, in spec order.
    live: Vec<&'s Gateway>,
    marks: Marks,
    /// The sets that hold the excluded destinations, IPv4 first.
    exclude: Vec<Exclusion>,
    /// See `versions`; computed once, as deciding it reads every selector.
    versions: Vec<bool>,
}

/// One set of excluded destinations and how a packet's address is looked up in it.
struct Exclusion {
    v6: bool,
    /// `None`: an interval set of prefixes, looked up by the address. `Some(len)`: a hash
    /// set of the network addresses of the prefixes of this length, looked up by the
    /// address with its host bits cleared.
    prefix_len: Option<u8>,
    nets: Vec<IpNet>,
}

/// The exclusion sets of one family. The kernel looks an address up in an interval set by
/// binary search over the prefixes' 2n bounds; a hash set answers in one probe but only for
/// one prefix length. So prefixes of a few lengths go into one hash set per length when
/// those probes cost less than the search, a probe counted as four search steps. At 100k
/// prefixes of four lengths the four hash sets cost less than the interval set
/// (`bench/exclusion_layouts.sh`: 13.4% against 15.4% of the router's busy CPU).
fn exclusions(nets: Vec<IpNet>, v6: bool) -> Vec<Exclusion> {
    if nets.is_empty() {
        return Vec::new();
    }
    let lengths: BTreeSet<u8> = nets.iter().map(IpNet::prefix_len).collect();
    let search_steps = (2 * nets.len()).ilog2() as usize;
    if lengths.len() * 4 > search_steps {
        return vec![Exclusion {
            v6,
            prefix_len: None,
            nets,
        }];
    }
    // Longest first: the most specific prefixes are the likeliest to be many.
    lengths
        .into_iter()
        .rev()
        .map(|len| Exclusion {
            v6,
            prefix_len: Some(len),
            nets: nets
                .iter()
                .copied()
                .filter(|n| n.prefix_len() == len)
                .collect(),
        })
        .collect()
}

impl Exclusion {
    fn set_name(&self) -> String {
        match (self.prefix_len, self.v6) {
            (None, false) => names::EXCLUDE_V4.into(),
            (None, true) => names::EXCLUDE_V6.into(),
            (Some(len), v6) => names::exclude_by_length(v6, len),
        }
    }

    fn to_set(&self) -> Set {
        Set {
            name: self.set_name(),
            key: if self.v6 {
                DataType::Ipv6Addr
            } else {
                DataType::Ipv4Addr
            },
            data: None,
            interval: self.prefix_len.is_none(),
            dynamic: None,
            // Rounded up to a power of two: the kernel's fixed-size hash rounds its buckets
            // up anyway, and a size that small edits do not move lets an incremental apply
            // change elements instead of re-creating the set.
            size: self.prefix_len.map(|_| {
                u32::try_from(self.nets.len().max(1).next_power_of_two()).unwrap_or(u32::MAX)
            }),
            elements: self
                .nets
                .iter()
                .map(|&n| Element {
                    key: match (self.prefix_len, n.network()) {
                        (None, _) => net_value(n),
                        (Some(_), IpAddr::V4(a)) => Value::Ipv4(a),
                        (Some(_), IpAddr::V6(a)) => Value::Ipv6(a),
                    },
                    data: None,
                })
                .collect(),
        }
    }

    /// `daddr @set`, or `daddr & mask @set`.
    fn guard(&self) -> Match {
        let field = addr_field(self.v6, false);
        let full = if self.v6 { 128 } else { 32 };
        let left = match self.prefix_len {
            Some(len) if len < full => Expr::Network {
                field,
                prefix_len: len,
            },
            _ => Expr::Payload(field),
        };
        Match::InSet {
            left,
            set: SetRef::Named(self.set_name()),
        }
    }
}

/// Mark operations under `mark_mask`. With the full mask the tool owns every bit and uses
/// maps that write whole marks; with a narrower one every write is a constant-mask
/// `x & ~mask | value`, reached through verdict maps into small per-gateway chains,
/// because `x & ~mask | (y & mask)` would need a register-to-register operation.
#[derive(Clone, Copy)]
struct Marks {
    mask: u32,
}

impl Marks {
    fn full(self) -> bool {
        self.mask == u32::MAX
    }
    /// The tool's bits of the connection mark.
    fn ct_bits(self) -> Expr {
        self.bits(Expr::Ct(CtKey::Mark))
    }
    fn bits(self, e: Expr) -> Expr {
        if self.full() {
            e
        } else {
            Expr::And(Box::new(e), self.mask)
        }
    }
    fn is_marked(self, marked: bool) -> Match {
        Match::Cmp {
            left: self.ct_bits(),
            negate: marked,
            right: Value::Mark(0),
        }
    }
    fn set(self, target: Expr, mark: u32) -> Stmt {
        let value = if self.full() {
            Expr::Value(Value::Mark(mark))
        } else {
            Expr::Bits {
                expr: Box::new(target.clone()),
                keep: !self.mask,
                set: mark,
            }
        };
        Stmt::Mangle { target, value }
    }
    fn set_ct(self, mark: u32) -> Stmt {
        self.set(Expr::Ct(CtKey::Mark), mark)
    }
    fn set_packet(self, mark: u32) -> Stmt {
        self.set(Expr::Meta(MetaKey::Mark), mark)
    }
}

fn rule(matches: Vec<Match>, stmts: Vec<Stmt>) -> Rule {
    Rule {
        matches,
        stmts,
        doc: None,
        counts: None,
        selector: None,
    }
}

fn documented(doc: &'static str, mut r: Rule) -> Rule {
    r.doc = Some(doc);
    r
}

fn ct_state(states: &[CtState]) -> Match {
    Match::CtState(states.to_vec())
}

fn jump(chain: impl Into<String>) -> Stmt {
    Stmt::Verdict(Verdict::Jump(chain.into()))
}

/// Selector rules as they stand in the base chain, or, past [`SELECTORS_PER_CHAIN`], as
/// jumps into chains of that many (a connection no rule of a chain matches comes back and
/// goes on with the next).
fn chunked(base: &str, selections: Vec<Rule>) -> (Vec<Rule>, Vec<Chain>) {
    if selections.len() <= SELECTORS_PER_CHAIN {
        return (selections, Vec::new());
    }
    let mut jumps = Vec::new();
    let mut chains = Vec::new();
    for (i, part) in selections.chunks(SELECTORS_PER_CHAIN).enumerate() {
        let name = names::selectors(base, i);
        jumps.push(rule(
            vec![ct_state(&[CtState::New])],
            vec![jump(name.clone())],
        ));
        chains.push(Chain {
            name,
            base: None,
            rules: part.to_vec(),
            doc: "selectors, cut into chains the kernel lists back quickly",
        });
    }
    (jumps, chains)
}

/// Refuse at once: a TCP reset for TCP, ICMP(v6) host unreachable for the rest, so clients
/// fail fast instead of waiting for a timeout.
fn unreachable() -> Vec<Rule> {
    vec![
        rule(
            vec![Match::Cmp {
                left: Expr::Meta(MetaKey::L4Proto),
                negate: false,
                right: Value::L4Proto(Protocol::Tcp),
            }],
            vec![Stmt::Reject(Reject::TcpReset)],
        ),
        rule(vec![], vec![Stmt::Reject(Reject::IcmpxHostUnreachable)]),
    ]
}

fn ret() -> Stmt {
    Stmt::Verdict(Verdict::Return)
}

fn addr_field(v6: bool, source: bool) -> Field {
    match (v6, source) {
        (false, true) => Field::IpSaddr,
        (false, false) => Field::IpDaddr,
        (true, true) => Field::Ip6Saddr,
        (true, false) => Field::Ip6Daddr,
    }
}

/// One value, a prefix/range value, or an anonymous set, as nft itself would encode it.
fn match_values(left: Expr, mut values: Vec<Value>) -> Match {
    if values.len() == 1 {
        Match::Cmp {
            left,
            negate: false,
            right: values.remove(0),
        }
    } else {
        Match::InSet {
            left,
            set: SetRef::Anonymous(values),
        }
    }
}

fn net_value(n: IpNet) -> Value {
    match n {
        IpNet::V4(n) if n.prefix_len() == 32 => Value::Ipv4(n.addr()),
        IpNet::V6(n) if n.prefix_len() == 128 => Value::Ipv6(n.addr()),
        IpNet::V4(n) => Value::Ipv4Net(n),
        IpNet::V6(n) => Value::Ipv6Net(n),
    }
}

/// Sorted, with overlapping and adjacent prefixes merged.
fn merged(nets: &[IpNet], v6: bool) -> Vec<IpNet> {
    let of_family: Vec<IpNet> = nets
        .iter()
        .copied()
        .filter(|n| matches!(n, IpNet::V6(_)) == v6)
        .collect();
    IpNet::aggregate(&of_family)
}

impl<'s> Compiler<'s> {
    fn new(spec: &'s Spec, availability: &'s Availability) -> Self {
        Compiler {
            spec,
            availability,
            live: spec
                .gateways
                .iter()
                .filter(|g| !availability.unavailable.contains(&g.name))
                .collect(),
            marks: Marks {
                mask: spec.mark_mask,
            },
            exclude: [false, true]
                .into_iter()
                .flat_map(|v6| exclusions(merged(&spec.balance.exclude, v6), v6))
                .collect(),
            versions: versions(spec),
        }
    }

    /// The IP versions the balancer handles, as is_v6 values.
    fn versions(&self) -> Vec<bool> {
        self.versions.clone()
    }

    fn is_live(&self, name: &str) -> bool {
        self.live.iter().any(|g| g.name == name)
    }

    fn sticky(&self) -> Option<u32> {
        self.spec.balance.sticky.map(|s| s.timeout_secs)
    }

    fn ruleset(&self) -> Ruleset {
        let (prerouting, prerouting_selectors) = self.prerouting();
        let (output, output_selectors) = self.output();
        let mut chains = vec![prerouting, output, self.balance()];
        chains.extend(self.gateway_chains());
        chains.extend(prerouting_selectors);
        chains.extend(output_selectors);
        chains.extend(self.pins());
        chains.extend(self.policy_chains());
        if !self.marks.full() {
            chains.extend(self.per_gateway_chains());
        }
        if self.spec.snat {
            chains.push(self.postrouting());
        }
        crate::pair::leave_sync_link_alone(self.spec, &mut chains);
        Ruleset {
            family: self.spec.family,
            table: self.spec.table.clone(),
            sets: self.sets(),
            chains,
        }
    }

    fn sets(&self) -> Vec<Set> {
        let mut sets: Vec<Set> = self.exclude.iter().map(Exclusion::to_set).collect();
        let full = self.marks.full();
        let to_gateway = |g: &Gateway, chain: fn(&str) -> String| {
            if full {
                Value::Mark(g.mark)
            } else {
                Value::Verdict(Verdict::Jump(chain(&g.name)))
            }
        };
        sets.push(Set {
            name: names::INGRESS_MARK.into(),
            key: DataType::IfName,
            data: Some(if full {
                DataType::Mark
            } else {
                DataType::Verdict
            }),
            interval: false,
            dynamic: None,
            size: None,
            elements: self
                .gateways()
                .map(|g| Element {
                    key: Value::IfName(g.interface.clone()),
                    data: Some(to_gateway(g, names::ct_mark)),
                })
                .collect(),
        });
        for (name, chain) in [
            (names::BY_MARK, names::gateway as fn(&str) -> String),
            (names::NEW_BY_MARK, names::gateway_new),
        ] {
            sets.push(Set {
                name: name.into(),
                key: DataType::Mark,
                data: Some(DataType::Verdict),
                interval: false,
                dynamic: None,
                size: None,
                elements: self
                    .gateways()
                    .map(|g| Element {
                        key: Value::Mark(g.mark),
                        data: Some(Value::Verdict(Verdict::Goto(chain(&g.name)))),
                    })
                    .collect(),
            });
        }
        if let Some(timeout_secs) = self.sticky() {
            for g in self.gateways() {
                for v6 in self.versions() {
                    sets.push(Set {
                        name: names::sticky(&g.name, v6),
                        key: if v6 {
                            DataType::Ipv6Addr
                        } else {
                            DataType::Ipv4Addr
                        },
                        data: None,
                        interval: false,
                        dynamic: Some(Dynamic { timeout_secs }),
                        size: Some(DYNAMIC_SET_SIZE),
                        elements: Vec::new(),
                    });
                }
            }
        }
        if self.spec.snat {
            let v4: Vec<Element> = self
                .gateways()
                .filter_map(|g| {
                    g.address.map(|a| Element {
                        key: Value::IfName(g.interface.clone()),
                        data: Some(Value::Ipv4(a)),
                    })
                })
                .collect();
            let v6: Vec<Element> = self
                .gateways()
                .filter_map(|g| {
                    g.address6.map(|a| Element {
                        key: Value::IfName(g.interface.clone()),
                        data: Some(Value::Ipv6(a)),
                    })
                })
                .collect();
            let versions = self.versions();
            for (has, elements, name, data) in [
                (
                    versions.contains(&false),
                    v4,
                    names::SNAT_V4,
                    DataType::Ipv4Addr,
                ),
                (
                    versions.contains(&true),
                    v6,
                    names::SNAT_V6,
                    DataType::Ipv6Addr,
                ),
            ] {
                if has && !elements.is_empty() {
                    sets.push(Set {
                        name: name.into(),
                        key: DataType::IfName,
                        data: Some(data),
                        interval: false,
                        dynamic: None,
                        size: None,
                        elements,
                    });
                }
            }
        }
        sets
    }

    fn gateways(&self) -> impl Iterator<Item = &'s Gateway> {
        self.spec.gateways.iter()
    }

    /// Established and related packets of a gateway's connections go to its chain, which
    /// restores the packet mark and counts them: one lookup and one rule per packet.
    fn restore(&self) -> Rule {
        let established = ct_state(&[CtState::Established, CtState::Related]);
        documented(
            "restore: packets of known connections route by the connection's mark (and are counted)",
            self.by_mark(established, names::BY_MARK),
        )
    }

    /// NEW packets that got a connection mark take the packet mark too, so routing uses it
    /// for the first packet, and are counted as a new connection of their gateway.
    fn route_choice(&self) -> Rule {
        let new = ct_state(&[CtState::New]);
        documented(
            "route choice: the first packet of a marked connection routes by its mark too",
            self.by_mark(new, names::NEW_BY_MARK),
        )
    }

    /// `ct state S ct mark vmap @map`: on to the chain of the connection's gateway;
    /// connections of no gateway (mark 0, or another program's) go on unchanged.
    fn by_mark(&self, state: Match, map: &str) -> Rule {
        rule(
            vec![state],
            vec![Stmt::VerdictMap {
                key: self.marks.ct_bits(),
                map: MapRef::Named(map.into()),
            }],
        )
    }

    fn ingress(&self) -> Rule {
        let new = ct_state(&[CtState::New]);
        let iifname = Expr::Meta(MetaKey::IifName);
        let map = MapRef::Named(names::INGRESS_MARK.into());
        let stmt = if self.marks.full() {
            Stmt::Mangle {
                target: Expr::Ct(CtKey::Mark),
                value: Expr::Map {
                    key: Box::new(iifname),
                    map,
                },
            }
        } else {
            Stmt::VerdictMap { key: iifname, map }
        };
        documented(
            "ingress: connections opened from outside keep the uplink they arrived on",
            rule(vec![new], vec![stmt]),
        )
    }

    /// The base chain, and the chains its selector rules went into if they are many.
    fn prerouting(&self) -> (Chain, Vec<Chain>) {
        let mut rules = vec![self.restore(), self.ingress()];
        let selections = self.selections(&self.spec.balance.forward, SelectorKind::Forward);
        let (jumps, chains) = chunked(names::PREROUTING, selections);
        rules.extend(jumps);
        rules.push(self.route_choice());
        let base = Chain {
            name: names::PREROUTING.into(),
            base: Some(BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Prerouting,
                priority: Priority::Mangle,
            }),
            rules,
            doc: "forwarded and inbound connections",
        };
        (base, chains)
    }

    fn output(&self) -> (Chain, Vec<Chain>) {
        let mut rules = vec![self.restore()];
        let selections = self.selections(&self.spec.balance.local, SelectorKind::Local);
        let (jumps, chains) = chunked(names::OUTPUT, selections);
        rules.extend(jumps);
        rules.push(self.route_choice());
        let base = Chain {
            name: names::OUTPUT.into(),
            // A route chain: a changed mark makes the kernel route the packet again.
            base: Some(BaseChain {
                kind: ChainType::Route,
                hook: Hook::Output,
                priority: Priority::Mangle,
            }),
            rules,
            doc: "locally generated connections; type route, so a new mark re-routes the packet",
        };
        (base, chains)
    }

    /// Selection rules: pinned selectors first, then balanced ones, each in spec order.
    fn selections(&self, selectors: &[Selector], kind: SelectorKind) -> Vec<Rule> {
        let numbered = || selectors.iter().enumerate();
        let pinned = numbered().filter(|(_, s)| s.gateway.is_some());
        let balanced = numbered().filter(|(_, s)| s.gateway.is_none());
        pinned
            .chain(balanced)
            .flat_map(|(index, s)| {
                let from = SelectorRef { kind, index };
                self.selection(s, kind).into_iter().map(move |r| Rule {
                    selector: Some(from),
                    ..r
                })
            })
            .collect()
    }

    /// One selector becomes one rule per IP version its addresses allow.
    fn selection(&self, s: &Selector, kind: SelectorKind) -> Vec<Rule> {
        let target = match (&s.policy, &s.gateway) {
            (Some(p), _) => names::policy(p),
            (None, Some(g)) if self.is_live(g) => names::pin(g),
            _ => names::BALANCE.into(),
        };
        let has = |nets: &[IpNet], v6: bool| nets.iter().any(|n| matches!(n, IpNet::V6(_)) == v6);
        let versions: Vec<Option<bool>> = if s.saddr.is_empty() && s.daddr.is_empty() {
            vec![None]
        } else {
            self.versions()
                .into_iter()
                .filter(|&v6| {
                    (s.saddr.is_empty() || has(&s.saddr, v6))
                        && (s.daddr.is_empty() || has(&s.daddr, v6))
                })
                .map(Some)
                .collect()
        };
        versions
            .into_iter()
            .map(|version| {
                let mut m = vec![ct_state(&[CtState::New])];
                if let Some(iif) = &s.iif {
                    debug_assert_eq!(kind, SelectorKind::Forward);
                    m.push(Match::Cmp {
                        left: Expr::Meta(MetaKey::IifName),
                        negate: false,
                        right: Value::IfName(iif.clone()),
                    });
                }
                match (s.protocol, s.dports.is_empty()) {
                    (Some(p), false) => m.push(match_values(
                        Expr::Payload(Field::Dport(p)),
                        normalized_ports(&s.dports),
                    )),
                    (Some(p), true) => m.push(Match::Cmp {
                        left: Expr::Meta(MetaKey::L4Proto),
                        negate: false,
                        right: Value::L4Proto(p),
                    }),
                    (None, _) => {}
                }
                if let Some(v6) = version {
                    for (nets, source) in [(&s.saddr, true), (&s.daddr, false)] {
                        if !nets.is_empty() {
                            let values = merged(nets, v6).into_iter().map(net_value).collect();
                            m.push(match_values(Expr::Payload(addr_field(v6, source)), values));
                        }
                    }
                }
                rule(m, vec![jump(target.clone())])
            })
            .collect()
    }

    /// Per gateway, reached from the base chains by the connection's mark: `gw_NAME` sets
    /// the packet mark and counts packets and bytes of its connections (both directions,
    /// forwarded and local); `gw_new_NAME` counts its new connections and goes on to
    /// `gw_NAME`. Chains of their own, which neither a failover update nor a re-apply that
    /// keeps the gateway replaces, so the counters keep counting.
    fn gateway_chains(&self) -> Vec<Chain> {
        let counted = |g: &Gateway, what| Counted {
            gateway: g.name.clone(),
            what,
        };
        self.gateways()
            .flat_map(|g| {
                [
                    Chain {
                        name: names::gateway(&g.name),
                        base: None,
                        rules: vec![Rule {
                            counts: Some(counted(g, Counting::Traffic)),
                            ..rule(vec![], vec![self.marks.set_packet(g.mark), Stmt::Counter])
                        }],
                        doc: "packet mark and traffic counter of a gateway (read by status)",
                    },
                    Chain {
                        name: names::gateway_new(&g.name),
                        base: None,
                        rules: vec![Rule {
                            counts: Some(counted(g, Counting::NewConnections)),
                            ..rule(
                                vec![],
                                vec![
                                    Stmt::Counter,
                                    Stmt::Verdict(Verdict::Goto(names::gateway(&g.name))),
                                ],
                            )
                        }],
                        doc: "new connections of a gateway (read by status)",
                    },
                ]
            })
            .collect()
    }

    /// Excluded destinations and connections that already have a mark are left alone.
    fn guards(&self) -> Vec<Rule> {
        let mut rules: Vec<Rule> = self
            .exclude
            .iter()
            .map(|e| rule(vec![e.guard()], vec![ret()]))
            .collect();
        rules.push(rule(vec![self.marks.is_marked(true)], vec![ret()]));
        rules
    }

    fn balance(&self) -> Chain {
        let mut rules = self.guards();
        if let Some(first) = rules.first_mut() {
            first.doc = Some("local and excluded destinations stay on the main table");
        }
        rules.extend(self.sticky_hits(&self.live));
        let split_at = rules.len();
        rules.extend(self.split());
        if self.live.is_empty() && self.spec.watch.all_down == AllDown::Unreachable {
            rules.extend(unreachable());
        }
        if let Some(r) = rules.get_mut(split_at) {
            r.doc = Some("split: one expression mapped over the weight ranges");
        }
        rules.extend(self.sticky_updates(&self.live));
        Chain {
            name: names::BALANCE.into(),
            base: None,
            rules,
            doc: "new connections that a selector chose for balancing",
        }
    }

    /// With `balance.sticky`: a recent source keeps its uplink among `gateways` (and
    /// refreshes its entry). Nothing without sticky or without gateways.
    fn sticky_hits(&self, gateways: &[&Gateway]) -> Vec<Rule> {
        if self.sticky().is_none() {
            return Vec::new();
        }
        let mut rules = Vec::new();
        for g in gateways {
            for v6 in self.versions() {
                let set = names::sticky(&g.name, v6);
                let source = Expr::Payload(addr_field(v6, true));
                rules.push(rule(
                    vec![Match::InSet {
                        left: source.clone(),
                        set: SetRef::Named(set.clone()),
                    }],
                    vec![
                        Stmt::SetUpdate { set, key: source },
                        self.marks.set_ct(g.mark),
                        ret(),
                    ],
                ));
            }
        }
        if let Some(first) = rules.first_mut() {
            first.doc = Some("sticky: a recent source keeps its uplink and refreshes its entry");
        }
        rules
    }

    /// With `balance.sticky`: remember the source's choice among `gateways`.
    fn sticky_updates(&self, gateways: &[&Gateway]) -> Vec<Rule> {
        if self.sticky().is_none() {
            return Vec::new();
        }
        let mut rules = Vec::new();
        for g in gateways {
            for v6 in self.versions() {
                rules.push(rule(
                    vec![Match::Cmp {
                        left: self.marks.ct_bits(),
                        negate: false,
                        right: Value::Mark(g.mark),
                    }],
                    vec![Stmt::SetUpdate {
                        set: names::sticky(&g.name, v6),
                        key: Expr::Payload(addr_field(v6, true)),
                    }],
                ));
            }
        }
        if let Some(first) = rules.first_mut() {
            first.doc = Some("sticky: remember the source's choice");
        }
        rules
    }

    /// The connection mark from one numgen/jhash expression over the weight ranges.
    fn split(&self) -> Vec<Rule> {
        let members: Vec<(&Gateway, u32)> = self.live.iter().map(|g| (*g, g.weight)).collect();
        self.split_over(&members, self.spec.balance.method)
    }

    /// The split over these gateways with these weights, by `method`.
    fn split_over(&self, gateways: &[(&Gateway, u32)], method: Method) -> Vec<Rule> {
        match gateways {
            [] => return Vec::new(),
            [(only, _)] => return vec![rule(vec![], vec![self.marks.set_ct(only.mark)])],
            _ => {}
        }
        let modulus: u32 = gateways.iter().map(|(_, w)| w).sum();
        let mut start = 0;
        let entries: Vec<(Value, Value)> = gateways
            .iter()
            .map(|&(g, weight)| {
                let end = start + weight - 1;
                let key = Value::range(Value::Int(start), Value::Int(end));
                start = end + 1;
                let data = if self.marks.full() {
                    Value::Mark(g.mark)
                } else {
                    Value::Verdict(Verdict::Jump(names::ct_mark(&g.name)))
                };
                (key, data)
            })
            .collect();
        let b = &self.spec.balance;
        let keys: Vec<Expr> = match method {
            Method::RoundRobin | Method::Random => vec![Expr::Numgen {
                mode: if method == Method::Random {
                    NumgenMode::Random
                } else {
                    NumgenMode::Inc
                },
                modulus,
            }],
            Method::SourceHash => self
                .versions()
                .into_iter()
                .map(|v6| Expr::Jhash {
                    field: addr_field(v6, true),
                    modulus,
                    seed: b.hash_seed,
                })
                .collect(),
        };
        keys.into_iter()
            .map(|key| {
                let map = MapRef::Anonymous(entries.clone());
                let stmt = if self.marks.full() {
                    Stmt::Mangle {
                        target: Expr::Ct(CtKey::Mark),
                        value: Expr::Map {
                            key: Box::new(key),
                            map,
                        },
                    }
                } else {
                    Stmt::VerdictMap { key, map }
                };
                rule(vec![], vec![stmt])
            })
            .collect()
    }

    /// One chain per named policy: the split over the members in use, or its last resort
    /// (nothing marked: the main table; or refused at once: unreachable).
    fn policy_chains(&self) -> Vec<Chain> {
        (self.spec.policies.iter())
            .map(|(name, p)| {
                let mut rules = self.guards();
                let in_use = crate::policy::in_use(name, p, self.availability);
                let members: Vec<(&Gateway, u32)> = (in_use.members().iter())
                    .filter_map(|m| Some((self.spec.gateway(&m.gateway)?, m.weight)))
                    .collect();
                let gateways: Vec<&Gateway> = members.iter().map(|(g, _)| *g).collect();
                // Sticky sources stay on a member in use; a kept member counts too.
                rules.extend(self.sticky_hits(&gateways));
                rules.extend(self.split_over(&members, p.method));
                rules.extend(self.sticky_updates(&gateways));
                match in_use {
                    crate::policy::InUse::LastResort(AllDown::Unreachable) => {
                        rules.extend(unreachable())
                    }
                    // Unmarked, and no later selector may balance it: the main table.
                    crate::policy::InUse::LastResort(_) => rules.push(documented(
                        "last resort: the main table, whatever later selectors say",
                        rule(vec![], vec![Stmt::Verdict(Verdict::Accept)]),
                    )),
                    _ => {}
                }
                Chain {
                    name: names::policy(name),
                    base: None,
                    rules,
                    doc: "a policy's new connections: its active tier, or its last resort",
                }
            })
            .collect()
    }

    fn pins(&self) -> Vec<Chain> {
        let b = &self.spec.balance;
        let mut pinned: Vec<&str> = b
            .forward
            .iter()
            .chain(&b.local)
            .filter_map(|s| s.gateway.as_deref())
            .collect();
        // In gateway order, once each.
        pinned.sort_by_key(|n| self.spec.gateways.iter().position(|g| g.name == *n));
        pinned.dedup();
        pinned
            .into_iter()
            .filter(|name| self.is_live(name))
            .filter_map(|name| self.spec.gateway(name))
            .map(|g| {
                let mut rules = self.guards();
                rules.push(rule(vec![], vec![self.marks.set_ct(g.mark)]));
                Chain {
                    name: names::pin(&g.name),
                    base: None,
                    rules,
                    doc: "pinned selectors: new connections through one gateway",
                }
            })
            .collect()
    }

    fn per_gateway_chains(&self) -> Vec<Chain> {
        self.gateways()
            .flat_map(|g| {
                [Chain {
                    name: names::ct_mark(&g.name),
                    base: None,
                    rules: vec![rule(vec![], vec![self.marks.set_ct(g.mark)])],
                    doc: "set this gateway's bits of the connection mark",
                }]
            })
            .collect()
    }

    fn postrouting(&self) -> Chain {
        let mut rules = Vec::new();
        let inet = self.spec.family == Family::Inet;
        for v6 in self.versions() {
            let (map, family) = if v6 {
                (names::SNAT_V6, IpFamily::V6)
            } else {
                (names::SNAT_V4, IpFamily::V4)
            };
            let has_address = |g: &&Gateway| {
                if v6 {
                    g.address6.is_some()
                } else {
                    g.address.is_some()
                }
            };
            if self.gateways().any(|g| has_address(&g)) {
                rules.push(rule(
                    vec![],
                    vec![Stmt::Snat {
                        family,
                        addr: Expr::Map {
                            key: Box::new(Expr::Meta(MetaKey::OifName)),
                            map: MapRef::Named(map.into()),
                        },
                    }],
                ));
            }
            // IPv6 NAT only for gateways with IPv6 configured; the rest carry no IPv6.
            let carries = |g: &&Gateway| !v6 || self.spec.family == Family::Ip6 || g.via6.is_some();
            let masq: Vec<Value> = self
                .gateways()
                .filter(|g| !has_address(g) && carries(g))
                .map(|g| Value::IfName(g.interface.clone()))
                .collect();
            if !masq.is_empty() {
                let mut m = Vec::new();
                if inet {
                    m.push(Match::Cmp {
                        left: Expr::Meta(MetaKey::NfProto),
                        negate: false,
                        right: Value::NfProto(family),
                    });
                }
                m.push(match_values(Expr::Meta(MetaKey::OifName), masq));
                rules.push(rule(m, vec![Stmt::Masquerade]));
            }
        }
        if let Some(first) = rules.first_mut() {
            first.doc = Some("source NAT to the address of the uplink a packet leaves by");
        }
        Chain {
            name: names::POSTROUTING.into(),
            base: Some(BaseChain {
                kind: ChainType::Nat,
                hook: Hook::Postrouting,
                priority: Priority::SrcNat,
            }),
            rules,
            doc: "source NAT per uplink",
        }
    }
}

/// The IP versions a spec's balancer handles, as is_v6 values. An inet spec handles IPv6
/// only when it configures some (a gateway's address6/via6 or an IPv6 prefix), so an IPv4
/// spec gets no IPv6 sets, hashes or NAT.
fn versions(spec: &Spec) -> Vec<bool> {
    let f = spec.family;
    let v6 = match f {
        Family::Ip => false,
        Family::Ip6 => true,
        Family::Inet => ipv6_configured(spec),
    };
    [(f.has_ipv4(), false), (v6, true)]
        .into_iter()
        .filter_map(|(has, v6)| has.then_some(v6))
        .collect()
}

fn ipv6_configured(spec: &Spec) -> bool {
    let b = &spec.balance;
    let v6_net = |n: &IpNet| matches!(n, IpNet::V6(_));
    spec.gateways
        .iter()
        .any(|g| g.address6.is_some() || g.via6.is_some())
        || b.exclude.iter().any(v6_net)
        || b.forward
            .iter()
            .chain(&b.local)
            .any(|s| s.saddr.iter().chain(&s.daddr).any(v6_net))
}

/// Sorted, duplicates and overlaps merged (nft rejects overlapping set elements).
fn normalized_ports(ports: &[nftbalance_spec::PortRange]) -> Vec<Value> {
    let mut sorted = ports.to_vec();
    sorted.sort();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for p in sorted {
        match out.last_mut() {
            Some(last) if p.first <= last.1 => last.1 = last.1.max(p.last),
            _ => out.push((p.first, p.last)),
        }
    }
    out.into_iter()
        .map(|(a, b)| Value::range(Value::Port(a), Value::Port(b)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        Spec::from_json(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn gateways(weights: &[u32]) -> String {
        let gs: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                format!(
                    r#"{{"name":"g{i}","interface":"eth{i}","mark":{},"weight":{w},"route_table":{}}}"#,
                    i + 1,
                    101 + i
                )
            })
            .collect();
        gs.join(",")
    }

    fn split_rule(rs: &Ruleset) -> &Rule {
        rs.chain(names::BALANCE)
            .unwrap()
            .rules
            .iter()
            .find(|r| r.doc == Some("split: one expression mapped over the weight ranges"))
            .unwrap()
    }

    #[test]
    fn weights_3_2_1_share_one_counter() {
        let s = spec(&format!(r#"{{"gateways":[{}]}}"#, gateways(&[3, 2, 1])));
        let rs = compile(&s);
        let Stmt::Mangle {
            value: Expr::Map { key, map },
            ..
        } = &split_rule(&rs).stmts[0]
        else {
            panic!("split is not a map");
        };
        assert_eq!(
            **key,
            Expr::Numgen {
                mode: NumgenMode::Inc,
                modulus: 6
            }
        );
        let range = |a, b| Value::range(Value::Int(a), Value::Int(b));
        assert_eq!(
            *map,
            MapRef::Anonymous(vec![
                (range(0, 2), Value::Mark(1)),
                (range(3, 4), Value::Mark(2)),
                (Value::Int(5), Value::Mark(3)),
            ])
        );
    }

    #[test]
    fn narrow_mask_writes_only_its_bits() {
        let s = spec(
            r#"{"mark_mask":"0xff00","gateways":[
                {"name":"a","interface":"eth1","mark":"0x100","route_table":101},
                {"name":"b","interface":"eth2","mark":"0x200","route_table":102}],
               "balance":{"sticky":{"timeout":"1m"},"forward":[{"iif":"eth0"},{"gateway":"b"}]}}"#,
        );
        let rs = compile(&s);
        let mut writes = 0;
        for chain in &rs.chains {
            for r in &chain.rules {
                for st in &r.stmts {
                    if let Stmt::Mangle { target, value } = st {
                        writes += 1;
                        match value {
                            Expr::Bits { expr, keep, .. } => {
                                assert_eq!(**expr, *target);
                                assert_eq!(*keep, !0xff00);
                            }
                            other => panic!("{}: whole-mark write {other:?}", chain.name),
                        }
                    }
                }
            }
        }
        assert!(writes >= 4);
    }

    #[test]
    fn one_gateway_marks_without_a_split() {
        let s = spec(&format!(r#"{{"gateways":[{}]}}"#, gateways(&[5])));
        let rs = compile(&s);
        let r = split_rule(&rs);
        assert_eq!(
            r.stmts,
            [Stmt::Mangle {
                target: Expr::Ct(CtKey::Mark),
                value: Expr::Value(Value::Mark(1))
            }]
        );
    }

    #[test]
    fn pinned_selectors_come_first() {
        let s = spec(&format!(
            r#"{{"gateways":[{}],"balance":{{"forward":[
                {{"iif":"eth9"}},{{"iif":"eth9","protocol":"tcp","dports":[25],"gateway":"g1"}}]}}}}"#,
            gateways(&[1, 1])
        ));
        let rs = compile(&s);
        let jumps: Vec<&Stmt> = rs
            .chain(names::PREROUTING)
            .unwrap()
            .rules
            .iter()
            .filter_map(|r| r.stmts.last())
            .filter(|s| matches!(s, Stmt::Verdict(Verdict::Jump(_))))
            .collect();
        assert_eq!(
            jumps,
            [
                &Stmt::Verdict(Verdict::Jump("pin_g1".into())),
                &Stmt::Verdict(Verdict::Jump("balance".into()))
            ]
        );
        assert!(rs.chain("pin_g1").is_some());
    }

    #[test]
    fn overlapping_exclusions_are_merged() {
        let s = spec(&format!(
            r#"{{"gateways":[{}],"balance":{{"exclude":
                ["10.0.0.0/8","10.1.0.0/16","192.168.0.0/17","192.168.128.0/17","fc00::/8","fd00::/8"]}}}}"#,
            gateways(&[1, 1])
        ));
        let rs = compile(&s);
        let keys = |name| -> Vec<String> {
            rs.set(name)
                .unwrap()
                .elements
                .iter()
                .map(|e| format!("{:?}", e.key))
                .collect()
        };
        assert_eq!(
            keys(names::EXCLUDE_V4),
            ["Ipv4Net(10.0.0.0/8)", "Ipv4Net(192.168.0.0/16)"]
        );
        assert_eq!(keys(names::EXCLUDE_V6), ["Ipv6Net(fc00::/7)"]);
    }

    #[test]
    fn ipv4_only_inet_spec_has_no_ipv6_objects() {
        let s = spec(&format!(
            r#"{{"gateways":[{}],"balance":{{"method":"source-hash","sticky":{{"timeout":"1m"}}}}}}"#,
            gateways(&[1, 1])
        ));
        let text = crate::nft::render(&compile(&s));
        assert!(!text.contains("ip6"), "{text}");
        assert!(!text.contains("ipv6"), "{text}");
    }

    /// Issue 22.6: long selector lists are cut into chains the kernel lists back in linear
    /// time; the rules and their order are those of one long chain.
    #[test]
    fn long_selector_lists_are_cut_into_chains_in_order() {
        let n = SELECTORS_PER_CHAIN * 2 + 500;
        let selectors: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"protocol":"tcp","dports":[{}]}}"#, 1 + i % 60000))
            .collect();
        let rs = compile(&spec(&format!(
            r#"{{"gateways":[{}],"balance":{{"forward":[{}]}}}}"#,
            gateways(&[1, 1]),
            selectors.join(",")
        )));
        let pre = rs.chain(names::PREROUTING).unwrap();
        let jumps: Vec<String> = pre
            .rules
            .iter()
            .map(crate::nft::rule)
            .filter(|r| r.contains("jump prerouting_selectors_"))
            .collect();
        assert_eq!(
            jumps,
            (0..3)
                .map(|i| format!("ct state new jump prerouting_selectors_{i}"))
                .collect::<Vec<_>>()
        );
        let parts: Vec<&Chain> = (0..3)
            .map(|i| rs.chain(&names::selectors(names::PREROUTING, i)).unwrap())
            .collect();
        assert_eq!(
            parts.iter().map(|c| c.rules.len()).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        let flat: Vec<String> = parts
            .iter()
            .flat_map(|c| c.rules.iter().map(crate::nft::rule))
            .collect();
        assert_eq!(flat.len(), n);
        assert!(flat[0].contains("tcp dport 1 jump balance"), "{}", flat[0]);
        assert!(
            flat[n - 1].contains(&format!("tcp dport {} jump balance", n)),
            "{}",
            flat[n - 1]
        );
        // A short list stays in the base chain.
        let small = compile(&spec(&format!(
            r#"{{"gateways":[{}],"balance":{{"forward":[{{"protocol":"tcp"}}]}}}}"#,
            gateways(&[1, 1])
        )));
        assert!(small.chains.iter().all(|c| !c.name.contains("selectors")));
    }

    /// Issue 16: a policy's chain splits over its active tier and falls back to its last
    /// resort; the default policy's chain is untouched by named policies.
    #[test]
    fn policy_chains_follow_the_active_tier_and_the_last_resort() {
        let s = Spec::from_json(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../fixtures/specs/policies-last-resort.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let chain = |down: &[&str], name: &str| -> Vec<String> {
            let a = Availability::without(down.iter().map(|n| n.to_string()).collect());
            let rs = compile_with(&s, &a);
            let c = rs.chain(&names::policy(name)).unwrap();
            c.rules.iter().skip(1).map(crate::nft::rule).collect()
        };
        assert_eq!(chain(&[], "voip"), ["ct mark set 0x00000002"]);
        assert_eq!(
            chain(&["dsl"], "voip"),
            ["ct mark set 0x00000001"],
            "tier 2"
        );
        assert_eq!(
            chain(&["dsl", "fibre"], "voip"),
            [
                "meta l4proto tcp reject with tcp reset",
                "reject with icmpx host-unreachable"
            ],
            "unreachable"
        );
        assert_eq!(
            chain(&["fibre", "dsl", "lte"], "web"),
            ["accept"],
            "main-table: unmarked, and no later selector balances it"
        );
        let web = chain(&["fibre", "dsl"], "web");
        assert!(
            web.iter().all(|r| r == "ct mark set 0x00000003"),
            "lte alone: {web:?}"
        );
        // Kept by keep-last (decided by the engine).
        let mut kept = Availability::without(["dsl".to_string(), "fibre".to_string()].into());
        kept.kept.insert("voip".into(), ["dsl".to_string()].into());
        let keep = Spec {
            policies: s
                .policies
                .iter()
                .map(|(n, p)| {
                    let mut p = p.clone();
                    p.last_resort = AllDown::KeepLast;
                    (n.clone(), p)
                })
                .collect(),
            ..s.clone()
        };
        let rs = compile_with(&keep, &kept);
        let voip: Vec<String> = (rs.chain("policy_voip").unwrap().rules.iter().skip(1))
            .map(crate::nft::rule)
            .collect();
        assert_eq!(voip, ["ct mark set 0x00000002"]);
        // The default policy: every gateway, all_down unreachable when none is left.
        let rs = compile_with(
            &s,
            &Availability::without(["fibre", "dsl", "lte"].map(String::from).into()),
        );
        let balance: Vec<String> = rs
            .chain(names::BALANCE)
            .unwrap()
            .rules
            .iter()
            .map(crate::nft::rule)
            .collect();
        assert!(
            balance.contains(&"reject with icmpx host-unreachable".to_string()),
            "{balance:?}"
        );
    }

    /// Issue 15: status finds counters by the compiler's key, so every counter rule names
    /// its gateway and what it counts, once each.
    #[test]
    fn every_account_counter_names_its_gateway_and_meaning() {
        let rs = compile(&spec(&format!(
            r#"{{"gateways":[{}]}}"#,
            gateways(&[3, 2, 1])
        )));
        let mut seen: Vec<(String, Counting)> = rs
            .chains
            .iter()
            .flat_map(|c| &c.rules)
            .filter(|r| r.stmts.contains(&Stmt::Counter))
            .map(|r| {
                assert!(r.stmts.contains(&Stmt::Counter));
                let c = r.counts.clone().expect("an unnamed counter");
                (c.gateway, c.what)
            })
            .collect();
        seen.sort_by_key(|(g, w)| (g.clone(), *w as u8));
        let want: Vec<(String, Counting)> = ["g0", "g1", "g2"]
            .iter()
            .flat_map(|g| [Counting::Traffic, Counting::NewConnections].map(|w| (g.to_string(), w)))
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn unavailable_gateways_take_no_new_connections() {
        let s = spec(&format!(
            r#"{{"gateways":[{}],"balance":{{"forward":[{{"iif":"eth9","gateway":"g1"}},{{"iif":"eth8"}}]}}}}"#,
            gateways(&[3, 2, 1])
        ));
        let down =
            |names: &[&str]| Availability::without(names.iter().map(|n| n.to_string()).collect());
        let text = crate::nft::render(&compile_with(&s, &down(&["g1"])));
        assert!(
            text.contains("ct mark set numgen inc mod 4 map { 0-2 : 0x00000001, 3 : 0x00000003 }"),
            "{text}"
        );
        // The pin to g1 is balanced instead, and its chain is gone.
        assert!(!text.contains("pin_g1"), "{text}");
        assert!(text.contains("iifname \"eth9\" jump balance"), "{text}");
        // Ingress marks still know g1.
        assert!(text.contains("\"eth1\" : 0x00000002"), "{text}");

        let none = compile_with(&s, &down(&["g0", "g1", "g2"]));
        let balance = none.chain(names::BALANCE).unwrap();
        assert!(
            balance
                .rules
                .iter()
                .all(|r| r.stmts == [Stmt::Verdict(Verdict::Return)]),
            "{balance:?}"
        );
    }

    #[test]
    fn source_hash_in_dual_stack_hashes_each_family() {
        let s = spec(&format!(
            r#"{{"gateways":[{}],"balance":{{"method":"source-hash","exclude":["fc00::/7"]}}}}"#,
            gateways(&[1, 1])
        ));
        let text = crate::nft::render(&compile(&s));
        assert!(text.contains("ct mark set jhash ip saddr mod 2 seed 0x6e667462 map"));
        assert!(text.contains("ct mark set jhash ip6 saddr mod 2 seed 0x6e667462 map"));
    }

    /// The ruleset of a two-gateway spec with these exclusions (JSON strings).
    fn compile_excluding(exclude: &[String]) -> Ruleset {
        compile(&spec(&format!(
            r#"{{"gateways":[{}],"balance":{{"exclude":[{}]}}}}"#,
            gateways(&[1, 1]),
            exclude.join(",")
        )))
    }

    /// The exclusion guards of the balance chain, as nft text, and the sets' names.
    fn exclusion_layout(exclude: &[String]) -> (Vec<String>, Vec<String>) {
        let rs = compile_excluding(exclude);
        let text = crate::nft::render(&rs);
        let guards = text
            .lines()
            .filter(|l| l.contains("daddr") && l.ends_with("return"))
            .map(|l| l.trim().to_string())
            .collect();
        (guards, rs.sets.iter().map(|s| s.name.clone()).collect())
    }

    fn quoted(nets: impl Iterator<Item = String>) -> Vec<String> {
        nets.map(|n| format!("\"{n}\"")).collect()
    }

    #[test]
    fn few_prefixes_of_many_lengths_share_one_interval_set() {
        let (guards, sets) = exclusion_layout(&quoted(
            ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
                .into_iter()
                .map(String::from),
        ));
        assert_eq!(guards, ["ip daddr @exclude_v4 return"]);
        assert_eq!(
            sets,
            ["exclude_v4", "ingress_mark", "by_mark", "new_by_mark"]
        );
    }

    #[test]
    fn many_prefixes_of_one_length_are_one_hash_set_of_networks() {
        // 64 disjoint /30s: one probe instead of a 7-step search.
        let nets = (0..64u32).map(|i| format!("10.0.{}.{}/30", i / 32, (i % 32) * 8));
        let rs = compile_excluding(&quoted(nets));
        let set = rs.set("exclude_v4_30").unwrap();
        assert!(!set.interval);
        assert_eq!(set.elements.len(), 64);
        assert_eq!(
            set.elements[1].key,
            Value::Ipv4("10.0.0.8".parse().unwrap())
        );
        let text = crate::nft::render(&rs);
        assert!(
            text.contains("ip daddr & 255.255.255.252 @exclude_v4_30 return"),
            "{text}"
        );
        // Single addresses need no mask.
        let hosts = (0..16u32).map(|i| format!("2001:db8::{:x}", i * 2));
        let (guards, _) = exclusion_layout(&quoted(hosts));
        assert_eq!(guards, ["ip6 daddr @exclude_v6_128 return"]);
    }

    #[test]
    fn a_few_lengths_get_a_hash_set_each_longest_first() {
        // 256 /64s and one /48: 2 probes against a 9-step search.
        let mut nets: Vec<String> = (0..256u32)
            .map(|i| format!("2001:db8:0:{:x}::/64", i * 2))
            .collect();
        nets.push("2001:db8:1::/48".into());
        let (guards, sets) = exclusion_layout(&quoted(nets.into_iter()));
        assert_eq!(
            guards,
            [
                "ip6 daddr & ffff:ffff:ffff:ffff:: @exclude_v6_64 return",
                "ip6 daddr & ffff:ffff:ffff:: @exclude_v6_48 return"
            ]
        );
        assert_eq!(sets[..2], ["exclude_v6_64", "exclude_v6_48"]);
        // Three lengths are too many for 257 prefixes.
        let mut nets: Vec<String> = (0..256u32)
            .map(|i| format!("2001:db8:0:{:x}::/64", i * 2))
            .collect();
        nets.extend(["2001:db8:1::/48".into(), "2001:db8:2::/47".into()]);
        let (guards, _) = exclusion_layout(&quoted(nets.into_iter()));
        assert_eq!(guards, ["ip6 daddr @exclude_v6 return"]);
    }
}
