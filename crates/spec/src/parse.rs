//! JSON -> `Spec`. Walks a `serde_json::Value` so that every error carries its JSON path and
//! all errors are collected, not only the first.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::lists::ListSource;
use crate::model::*;
use crate::name::{self, NameError};
use crate::target::{self, Target, TargetError};

pub(crate) mod ha;

/// One problem in a spec, with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The text is not JSON.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// The JSON does not describe a valid balancer.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Every problem found in a spec, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl Spec {
    /// Parses and validates a spec. On failure returns every error found.
    pub fn from_json(text: &str) -> Result<Spec, SpecErrors> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            SpecErrors(vec![SpecError::Syntax {
                line: e.line(),
                column: e.column(),
                message: syntax_message(&e),
            }])
        })?;
        let mut cx = Cx::default();
        let spec = cx.spec(&value);
        match spec {
            Some(spec) if cx.errors.is_empty() => Ok(spec),
            _ => Err(SpecErrors(cx.errors)),
        }
    }

    /// [`Spec::from_json`] where `exclude`, `saddr` and `daddr` entries `"@NAME"` are read
    /// from the lists `lists` opens (see [`crate::lists`]). Also returns the spec's text
    /// with every list written out, when there was one: that text alone says what was
    /// applied (the file may change later).
    pub fn from_json_with_lists(
        text: &str,
        lists: &mut dyn ListSource,
    ) -> Result<(Spec, Option<String>), SpecErrors> {
        let mut value: Value = serde_json::from_str(text).map_err(|e| {
            SpecErrors(vec![SpecError::Syntax {
                line: e.line(),
                column: e.column(),
                message: syntax_message(&e),
            }])
        })?;
        let mut cx = Cx {
            lists: Some(lists),
            ..Cx::default()
        };
        let spec = cx.spec(&value);
        let spec = match spec {
            Some(spec) if cx.errors.is_empty() => spec,
            _ => return Err(SpecErrors(cx.errors)),
        };
        if !cx.lists_read {
            return Ok((spec, None));
        }
        write_out_lists(&mut value, &spec);
        Ok((spec, Some(value.to_string())))
    }
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn syntax_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    }
}

/// Names become parts of nft identifiers (chains, sets); keep them short and plain.
pub(crate) const NAME_MAX: usize = 32;
/// Each gateway costs a routing table, ip rules and per-gateway objects; real routers have a
/// handful of uplinks.
pub(crate) const MAX_GATEWAYS: usize = 64;
/// Longest sticky timeout: 30 days.
const STICKY_MAX_SECS: u64 = 30 * 86_400;
/// Routing table ids the kernel reserves: unspec, default, main, local.
const RESERVED_TABLES: [(u32, &str); 4] = [
    (0, "unspec"),
    (253, "default"),
    (254, "main"),
    (255, "local"),
];

/// Most policies a spec may name: each becomes chains and maps of its own.
pub(crate) const MAX_POLICIES: usize = 64;
/// Percentages: loss thresholds.
const MAX_PERCENT: u32 = 100;
/// Most rounds a quality window may hold.
const MAX_WINDOW: u32 = 100;
/// Longest hold-down: a day.
const HOLD_DOWN_MAX_MS: u64 = 86_400_000;
/// Most words of a hook command (the program and its arguments).
pub(crate) const MAX_HOOK_WORDS: usize = 64;

#[derive(Default)]
struct Cx<'l> {
    errors: Vec<SpecError>,
    /// Where `@` entries are read from; none: they are an error.
    lists: Option<&'l mut dyn ListSource>,
    /// Whether an `@` entry was read.
    lists_read: bool,
    /// Set by [`objects_read`]: every object read goes into `read`.
    record: bool,
    read: Vec<ObjectRead>,
}

/// Errors reported from one list before the rest of it is skipped.
const MAX_ERRORS_PER_LIST: usize = 20;

/// Replaces the prefix lists of `value` (which may hold `@` entries) by the spec's.
fn write_out_lists(value: &mut Value, spec: &Spec) {
    let nets = |l: &[IpNet]| Value::Array(l.iter().map(|n| Value::String(n.to_string())).collect());
    let Some(balance) = value.get_mut("balance") else {
        return;
    };
    if balance.get("exclude").is_some() {
        balance["exclude"] = nets(&spec.balance.exclude);
    }
    for (key, selectors) in [
        ("forward", &spec.balance.forward),
        ("local", &spec.balance.local),
    ] {
        let Some(items) = balance.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for (item, s) in items.iter_mut().zip(selectors.iter()) {
            for (field, list) in [("saddr", &s.saddr), ("daddr", &s.daddr)] {
                if item.get(field).is_some() {
                    item[field] = nets(list);
                }
            }
        }
    }
}

/// An object the parser read: its path and the keys it accepts there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRead {
    pub path: String,
    pub accepted: &'static [&'static str],
}

/// Every object the parser reads in `text`, in order, with the keys each accepts: what the
/// schema's tests compare with the schema. Empty when the text is not JSON.
pub fn objects_read(text: &str) -> Vec<ObjectRead> {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    let mut cx = Cx {
        record: true,
        ..Cx::default()
    };
    cx.spec(&value);
    cx.read
}

/// A JSON object being read: remembers which keys were used to report unknown ones.
struct Obj<'v> {
    path: String,
    map: &'v Map<String, Value>,
    known: &'static [&'static str],
}

impl<'v> Obj<'v> {
    fn field(&self, key: &str) -> Option<(&'v Value, String)> {
        debug_assert!(self.known.contains(&key));
        self.map.get(key).map(|v| (v, join(&self.path, key)))
    }
}

