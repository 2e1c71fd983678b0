//! The JSON Schema of the spec (`nftbalance schema`), for editors to validate and complete.
//!
//! The parser reads the JSON by hand so that it can report every error with its path; these
//! types only say the shape of that JSON for schemars. They are never built. The parser
//! records the keys each object accepts ([`crate::objects_read`]) and a test compares them
//! with this schema, object by object, so a field added to one and not the other fails it.
//! Values the parser checks against other values (unique names, marks inside the mask,
//! known gateways) stay the parser's: a schema says what each value may look like.
#![allow(dead_code)] // fields are read by the derive, never by code

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde_json::Value;

use crate::model::{
    AllDown, Family, Method, Protocol, DEFAULT_HASH_SEED, DEFAULT_HEALTH_DOWN,
    DEFAULT_HEALTH_INTERVAL_MS, DEFAULT_HEALTH_TIMEOUT_MS, DEFAULT_HEALTH_UP,
    DEFAULT_HEALTH_WINDOW, DEFAULT_HOOK_TIMEOUT_MS, DEFAULT_MARK_MASK, DEFAULT_TABLE, MAX_TIER,
    MAX_WEIGHT,
};
use crate::name::IFNAME_MAX;
use crate::parse::ha::{DEFAULT_ADVERT_MS, MAX_ADDRESSES};
use crate::parse::{show_ms, MAX_GATEWAYS, MAX_HOOK_WORDS, MAX_POLICIES, NAME_MAX};

/// The spec's JSON Schema (draft 2020-12), as `nftbalance schema` prints it.
pub fn json_schema() -> Value {
    let schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<SpecJson>();
    let mut value = schema.to_value();
    forbid_null(&mut value);
    // What the file is comes first for a reader: `$schema`, title, description.
    if let Value::Object(map) = &mut value {
        let mut ordered = serde_json::Map::new();
        for key in ["$schema", "title", "description"] {
            if let Some(v) = map.remove(key) {
                ordered.insert(key.into(), v);
            }
        }
        ordered.append(map);
        *map = ordered;
    }
    value
}

/// schemars lets an `Option` field be null; the parser wants such a field left out.
fn forbid_null(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(alts)) = map.get_mut(key) {
                    alts.retain(|a| a.get("type").and_then(Value::as_str) != Some("null"));
                    if alts.len() == 1 {
                        let only = alts.remove(0);
                        map.remove(key);
                        if let Value::Object(o) = only {
                            map.extend(o);
                        }
                    }
                }
            }
            map.values_mut().for_each(forbid_null);
        }
        Value::Array(items) => items.iter_mut().for_each(forbid_null),
        _ => {}
    }
}

/// Letters, digits, '_' and '-', a letter first (`name::identifier`).
const IDENTIFIER: &str = "^[A-Za-z][A-Za-z0-9_-]*$";
/// `name::interface`: letters, digits, '.', '_', '-' and '@'.
const INTERFACE: &str = "^[A-Za-z0-9._@-]+$";
/// A 32-bit number as text: decimal without leading zeros, or hex (`parse_u32_text`).
const U32_TEXT: &str = "^(0|[1-9][0-9]{0,9}|0[xX][0-9A-Fa-f]{1,8})$";
/// Durations: numbers with units d, h, m, s, ms (`parse_duration_ms`).
const DURATION: &str = "^([0-9]+(d|h|ms|m|s))+$";
/// A port range as text: "8000-8999" (`parse_port_range`).
const PORT_TEXT: &str = "^[0-9]{1,5}(-[0-9]{1,5})?$";

