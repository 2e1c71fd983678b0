//! `config rule` sections -> selectors, in order (mwan3 and nftbalance both give a new
//! connection to the first rule that matches it). mwan3 runs its rules for forwarded and for
//! router-originated traffic, so each rule becomes a `forward` and a `local` selector (only
//! `forward` with `src_iface`: local packets have no input interface).

use ipnet::IpNet;
use nftbalance_spec::{name, Balance, PortRange, Protocol, Selector, Sticky};

use crate::network::prefix;
use crate::policies::{Policies, Target, MWAN3_NAME_MAX};
use crate::uci::{show, Config, Section};
use crate::{empty_balance, Cx, What};

/// The spec's longest sticky timeout: 30 days.
const STICKY_MAX_SECS: u32 = 30 * 86_400;

const KNOWN: &[&str] = &[
    "use_policy",
    "family",
    "proto",
    "src_ip",
    "dest_ip",
    "src_port",
    "dest_port",
    "src_iface",
    "ipset",
    "sticky",
    "timeout",
    "logging",
];

/// Whether a rule of the file takes its input interface from `name`.
pub fn src_iface_named(config: &Config, name: &str) -> bool {
    (config.sections.iter().filter(|s| s.kind == "rule"))
        .filter_map(|s| s.option("src_iface"))
        .any(|o| o.values.iter().any(|v| v.text == name))
}

/// What one rule matches, as the spec can say it.
#[derive(Debug, Default)]
struct Match {
    protocol: Option<Protocol>,
    dports: Vec<PortRange>,
    saddr: Vec<IpNet>,
    daddr: Vec<IpNet>,
    iif: Option<String>,
}

/// Why a rule is not imported: it does nothing in mwan3 either, or it does something the
/// spec cannot say.
enum Skip {
    Ignored(String),
    Dropped(String),
}

pub fn rules(cx: &mut Cx<'_>, config: &Config, pols: &Policies) -> Balance {
    let mut balance = empty_balance();
    balance.exclude = cx.net.exclude.clone();
    let sections = config.sections.iter().filter(|s| s.kind == "rule");
    for s in sections {
        cx.unknown(s, KNOWN);
        match rule(cx, s, pols, &mut balance) {
            Ok(()) => {}
            Err(Skip::Ignored(why)) => cx.whole(s, What::Ignored(why)),
            Err(Skip::Dropped(why)) => cx.whole(s, What::Dropped(why)),
        }
    }
    balance
}

fn rule(cx: &mut Cx<'_>, s: &Section, pols: &Policies, balance: &mut Balance) -> Result<(), Skip> {
    if s.name.as_ref().is_some_and(|n| n.len() > MWAN3_NAME_MAX) {
        return Err(Skip::Ignored(format!(
            "name longer than {MWAN3_NAME_MAX} characters: mwan3 does not set this rule up"
        )));
    }
    let Some((_, policy)) = cx.single(s, "use_policy") else {
        return Err(Skip::Ignored("no use_policy: mwan3 skips this rule".into()));
    };
    let policy = policy.to_string();
    let m = matches(cx, s)?;
    for opt in ["ipset", "src_port"] {
        if let Some((_, v)) = cx.single(s, opt) {
            let why = match opt {
                "ipset" => format!("ipset {}: nftbalance selectors match prefixes, not named sets; list the set's prefixes in dest_ip (one rule per family)", show(v)),
                _ => format!("src_port {}: nftbalance selectors match destination ports only", show(v)),
            };
            return Err(Skip::Dropped(why));
        }
    }
    match policy.as_str() {
        "default" => return exclude(cx, s, m, balance),
        "unreachable" | "blackhole" => {
            return Err(Skip::Dropped(format!("use_policy {policy}: nftbalance refuses connections only as a policy's last resort, not per rule")));
        }
        _ => {}
    }
    let name = match pols.by_uci.get(&policy) {
        Some(Target::Imported(name)) => name.clone(),
        Some(Target::Nothing(why)) => {
            return Err(Skip::Ignored(format!("policy {}: {why}", show(&policy))))
        }
        Some(Target::Empty { last_resort }) => {
            return Err(Skip::Dropped(format!("policy {} has no usable member: mwan3 gives these connections its last resort ({last_resort}); nftbalance cannot", show(&policy))));
        }
        None => {
            return Err(Skip::Ignored(format!("policy {} is not defined: mwan3 jumps to an empty chain, so this rule does nothing", show(&policy))));
        }
    };
    let selector = Selector {
        iif: m.iif.clone(),
        protocol: m.protocol,
        dports: m.dports.clone(),
        saddr: m.saddr.clone(),
        daddr: m.daddr.clone(),
        gateway: None,
        policy: Some(name.clone()),
    };
    let f = balance.forward.len();
    balance.forward.push(selector.clone());
    let to = if m.iif.is_none() {
        balance.local.push(selector);
        format!(
            "balance.forward[{f}], balance.local[{}]",
            balance.local.len() - 1
        )
    } else {
        format!("balance.forward[{f}] (src_iface: forwarded traffic only)")
    };
    cx.section(s, What::Spec(format!("-> {to}, policy {name}")));
    let to = format!("({to})");
    report_matches(cx, s, &to);
    if let Some(o) = s.option("use_policy") {
        cx.at(s, o, What::Spec(format!("-> policy {name} {to}")));
    }
    sticky(cx, s, balance);
    Ok(())
}

