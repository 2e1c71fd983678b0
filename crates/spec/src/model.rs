//! Typed, validated spec values. Constructed only by the parser, so every `Spec` is consistent.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use schemars::JsonSchema;
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
/// Tiers of a policy: 1 is tried first (mwan3 allows metrics 1 to 256; 16 levels of
/// fallback are more than any router has uplinks for).
pub const MAX_TIER: u8 = 16;

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
    /// Named policies, by name. A map rather than a list: names are unique, selectors look
    /// them up by name, and the order (sorted) is the order generated objects take, so it is
    /// deterministic whatever order the JSON object had. Empty in a spec without policies,
    /// which then serializes exactly as before.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, Policy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
    /// The redundant pair this router belongs to (issue 20); None on a single router.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha: Option<Ha>,
}

/// Which gateways a selector's new connections may take, in tiers.
///
/// Resolved when parsed: every member has its weight and the policy its method and last
/// resort, whether the JSON gave them or left them to the defaults, so the compiler never
/// looks defaults up again. See [`Spec::policy_of`] for the policy of a selector that names
/// none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// In the order written; tiers need not be in order (the compiler groups by tier).
    pub members: Vec<Member>,
    pub method: Method,
    pub last_resort: AllDown,
}

impl Policy {
    /// The tiers used, lowest (preferred) first, each with its members in spec order.
    pub fn tiers(&self) -> Vec<(u8, Vec<&Member>)> {
        let mut tiers: BTreeMap<u8, Vec<&Member>> = BTreeMap::new();
        for m in &self.members {
            tiers.entry(m.tier).or_default().push(m);
        }
        tiers.into_iter().collect()
    }
}

/// One gateway of a policy. New connections go to the live members of the lowest tier that
/// has any, split by weight; higher tiers are backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub gateway: String,
    /// 1 to [`MAX_TIER`]; 1 is preferred.
    pub tier: u8,
    /// 1 to [`MAX_WEIGHT`]; the gateway's own weight unless the member sets one.
    pub weight: u32,
}

/// Names a policy wherever it comes from: the key the compiler can name its objects by.
/// Ordered, so maps of policies are deterministic: the implicit default first, then named
/// policies by name, then pins by gateway name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKey {
    /// A selector with neither `policy` nor `gateway`: every gateway in tier 1 with its own
    /// weight, `balance.method` and `watch.all_down` (what every spec meant before policies).
    Default,
    /// A selector's `policy`: a key of `policies`.
    Named(String),
    /// A selector's `gateway` pin.
    Pin(String),
}

/// A named policy by its name; the others in parentheses, which no name holds, so that a
/// policy named `default` is never taken for the implicit one (logs, hooks, `status`).
impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyKey::Named(name) => f.write_str(name),
            PolicyKey::Default => f.write_str("(default)"),
            PolicyKey::Pin(gateway) => write!(f, "(pin:{gateway})"),
        }
    }
}

/// Commands `watch` runs (issue 16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hooks {
    /// Program (an absolute path) and its arguments, run when a gateway changes state.
    /// The path is checked to be absolute by the parser; whether it exists is checked by the
    /// program through [`Spec::hook_problems`], since the parser touches no file system.
    pub on_change: Vec<String>,
    #[serde(rename = "timeout", serialize_with = "millis")]
    pub timeout_ms: u32,
}

pub const DEFAULT_HOOK_TIMEOUT_MS: u32 = 10_000;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AllDown {
    /// Keep balancing over the gateways that were up last (a probe target may be what
    /// failed, not every uplink at once).
    #[default]
    KeepLast,
    /// Stop marking: new connections follow the main table.
    MainTable,
    /// Refuse new connections rather than let them leave by a route the policy did not
    /// name (a policy's members are all the uplinks its traffic may use).
    Unreachable,
}

impl AllDown {
    pub fn as_str(self) -> &'static str {
        match self {
            AllDown::KeepLast => "keep-last",
            AllDown::MainTable => "main-table",
            AllDown::Unreachable => "unreachable",
        }
    }
}