/// An nftbalance spec: the uplinks of a router and how new connections are spread over them.
#[derive(JsonSchema)]
#[schemars(title = "nftbalance spec")]
#[serde(deny_unknown_fields)]
struct SpecJson {
    /// The schema this file follows (for editors; nftbalance ignores it).
    #[serde(rename = "$schema")]
    schema: Option<String>,
    /// The nftables table nftbalance owns; nothing else is touched.
    #[serde(default = "default_table")]
    #[schemars(regex(pattern = IDENTIFIER), length(min = 1, max = 64))]
    table: String,
    /// inet balances IPv4 and IPv6; ip only IPv4, ip6 only IPv6.
    #[serde(default = "default_family")]
    family: Family,
    /// The bits of the packet and connection mark that belong to nftbalance.
    #[serde(default = "default_mark_mask")]
    mark_mask: Bits,
    /// The uplinks, each with its interface, mark and routing table.
    #[schemars(length(min = 1, max = MAX_GATEWAYS))]
    gateways: Vec<GatewayJson>,
    /// Which new connections are balanced, and how.
    balance: Option<BalanceJson>,
    /// Masquerade balanced connections to the address of the uplink they leave by.
    #[serde(default = "yes")]
    snat: bool,
    /// What `nftbalance watch` does beyond each gateway's health checks.
    watch: Option<WatchJson>,
    /// Named policies: which gateways, in failover tiers, a selector's connections may use.
    #[schemars(extend("maxProperties" = MAX_POLICIES, "propertyNames" = {
        "pattern": IDENTIFIER, "maxLength": NAME_MAX }))]
    policies: Option<BTreeMap<String, PolicyJson>>,
    /// A program run on every gateway or policy change (by `nftbalance watch`).
    hooks: Option<HooksJson>,
    /// A redundant router pair: keepalived (VRRP) floats the addresses, conntrackd replicates
    /// the connections (`nftbalance dump --format keepalived|conntrackd --node NAME`).
    ha: Option<HaJson>,
}

/// One uplink.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct GatewayJson {
    /// The gateway's name, used in rules, logs and `status`.
    #[schemars(regex(pattern = IDENTIFIER), length(min = 1, max = NAME_MAX))]
    name: String,
    /// The interface its traffic leaves by.
    #[schemars(regex(pattern = INTERFACE), length(min = 1, max = IFNAME_MAX))]
    interface: String,
    /// The mark of its connections: non-zero, inside `mark_mask`, unique.
    mark: Bits,
    /// Its share of new connections relative to the other gateways.
    #[serde(default)]
    weight: Count<1, MAX_WEIGHT>,
    /// Its IPv4 source address (SNAT); learnt from the interface when left out.
    address: Option<Ipv4Text>,
    /// Its IPv4 next hop; learnt from the interface when left out.
    via: Option<Ipv4Text>,
    /// Its IPv6 source address.
    address6: Option<Ipv6Text>,
    /// Its IPv6 next hop.
    via6: Option<Ipv6Text>,
    /// The routing table holding its default route (not 0, 253, 254 or 255).
    route_table: Bits,
    /// Health checks (`nftbalance watch`); without them the gateway is always up.
    health: Option<HealthJson>,
    /// Flush its connections from conntrack when it goes down.
    #[serde(default)]
    flush_conntrack: bool,
}

/// How `nftbalance watch` decides that a gateway is up or down.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct HealthJson {
    /// What to probe through the uplink: "ADDRESS" (ICMP echo), "ADDRESS:PORT" (TCP connect),
    /// "dns://ADDRESS/NAME" (DNS query) or "http://ADDRESS[:PORT]/PATH" (HTTP GET).
    #[schemars(length(min = 1))]
    targets: Vec<String>,
    /// Time between probe rounds (100ms to 1h).
    #[serde(default = "default_interval")]
    interval: Duration,
    /// How long a probe may take (100ms to 1h, at most `interval`).
    #[serde(default = "default_timeout")]
    timeout: Duration,
    /// Successful rounds in a row that bring a down gateway up.
    #[serde(default = "default_up")]
    up: Count<1, 100>,
    /// Failed rounds in a row that take a gateway down.
    #[serde(default = "default_down")]
    down: Count<1, 100>,
    /// Targets that must answer for a round to succeed.
    #[serde(default)]
    reliability: Count<1, { u32::MAX }>,
    /// Rounds that `max_loss` and `max_latency` look at.
    #[serde(default = "default_window")]
    window: Count<1, 100>,
    /// Down when more than this share of the window's rounds failed (percent).
    max_loss: Option<Count<0, 100>>,
    /// Up again only at or below this loss (percent; stricter than `max_loss`).
    recover_loss: Option<Count<0, 100>>,
    /// Down when the window's median round-trip time is above this.
    max_latency: Option<Duration>,
    /// Up again only at or below this median (stricter than `max_latency`).
    recover_latency: Option<Duration>,
    /// How long a recovered gateway must stay up before it takes new connections (0s to 1d).
    hold_down: Option<Duration>,
}