/// The rule's conditions; `Err` when mwan3 would skip the rule or the spec cannot say them.
fn matches(cx: &mut Cx<'_>, s: &Section) -> Result<Match, Skip> {
    let mut m = Match::default();
    let proto = cx.single(s, "proto").map(|(_, v)| v.to_string());
    m.protocol = match proto.as_deref() {
        None | Some("all") => None,
        Some("tcp" | "6") => Some(Protocol::Tcp),
        Some("udp" | "17") => Some(Protocol::Udp),
        Some(p) => {
            return Err(Skip::Dropped(format!(
                "proto {}: nftbalance selectors match tcp, udp or every protocol",
                show(p)
            )))
        }
    };
    for (opt, list) in [("src_ip", &mut m.saddr), ("dest_ip", &mut m.daddr)] {
        if let Some((o, v)) = cx.single(s, opt) {
            for p in v.split(',') {
                match prefix(p.trim()) {
                    Ok(n) => list.push(n),
                    Err(e) => cx.err(o.value().line, format!("{opt}: {e}")),
                }
            }
        }
    }
    let family = match cx
        .single(s, "family")
        .map(|(o, v)| (o.value().line, v.to_string()))
    {
        None => None,
        Some((_, f)) if f == "any" => None,
        Some((_, f)) if f == "ipv4" => Some(false),
        Some((_, f)) if f == "ipv6" => Some(true),
        Some((line, f)) => {
            cx.err(
                line,
                format!("family: {} is not any, ipv4 or ipv6", show(&f)),
            );
            None
        }
    };
    let fams: std::collections::BTreeSet<bool> = (m.saddr.iter().chain(&m.daddr))
        .map(|n| matches!(n, IpNet::V6(_)))
        .chain(family)
        .collect();
    if fams.len() > 1 {
        return Err(Skip::Ignored("addresses and family of more than one IP version: mwan3 finds the rule invalid for both and skips it".into()));
    }
    if let (Some(v6), true, true) = (family, m.saddr.is_empty(), m.daddr.is_empty()) {
        m.daddr.push(
            if v6 { "::/0" } else { "0.0.0.0/0" }
                .parse()
                .expect("a prefix"),
        );
    }
    if let Some((o, v)) = cx.single(s, "dest_port") {
        if m.protocol.is_some() {
            m.dports = ports(cx, o.value().line, v);
        } else {
            cx.at(
                s,
                o,
                What::Ignored("proto is not tcp or udp: mwan3 ignores the ports".into()),
            );
        }
    }
    if let Some((o, v)) = cx.single(s, "src_iface") {
        let dev = cx.net.iface(v).device;
        m.iif = match dev {
            Some(d) => Some(d),
            None if name::interface(v).is_ok() => {
                cx.report.need(format!("rule at line {}: src_iface {v} is taken as the device name; give the device with --define {v}.device=DEV", s.line));
                Some(v.to_string())
            }
            None => {
                cx.err(o.value().line, format!("src_iface: {} is not a device name; give the device with --define NAME.device=DEV", show(v)));
                None
            }
        };
    }
    Ok(m)
}

