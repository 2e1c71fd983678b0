//! The ruleset as libnftables JSON (`nft -j -f`): the same transaction as the nft script.

use serde_json::{json, Value as Json};

use crate::model::*;
use crate::nft::{ct_state, hook};

/// The whole document.
pub fn render(rs: &Ruleset) -> Json {
    let table = json!({ "family": rs.family.as_str(), "name": rs.table });
    let mut cmds = vec![
        json!({ "metainfo": { "json_schema_version": 1 } }),
        json!({ "add": { "table": table } }),
        json!({ "delete": { "table": table } }),
        json!({ "add": { "table": table } }),
    ];
    let base =
        |name: &str| json!({ "family": rs.family.as_str(), "table": rs.table, "name": name });
    // Chains before sets: verdict map elements name chains, and must find them.
    for chain in &rs.chains {
        let mut o = base(&chain.name);
        if let Some(b) = chain.base {
            o["type"] = json!(match b.kind {
                ChainType::Filter => "filter",
                ChainType::Route => "route",
                ChainType::Nat => "nat",
            });
            o["hook"] = json!(hook(b.hook));
            o["prio"] = json!(b.priority.value());
            o["policy"] = json!("accept");
        }
        cmds.push(json!({ "add": { "chain": o } }));
    }
    for set in &rs.sets {
        let mut o = base(&set.name);
        o["type"] = json!(set.key.nft_name());
        if let Some(d) = set.data {
            o["map"] = json!(d.nft_name());
        }
        let mut flags = Vec::new();
        if set.interval {
            flags.push("interval");
        }
        if let Some(d) = set.dynamic {
            // nft 1.0.6's JSON parser rejects the "dynamic" flag; it sets the flag itself
            // for sets that an update statement writes.
            flags.push("timeout");
            o["timeout"] = json!(d.timeout_secs);
        }
        if let Some(size) = set.size {
            o["size"] = json!(size);
        }
        if !flags.is_empty() {
            o["flags"] = json!(flags);
        }
        if !set.elements.is_empty() {
            let elems: Vec<Json> = set
                .elements
                .iter()
                .map(|e| match &e.data {
                    Some(d) => json!([value(&e.key), value(d)]),
                    None => value(&e.key),
                })
                .collect();
            o["elem"] = Json::Array(elems);
        }
        let kind = if set.is_map() { "map" } else { "set" };
        cmds.push(json!({ "add": { kind: o } }));
    }
    for chain in &rs.chains {
        for r in &chain.rules {
            let exprs: Vec<Json> = r
                .matches
                .iter()
                .map(matcher)
                .chain(r.stmts.iter().map(stmt))
                .collect();
            cmds.push(json!({ "add": { "rule": {
                "family": rs.family.as_str(),
                "table": rs.table,
                "chain": chain.name,
                "expr": exprs,
            } } }));
        }
    }
    json!({ "nftables": cmds })
}

fn matcher(m: &Match) -> Json {
    match m {
        Match::Cmp {
            left,
            negate,
            right,
        } => {
            let op = if *negate { "!=" } else { "==" };
            json!({ "match": { "op": op, "left": expr(left), "right": value(right) } })
        }
        Match::InSet { left, set } => {
            json!({ "match": { "op": "==", "left": expr(left), "right": set_ref(set) } })
        }
        Match::CtState(states) => {
            let names: Vec<&str> = states.iter().map(|s| ct_state(*s)).collect();
            let right = match names.as_slice() {
                [one] => json!(one),
                _ => json!(names),
            };
            json!({ "match": { "op": "in", "left": { "ct": { "key": "state" } }, "right": right } })
        }
    }
}

fn stmt(s: &Stmt) -> Json {
    match s {
        Stmt::Mangle { target, value } => {
            json!({ "mangle": { "key": expr(target), "value": expr(value) } })
        }
        Stmt::SetUpdate { set, key } => {
            json!({ "set": { "op": "update", "elem": expr(key), "set": format!("@{set}") } })
        }
        Stmt::VerdictMap { key, map } => {
            json!({ "vmap": { "key": expr(key), "data": map_ref(map) } })
        }
        Stmt::Snat { family, addr } => {
            let f = match family {
                IpFamily::V4 => "ip",
                IpFamily::V6 => "ip6",
            };
            json!({ "snat": { "family": f, "addr": expr(addr) } })
        }
        Stmt::Masquerade => json!({ "masquerade": null }),
        Stmt::Counter => json!({ "counter": null }),
        Stmt::Verdict(v) => verdict(v),
        Stmt::Reject(Reject::TcpReset) => json!({ "reject": { "type": "tcp reset" } }),
        Stmt::Reject(Reject::IcmpxHostUnreachable) => {
            json!({ "reject": { "type": "icmpx", "expr": "host-unreachable" } })
        }
    }
}