/// Which new connections are balanced, and how.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct BalanceJson {
    /// How a new connection picks its gateway.
    #[serde(default = "default_method")]
    method: Method,
    /// Forwarded connections to balance (from the LAN); none: every forwarded connection.
    forward: Option<Vec<SelectorJson>>,
    /// Connections of the router itself to balance; none: no local connection.
    local: Option<Vec<SelectorJson>>,
    /// Destinations never balanced: they follow the main table.
    exclude: Option<Prefixes>,
    /// Keep each source on the uplink of its last new connection for a while.
    sticky: Option<StickyJson>,
    /// The seed of `source-hash`: the same seed maps a host to the same uplink on re-apply.
    #[serde(default = "default_hash_seed")]
    hash_seed: Bits,
}

/// Connections that match every field given.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("dependentRequired" = { "dports": ["protocol"] },
    "not" = { "required": ["gateway", "policy"] }))]
struct SelectorJson {
    /// The interface they arrive on (forward selectors only).
    #[schemars(regex(pattern = INTERFACE), length(min = 1, max = IFNAME_MAX))]
    iif: Option<String>,
    /// Their protocol (needed for `dports`).
    protocol: Option<Protocol>,
    /// Their destination ports: numbers or "FIRST-LAST" ranges.
    #[schemars(length(min = 1))]
    dports: Option<Vec<Port>>,
    /// Their source addresses or prefixes.
    saddr: Option<Prefixes>,
    /// Their destination addresses or prefixes.
    daddr: Option<Prefixes>,
    /// Pin them to this gateway (not with `policy`).
    gateway: Option<String>,
    /// Balance them by this policy (not with `gateway`).
    policy: Option<String>,
}

/// How long a source keeps its uplink.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct StickyJson {
    /// Whole seconds with a unit, e.g. "10m" (at most 30d).
    timeout: Duration,
}

/// A policy: its members in failover tiers.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct PolicyJson {
    /// The gateways it may use; the lowest tier with a usable member takes the traffic.
    #[schemars(length(min = 1, max = MAX_GATEWAYS))]
    members: Vec<MemberJson>,
    /// How it splits over a tier [default: `balance.method`].
    method: Option<Method>,
    /// What happens when no member is up [default: `watch.all_down`].
    last_resort: Option<AllDown>,
}

/// A gateway in a policy.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct MemberJson {
    /// The gateway's name.
    gateway: String,
    /// Its tier: 1 is used first, higher tiers when no lower one has a member up.
    #[serde(default)]
    tier: Count<1, { MAX_TIER as u32 }>,
    /// Its weight within its tier [default: the gateway's weight].
    weight: Option<Count<1, MAX_WEIGHT>>,
}

/// What `nftbalance watch` does beyond each gateway's health checks.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct WatchJson {
    /// What happens to new connections when every checked gateway is down.
    #[serde(default)]
    all_down: AllDown,
}

/// A program run on every change, without a shell.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct HooksJson {
    /// The program (an absolute path) and its arguments.
    #[schemars(length(min = 1, max = MAX_HOOK_WORDS), extend("prefixItems" = [{ "pattern": "^/" }]))]
    on_change: Vec<String>,
    /// How long a run may take before it is killed (100ms to 1h).
    #[serde(default = "default_hook_timeout")]
    timeout: Duration,
}

/// The router pair.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct HaJson {
    /// The two routers (priorities differ; the higher one is master first).
    #[schemars(length(min = 2, max = 2))]
    nodes: Vec<HaNodeJson>,
    /// The link conntrackd replicates over; never balanced or marked.
    #[schemars(regex(pattern = INTERFACE), length(min = 1, max = IFNAME_MAX))]
    sync_interface: String,
    /// The VRRP instances: what floats, on which interface.
    #[schemars(length(min = 1))]
    instances: Vec<VrrpInstanceJson>,
    /// VRRP's advertisement interval (100ms to 40950ms, in 10ms steps).
    #[serde(default = "default_advert_interval")]
    advert_interval: Duration,
    /// Whether a returning higher-priority router takes over again (off: no second move).
    #[serde(default)]
    preempt: bool,
}

/// One router of the pair.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct HaNodeJson {
    /// Its name (`--node NAME`).
    #[schemars(regex(pattern = IDENTIFIER), length(min = 1, max = NAME_MAX))]
    name: String,
    /// Its VRRP priority (1 to 254).
    priority: Count<1, 254>,
    /// Its own address on the sync link (the peer's is the other node's).
    sync_address: Ipv4Text,
    /// Gateway name -> this router's own address on that uplink, for its health probes.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": IDENTIFIER, "maxLength": NAME_MAX }))]
    probe_addresses: BTreeMap<String, Ipv4Text>,
}

