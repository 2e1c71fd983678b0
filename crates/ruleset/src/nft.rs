//! The ruleset as an nft script. `nft -f` loads it as one transaction that replaces the
//! tool's table, so loading it twice leaves one copy.

use std::fmt::{self, Write};

use nftbalance_spec::{format_duration, name};

use crate::model::*;

/// Elements per line before a set is written one element a line.
const INLINE_ELEMENTS: usize = 8;

/// The whole script.
pub fn render(rs: &Ruleset) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    write_script(&mut out, rs).expect("formatting into a String");
    out
}

fn write_script(o: &mut String, rs: &Ruleset) -> fmt::Result {
    let t = format!("{} {}", rs.family, rs.table);
    writeln!(o, "#!/usr/sbin/nft -f")?;
    writeln!(o, "# nftbalance: replaces table {t} as one transaction.")?;
    writeln!(
        o,
        "# Declaring the table first makes the delete succeed when it does not exist yet."
    )?;
    writeln!(o, "table {t}")?;
    writeln!(o, "delete table {t}")?;
    writeln!(o)?;
    writeln!(o, "table {t} {{")?;
    let mut first = true;
    for set in &rs.sets {
        if !first {
            writeln!(o)?;
        }
        first = false;
        write_set(o, set)?;
    }
    for chain in &rs.chains {
        if !first {
            writeln!(o)?;
        }
        first = false;
        write_chain(o, chain)?;
    }
    writeln!(o, "}}")
}

fn write_set(o: &mut String, set: &Set) -> fmt::Result {
    let kind = if set.is_map() { "map" } else { "set" };
    writeln!(o, "\t{kind} {} {{", set.name)?;
    match set.data {
        Some(d) => writeln!(o, "\t\ttype {} : {}", set.key.nft_name(), d.nft_name())?,
        None => writeln!(o, "\t\ttype {}", set.key.nft_name())?,
    }
    if let Some(size) = set.size {
        writeln!(o, "\t\tsize {size}")?;
    }
    let mut flags = Vec::new();
    if set.interval {
        flags.push("interval");
    }
    if set.dynamic.is_some() {
        flags.extend(["dynamic", "timeout"]);
    }
    if !flags.is_empty() {
        writeln!(o, "\t\tflags {}", flags.join(","))?;
    }
    if let Some(d) = set.dynamic {
        writeln!(o, "\t\ttimeout {}", format_duration(d.timeout_secs))?;
    }
    if !set.elements.is_empty() {
        let items: Vec<String> = set.elements.iter().map(element).collect();
        if items.len() <= INLINE_ELEMENTS {
            writeln!(o, "\t\telements = {{ {} }}", items.join(", "))?;
        } else {
            writeln!(o, "\t\telements = {{")?;
            for item in items {
                writeln!(o, "\t\t\t{item},")?;
            }
            writeln!(o, "\t\t}}")?;
        }
    }
    writeln!(o, "\t}}")
}

fn element(e: &Element) -> String {
    match &e.data {
        Some(d) => format!("{} : {}", value(&e.key), value(d)),
        None => value(&e.key),
    }
}

fn write_chain(o: &mut String, chain: &Chain) -> fmt::Result {
    writeln!(o, "\t# {}", chain.doc)?;
    writeln!(o, "\tchain {} {{", chain.name)?;
    if let Some(b) = chain.base {
        let kind = match b.kind {
            ChainType::Filter => "filter",
            ChainType::Route => "route",
            ChainType::Nat => "nat",
        };
        writeln!(
            o,
            "\t\ttype {kind} hook {} priority {}; policy accept;",
            hook(b.hook),
            b.priority.nft_name()
        )?;
    }
    for r in &chain.rules {
        if let Some(doc) = r.doc {
            writeln!(o, "\t\t# {doc}")?;
        }
        writeln!(o, "\t\t{}", rule(r))?;
    }
    writeln!(o, "\t}}")
}

pub(crate) fn hook(h: Hook) -> &'static str {
    match h {
        Hook::Prerouting => "prerouting",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    }
}

/// One rule on one line, as `nft list` would print it.
pub fn rule(r: &Rule) -> String {
    let parts: Vec<String> = r
        .matches
        .iter()
        .map(matcher)
        .chain(r.stmts.iter().map(stmt))
        .collect();
    parts.join(" ")
}

fn matcher(m: &Match) -> String {
    match m {
        Match::Cmp {
            left,
            negate,
            right,
        } => {
            let op = if *negate { "!= " } else { "" };
            format!("{} {op}{}", expr(left), value(right))
        }
        Match::InSet { left, set } => format!("{} {}", expr(left), set_ref(set)),
        Match::CtState(states) => {
            let names: Vec<&str> = states.iter().map(|s| ct_state(*s)).collect();
            format!("ct state {}", names.join(","))
        }
    }
}

