//! The ruleset model: the nftables objects the tool owns, at the level of nft statements.
//!
//! Renderers (nft text, JSON) and the netlink encoder all read this one model.

use std::net::{Ipv4Addr, Ipv6Addr};

pub use ipnet::{Ipv4Net, Ipv6Net};
pub use nftbalance_spec::{Family, Protocol, SelectorKind};

/// The tool's one table and everything in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub family: Family,
    pub table: String,
    /// Named sets and maps, in definition order (before the chains that use them).
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

impl Ruleset {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }
}

/// A named set, or a map when `data` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub key: DataType,
    pub data: Option<DataType>,
    /// Elements are prefixes or ranges.
    pub interval: bool,
    /// Filled from the packet path (`update @set { ... }`), with a default timeout.
    pub dynamic: Option<Dynamic>,
    /// Most elements the set holds, stated so that every writer of the set (nft -f,
    /// netlink) creates the same object. For a hash set it also makes the kernel build a
    /// fixed-size table (nft_set_hash's "hash" type: no resizing while it fills, a cheaper
    /// lookup) instead of a resizable one.
    pub size: Option<u32>,
    pub elements: Vec<Element>,
}

impl Set {
    pub fn is_map(&self) -> bool {
        self.data.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dynamic {
    pub timeout_secs: u32,
}

/// Element limit of each dynamic set: nft's default for them.
pub const DYNAMIC_SET_SIZE: u32 = 65535;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Value,
    pub data: Option<Value>,
}

/// nftables data types used by this ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Ipv4Addr,
    Ipv6Addr,
    IfName,
    Mark,
    Verdict,
}

impl DataType {
    /// The nft type name.
    pub fn nft_name(self) -> &'static str {
        match self {
            DataType::Ipv4Addr => "ipv4_addr",
            DataType::Ipv6Addr => "ipv6_addr",
            DataType::IfName => "ifname",
            DataType::Mark => "mark",
            DataType::Verdict => "verdict",
        }
    }
}

/// A constant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A packet or connection mark, printed in hex.
    Mark(u32),
    /// A plain number (numgen/jhash results, masks), printed in decimal.
    Int(u32),
    IfName(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Ipv4Net(Ipv4Net),
    Ipv6Net(Ipv6Net),
    Port(u16),
    /// Inclusive range of two values of one kind (ports, integers).
    Range(Box<Value>, Box<Value>),
    Verdict(Verdict),
    /// `meta nfproto` value.
    NfProto(IpFamily),
    /// `meta l4proto` value.
    L4Proto(Protocol),
}

impl Value {
    pub fn range(first: Value, last: Value) -> Value {
        if first == last {
            first
        } else {
            Value::Range(Box::new(first), Box::new(last))
        }
    }
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Return,
    Jump(String),
    Goto(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    Mark,
    IifName,
    OifName,
    NfProto,
    L4Proto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    State,
    Mark,
}

/// A header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    IpSaddr,
    IpDaddr,
    Ip6Saddr,
    Ip6Daddr,
    /// Destination port of this protocol.
    Dport(Protocol),
}