/// The keys an unknown one may have meant: `$schema` is for editors, not a likely typo's target.
fn shown_keys(known: &[&str]) -> String {
    let keys: Vec<&str> = known
        .iter()
        .copied()
        .filter(|k| !k.starts_with('$'))
        .collect();
    keys.join(", ")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `s` as a prefix (or address) that [`Cx::prefix`] accepts for `family`, parsed without
/// allocating: the common case of a large list, whose entries then need no path formatted.
/// None for anything else; [`Cx::prefix`] then says what is wrong.
fn valid_prefix(s: &str, family: Family) -> Option<IpNet> {
    let net = if s.contains('/') {
        IpNet::from_str(s).ok()?
    } else {
        IpNet::from(IpAddr::from_str(s).ok()?)
    };
    let allowed = match net {
        IpNet::V4(_) => family.has_ipv4(),
        IpNet::V6(_) => family.has_ipv6(),
    };
    (allowed && net.trunc() == net).then_some(net)
}

impl Cx<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let path = if path.is_empty() {
            "(top level)".to_string()
        } else {
            path
        };
        self.errors.push(SpecError::Invalid {
            path,
            message: message.into(),
        });
    }

    fn object<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        known: &'static [&'static str],
    ) -> Option<Obj<'v>> {
        let Value::Object(map) = v else {
            self.err(path, format!("expected an object, found {}", describe(v)));
            return None;
        };
        if self.record {
            self.read.push(ObjectRead {
                path: path.to_string(),
                accepted: known,
            });
        }
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.err(
                    join(path, &quote_key(key)),
                    format!("unknown field; expected one of: {}", shown_keys(known)),
                );
            }
        }
        Some(Obj {
            path: path.to_string(),
            map,
            known,
        })
    }

    fn required<'v>(&mut self, obj: &Obj<'v>, key: &str) -> Option<(&'v Value, String)> {
        let found = obj.field(key);
        if found.is_none() {
            self.err(join(&obj.path, key), "missing (required)");
        }
        found
    }

    fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.err(path, format!("expected a string, found {}", describe(v)));
                None
            }
        }
    }

    fn bool(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => {
                self.err(
                    path,
                    format!("expected true or false, found {}", describe(v)),
                );
                None
            }
        }
    }

    fn array<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Vec<Value>> {
        match v {
            Value::Array(a) => Some(a),
            _ => {
                self.err(path, format!("expected an array, found {}", describe(v)));
                None
            }
        }
    }

    /// A non-empty array of at most [`MAX_GATEWAYS`] items; `empty` says what is missing.
    fn bounded_list<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        noun: &str,
        empty: &str,
    ) -> Option<&'v Vec<Value>> {
        let items = self.array(v, path)?;
        if items.is_empty() {
            self.err(path, empty);
            return None;
        }
        if items.len() > MAX_GATEWAYS {
            self.err(
                path,
                format!(
                    "{} {noun}; at most {MAX_GATEWAYS} are supported",
                    items.len()
                ),
            );
            return None;
        }
        Some(items)
    }

    /// A 32-bit number: a JSON number, or a string in hex ("0xff00") or decimal.
    fn u32(&mut self, v: &Value, path: &str) -> Option<u32> {
        let parsed = match v {
            Value::Number(n) => match n.as_u64() {
                Some(n) => u32::try_from(n).map_err(|_| format!("{n} does not fit in 32 bits")),
                None => Err(format!("{n} is not a whole number from 0 to 4294967295")),
            },
            Value::String(s) => parse_u32_text(s),
            _ => Err(format!(
                "expected a number or a hex string, found {}",
                describe(v)
            )),
        };
        parsed.map_err(|m| self.err(path, m)).ok()
    }

    fn spec(&mut self, v: &Value) -> Option<Spec> {
        let obj = self.object(
            v,
            "",
            &[
                "table",
                "family",
                "mark_mask",
                "gateways",
                "balance",
                "snat",
                "watch",
                "policies",
                "hooks",
                // The schema an editor checks the file against; nftbalance ignores it.
                "$schema",
                "ha",
            ],
        )?;
        if let Some((v, p)) = obj.field("$schema") {
            self.string(v, &p);
        }

        let table = match obj.field("table") {
            Some((v, p)) => self
                .string(v, &p)
                .and_then(|s| self.nft_identifier(&s, &p, 64)),
            None => Some(DEFAULT_TABLE.to_string()),
        };
        let family = match obj.field("family") {
            Some((v, p)) => self.string(v, &p).and_then(|s| match s.as_str() {
                "inet" => Some(Family::Inet),
                "ip" => Some(Family::Ip),
                "ip6" => Some(Family::Ip6),
                _ => {
                    self.err(
                        p,
                        format!("{} is not a family; expected inet, ip or ip6", show(&s)),
                    );
                    None
                }
            }),
            None => Some(Family::Inet),
        };
        let mark_mask = match obj.field("mark_mask") {
            Some((v, p)) => self.u32(v, &p).and_then(|m| {
                if m == 0 {
                    self.err(p, "0 leaves the tool no mark bits; use a non-zero mask");
                    None
                } else {
                    Some(m)
                }
            }),
            None => Some(DEFAULT_MARK_MASK),
        };
        let snat = match obj.field("snat") {
            Some((v, p)) => self.bool(v, &p),
            None => Some(true),
        };

        // Gateways are checked against the family and mask even when those failed to parse,
        // using the defaults, so that one mistake does not hide the others.
        let fam = family.unwrap_or(Family::Inet);
        let mask = mark_mask.unwrap_or(DEFAULT_MARK_MASK);
        let gateways = match self.required(&obj, "gateways") {
            Some((v, p)) => self.gateways(v, &p, fam, mask),
            None => None,
        };
        let names: Vec<String> = gateways
            .as_ref()
            .map(|gs| gs.iter().map(|g| g.name.clone()).collect())
            .unwrap_or_default();
        // Policies come before balance so that selectors can be checked against their names;
        // their defaults (balance.method, watch.all_down) are filled in once those are read.
        let policies = match obj.field("policies") {
            Some((v, p)) => self.policies(v, &p, gateways.as_deref()),
            None => Some(Vec::new()),
        };
        let policy_names: Option<Vec<String>> = match obj.field("policies") {
            Some((Value::Object(map), _)) => Some(map.keys().cloned().collect()),
            Some(_) => None,
            None => Some(Vec::new()),
        };
        let known = Known {
            gateways: gateways.is_some().then_some(&names[..]),
            policies: policy_names.as_deref(),
        };
        let balance = match obj.field("balance") {
            Some((v, p)) => self.balance(v, &p, fam, known),
            None => Some(Balance {
                method: Method::RoundRobin,
                forward: Vec::new(),
                local: Vec::new(),
                exclude: Vec::new(),
                sticky: None,
                hash_seed: DEFAULT_HASH_SEED,
            }),
        };

        let watch = match obj.field("watch") {
            Some((v, p)) => self.watch(v, &p),
            None => Some(Watch::default()),
        };
        let hooks = match obj.field("hooks") {
            Some((v, p)) => self.hooks(v, &p).map(Some),
            None => Some(None),
        };
        let ha = match obj.field("ha") {
            Some((v, p)) => self.ha(v, &p, fam, gateways.as_deref()).map(Some),
            None => Some(None),
        };
        let (balance, watch) = (balance?, watch?);
        let policies = policies?
            .into_iter()
            .map(|(name, p)| {
                let policy = Policy {
                    members: p.members,
                    method: p.method.unwrap_or(balance.method),
                    last_resort: p.last_resort.unwrap_or(watch.all_down),
                };
                (name, policy)
            })
            .collect();
        Some(Spec {
            table: table?,
            family: family?,
            mark_mask: mark_mask?,
            gateways: gateways?,
            balance,
            snat: snat?,
            watch,
            policies,
            hooks: hooks?,
            ha: ha?,
        })
    }

    /// `policies`: name -> policy, in document order (the model sorts them by name).
    fn policies(
        &mut self,
        v: &Value,
        path: &str,
        gateways: Option<&[Gateway]>,
    ) -> Option<Vec<(String, PolicyJson)>> {
        let Value::Object(map) = v else {
            self.err(
                path,
                format!(
                    "expected an object of policies by name, found {}",
                    describe(v)
                ),
            );
            return None;
        };
        if map.len() > MAX_POLICIES {
            self.err(
                path,
                format!(
                    "{} policies; at most {MAX_POLICIES} are supported",
                    map.len()
                ),
            );
            return None;
        }
        let parsed: Vec<Option<(String, PolicyJson)>> = map
            .iter()
            .map(|(name, v)| {
                let p = join(path, &quote_key(name));
                let name = self.identifier(name, &p, NAME_MAX);
                let policy = self.policy(v, &p, gateways);
                Some((name?, policy?))
            })
            .collect();
        parsed.into_iter().collect()
    }

    fn policy(
        &mut self,
        v: &Value,
        path: &str,
        gateways: Option<&[Gateway]>,
    ) -> Option<PolicyJson> {
        let obj = self.object(v, path, &["members", "method", "last_resort"])?;
        let members = self
            .required(&obj, "members")
            .and_then(|(v, p)| self.members(v, &p, gateways));
        let method = match obj.field("method") {
            Some((v, p)) => self.method(v, &p).map(Some),
            None => Some(None),
        };
        let last_resort = match obj.field("last_resort") {
            Some((v, p)) => self.all_down(v, &p, "last resort").map(Some),
            None => Some(None),
        };
        Some(PolicyJson {
            members: members?,
            method: method?,
            last_resort: last_resort?,
        })
    }

    fn members(
        &mut self,
        v: &Value,
        path: &str,
        gateways: Option<&[Gateway]>,
    ) -> Option<Vec<Member>> {
        let items =
            self.bounded_list(v, path, "members", "no members: name at least one gateway")?;
        let before = self.errors.len();
        let parsed: Vec<Option<Member>> = items
            .iter()
            .enumerate()
            .map(|(i, m)| self.member(m, &index(path, i), gateways))
            .collect();
        // A gateway is a member once: in two tiers it would be its own backup.
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let Some(Value::String(g)) = item.get("gateway") else {
                continue;
            };
            match seen.get(g.as_str()) {
                Some(&first) => self.err(
                    format!("{}.gateway", index(path, i)),
                    format!("{} is already used by {}", show(g), index(path, first)),
                ),
                None => {
                    seen.insert(g, i);
                }
            }
        }
        if self.errors.len() > before {
            return None;
        }
        parsed.into_iter().collect()
    }

    fn member(&mut self, v: &Value, path: &str, gateways: Option<&[Gateway]>) -> Option<Member> {
        let obj = self.object(v, path, &["gateway", "tier", "weight"])?;
        let gateway = self.required(&obj, "gateway").and_then(|(v, p)| {
            let name = self.string(v, &p)?;
            let Some(gateways) = gateways else {
                // The gateways failed to parse; their errors say why.
                return Some((name, None));
            };
            match gateways.iter().find(|g| g.name == name) {
                Some(g) => Some((name, Some(g.weight))),
                None => {
                    let names: Vec<&str> = gateways.iter().map(|g| g.name.as_str()).collect();
                    self.err(
                        p,
                        format!(
                            "{} is not a gateway; expected one of: {}",
                            show(&name),
                            names.join(", ")
                        ),
                    );
                    None
                }
            }
        });
        let tier = match obj.field("tier") {
            None => Some(1),
            Some((v, p)) => self.u32(v, &p).and_then(|t| match u8::try_from(t) {
                Ok(t) if (1..=MAX_TIER).contains(&t) => Some(t),
                _ => {
                    self.err(p, format!("{t} is out of range: use 1 to {MAX_TIER}"));
                    None
                }
            }),
        };
        let weight = match obj.field("weight") {
            None => Some(None),
            Some((v, p)) => self.weight(v, &p).map(Some),
        };
        let (gateway, own_weight) = gateway?;
        Some(Member {
            gateway,
            tier: tier?,
            weight: weight?.or(own_weight)?,
        })
    }

    /// A weight: 1 to [`MAX_WEIGHT`].
    fn weight(&mut self, v: &Value, path: &str) -> Option<u32> {
        self.u32(v, path).and_then(|w| {
            if (1..=MAX_WEIGHT).contains(&w) {
                Some(w)
            } else {
                self.err(path, format!("{w} is out of range: use 1 to {MAX_WEIGHT}"));
                None
            }
        })
    }

    fn method(&mut self, v: &Value, path: &str) -> Option<Method> {
        self.string(v, path).and_then(|s| match s.as_str() {
            "round-robin" => Some(Method::RoundRobin),
            "random" => Some(Method::Random),
            "source-hash" => Some(Method::SourceHash),
            _ => {
                self.err(
                    path,
                    format!(
                        "{} is not a method; expected round-robin, random or source-hash",
                        show(&s)
                    ),
                );
                None
            }
        })
    }

    /// `watch.all_down` and a policy's `last_resort` (`what` names it in messages).
    fn all_down(&mut self, v: &Value, path: &str, what: &str) -> Option<AllDown> {
        let s = self.string(v, path)?;
        match s.as_str() {
            "keep-last" => Some(AllDown::KeepLast),
            "main-table" => Some(AllDown::MainTable),
            "unreachable" => Some(AllDown::Unreachable),
            _ => {
                self.err(
                    path,
                    format!(
                        "{} is not a {what}; expected keep-last, main-table or unreachable",
                        show(&s)
                    ),
                );
                None
            }
        }
    }

    /// `hooks`: `on_change` is an absolute program path and its arguments.
    fn hooks(&mut self, v: &Value, path: &str) -> Option<Hooks> {
        let obj = self.object(v, path, &["on_change", "timeout"])?;
        let on_change = self
            .required(&obj, "on_change")
            .and_then(|(v, p)| self.command(v, &p));
        let timeout_ms = match obj.field("timeout") {
            None => Some(DEFAULT_HOOK_TIMEOUT_MS),
            Some((v, p)) => self.duration_ms(v, &p, 100, 3_600_000, "100ms to 1h"),
        };
        Some(Hooks {
            on_change: on_change?,
            timeout_ms: timeout_ms?,
        })
    }

    /// A command as an argument vector: run without a shell, so no quoting applies, and
    /// without a PATH search, so the program is named by an absolute path.
    fn command(&mut self, v: &Value, path: &str) -> Option<Vec<String>> {
        let items = self.array(v, path)?;
        if items.is_empty() {
            self.err(
                path,
                "empty: name the program to run, e.g. [\"/usr/local/sbin/uplink-changed\"]",
            );
            return None;
        }
        if items.len() > MAX_HOOK_WORDS {
            self.err(
                path,
                format!(
                    "{} words; at most {MAX_HOOK_WORDS} are supported",
                    items.len()
                ),
            );
            return None;
        }
        let parsed: Vec<Option<String>> = items
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let p = index(path, i);
                let w = self.string(w, &p)?;
                if w.contains('\0') {
                    self.err(p, format!("{} holds a NUL byte", show(&w)));
                    None
                } else if i == 0 && !w.starts_with('/') {
                    let hint = if w.is_empty() {
                        "an empty path"
                    } else {
                        "a relative path"
                    };
                    self.err(
                        p,
                        format!(
                            "{} is {hint}: hooks run without a shell or PATH search, \
                             so name the program from / (e.g. \"/usr/local/sbin/uplink-changed\")",
                            show(&w)
                        ),
                    );
                    None
                } else {
                    Some(w)
                }
            })
            .collect();
        parsed.into_iter().collect()
    }

    /// A duration string from `min_ms` to `max_ms` (`range` says so in messages).
    fn duration_ms(
        &mut self,
        v: &Value,
        path: &str,
        min_ms: u64,
        max_ms: u64,
        range: &str,
    ) -> Option<u32> {
        let text = self.string(v, path)?;
        match parse_duration_ms(&text) {
            Ok(ms) if (min_ms..=max_ms).contains(&ms) => u32::try_from(ms).ok(),
            Ok(_) => {
                self.err(
                    path,
                    format!("{} is out of range: use {range}", show(&text)),
                );
                None
            }
            Err(m) => {
                self.err(path, m);
                None
            }
        }
    }

    /// A name used inside nft identifiers: a letter, then letters, digits, '_' or '-'.
    fn identifier(&mut self, s: &str, path: &str, max: usize) -> Option<String> {
        self.checked(s, path, name::identifier(s, max))
    }

    /// A name nft reads bare (the table): an identifier that is not an nft keyword.
    fn nft_identifier(&mut self, s: &str, path: &str, max: usize) -> Option<String> {
        self.checked(s, path, name::nft_identifier(s, max))
    }

    fn interface(&mut self, v: &Value, path: &str) -> Option<String> {
        let s = self.string(v, path)?;
        self.checked(&s, path, name::interface(&s))
    }

    fn checked(&mut self, s: &str, path: &str, r: Result<(), NameError>) -> Option<String> {
        match r {
            Ok(()) => Some(s.to_string()),
            Err(e) => {
                self.err(path, format!("{} {e}", show(s)));
                None
            }
        }
    }

    fn gateways(
        &mut self,
        v: &Value,
        path: &str,
        family: Family,
        mask: u32,
    ) -> Option<Vec<Gateway>> {
        let items =
            self.bounded_list(v, path, "gateways", "no gateways: name at least one uplink")?;
        let before = self.errors.len();
        let parsed: Vec<Option<Gateway>> = items
            .iter()
            .enumerate()
            .map(|(i, g)| self.gateway(g, &index(path, i), family, mask))
            .collect();

        // Uniqueness, reported at the later duplicate. Read from the JSON itself, so a
        // gateway that failed on another field still takes part.
        for field in ["name", "interface", "mark", "route_table"] {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for (i, item) in items.iter().enumerate() {
                let Some((key, shown)) = item.get(field).and_then(|v| unique_key(field, v)) else {
                    continue;
                };
                match seen.get(&key) {
                    Some(&first) => self.err(
                        format!("{}.{field}", index(path, i)),
                        format!("{shown} is already used by {}", index(path, first)),
                    ),
                    None => {
                        seen.insert(key, i);
                    }
                }
            }
        }
        if self.errors.len() > before {
            return None;
        }
        parsed.into_iter().collect()
    }

    fn gateway(&mut self, v: &Value, path: &str, family: Family, mask: u32) -> Option<Gateway> {
        let obj = self.object(
            v,
            path,
            &[
                "name",
                "interface",
                "mark",
                "weight",
                "address",
                "via",
                "address6",
                "via6",
                "route_table",
                "health",
                "flush_conntrack",
            ],
        )?;
        let name = self.required(&obj, "name").and_then(|(v, p)| {
            self.string(v, &p)
                .and_then(|s| self.identifier(&s, &p, NAME_MAX))
        });
        let interface = self
            .required(&obj, "interface")
            .and_then(|(v, p)| self.interface(v, &p));
        let mark = self.required(&obj, "mark").and_then(|(v, p)| {
            let m = self.u32(v, &p)?;
            if m == 0 {
                self.err(p, "0 is reserved for \"not balanced\"");
                None
            } else if m & !mask != 0 {
                self.err(p, format!("{m:#x} has bits outside mark_mask {mask:#x}"));
                None
            } else {
                Some(m)
            }
        });
        let weight = match obj.field("weight") {
            Some((v, p)) => self.weight(v, &p),
            None => Some(1),
        };
        let v4 = |cx: &mut Cx, key: &str| -> Option<Option<Ipv4Addr>> {
            match obj.field(key) {
                None => Some(None),
                Some((v, p)) => cx.address(v, &p, family).map(|a| match a {
                    IpAddr::V4(a) => Some(Some(a)),
                    IpAddr::V6(_) => {
                        cx.err(&p, format!("{a} is IPv6; put IPv6 addresses in {key}6"));
                        None
                    }
                })?,
            }
        };
        let address = v4(self, "address");
        let via = v4(self, "via");
        let v6 = |cx: &mut Cx, key: &str| -> Option<Option<Ipv6Addr>> {
            match obj.field(key) {
                None => Some(None),
                Some((v, p)) => cx.address(v, &p, family).map(|a| match a {
                    IpAddr::V6(a) => Some(Some(a)),
                    IpAddr::V4(_) => {
                        let plain = key.trim_end_matches('6');
                        cx.err(&p, format!("{a} is IPv4; put IPv4 addresses in {plain}"));
                        None
                    }
                })?,
            }
        };
        let address6 = v6(self, "address6");
        let via6 = v6(self, "via6");
        let route_table = self.required(&obj, "route_table").and_then(|(v, p)| {
            let t = self.u32(v, &p)?;
            if let Some((_, name)) = RESERVED_TABLES.iter().find(|(id, _)| *id == t) {
                self.err(
                    p,
                    format!("{t} is the kernel's {name} table; use another number"),
                );
                None
            } else {
                Some(t)
            }
        });
        let health = match obj.field("health") {
            None => Some(None),
            Some((v, p)) => self.health(v, &p, family).map(Some),
        };
        let flush_conntrack = match obj.field("flush_conntrack") {
            None => Some(false),
            Some((v, p)) => self.bool(v, &p),
        };
        Some(Gateway {
            name: name?,
            interface: interface?,
            mark: mark?,
            weight: weight?,
            address: address?,
            via: via?,
            address6: address6?,
            via6: via6?,
            route_table: route_table?,
            health: health?,
            flush_conntrack: flush_conntrack?,
        })
    }

    fn health(&mut self, v: &Value, path: &str, family: Family) -> Option<Health> {
        let obj = self.object(
            v,
            path,
            &[
                "targets",
                "interval",
                "timeout",
                "up",
                "down",
                "reliability",
                "window",
                "max_loss",
                "recover_loss",
                "max_latency",
                "recover_latency",
                "hold_down",
            ],
        )?;
        let targets = self
            .required(&obj, "targets")
            .and_then(|(v, p)| self.targets(v, &p, family));
        let duration = |cx: &mut Cx, key: &str, default: u32| -> Option<u32> {
            match obj.field(key) {
                None => Some(default),
                Some((v, p)) => cx.duration_ms(v, &p, 100, 3_600_000, "100ms to 1h"),
            }
        };
        let interval_ms = duration(self, "interval", DEFAULT_HEALTH_INTERVAL_MS);
        let timeout_ms = duration(self, "timeout", DEFAULT_HEALTH_TIMEOUT_MS);
        let count = |cx: &mut Cx, key: &str, default: u32| -> Option<u32> {
            match obj.field(key) {
                None => Some(default),
                Some((v, p)) => cx.u32(v, &p).and_then(|n| {
                    if (1..=100).contains(&n) {
                        Some(n)
                    } else {
                        cx.err(p, format!("{n} is out of range: use 1 to 100"));
                        None
                    }
                }),
            }
        };
        let up = count(self, "up", DEFAULT_HEALTH_UP);
        let down = count(self, "down", DEFAULT_HEALTH_DOWN);
        let reliability = match (obj.field("reliability"), &targets) {
            (None, _) => Some(1),
            (Some((v, p)), targets) => self.u32(v, &p).and_then(|n| {
                // Without the targets (their errors say why) only the lower bound is known.
                let count = targets.as_ref().map(|(t, q)| t.len() + q.len());
                match count {
                    _ if n == 0 => {
                        self.err(
                            p,
                            "0 targets would make every round a success; use 1 or more",
                        );
                        None
                    }
                    Some(count) if n as usize > count => {
                        self.err(
                            p,
                            format!(
                                "{n} is more than the {count} target{} given",
                                if count == 1 { "" } else { "s" }
                            ),
                        );
                        None
                    }
                    _ => Some(n),
                }
            }),
        };
        let window = match obj.field("window") {
            None => Some(DEFAULT_HEALTH_WINDOW),
            Some((v, p)) => self.u32(v, &p).and_then(|n| {
                if (1..=MAX_WINDOW).contains(&n) {
                    Some(n)
                } else {
                    self.err(p, format!("{n} is out of range: use 1 to {MAX_WINDOW}"));
                    None
                }
            }),
        };
        let percent = |cx: &mut Cx, key: &str| -> Option<Option<u8>> {
            match obj.field(key) {
                None => Some(None),
                Some((v, p)) => cx.u32(v, &p).and_then(|n| match u8::try_from(n) {
                    Ok(n) if u32::from(n) <= MAX_PERCENT => Some(Some(n)),
                    _ => {
                        cx.err(p, format!("{n} is out of range: use 0 to 100 (percent)"));
                        None
                    }
                }),
            }
        };
        let max_loss = percent(self, "max_loss");
        let recover_loss = percent(self, "recover_loss");
        let latency = |cx: &mut Cx, key: &str| -> Option<Option<u32>> {
            match obj.field(key) {
                None => Some(None),
                Some((v, p)) => cx.duration_ms(v, &p, 1, 3_600_000, "1ms to 1h").map(Some),
            }
        };
        let max_latency_ms = latency(self, "max_latency");
        let recover_latency_ms = latency(self, "recover_latency");
        let hold_down_ms = match obj.field("hold_down") {
            None => Some(0),
            Some((v, p)) => self.duration_ms(v, &p, 0, HOLD_DOWN_MAX_MS, "0s to 1d"),
        };
        if let (Some(i), Some(t)) = (interval_ms, timeout_ms) {
            if t > i {
                self.err(
                    join(path, "timeout"),
                    "longer than the interval: a probe must end before the next one starts",
                );
                return None;
            }
        }
        let thresholds = Thresholds {
            max_loss: max_loss?,
            recover_loss: recover_loss?,
            max_latency_ms: max_latency_ms?,
            recover_latency_ms: recover_latency_ms?,
        };
        self.thresholds(path, &obj, &thresholds, timeout_ms?)?;
        let (targets, queries) = targets?;
        Some(Health {
            targets,
            queries,
            interval_ms: interval_ms?,
            timeout_ms: timeout_ms?,
            up: up?,
            down: down?,
            reliability: reliability?,
            window: window?,
            max_loss: thresholds.max_loss,
            recover_loss: thresholds.recover_loss,
            max_latency_ms: thresholds.max_latency_ms,
            recover_latency_ms: thresholds.recover_latency_ms,
            hold_down_ms: hold_down_ms?,
        })
    }

    /// Recovery must be stricter than failure, or a gateway at the edge flaps; a `recover_*`
    /// alone has nothing to be stricter than; a window measures nothing without a `max_*`.
    fn thresholds(
        &mut self,
        path: &str,
        obj: &Obj<'_>,
        t: &Thresholds,
        timeout_ms: u32,
    ) -> Option<()> {
        let before = self.errors.len();
        match (t.max_loss, t.recover_loss) {
            (None, Some(_)) => self.err(
                join(path, "recover_loss"),
                "without max_loss: give the loss that marks the gateway down as well",
            ),
            (Some(max), Some(rec)) if rec >= max => self.err(
                join(path, "recover_loss"),
                format!(
                    "{rec}% is not below max_loss ({max}%): recovery must be stricter than \
                     failure, or a gateway at the threshold flaps"
                ),
            ),
            _ => {}
        }
        match (t.max_latency_ms, t.recover_latency_ms) {
            (None, Some(_)) => self.err(
                join(path, "recover_latency"),
                "without max_latency: give the latency that marks the gateway down as well",
            ),
            (Some(max), Some(rec)) if rec >= max => self.err(
                join(path, "recover_latency"),
                format!(
                    "{} is not below max_latency ({}): recovery must be stricter than \
                     failure, or a gateway at the threshold flaps",
                    show_ms(rec),
                    show_ms(max)
                ),
            ),
            _ => {}
        }
        if let Some(max) = t.max_latency_ms {
            if max >= timeout_ms {
                self.err(
                    join(path, "max_latency"),
                    format!(
                        "{} is not below the timeout ({}): a probe that slow has already failed",
                        show_ms(max),
                        show_ms(timeout_ms)
                    ),
                );
            }
        }
        if let Some((_, p)) = obj.field("window") {
            if t.max_loss.is_none() && t.max_latency_ms.is_none() {
                self.err(
                    p,
                    "window sets the rounds max_loss and max_latency look at; give one of them",
                );
            }
        }
        (self.errors.len() == before).then_some(())
    }

    /// Health targets: ICMP and TCP probes, then DNS and HTTP queries, each in spec order.
    fn targets(
        &mut self,
        v: &Value,
        path: &str,
        family: Family,
    ) -> Option<(Vec<HealthTarget>, Vec<QueryTarget>)> {
        let items = self.array(v, path)?;
        if items.is_empty() {
            self.err(
                path,
                "no targets: name at least one address (ICMP) or address:port (TCP)",
            );
            return None;
        }
        let parsed: Vec<Option<Target>> = items
            .iter()
            .enumerate()
            .map(|(i, t)| self.target(t, &index(path, i), family))
            .collect();
        let mut probes = Vec::new();
        let mut queries = Vec::new();
        for t in parsed {
            match t? {
                Target::Probe(t) => probes.push(t),
                Target::Query(q) => queries.push(q),
            }
        }
        Some((probes, queries))
    }

    fn target(&mut self, v: &Value, path: &str, family: Family) -> Option<Target> {
        let text = self.string(v, path)?;
        let target = match target::parse(&text) {
            Ok(t) => t,
            Err(TargetError::NotAnAddress) => {
                self.err(
                    path,
                    format!(
                        "{} is not a target: write an address for ICMP echo \
                         (\"198.51.100.1\") or address:port for a TCP connect \
                         (\"198.51.100.1:443\", \"[2001:db8::1]:443\")",
                        show(&text)
                    ),
                );
                return None;
            }
            Err(TargetError::UnknownKind(scheme)) => {
                self.err(
                    path,
                    format!(
                        "{} is not a kind of target; use an address (ICMP echo), \
                         address:port (TCP connect), dns://address/name (DNS query) or \
                         http://address/path (HTTP GET)",
                        show(&format!("{scheme}://"))
                    ),
                );
                return None;
            }
            Err(TargetError::Malformed(m)) => {
                self.err(path, format!("{}: {m}", show(&text)));
                return None;
            }
        };
        self.family_allows(target.addr().is_ipv4(), path, &text, family)
            .then_some(target)
    }

    fn watch(&mut self, v: &Value, path: &str) -> Option<Watch> {
        let obj = self.object(v, path, &["all_down"])?;
        let all_down = match obj.field("all_down") {
            None => Some(AllDown::KeepLast),
            Some((v, p)) => self.all_down(v, &p, "last resort"),
        };
        Some(Watch {
            all_down: all_down?,
        })
    }

    /// A host address that the spec's family can carry.
    fn address(&mut self, v: &Value, path: &str, family: Family) -> Option<IpAddr> {
        let s = self.string(v, path)?;
        let Ok(a) = IpAddr::from_str(&s) else {
            self.err(path, format!("{} is not an IP address", show(&s)));
            return None;
        };
        self.family_allows(a.is_ipv4(), path, &s, family)
            .then_some(a)
    }

    fn family_allows(&mut self, ipv4: bool, path: &str, shown: &str, family: Family) -> bool {
        let ok = if ipv4 {
            family.has_ipv4()
        } else {
            family.has_ipv6()
        };
        if !ok {
            let kind = if ipv4 { "IPv4" } else { "IPv6" };
            self.err(
                path,
                format!("{shown} is {kind}, but the spec's family is {family}"),
            );
        }
        ok
    }

    fn prefix(&mut self, v: &Value, path: &str, family: Family) -> Option<IpNet> {
        let s = self.string(v, path)?;
        let net = if s.contains('/') {
            IpNet::from_str(&s).ok()
        } else {
            IpAddr::from_str(&s).ok().map(IpNet::from)
        };
        let Some(net) = net else {
            self.err(
                path,
                format!(
                    "{} is not an address or prefix (e.g. \"10.0.0.0/8\", \"fc00::/7\")",
                    show(&s)
                ),
            );
            return None;
        };
        if net.trunc() != net {
            self.err(
                path,
                format!("{s} has host bits set; did you mean {}?", net.trunc()),
            );
            return None;
        }
        self.family_allows(matches!(net, IpNet::V4(_)), path, &s, family)
            .then_some(net)
    }

    fn prefixes(&mut self, v: &Value, path: &str, family: Family) -> Option<Vec<IpNet>> {
        match v {
            Value::String(s) if s.starts_with('@') => self.list(&s[1..], path, family),
            Value::String(_) => self.prefix(v, path, family).map(|p| vec![p]),
            _ => {
                let items = self.array(v, path)?;
                let mut all = Some(Vec::with_capacity(items.len()));
                for (i, item) in items.iter().enumerate() {
                    // The path is formatted only for an entry that needs a message.
                    let parsed = match item {
                        Value::String(s) if s.starts_with('@') => {
                            self.list(&s[1..], &index(path, i), family)
                        }
                        Value::String(s) => match (valid_prefix(s, family), &mut all) {
                            (Some(p), Some(all)) => {
                                all.push(p);
                                continue;
                            }
                            (Some(_), None) => continue,
                            (None, _) => {
                                self.prefix(item, &index(path, i), family).map(|p| vec![p])
                            }
                        },
                        _ => self.prefix(item, &index(path, i), family).map(|p| vec![p]),
                    };
                    match (&mut all, parsed) {
                        (Some(all), Some(p)) => all.extend(p),
                        _ => all = None,
                    }
                }
                all
            }
        }
    }

    /// The prefixes of the list `name` (an `@name` entry at `path`); each error names the
    /// entry's path and the file's line.
    fn list(&mut self, name: &str, path: &str, family: Family) -> Option<Vec<IpNet>> {
        let Some(source) = self.lists.take() else {
            self.err(
                path,
                format!("\"@{name}\": lists from files are read only from a spec file given on the command line"),
            );
            return None;
        };
        self.lists_read = true;
        let result = self.read_list(&mut *source, name, path, family);
        self.lists = Some(source);
        result
    }

    fn read_list(
        &mut self,
        source: &mut dyn ListSource,
        name: &str,
        path: &str,
        family: Family,
    ) -> Option<Vec<IpNet>> {
        let mut reader = match source.open(name) {
            Ok(r) => r,
            Err(e) => {
                self.err(path, format!("cannot read the list {name}: {e}"));
                return None;
            }
        };
        let errors_before = self.errors.len();
        let mut nets = Vec::new();
        let read = crate::lists::each_entry(&mut reader, |line, entry| {
            if self.errors.len() - errors_before >= MAX_ERRORS_PER_LIST {
                return;
            }
            if let Some(net) = valid_prefix(entry, family) {
                nets.push(net);
                return;
            }
            let at = format!("{path} ({name}:{line})");
            if let Some(net) = self.prefix(&Value::String(entry.to_string()), &at, family) {
                nets.push(net);
            }
        });
        if let Err(e) = read {
            self.err(path, format!("the list {name}: {e}"));
            return None;
        }
        if self.errors.len() - errors_before >= MAX_ERRORS_PER_LIST {
            self.err(
                path,
                format!("the list {name}: stopped after {MAX_ERRORS_PER_LIST} errors"),
            );
        }
        (self.errors.len() == errors_before).then_some(nets)
    }

    fn balance(
        &mut self,
        v: &Value,
        path: &str,
        family: Family,
        known: Known<'_>,
    ) -> Option<Balance> {
        let obj = self.object(
            v,
            path,
            &[
                "method",
                "forward",
                "local",
                "exclude",
                "sticky",
                "hash_seed",
            ],
        )?;
        let method = match obj.field("method") {
            Some((v, p)) => self.method(v, &p),
            None => Some(Method::RoundRobin),
        };
        let selectors = |cx: &mut Cx, key: &str, kind: SelectorKind| match obj.field(key) {
            None => Some(Vec::new()),
            Some((v, p)) => {
                let items = cx.array(v, &p)?;
                let parsed: Vec<Option<Selector>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| cx.selector(s, &index(&p, i), kind, family, known))
                    .collect();
                parsed.into_iter().collect()
            }
        };
        let forward = selectors(self, "forward", SelectorKind::Forward);
        let local = selectors(self, "local", SelectorKind::Local);
        let exclude = match obj.field("exclude") {
            Some((v, p)) => self.prefixes(v, &p, family),
            None => Some(Vec::new()),
        };
        let sticky = match obj.field("sticky") {
            None => Some(None),
            Some((v, p)) => self.sticky(v, &p).map(Some),
        };
        let hash_seed = match obj.field("hash_seed") {
            Some((v, p)) => self.u32(v, &p),
            None => Some(DEFAULT_HASH_SEED),
        };
        Some(Balance {
            method: method?,
            forward: forward?,
            local: local?,
            exclude: exclude?,
            sticky: sticky?,
            hash_seed: hash_seed?,
        })
    }

    fn sticky(&mut self, v: &Value, path: &str) -> Option<Sticky> {
        let obj = self.object(v, path, &["timeout"])?;
        let (v, p) = self.required(&obj, "timeout")?;
        let text = match v {
            Value::Number(_) => {
                self.err(
                    &p,
                    "write the timeout with a unit, e.g. \"10m\", \"90s\", \"1h\"",
                );
                return None;
            }
            _ => self.string(v, &p)?,
        };
        match parse_duration(&text) {
            Ok(0) => {
                self.err(p, "must be longer than 0s");
                None
            }
            Ok(secs) if secs > STICKY_MAX_SECS => {
                self.err(
                    p,
                    format!("{} is longer than the maximum of 30d", show(&text)),
                );
                None
            }
            Ok(secs) => Some(Sticky {
                timeout_secs: secs as u32,
            }),
            Err(m) => {
                self.err(p, m);
                None
            }
        }
    }

    fn selector(
        &mut self,
        v: &Value,
        path: &str,
        kind: SelectorKind,
        family: Family,
        known: Known<'_>,
    ) -> Option<Selector> {
        let obj = self.object(
            v,
            path,
            &[
                "iif", "protocol", "dports", "saddr", "daddr", "gateway", "policy",
            ],
        )?;
        let iif = match obj.field("iif") {
            None => Some(None),
            Some((_, p)) if kind == SelectorKind::Local => {
                self.err(
                    p,
                    "local selectors have no iif: locally generated packets have no input interface",
                );
                None
            }
            Some((v, p)) => self.interface(v, &p).map(Some),
        };
        let protocol = match obj.field("protocol") {
            None => Some(None),
            Some((v, p)) => self.string(v, &p).and_then(|s| match s.as_str() {
                "tcp" => Some(Some(Protocol::Tcp)),
                "udp" => Some(Some(Protocol::Udp)),
                _ => {
                    self.err(
                        p,
                        format!("{} is not supported; expected tcp or udp", show(&s)),
                    );
                    None
                }
            }),
        };
        let dports = match obj.field("dports") {
            None => Some(Vec::new()),
            Some((v, p)) => self.ports(v, &p),
        };
        if let (Some(None), Some(ports)) = (&protocol, &dports) {
            if !ports.is_empty() {
                self.err(
                    join(path, "dports"),
                    "ports need a protocol: add \"protocol\": \"tcp\" or \"udp\"",
                );
            }
        }
        let saddr = match obj.field("saddr") {
            None => Some(Vec::new()),
            Some((v, p)) => self.prefixes(v, &p, family),
        };
        let daddr = match obj.field("daddr") {
            None => Some(Vec::new()),
            Some((v, p)) => self.prefixes(v, &p, family),
        };
        if let (Some(s), Some(d)) = (&saddr, &daddr) {
            let fams = |l: &[IpNet]| {
                (
                    l.iter().any(|n| n.addr().is_ipv4()),
                    l.iter().any(|n| n.addr().is_ipv6()),
                )
            };
            let (s4, s6) = fams(s);
            let (d4, d6) = fams(d);
            let common = (s4 && d4) || (s6 && d6);
            if !s.is_empty() && !d.is_empty() && !common {
                self.err(
                    path,
                    "saddr and daddr have no address family in common, so this selector matches nothing",
                );
            }
        }
        let gateway = match obj.field("gateway") {
            None => Some(None),
            Some((v, p)) => self.string(v, &p).and_then(|name| match known.gateways {
                Some(names) if !names.contains(&name) => {
                    self.err(
                        p,
                        format!(
                            "{} is not a gateway; expected one of: {}",
                            show(&name),
                            names.join(", ")
                        ),
                    );
                    None
                }
                _ => Some(Some(name)),
            }),
        };
        let policy = match obj.field("policy") {
            None => Some(None),
            Some((v, p)) => self.string(v, &p).and_then(|name| match known.policies {
                Some(names) if !names.contains(&name) => {
                    let message = if names.is_empty() {
                        format!("{} is not a policy: define it in policies", show(&name))
                    } else {
                        format!(
                            "{} is not a policy; expected one of: {}",
                            show(&name),
                            names.join(", ")
                        )
                    };
                    self.err(p, message);
                    None
                }
                _ => Some(Some(name)),
            }),
        };
        if obj.field("policy").is_some() && obj.field("gateway").is_some() {
            self.err(
                path,
                "policy and gateway together: a gateway pin is a policy of its own; keep one of them",
            );
            return None;
        }
        Some(Selector {
            iif: iif?,
            protocol: protocol?,
            dports: dports?,
            saddr: saddr?,
            daddr: daddr?,
            gateway: gateway?,
            policy: policy?,
        })
    }

    fn ports(&mut self, v: &Value, path: &str) -> Option<Vec<PortRange>> {
        let items = self.array(v, path)?;
        if items.is_empty() {
            self.err(path, "empty: leave dports out to match every port");
            return None;
        }
        let parsed: Vec<Option<PortRange>> = items
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p_path = index(path, i);
                let r = match p {
                    Value::Number(n) => match n.as_u64() {
                        Some(n) if n <= u64::from(u16::MAX) => Ok(PortRange {
                            first: n as u16,
                            last: n as u16,
                        }),
                        _ => Err(format!("{n} is not a port (1 to 65535)")),
                    },
                    Value::String(s) => parse_port_range(s),
                    _ => Err(format!(
                        "expected a port number or a range string such as \"8000-8999\", found {}",
                        describe(p)
                    )),
                };
                match r {
                    Ok(r) if r.first == 0 => {
                        self.err(p_path, "port 0 is not a port (1 to 65535)");
                        None
                    }
                    Ok(r) => Some(r),
                    Err(m) => {
                        self.err(p_path, m);
                        None
                    }
                }
            })
            .collect();
        parsed.into_iter().collect()
    }
}