/// One VRRP instance.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct VrrpInstanceJson {
    /// Its name in keepalived.conf.
    #[schemars(regex(pattern = IDENTIFIER), length(min = 1, max = NAME_MAX))]
    name: String,
    /// The interface its advertisements and floating addresses use.
    #[schemars(regex(pattern = INTERFACE), length(min = 1, max = IFNAME_MAX))]
    interface: String,
    /// VRRP's virtual router id (1 to 255), unique on the link.
    virtual_router_id: Count<1, 255>,
    /// Addresses with prefix that float (the LAN gateway address, "192.168.1.1/24").
    #[serde(default)]
    #[schemars(length(max = MAX_ADDRESSES))]
    addresses: Vec<String>,
    /// Gateways whose `address` floats on their own interface (uplinks shared by a switch).
    #[serde(default)]
    gateways: Vec<String>,
}

/// A 32-bit number: a JSON number, or a string in decimal or hex ("0xff00").
#[derive(Serialize)]
struct Bits(#[serde(serialize_with = "hex")] u32);

fn hex<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// A number from MIN to MAX (also accepted as a decimal string, like every number).
#[derive(Serialize)]
struct Count<const MIN: u32, const MAX: u32>(u32);

/// Weights, tiers and reliability default to their least value, 1.
impl<const MIN: u32, const MAX: u32> Default for Count<MIN, MAX> {
    fn default() -> Self {
        Count(MIN)
    }
}

impl<const MIN: u32, const MAX: u32> JsonSchema for Count<MIN, MAX> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("Count{MIN}to{MAX}").into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "anyOf": [
            { "type": "integer", "minimum": MIN, "maximum": MAX },
            { "type": "string", "pattern": U32_TEXT },
        ] })
    }
}

/// A duration: "500ms", "90s", "10m", "1h30m", "1d".
#[derive(Serialize)]
struct Duration(String);

/// A port: a number, or "FIRST-LAST".
struct Port;

/// An address or prefix ("10.0.0.0/8", "fc00::/7"), or a list of them.
struct Prefixes;

/// An IPv4 address.
struct Ipv4Text;

/// An IPv6 address.
struct Ipv6Text;

/// Value types written in place (no `$defs` entry): type => its schema.
macro_rules! inline_schemas {
    ($($ty:ident => $schema:tt,)*) => {$(
        impl JsonSchema for $ty {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    )*};
}

inline_schemas! {
    Bits => { "anyOf": [
        { "type": "integer", "minimum": 0, "maximum": u32::MAX },
        { "type": "string", "pattern": U32_TEXT },
    ] },
    Duration => { "type": "string", "pattern": DURATION },
    Port => { "anyOf": [
        { "type": "integer", "minimum": 1, "maximum": u16::MAX },
        { "type": "string", "pattern": PORT_TEXT },
    ] },
    Prefixes => { "anyOf": [
        { "type": "string" },
        { "type": "array", "items": { "type": "string" } },
    ] },
    Ipv4Text => { "type": "string", "format": "ipv4" },
    Ipv6Text => { "type": "string", "format": "ipv6" },
}

fn default_table() -> String {
    DEFAULT_TABLE.to_string()
}
fn default_family() -> Family {
    Family::Inet
}
fn default_mark_mask() -> Bits {
    Bits(DEFAULT_MARK_MASK)
}
fn default_hash_seed() -> Bits {
    Bits(DEFAULT_HASH_SEED)
}
fn default_method() -> Method {
    Method::RoundRobin
}
fn yes() -> bool {
    true
}
fn default_up() -> Count<1, 100> {
    Count(DEFAULT_HEALTH_UP)
}
fn default_down() -> Count<1, 100> {
    Count(DEFAULT_HEALTH_DOWN)
}
fn default_window() -> Count<1, 100> {
    Count(DEFAULT_HEALTH_WINDOW)
}
fn ms(ms: u32) -> Duration {
    Duration(show_ms(ms))
}
fn default_advert_interval() -> Duration {
    ms(DEFAULT_ADVERT_MS)
}
fn default_interval() -> Duration {
    ms(DEFAULT_HEALTH_INTERVAL_MS)
}
fn default_timeout() -> Duration {
    ms(DEFAULT_HEALTH_TIMEOUT_MS)
}
fn default_hook_timeout() -> Duration {
    ms(DEFAULT_HOOK_TIMEOUT_MS)
}