/// Health checks of one gateway (`nftbalance watch`).
///
/// A probe round sends one probe to every target; it succeeds when at least `reliability`
/// targets answer. `up` and `down` count consecutive rounds. The quality thresholds
/// (`max_loss`, `max_latency`) look at the last `window` rounds: the share of failed rounds
/// and the median round-trip time of the answers. A gateway past a `max_*` is down; it is up
/// again only once it is within every `recover_*` (or, where none is given, within the
/// `max_*`), and takes new connections only after staying so for `hold_down`.
///
/// Targets are kept in two lists: `targets` (ICMP echo, TCP connect) and `queries` (DNS and
/// HTTP). The engine merges both into the health crate's one `Target` enum of four kinds
/// (`nftbalance_engine::gateway_probe`), ICMP/TCP first, then DNS/HTTP, as they are
/// serialized: one `targets` list, each kind in spec order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub targets: Vec<HealthTarget>,
    pub queries: Vec<QueryTarget>,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    /// Consecutive successes before a down gateway is up.
    pub up: u32,
    /// Consecutive failures before an up gateway is down.
    pub down: u32,
    /// Targets that must answer for a round to succeed: 1 to the number of targets.
    pub reliability: u32,
    /// Rounds that `max_loss` and `max_latency` look at: 1 to 100.
    pub window: u32,
    /// Percent of failed rounds in the window above which the gateway is down.
    pub max_loss: Option<u8>,
    /// Percent of failed rounds at or below which a down gateway recovers; below `max_loss`.
    pub recover_loss: Option<u8>,
    /// Median round-trip time in the window above which the gateway is down.
    pub max_latency_ms: Option<u32>,
    /// Median round-trip time at or below which a down gateway recovers; below
    /// `max_latency_ms`.
    pub recover_latency_ms: Option<u32>,
    /// How long a recovered gateway must stay good before it takes new connections.
    pub hold_down_ms: u32,
}

impl Health {
    /// Every target, of every kind: what `reliability` counts.
    pub fn target_count(&self) -> usize {
        self.targets.len() + self.queries.len()
    }
}

/// The JSON shape of [`Health`]: fields added by issue 16 are left out at their defaults, so
/// specs without them serialize byte for byte as before.
#[derive(Serialize)]
struct HealthJson<'h> {
    targets: Vec<TargetJson<'h>>,
    #[serde(serialize_with = "millis")]
    interval: u32,
    #[serde(serialize_with = "millis")]
    timeout: u32,
    up: u32,
    down: u32,
    #[serde(skip_serializing_if = "is_one")]
    reliability: u32,
    #[serde(skip_serializing_if = "is_default_window")]
    window: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_loss: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recover_loss: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_millis")]
    max_latency: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_millis")]
    recover_latency: Option<u32>,
    #[serde(skip_serializing_if = "is_zero", serialize_with = "millis")]
    hold_down: u32,
}

#[derive(Serialize)]
#[serde(untagged)]
enum TargetJson<'h> {
    Probe(&'h HealthTarget),
    Query(&'h QueryTarget),
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

fn is_default_window(v: &u32) -> bool {
    *v == DEFAULT_HEALTH_WINDOW
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Serialize for Health {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let targets = (self.targets.iter().map(TargetJson::Probe))
            .chain(self.queries.iter().map(TargetJson::Query))
            .collect();
        HealthJson {
            targets,
            interval: self.interval_ms,
            timeout: self.timeout_ms,
            up: self.up,
            down: self.down,
            reliability: self.reliability,
            window: self.window,
            max_loss: self.max_loss,
            recover_loss: self.recover_loss,
            max_latency: self.max_latency_ms,
            recover_latency: self.recover_latency_ms,
            hold_down: self.hold_down_ms,
        }
        .serialize(s)
    }
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

/// A target that must answer a query, not only be reachable (issue 16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryTarget {
    /// `dns://address[:port]/name`: a UDP query for `name` (type A) gets an answer, NOERROR
    /// or NXDOMAIN (the server answered the question; other rcodes, such as REFUSED or
    /// SERVFAIL, fail the target).
    Dns { server: SocketAddr, name: String },
    /// `http://address[:port]/path`: an HTTP/1.1 GET of `path` is answered 2xx or 3xx.
    Http { addr: SocketAddr, path: String },
}

impl QueryTarget {
    pub fn addr(&self) -> IpAddr {
        match self {
            QueryTarget::Dns { server, .. } => server.ip(),
            QueryTarget::Http { addr, .. } => addr.ip(),
        }
    }
}

impl fmt::Display for QueryTarget {
    /// As written in a spec; the port is left out when it is the scheme's own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, addr, default_port, rest) = match self {
            QueryTarget::Dns { server, name } => ("dns", server, 53, name.as_str()),
            QueryTarget::Http { addr, path } => ("http", addr, 80, path.trim_start_matches('/')),
        };
        write!(f, "{scheme}://")?;
        match (addr.ip(), addr.port() == default_port) {
            (IpAddr::V4(a), true) => write!(f, "{a}")?,
            (IpAddr::V6(a), true) => write!(f, "[{a}]")?,
            (_, false) => write!(f, "{addr}")?,
        }
        write!(f, "/{rest}")
    }
}