/// A gateway's quality thresholds, as read.
struct Thresholds {
    max_loss: Option<u8>,
    recover_loss: Option<u8>,
    max_latency_ms: Option<u32>,
    recover_latency_ms: Option<u32>,
}

/// Milliseconds as a duration a user would write: "1s", "250ms".
pub(crate) fn show_ms(ms: u32) -> String {
    if ms.is_multiple_of(1000) {
        format_duration(ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A policy as read, before its defaults (which depend on `balance` and `watch`) are known.
struct PolicyJson {
    members: Vec<Member>,
    method: Option<Method>,
    last_resort: Option<AllDown>,
}

/// Names a selector may refer to; None where their list failed to parse (its own errors
/// say why, and every name is then taken as known).
#[derive(Clone, Copy)]
struct Known<'a> {
    gateways: Option<&'a [String]>,
    policies: Option<&'a [String]>,
}

/// A field's value as compared for uniqueness: (key, how the message shows it).
fn unique_key(field: &str, v: &Value) -> Option<(String, String)> {
    // Numbers compare as numbers whatever their spelling: 101 and "0x65" are one table.
    let number = match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => parse_u32_text(s).ok(),
        _ => None,
    };
    match (field, v, number) {
        ("mark", _, Some(m)) => Some((m.to_string(), format!("{m:#x}"))),
        ("route_table", _, Some(t)) => Some((t.to_string(), t.to_string())),
        (_, Value::String(s), _) => Some((s.clone(), show(s))),
        _ => None,
    }
}

/// A user's string in a message: quoted and escaped, and cut short when long, so that a
/// megabyte of input does not become a megabyte of error.
pub(crate) fn show(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

/// Keys are quoted in paths when they would not read as a plain name.
fn quote_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        show(key)
    }
}