impl Field {
    /// The mask that keeps the first `prefix_len` bits of this address field (`None` for a
    /// port, or a length beyond the address).
    pub fn netmask(self, prefix_len: u8) -> Option<Value> {
        match self {
            Field::IpSaddr | Field::IpDaddr => Ipv4Net::new(Ipv4Addr::UNSPECIFIED, prefix_len)
                .ok()
                .map(|n| Value::Ipv4(n.netmask())),
            Field::Ip6Saddr | Field::Ip6Daddr => Ipv6Net::new(Ipv6Addr::UNSPECIFIED, prefix_len)
                .ok()
                .map(|n| Value::Ipv6(n.netmask())),
            Field::Dport(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumgenMode {
    Inc,
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CtState {
    New,
    Established,
    Related,
}

/// Something that yields a value at packet time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta(MetaKey),
    Ct(CtKey),
    Payload(Field),
    Numgen {
        mode: NumgenMode,
        modulus: u32,
    },
    Jhash {
        field: Field,
        modulus: u32,
        seed: u32,
    },
    Value(Value),
    /// `expr & mask`
    And(Box<Expr>, u32),
    /// An address field with the bits after its first `prefix_len` cleared (`ip daddr &
    /// 255.255.255.0`): the key of a per-prefix-length set.
    Network {
        field: Field,
        prefix_len: u8,
    },
    /// `expr & keep | set`: overwrite some bits with constants.
    Bits {
        expr: Box<Expr>,
        keep: u32,
        set: u32,
    },
    /// `key map @name` or `key map { k : v, ... }`
    Map {
        key: Box<Expr>,
        map: MapRef,
    },
}

/// A named map or an anonymous one written in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapRef {
    Named(String),
    Anonymous(Vec<(Value, Value)>),
}

/// A named set or an anonymous one written in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetRef {
    Named(String),
    Anonymous(Vec<Value>),
}

/// A condition on the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `left == right` (`!=` when negated); a prefix or range on the right matches its span.
    Cmp {
        left: Expr,
        negate: bool,
        right: Value,
    },
    /// `left @set` / `left { ... }`.
    InSet { left: Expr, set: SetRef },
    /// `ct state a,b`: any of these states.
    CtState(Vec<CtState>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    V4,
    V6,
}

/// Something a rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// `target set value`; target is `meta mark` or `ct mark`.
    Mangle {
        target: Expr,
        value: Expr,
    },
    /// `update @set { key }`: add or refresh an element of a dynamic set.
    SetUpdate {
        set: String,
        key: Expr,
    },
    /// `key vmap ...`
    VerdictMap {
        key: Expr,
        map: MapRef,
    },
    Snat {
        family: IpFamily,
        addr: Expr,
    },
    Masquerade,
    /// `counter`: packets and bytes of the packets that reach it.
    Counter,
    Verdict(Verdict),
    /// `reject`: answer the packet at once so the client fails fast.
    Reject(Reject),
}

/// How `reject` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// `reject with tcp reset` (TCP packets only).
    TcpReset,
    /// `reject with icmpx host-unreachable`: ICMP or ICMPv6, as the packet's family needs.
    IcmpxHostUnreachable,
}

/// A rule: all matches, then the statements in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub stmts: Vec<Stmt>,
    /// Why the rule exists, for readers of the dump; not loaded into the kernel.
    pub doc: Option<&'static str>,
    /// What the rule's counter counts, named by the compiler so that readers (`status`) find
    /// a gateway's counters by this key rather than by assuming an order. Not loaded.
    pub counts: Option<Counted>,
    /// The spec selector a selection rule was compiled from, so that `explain` names it
    /// rather than guessing it from the rule's matches. Not loaded.
    pub selector: Option<SelectorRef>,
}

/// A selector of the spec: `balance.forward[index]` or `balance.local[index]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectorRef {
    pub kind: SelectorKind,
    pub index: usize,
}

/// The meaning of a counter rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub gateway: String,
    pub what: Counting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Every packet of the gateway's connections, both directions.
    Traffic,
    /// First packets of its new connections.
    NewConnections,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Route,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Output,
    Postrouting,
}

/// Where a base chain hangs in the netfilter path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: Priority,
}

/// Hook priorities by their nft names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// -150: after conntrack (-200) so ct state and ct mark are known, before DNAT (-100).
    Mangle,
    /// 100: source NAT, after routing chose the uplink.
    SrcNat,
}

impl Priority {
    pub fn value(self) -> i32 {
        match self {
            Priority::Mangle => -150,
            Priority::SrcNat => 100,
        }
    }
    pub fn nft_name(self) -> &'static str {
        match self {
            Priority::Mangle => "mangle",
            Priority::SrcNat => "srcnat",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
    /// A line for readers of the dump (nft comments are not loaded into the kernel).
    pub doc: &'static str,
}