impl Serialize for QueryTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

pub const DEFAULT_HEALTH_INTERVAL_MS: u32 = 2000;
pub const DEFAULT_HEALTH_TIMEOUT_MS: u32 = 1000;
pub const DEFAULT_HEALTH_UP: u32 = 2;
pub const DEFAULT_HEALTH_DOWN: u32 = 3;
pub const DEFAULT_HEALTH_WINDOW: u32 = 10;

fn millis<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    if v.is_multiple_of(1000) {
        s.collect_str(&format_duration(v / 1000))
    } else {
        s.collect_str(&format_args!("{v}ms"))
    }
}

fn opt_millis<S: serde::Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => millis(v, s),
        None => s.serialize_none(),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
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
    /// Balance matching connections by this policy (a key of `Spec::policies`). Never set
    /// together with `gateway`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
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

/// A redundant router pair (issue 20): keepalived moves the floating addresses between the
/// two nodes (VRRP), conntrackd replicates the connection tracking table over the sync link.
/// Both nodes load the same spec, so the marks and the split are identical on both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ha {
    /// Exactly two routers.
    pub nodes: Vec<HaNode>,
    /// The dedicated link conntrackd syncs over; never balanced or marked.
    pub sync_interface: String,
    /// VRRP instances; with several they move together (one keepalived sync group).
    pub instances: Vec<VrrpInstance>,
    /// VRRP advertisement interval (VRRPv3: 10 ms steps).
    #[serde(rename = "advert_interval", serialize_with = "millis")]
    pub advert_interval_ms: u32,
    /// Whether the higher-priority node takes the addresses back when it returns.
    pub preempt: bool,
}

/// One router of the pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HaNode {
    pub name: String,
    /// VRRP priority, 1 to 254: the higher one is master when both start.
    pub priority: u8,
    /// This node's address on the sync link (the peer's is the other node's).
    pub sync_address: Ipv4Addr,
    /// Gateway name -> this node's own address on that uplink: the source of its health
    /// probes, present whether or not it holds the floating address.
    pub probe_addresses: BTreeMap<String, Ipv4Addr>,
}

/// One VRRP instance: its addresses float together with the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VrrpInstance {
    pub name: String,
    /// Where the instance advertises (the LAN).
    pub interface: String,
    pub virtual_router_id: u8,
    /// Floating addresses on `interface` (the LAN gateway address), with their prefixes.
    pub addresses: Vec<ipnet::Ipv4Net>,
    /// Gateways whose `address` floats (as /32 on the gateway's interface): uplinks shared
    /// by both routers through a switch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
}

impl Ha {
    /// The node named `name`, and its peer.
    pub fn node_and_peer(&self, name: &str) -> Option<(&HaNode, &HaNode)> {
        let i = self.nodes.iter().position(|n| n.name == name)?;
        Some((&self.nodes[i], &self.nodes[1 - i]))
    }
}