/// A 32-bit number written as a string: decimal without leading zeros ("256") or hex
/// ("0xff00"), nothing around it. Anything else is refused rather than guessed: "0101" could be
/// octal to a reader, and " 101" is a typo.
fn parse_u32_text(s: &str) -> Result<u32, String> {
    let bad = || {
        format!(
            "{} is not a 32-bit number (write decimal without leading zeros or spaces, \
             e.g. 256, or hex, e.g. \"0xff00\")",
            show(s)
        )
    };
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None if s.len() > 1 && s.starts_with('0') => return Err(bad()),
        None => (s, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    u32::from_str_radix(digits, radix).map_err(|_| bad())
}

fn parse_port_range(s: &str) -> Result<PortRange, String> {
    let bad = || {
        format!(
            "{} is not a port or port range (e.g. 443 or \"8000-8999\")",
            show(s)
        )
    };
    let port = |t: &str| t.trim().parse::<u16>().map_err(|_| bad());
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if first > last {
        return Err(format!("{} is reversed; write \"{last}-{first}\"", show(s)));
    }
    Ok(PortRange { first, last })
}

/// "10m", "90s", "1h30m", "2d": units d, h, m, s.
/// "10m", "90s", "1h30m", "2d", "500ms": units d, h, m, s, ms; whole seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let ms = parse_duration_ms(s)?;
    if ms % 1000 != 0 {
        return Err(format!("{} is not a whole number of seconds", show(s)));
    }
    Ok(ms / 1000)
}