fn set_ref(s: &SetRef) -> Json {
    match s {
        SetRef::Named(n) => json!(format!("@{n}")),
        SetRef::Anonymous(vs) => json!({ "set": vs.iter().map(value).collect::<Vec<_>>() }),
    }
}

fn map_ref(m: &MapRef) -> Json {
    match m {
        MapRef::Named(n) => json!(format!("@{n}")),
        MapRef::Anonymous(entries) => {
            let items: Vec<Json> = entries
                .iter()
                .map(|(k, v)| json!([value(k), value(v)]))
                .collect();
            json!({ "set": items })
        }
    }
}

fn expr(e: &Expr) -> Json {
    match e {
        Expr::Meta(k) => json!({ "meta": { "key": match k {
            MetaKey::Mark => "mark",
            MetaKey::IifName => "iifname",
            MetaKey::OifName => "oifname",
            MetaKey::NfProto => "nfproto",
            MetaKey::L4Proto => "l4proto",
        } } }),
        Expr::Ct(k) => json!({ "ct": { "key": match k {
            CtKey::State => "state",
            CtKey::Mark => "mark",
        } } }),
        Expr::Payload(f) => field(*f),
        Expr::Numgen { mode, modulus } => json!({ "numgen": {
            "mode": match mode { NumgenMode::Inc => "inc", NumgenMode::Random => "random" },
            "mod": modulus,
            "offset": 0,
        } }),
        Expr::Jhash {
            field: f,
            modulus,
            seed,
        } => json!({ "jhash": { "mod": modulus, "seed": seed, "expr": field(*f) } }),
        Expr::Value(v) => value(v),
        Expr::And(e, mask) => json!({ "&": [expr(e), mask] }),
        Expr::Network {
            field: f,
            prefix_len,
        } => match f.netmask(*prefix_len) {
            Some(mask) => json!({ "&": [field(*f), value(&mask)] }),
            None => field(*f),
        },
        Expr::Bits { expr: e, keep, set } => json!({ "|": [{ "&": [expr(e), keep] }, set] }),
        Expr::Map { key, map } => json!({ "map": { "key": expr(key), "data": map_ref(map) } }),
    }
}

fn field(f: Field) -> Json {
    let (protocol, name) = match f {
        Field::IpSaddr => ("ip", "saddr"),
        Field::IpDaddr => ("ip", "daddr"),
        Field::Ip6Saddr => ("ip6", "saddr"),
        Field::Ip6Daddr => ("ip6", "daddr"),
        Field::Dport(p) => (p.as_str(), "dport"),
    };
    json!({ "payload": { "protocol": protocol, "field": name } })
}

fn value(v: &Value) -> Json {
    match v {
        Value::Mark(n) | Value::Int(n) => json!(n),
        // JSON strings escape everything; the spec's interface check still applies.
        Value::IfName(n) => json!(n),
        Value::Ipv4(a) => json!(a.to_string()),
        Value::Ipv6(a) => json!(a.to_string()),
        Value::Ipv4Net(n) => {
            json!({ "prefix": { "addr": n.addr().to_string(), "len": n.prefix_len() } })
        }
        Value::Ipv6Net(n) => {
            json!({ "prefix": { "addr": n.addr().to_string(), "len": n.prefix_len() } })
        }
        Value::Port(p) => json!(p),
        Value::Range(a, b) => json!({ "range": [value(a), value(b)] }),
        Value::Verdict(v) => verdict(v),
        Value::NfProto(IpFamily::V4) => json!("ipv4"),
        Value::NfProto(IpFamily::V6) => json!("ipv6"),
        Value::L4Proto(p) => json!(p.as_str()),
    }
}

fn verdict(v: &Verdict) -> Json {
    match v {
        Verdict::Accept => json!({ "accept": null }),
        Verdict::Return => json!({ "return": null }),
        Verdict::Jump(c) => json!({ "jump": { "target": c } }),
        Verdict::Goto(c) => json!({ "goto": { "target": c } }),
    }
}