pub(crate) fn ct_state(s: CtState) -> &'static str {
    match s {
        CtState::New => "new",
        CtState::Established => "established",
        CtState::Related => "related",
    }
}

fn stmt(s: &Stmt) -> String {
    match s {
        Stmt::Mangle { target, value } => format!("{} set {}", expr(target), expr(value)),
        Stmt::SetUpdate { set, key } => format!("update @{set} {{ {} }}", expr(key)),
        Stmt::VerdictMap { key, map } => format!("{} vmap {}", expr(key), map_ref(map)),
        Stmt::Snat { family, addr } => {
            let f = match family {
                IpFamily::V4 => "ip",
                IpFamily::V6 => "ip6",
            };
            format!("snat {f} to {}", expr(addr))
        }
        Stmt::Masquerade => "masquerade".into(),
        Stmt::Counter => "counter".into(),
        Stmt::Verdict(v) => verdict(v),
        Stmt::Reject(Reject::TcpReset) => "reject with tcp reset".into(),
        Stmt::Reject(Reject::IcmpxHostUnreachable) => "reject with icmpx host-unreachable".into(),
    }
}

fn set_ref(s: &SetRef) -> String {
    match s {
        SetRef::Named(n) => format!("@{n}"),
        SetRef::Anonymous(vs) => {
            let items: Vec<String> = vs.iter().map(value).collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

fn map_ref(m: &MapRef) -> String {
    match m {
        MapRef::Named(n) => format!("@{n}"),
        MapRef::Anonymous(entries) => {
            let items: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{} : {}", value(k), value(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

fn expr(e: &Expr) -> String {
    match e {
        Expr::Meta(k) => match k {
            MetaKey::Mark => "meta mark",
            MetaKey::IifName => "iifname",
            MetaKey::OifName => "oifname",
            MetaKey::NfProto => "meta nfproto",
            MetaKey::L4Proto => "meta l4proto",
        }
        .into(),
        Expr::Ct(k) => match k {
            CtKey::State => "ct state",
            CtKey::Mark => "ct mark",
        }
        .into(),
        Expr::Payload(f) => field(*f),
        Expr::Numgen { mode, modulus } => {
            let m = match mode {
                NumgenMode::Inc => "inc",
                NumgenMode::Random => "random",
            };
            format!("numgen {m} mod {modulus}")
        }
        Expr::Jhash {
            field: f,
            modulus,
            seed,
        } => format!("jhash {} mod {modulus} seed {seed:#010x}", field(*f)),
        Expr::Value(v) => value(v),
        Expr::And(e, mask) => format!("{} & {mask:#010x}", expr(e)),
        Expr::Network {
            field: f,
            prefix_len,
        } => match f.netmask(*prefix_len) {
            Some(mask) => format!("{} & {}", field(*f), value(&mask)),
            None => field(*f),
        },
        Expr::Bits { expr: e, keep, set } => {
            format!("{} & {keep:#010x} | {set:#010x}", expr(e))
        }
        Expr::Map { key, map } => format!("{} map {}", expr(key), map_ref(map)),
    }
}

fn field(f: Field) -> String {
    match f {
        Field::IpSaddr => "ip saddr".into(),
        Field::IpDaddr => "ip daddr".into(),
        Field::Ip6Saddr => "ip6 saddr".into(),
        Field::Ip6Daddr => "ip6 daddr".into(),
        Field::Dport(p) => format!("{} dport", p.as_str()),
    }
}

fn value(v: &Value) -> String {
    match v {
        Value::Mark(m) => format!("{m:#010x}"),
        Value::Int(n) => n.to_string(),
        // Checked by the spec parser; quoted by the one function that owns nft quoting.
        Value::IfName(n) => name::nft_quoted(n),
        Value::Ipv4(a) => a.to_string(),
        Value::Ipv6(a) => a.to_string(),
        Value::Ipv4Net(n) => n.to_string(),
        Value::Ipv6Net(n) => n.to_string(),
        Value::Port(p) => p.to_string(),
        Value::Range(a, b) => format!("{}-{}", value(a), value(b)),
        Value::Verdict(v) => verdict(v),
        Value::NfProto(IpFamily::V4) => "ipv4".into(),
        Value::NfProto(IpFamily::V6) => "ipv6".into(),
        Value::L4Proto(p) => p.as_str().into(),
    }
}

fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
    }
}