/// iptables multiport syntax: `80`, `1000:2000`, `22,80,443`.
fn ports(cx: &mut Cx<'_>, line: usize, v: &str) -> Vec<PortRange> {
    let mut out = Vec::new();
    for item in v.split(',') {
        let (a, b) = item.split_once(':').unwrap_or((item, item));
        let parse = |p: &str| p.trim().parse::<u16>().ok().filter(|&p| p > 0);
        match (parse(a), parse(b)) {
            (Some(first), Some(last)) if first <= last => out.push(PortRange { first, last }),
            _ => cx.err(
                line,
                format!(
                    "dest_port: {} is not a port (1-65535) or range (1000:2000)",
                    show(item)
                ),
            ),
        }
    }
    out
}

fn report_matches(cx: &mut Cx<'_>, s: &Section, to: &str) {
    for (opt, field) in [
        ("proto", "protocol"),
        ("src_ip", "saddr"),
        ("dest_ip", "daddr"),
        ("dest_port", "dports"),
        ("src_iface", "iif"),
        (
            "family",
            "daddr (the family's whole space when no address is given)",
        ),
    ] {
        if let Some(o) = s.option(opt) {
            cx.at(s, o, What::Spec(format!("-> {field} {to}")));
        }
    }
    if let Some(o) = s.option("logging") {
        cx.at(
            s,
            o,
            What::Ignored(
                "mwan3 logs the rule's matches to syslog; nftbalance does not log per selector"
                    .into(),
            ),
        );
    }
}

/// `use_policy default`: the main table. The spec says that for destinations only.
fn exclude(cx: &mut Cx<'_>, s: &Section, m: Match, balance: &mut Balance) -> Result<(), Skip> {
    if m.protocol.is_some() || !m.saddr.is_empty() || m.iif.is_some() {
        return Err(Skip::Dropped("use_policy default with conditions other than dest_ip and family: nftbalance leaves connections to the main table by destination only (balance.exclude)".into()));
    }
    let daddr = if m.daddr.is_empty() {
        vec![
            "0.0.0.0/0".parse().expect("a prefix"),
            "::/0".parse().expect("a prefix"),
        ]
    } else {
        m.daddr
    };
    let first = balance.exclude.len();
    balance.exclude.extend(daddr);
    let to = format!("balance.exclude[{first}..{}]", balance.exclude.len());
    let what = if balance.forward.is_empty() {
        What::Spec(format!("-> {to}"))
    } else {
        What::Approx(format!(
            "-> {to}: excluded from every rule, also the earlier ones that mwan3 would try first"
        ))
    };
    cx.whole(s, what);
    Ok(())
}

fn sticky(cx: &mut Cx<'_>, s: &Section, balance: &mut Balance) {
    let on = cx.boolean(s, "sticky", false);
    let timeout = cx.number(s, "timeout", 600, 1, STICKY_MAX_SECS);
    let Some(o) = s.option("sticky") else {
        if let Some(t) = s.option("timeout") {
            cx.at(s, t, What::Ignored("used only with sticky 1".into()));
        }
        return;
    };
    if !on {
        cx.at(s, o, What::Spec("off (nftbalance's default)".into()));
        if let Some(t) = s.option("timeout") {
            cx.at(s, t, What::Ignored("used only with sticky 1".into()));
        }
        return;
    }
    let what = match balance.sticky {
        None => {
            balance.sticky = Some(Sticky { timeout_secs: timeout });
            What::Approx(format!("-> balance.sticky.timeout = {timeout}s: nftbalance keeps a source on its last uplink for every selector, mwan3 only within this rule"))
        }
        Some(Sticky { timeout_secs }) if timeout_secs == timeout => What::Spec("-> balance.sticky (already set by an earlier rule)".into()),
        Some(Sticky { timeout_secs }) => What::Approx(format!("-> balance.sticky: one timeout for all, {timeout_secs}s from the first sticky rule, not {timeout}s")),
    };
    cx.at(s, o, what.clone());
    if let Some(t) = s.option("timeout") {
        cx.at(s, t, what);
    }
}