/// Like [`parse_duration`], in milliseconds, also accepting "ms".
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{} is not a duration (e.g. \"500ms\", \"90s\", \"10m\", \"1h30m\", \"1d\")",
            show(s)
        )
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400_000,
            'h' => 3_600_000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            'm' => 60_000,
            's' => 1_000,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(format_duration(600), "10m");
        assert_eq!(format_duration(90), "90s");
        assert_eq!(format_duration(7200), "2h");
    }

    #[test]
    fn ports() {
        assert_eq!(
            parse_port_range("8000-8999"),
            Ok(PortRange {
                first: 8000,
                last: 8999
            })
        );
        assert!(parse_port_range("9-1").unwrap_err().contains("reversed"));
        assert!(parse_port_range("70000").is_err());
    }

    #[test]
    fn marks_accept_numbers_and_hex_strings() {
        assert_eq!(parse_u32_text("0xff00"), Ok(0xff00));
        assert_eq!(parse_u32_text("256"), Ok(256));
        assert!(parse_u32_text("0x1ffffffff").is_err());
        for bad in [
            " 101", "101 ", "0101", "+101", "0x", "", "1e3", "0x+1", "-1",
        ] {
            assert!(parse_u32_text(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_u32_text("0"), Ok(0));
    }

    /// Issue 22.5: "0x65" is table 101; two gateways must not share it by spelling it apart.
    #[test]
    fn route_tables_and_marks_compare_as_numbers() {
        for (first, second) in [("101", "\"0x65\""), ("\"101\"", "101"), ("101", "\"0X65\"")] {
            let text = format!(
                r#"{{"gateways":[
                    {{"name":"a","interface":"eth1","mark":1,"route_table":{first}}},
                    {{"name":"b","interface":"eth2","mark":2,"route_table":{second}}}]}}"#
            );
            let e = Spec::from_json(&text).unwrap_err().to_string();
            assert!(
                e.contains("gateways[1].route_table: 101 is already used by gateways[0]"),
                "{first} vs {second}: {e}"
            );
        }
        let text = r#"{"gateways":[
            {"name":"a","interface":"eth1","mark":"0x10","route_table":101},
            {"name":"b","interface":"eth2","mark":16,"route_table":102}]}"#;
        let e = Spec::from_json(text).unwrap_err().to_string();
        assert!(e.contains("gateways[1].mark: 0x10 is already used"), "{e}");
        let e = Spec::from_json(
            r#"{"gateways":[{"name":"a","interface":"eth1","mark":1,"route_table":" 101"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is not a 32-bit number"), "{e}");
    }

    const MINIMAL: &str =
        r#"{"gateways":[{"name":"a","interface":"eth1","mark":1,"route_table":101}]}"#;

    #[test]
    fn defaults() {
        let s = Spec::from_json(MINIMAL).unwrap();
        assert_eq!(s.table, "nftbalance");
        assert_eq!(s.family, Family::Inet);
        assert_eq!(s.mark_mask, 0xffff_ffff);
        assert!(s.snat);
        assert_eq!(s.gateways[0].weight, 1);
        assert_eq!(s.balance.method, Method::RoundRobin);
    }

    fn errors(json: &str) -> Vec<String> {
        Spec::from_json(json)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn reports_every_error_with_its_path() {
        let e = errors(
            r#"{"gateways":[
                {"name":"a","interface":"eth1","mark":0,"route_table":101},
                {"name":"a","interface":"eth2","mark":2,"weight":0,"route_table":254}]}"#,
        );
        assert_eq!(
            e,
            [
                "gateways[0].mark: 0 is reserved for \"not balanced\"",
                "gateways[1].weight: 0 is out of range: use 1 to 1000",
                "gateways[1].route_table: 254 is the kernel's main table; use another number",
                "gateways[1].name: \"a\" is already used by gateways[0]",
            ]
        );
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let e = errors("{\n  \"gateways\": [\n}");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("line 3, column 1:"), "{e:?}");
    }

    #[test]
    fn names_cannot_inject_nft_syntax() {
        let e = errors(
            r#"{"gateways":[{"name":"a; flush ruleset","interface":"eth1\"}","mark":1,"route_table":101}]}"#,
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("gateways[0].name: "));
        assert!(e[1].starts_with("gateways[0].interface: "));
    }

    #[test]
    fn unknown_field_with_odd_key_is_quoted() {
        let e = errors(r#"{"gateways":[], "a b": 1}"#);
        assert!(
            e.iter().any(|m| m.starts_with("\"a b\": unknown field")),
            "{e:?}"
        );
    }

    #[test]
    fn huge_strings_are_cut_short_in_messages() {
        let long = "x".repeat(1 << 20);
        let e = errors(&format!(
            r#"{{"gateways":[{{"name":"{long}","interface":"eth1","mark":1,"route_table":101}}]}}"#
        ));
        assert_eq!(e.len(), 1);
        assert!(e[0].len() < 300, "{}", &e[0][..300]);
        assert!(e[0].contains("(1048576 bytes)"), "{}", e[0]);
    }

    #[test]
    fn too_many_gateways() {
        let gw = r#"{"name":"a","interface":"eth1","mark":1,"route_table":101}"#;
        let all = vec![gw; 100_000].join(",");
        let e = errors(&format!(r#"{{"gateways":[{all}]}}"#));
        assert_eq!(e, ["gateways: 100000 gateways; at most 64 are supported"]);
    }

    const THREE: &str = r#""gateways":[
        {"name":"fibre","interface":"eth1","mark":1,"weight":3,"route_table":101},
        {"name":"dsl","interface":"eth2","mark":2,"weight":2,"route_table":102},
        {"name":"lte","interface":"wwan0","mark":3,"route_table":103}]"#;

    /// Errors of `{THREE, rest}`.
    fn three_errors(rest: &str) -> Vec<String> {
        match Spec::from_json(&format!("{{{THREE}{rest}}}")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn health_errors(health: &str) -> Vec<String> {
        three_errors(&format!(
            r#","balance":{{}},"hooks":{{"on_change":["/bin/true"]}},
               "policies":{{}},"watch":{{}},
               "gateways":[{{"name":"a","interface":"eth1","mark":1,"route_table":101,
                             "health":{health}}}]"#
        ))
    }

    #[test]
    fn policy_members_are_checked() {
        let e = three_errors(
            r#","policies":{
                "p":{"members":[
                    {"gateway":"fibre","tier":0},
                    {"gateway":"dsl","tier":17,"weight":0},
                    {"gateway":"fibre","weight":1001},
                    {"gateway":"nope"}]},
                "empty":{"members":[]},
                "1bad":{"members":[{"gateway":"lte"}],"method":"fastest","last_resort":"drop"}}"#,
        );
        assert_eq!(
            e,
            [
                "policies.p.members[0].tier: 0 is out of range: use 1 to 16",
                "policies.p.members[1].tier: 17 is out of range: use 1 to 16",
                "policies.p.members[1].weight: 0 is out of range: use 1 to 1000",
                "policies.p.members[2].weight: 1001 is out of range: use 1 to 1000",
                "policies.p.members[3].gateway: \"nope\" is not a gateway; expected one of: fibre, dsl, lte",
                "policies.p.members[2].gateway: \"fibre\" is already used by policies.p.members[0]",
                "policies.empty.members: no members: name at least one gateway",
                "policies.1bad: \"1bad\" is not a valid name: use 1 to 32 characters, a letter first, then letters, digits, '_' or '-'",
                "policies.1bad.method: \"fastest\" is not a method; expected round-robin, random or source-hash",
                "policies.1bad.last_resort: \"drop\" is not a last resort; expected keep-last, main-table or unreachable",
            ]
        );
    }

    #[test]
    fn member_weight_defaults_to_the_gateways() {
        let s = Spec::from_json(&format!(
            r#"{{{THREE},"policies":{{"p":{{"members":[{{"gateway":"fibre"}},{{"gateway":"lte","tier":2,"weight":9}}]}}}}}}"#
        ))
        .unwrap();
        let p = &s.policies["p"];
        assert_eq!((p.members[0].tier, p.members[0].weight), (1, 3));
        assert_eq!((p.members[1].tier, p.members[1].weight), (2, 9));
    }

    #[test]
    fn selectors_name_defined_policies_and_not_a_gateway_too() {
        let e = three_errors(
            r#","policies":{"p":{"members":[{"gateway":"lte"}]}},
               "balance":{"forward":[{"policy":"q"},{"policy":"p","gateway":"dsl"},{"policy":"p"}],
                          "local":[{"policy":7}]}"#,
        );
        assert_eq!(
            e,
            [
                "balance.forward[0].policy: \"q\" is not a policy; expected one of: p",
                "balance.forward[1]: policy and gateway together: a gateway pin is a policy of its own; keep one of them",
                "balance.local[0].policy: expected a string, found a number",
            ]
        );
        let e = three_errors(r#","balance":{"forward":[{"policy":"q"}]}"#);
        assert_eq!(
            e,
            ["balance.forward[0].policy: \"q\" is not a policy: define it in policies"]
        );
        // A policies field that is not an object is one error, not one per selector.
        let e = three_errors(r#","policies":[],"balance":{"forward":[{"policy":"q"}]}"#);
        assert_eq!(
            e,
            ["policies: expected an object of policies by name, found an array"]
        );
    }

    #[test]
    fn quality_thresholds_recover_stricter_than_they_fail() {
        assert_eq!(
            health_errors(
                r#"{"targets":["192.0.2.1","192.0.2.2"],"reliability":2,"window":30,
                    "max_loss":20,"recover_loss":5,"max_latency":"300ms",
                    "recover_latency":"150ms","hold_down":"2m"}"#
            ),
            Vec::<String>::new()
        );
        let e = health_errors(
            r#"{"targets":["192.0.2.1"],"reliability":2,"window":101,
                "max_loss":20,"recover_loss":20,"max_latency":"300ms","recover_latency":"1s",
                "hold_down":"2d"}"#,
        );
        assert_eq!(
            e,
            [
                "gateways[0].health.reliability: 2 is more than the 1 target given",
                "gateways[0].health.window: 101 is out of range: use 1 to 100",
                "gateways[0].health.hold_down: \"2d\" is out of range: use 0s to 1d",
                "gateways[0].health.recover_loss: 20% is not below max_loss (20%): recovery must be stricter than failure, or a gateway at the threshold flaps",
                "gateways[0].health.recover_latency: 1s is not below max_latency (300ms): recovery must be stricter than failure, or a gateway at the threshold flaps",
            ]
        );
        let e = health_errors(
            r#"{"targets":["192.0.2.1"],"reliability":0,"recover_loss":5,"max_loss":101,
                "recover_latency":"10ms","window":5}"#,
        );
        assert_eq!(
            e,
            [
                "gateways[0].health.reliability: 0 targets would make every round a success; use 1 or more",
                "gateways[0].health.max_loss: 101 is out of range: use 0 to 100 (percent)",
            ]
        );
        let e = health_errors(
            r#"{"targets":["192.0.2.1"],"recover_loss":5,"recover_latency":"10ms","window":5}"#,
        );
        assert_eq!(
            e,
            [
                "gateways[0].health.recover_loss: without max_loss: give the loss that marks the gateway down as well",
                "gateways[0].health.recover_latency: without max_latency: give the latency that marks the gateway down as well",
                "gateways[0].health.window: window sets the rounds max_loss and max_latency look at; give one of them",
            ]
        );
        let e = health_errors(
            r#"{"targets":["192.0.2.1"],"timeout":"500ms","max_latency":"500ms","hold_down":"1x"}"#,
        );
        assert_eq!(
            e,
            [
                "gateways[0].health.hold_down: \"1x\" is not a duration (e.g. \"500ms\", \"90s\", \"10m\", \"1h30m\", \"1d\")",
                "gateways[0].health.max_latency: 500ms is not below the timeout (500ms): a probe that slow has already failed",
            ]
        );
    }

    #[test]
    fn target_kinds() {
        let s = Spec::from_json(
            r#"{"gateways":[{"name":"a","interface":"eth1","mark":1,"route_table":101,
                "health":{"targets":["dns://192.0.2.53/example.com","192.0.2.1",
                                     "http://[2001:db8::80]:8080/ok","192.0.2.1:443"],
                          "reliability":4}}]}"#,
        )
        .unwrap();
        let h = s.gateways[0].health.as_ref().unwrap();
        assert_eq!(h.targets.len(), 2);
        assert_eq!(h.queries.len(), 2);
        assert_eq!(h.target_count(), 4);
        let e = health_errors(
            r#"{"targets":["ftp://192.0.2.1/x","dns://192.0.2.53","http://example.com/",
                           "example.com","icmp://192.0.2.1"]}"#,
        );
        assert_eq!(
            e,
            [
                "gateways[0].health.targets[0]: \"ftp://\" is not a kind of target; use an address (ICMP echo), address:port (TCP connect), dns://address/name (DNS query) or http://address/path (HTTP GET)",
                "gateways[0].health.targets[1]: \"dns://192.0.2.53\": name the record to ask for after the address (dns://192.0.2.53/example.com)",
                "gateways[0].health.targets[2]: \"http://example.com/\": \"example.com\" is not an IP address (with an optional port; IPv6 in brackets, e.g. [2001:db8::1]:8080): host names are not resolved",
                "gateways[0].health.targets[3]: \"example.com\" is not a target: write an address for ICMP echo (\"198.51.100.1\") or address:port for a TCP connect (\"198.51.100.1:443\", \"[2001:db8::1]:443\")",
                "gateways[0].health.targets[4]: \"icmp://\" is not a kind of target; use an address (ICMP echo), address:port (TCP connect), dns://address/name (DNS query) or http://address/path (HTTP GET)",
            ]
        );
        let e = errors(
            r#"{"family":"ip","gateways":[{"name":"a","interface":"eth1","mark":1,"route_table":101,
                "health":{"targets":["http://[2001:db8::80]/"]}}]}"#,
        );
        assert_eq!(
            e,
            ["gateways[0].health.targets[0]: http://[2001:db8::80]/ is IPv6, but the spec's family is ip"]
        );
    }

    #[test]
    fn hooks_name_an_absolute_program() {
        let hooks = |h: &str| three_errors(&format!(r#","hooks":{h}"#));
        assert_eq!(
            hooks(r#"{"on_change":["/usr/local/sbin/x","a b",""],"timeout":"30s"}"#),
            Vec::<String>::new()
        );
        assert_eq!(
            hooks(r#"{"on_change":["notify.sh","a\u0000b"],"timeout":"0s"}"#),
            [
                "hooks.on_change[0]: \"notify.sh\" is a relative path: hooks run without a shell or PATH search, so name the program from / (e.g. \"/usr/local/sbin/uplink-changed\")",
                "hooks.on_change[1]: \"a\\0b\" holds a NUL byte",
                "hooks.timeout: \"0s\" is out of range: use 100ms to 1h",
            ]
        );
        assert_eq!(
            hooks(r#"{"on_change":[""]}"#),
            ["hooks.on_change[0]: \"\" is an empty path: hooks run without a shell or PATH search, so name the program from / (e.g. \"/usr/local/sbin/uplink-changed\")"]
        );
        assert_eq!(
            hooks(r#"{"on_change":[]}"#),
            ["hooks.on_change: empty: name the program to run, e.g. [\"/usr/local/sbin/uplink-changed\"]"]
        );
        assert_eq!(hooks("{}"), ["hooks.on_change: missing (required)"]);
        let s = Spec::from_json(&format!(
            r#"{{{THREE},"hooks":{{"on_change":["/bin/true"]}}}}"#
        ))
        .unwrap();
        assert_eq!(s.hooks.unwrap().timeout_ms, 10_000);
    }

    /// Every part of issue 16 is accepted by the program's parse, and offered in messages.
    #[test]
    fn issue_16_parts_are_accepted_and_offered() {
        let text = format!(
            r#"{{{THREE},
                "policies":{{"p":{{"members":[{{"gateway":"lte"}}]}}}},
                "balance":{{"forward":[{{"policy":"p"}}]}},
                "watch":{{"all_down":"unreachable"}},
                "hooks":{{"on_change":["/bin/true"]}}}}"#
        );
        assert!(Spec::from_json(&text).is_ok());
        let e = errors(&text.replace(r#""mark":3"#, r#""mark":0"#));
        assert_eq!(e, ["gateways[2].mark: 0 is reserved for \"not balanced\""]);
        let e = errors(&format!(
            r#"{{{THREE},"watch":{{"all_down":"x"}},"polices":{{}}}}"#
        ));
        assert_eq!(
            e,
            [
                "polices: unknown field; expected one of: table, family, mark_mask, gateways, balance, snat, watch, policies, hooks, ha",
                "watch.all_down: \"x\" is not a last resort; expected keep-last, main-table or unreachable",
            ]
        );
        let health = r#"{"gateways":[{"name":"a","interface":"eth1","mark":1,"route_table":101,
                "health":{"targets":["dns://192.0.2.53/a.b"],"hold_down":"1s"}}]}"#;
        let s = Spec::from_json(health).unwrap();
        let h = s.gateways[0].health.as_ref().unwrap();
        assert_eq!((h.hold_down_ms, h.queries.len()), (1000, 1));
    }

    #[test]
    fn specs_without_issue_16_fields_serialize_as_before() {
        let text = r#"{"gateways":[{"name":"a","interface":"eth1","mark":1,"route_table":101,
            "health":{"targets":["192.0.2.1"]}}],"balance":{"forward":[{"gateway":"a"}]}}"#;
        let s = Spec::from_json(text).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"table":"nftbalance","family":"inet","mark_mask":"0xffffffff","gateways":[{"name":"a","interface":"eth1","mark":"0x1","weight":1,"route_table":101,"health":{"targets":["192.0.2.1"],"interval":"2s","timeout":"1s","up":2,"down":3}}],"balance":{"method":"round-robin","forward":[{"gateway":"a"}],"local":[],"exclude":[],"hash_seed":"0x6e667462"},"snat":true}"#
        );
    }

    #[test]
    fn issue_16_fields_serialize_to_a_spec_that_parses_back_the_same() {
        let text = format!(
            r#"{{{THREE},
                "policies":{{"p":{{"members":[{{"gateway":"lte","tier":2}},{{"gateway":"dsl"}}],
                               "last_resort":"unreachable"}}}},
                "balance":{{"forward":[{{"policy":"p"}}]}},
                "hooks":{{"on_change":["/bin/true","x"],"timeout":"1500ms"}}}}"#
        )
        .replace(
            r#""route_table":101}"#,
            r#""route_table":101,"health":{"targets":["http://192.0.2.80:8080/x?y=1",
                "192.0.2.1","dns://[2001:db8::53]/a.b."],"reliability":3,"window":5,
                "max_loss":30,"recover_loss":10,"max_latency":"250ms","recover_latency":"100ms",
                "hold_down":"90s"}}"#,
        );
        let s = Spec::from_json(&text).unwrap();
        let json = serde_json::to_string_pretty(&s).unwrap();
        let again = Spec::from_json(&json).unwrap();
        assert_eq!(again, s, "{json}");
        assert!(json.contains(r#""hold_down": "90s""#), "{json}");
        assert!(json.contains(r#""timeout": "1500ms""#), "{json}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        let e = errors(&deep);
        assert!(e[0].contains("recursion limit"), "{e:?}");
    }

    /// Lists by name, from memory.
    struct Lists(BTreeMap<&'static str, &'static str>);

    impl ListSource for Lists {
        fn open(&mut self, name: &str) -> std::io::Result<Box<dyn std::io::BufRead + '_>> {
            match self.0.get(name) {
                Some(text) => Ok(Box::new(text.as_bytes())),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "No such file or directory",
                )),
            }
        }
    }

    fn with_lists(balance: &str) -> Result<(Spec, Option<String>), Vec<String>> {
        let text = format!(
            r#"{{"gateways":[{{"name":"a","interface":"eth1","mark":1,"route_table":101}}],
                "balance":{balance}}}"#
        );
        let mut lists = Lists(
            [
                (
                    "/l/countries",
                    "# two\n10.0.0.0/8\n\n192.168.0.0/16 # home\n",
                ),
                ("/l/bad", "10.0.0.0/8\nnot-a-prefix\n10.0.0.1/8\n"),
            ]
            .into(),
        );
        Spec::from_json_with_lists(&text, &mut lists)
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn at_entries_read_lists_and_the_written_out_text_is_the_same_spec() {
        let (spec, written) = with_lists(
            r#"{"exclude":["172.16.0.0/12","@/l/countries"],
                "forward":[{"iif":"eth0","daddr":"@/l/countries"}]}"#,
        )
        .unwrap();
        let want: Vec<IpNet> = ["172.16.0.0/12", "10.0.0.0/8", "192.168.0.0/16"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(spec.balance.exclude, want);
        assert_eq!(spec.balance.forward[0].daddr, want[1..]);
        let written = written.expect("lists were read");
        assert!(!written.contains('@'), "{written}");
        assert_eq!(Spec::from_json(&written).unwrap(), spec);
        // Without lists, the text is the spec's own.
        assert_eq!(with_lists(r#"{"exclude":["10.0.0.0/8"]}"#).unwrap().1, None);
    }

    #[test]
    fn list_errors_name_the_entry_the_file_and_the_line() {
        let e = with_lists(r#"{"exclude":["@/l/bad","@/l/missing"]}"#).unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("balance.exclude[0] (/l/bad:2): \"not-a-prefix\" is not"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("balance.exclude[0] (/l/bad:3): 10.0.0.1/8 has host bits"),
            "{e:?}"
        );
        assert!(
            e[2].starts_with("balance.exclude[1]: cannot read the list /l/missing"),
            "{e:?}"
        );
        // A spec read without a list source (an applied record) refuses `@` entries.
        let e = errors(
            r#"{"gateways":[{"name":"a","interface":"eth1","mark":1,"route_table":101}],
                "balance":{"exclude":"@/l/countries"}}"#,
        );
        assert!(e[0].contains("lists from files are read only"), "{e:?}");
    }
}
