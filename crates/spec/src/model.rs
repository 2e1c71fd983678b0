//! Typed, validated spec values. Constructed only by the parser, so every `Spec` is consistent.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Serialize;

/// Table name used when the spec names none.
pub const DEFAULT_TABLE: &str = "nftbalance";
/// All 32 bits of the packet and connection mark belong to the tool unless the spec narrows it.
pub const DEFAULT_MARK_MASK: u32 = 0xffff_ffff;
/// Fixed jhash seed, so a re-apply maps every host to the same uplink as before
/// (without a seed the kernel picks a random one for every rule it loads).
pub const DEFAULT_HASH_SEED: u32 = 0x6e66_7462;
/// Upper bound of a gateway weight (mwan3 uses the same range).
pub const MAX_WEIGHT: u32 = 1000;

/// A whole balancer: gateways, what to balance over them, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    pub table: String,
    pub family: Family,
    #[serde(serialize_with = "hex")]
    pub mark_mask: u32,
    pub gateways: Vec<Gateway>,
    pub balance: Balance,
    pub snat: bool,
    #[serde(skip_serializing_if = "Watch::is_default")]
    pub watch: Watch,
}

/// What `nftbalance watch` does beyond each gateway's health settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Watch {
    pub all_down: AllDown,
}

impl Watch {
    fn is_default(&self) -> bool {
        *self == Watch::default()
    }
}

/// What happens to new connections when every gateway with health checks is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllDown {
    /// Keep balancing over the gateways that were up last (a probe target may be what
    /// failed, not every uplink at once).
    #[default]
    KeepLast,
    /// Stop marking: new connections follow the main table.
    MainTable,
}

/// Health checks of one gateway (`nftbalance watch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub targets: Vec<HealthTarget>,
    #[serde(rename = "interval", serialize_with = "millis")]
    pub interval_ms: u32,
    #[serde(rename = "timeout", serialize_with = "millis")]
    pub timeout_ms: u32,
    /// Consecutive successes before a down gateway is up.
    pub up: u32,
    /// Consecutive failures before an up gateway is down.
    pub down: u32,
}

/// A probe target: an address answers ICMP echo, an address:port accepts a TCP connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthTarget {
    Icmp(std::net::IpAddr),
    Tcp(std::net::SocketAddr),
}

impl HealthTarget {
    pub fn addr(&self) -> std::net::IpAddr {
        match self {
            HealthTarget::Icmp(a) => *a,
            HealthTarget::Tcp(s) => s.ip(),
        }
    }
}

impl Serialize for HealthTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HealthTarget::Icmp(a) => s.collect_str(a),
            HealthTarget::Tcp(a) => s.collect_str(a),
        }
    }
}

pub const DEFAULT_HEALTH_INTERVAL_MS: u32 = 2000;
pub const DEFAULT_HEALTH_TIMEOUT_MS: u32 = 1000;
pub const DEFAULT_HEALTH_UP: u32 = 2;
pub const DEFAULT_HEALTH_DOWN: u32 = 3;

fn millis<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    if v.is_multiple_of(1000) {
        s.collect_str(&format_duration(v / 1000))
    } else {
        s.collect_str(&format_args!("{v}ms"))
    }
}

impl Spec {
    /// The gateway with this name.
    pub fn gateway(&self, name: &str) -> Option<&Gateway> {
        self.gateways.iter().find(|g| g.name == name)
    }

    /// Sum of all weights: the modulus of the split.
    pub fn total_weight(&self) -> u32 {
        self.gateways.iter().map(|g| g.weight).sum()
    }
}

/// The nftables family of the tool's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Inet,
    Ip,
    Ip6,
}

impl Family {
    pub fn has_ipv4(self) -> bool {
        matches!(self, Family::Inet | Family::Ip)
    }
    pub fn has_ipv6(self) -> bool {
        matches!(self, Family::Inet | Family::Ip6)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gateway {
    pub name: String,
    pub interface: String,
    #[serde(serialize_with = "hex")]
    pub mark: u32,
    pub weight: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via6: Option<Ipv6Addr>,
    pub route_table: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// When `watch` marks the gateway down, delete its connections from conntrack so their
    /// hosts reconnect through a live uplink.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flush_conntrack: bool,
}

/// What is balanced and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub method: Method,
    pub forward: Vec<Selector>,
    pub local: Vec<Selector>,
    /// Destinations never balanced, as written (the compiler merges overlaps).
    pub exclude: Vec<IpNet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    #[serde(serialize_with = "hex")]
    pub hash_seed: u32,
}

/// How a new connection picks its gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// One shared counter (`numgen inc`): exact split by weight.
    RoundRobin,
    /// `numgen random`: split by weight on average.
    Random,
    /// `jhash` of the source address: one LAN host, one uplink.
    SourceHash,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::RoundRobin => "round-robin",
            Method::Random => "random",
            Method::SourceHash => "source-hash",
        }
    }
}

/// A source keeps the uplink of its last new connection for `timeout_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sticky {
    #[serde(rename = "timeout", serialize_with = "duration")]
    pub timeout_secs: u32,
}

/// Whether a selector applies to forwarded or to locally generated connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorKind {
    Forward,
    Local,
}

/// Which new connections are balanced (or pinned to one gateway).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Selector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iif: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dports: Vec<PortRange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub saddr: Vec<IpNet>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub daddr: Vec<IpNet>,
    /// Pin: send matching connections through this gateway instead of balancing them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.collect_str(self)
        }
    }
}

fn hex<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:#x}"))
}

fn duration<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_duration(*v))
}

/// Seconds as the largest exact unit: 600 -> "10m", 90 -> "90s".
pub fn format_duration(secs: u32) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}
