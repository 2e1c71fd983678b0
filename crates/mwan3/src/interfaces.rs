//! `config interface` sections -> gateways and their health checks. mwan3 numbers its
//! interfaces by position (its routing table and mark come from that number); the same
//! numbers are kept here unless `--define IFACE.table=N` says otherwise.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use nftbalance_spec::{name, Gateway, Health, HealthTarget, QueryTarget};

use crate::names::Names;
use crate::uci::{show, Config, Section};
use crate::{id2mask, Cx, What};

/// The spec's limit on gateways.
const MAX_GATEWAYS: usize = 64;

/// The name mwan3's `nslookup` tracking asks every target for.
const NSLOOKUP_NAME: &str = "www.google.com";

/// The spec's default quality window, which it writes only when a threshold uses it.
const DEFAULT_WINDOW: u32 = 10;

/// One enabled mwan3 interface and its gateway.
#[derive(Debug)]
pub struct Gw {
    pub gateway: Gateway,
    /// The mwan3 interface's name (the first one's, when two share a device).
    pub uci: String,
    /// The families its interfaces carry.
    pub v4: bool,
    pub v6: bool,
    /// The device came from `--define`, not from the interface's name.
    pub explicit_device: bool,
}

#[derive(Debug, Default)]
pub struct Gateways {
    pub list: Vec<Gw>,
    /// UCI name -> index in `list`.
    pub by_uci: BTreeMap<String, usize>,
}

/// Whether the file has an interface section of this name (enabled or not).
pub fn declared(config: &Config, name: &str) -> bool {
    (config.sections.iter()).any(|s| s.kind == "interface" && s.name.as_deref() == Some(name))
}

const KNOWN: &[&str] = &[
    "enabled",
    "family",
    "track_ip",
    "track_method",
    "reliability",
    "count",
    "timeout",
    "interval",
    "failure_interval",
    "recovery_interval",
    "keep_failure_interval",
    "up",
    "down",
    "size",
    "max_ttl",
    "check_quality",
    "failure_latency",
    "failure_loss",
    "recovery_latency",
    "recovery_loss",
    "initial_state",
    "flush_conntrack",
    "httping_ssl",
];

pub fn interfaces(cx: &mut Cx<'_>, config: &Config, mask: u32) -> Gateways {
    let mut out = Gateways::default();
    let mut names = Names::default();
    // mwan3 keeps the all-ones id and the two below it for default, blackhole, unreachable.
    let max_id = (1u64 << mask.count_ones()) - 4;
    let sections = config.sections.iter().filter(|s| s.kind == "interface");
    for (i, s) in sections.enumerate() {
        let id = i as u64 + 1;
        let Some(uci) = s.name.clone() else {
            cx.whole(s, What::Ignored("anonymous interface: mwan3 finds an interface's network by its section name, so this one never comes up".into()));
            continue;
        };
        if !cx.boolean(s, "enabled", false) {
            cx.whole(s, What::Ignored("interface not enabled (mwan3's default for enabled is 0): it never carries traffic".into()));
            continue;
        }
        if id > max_id {
            cx.err(s.line, format!("interface {} is number {id}; mmx_mask {mask:#x} holds at most {max_id} interfaces", show(&uci)));
            continue;
        }
        if out.list.len() == MAX_GATEWAYS {
            cx.err(s.line, format!("more than {MAX_GATEWAYS} enabled interfaces; nftbalance takes at most {MAX_GATEWAYS} gateways"));
            continue;
        }
        // Two mwan3 interfaces on one device (wan and wan6) are one uplink here.
        let device = cx.net.iface(&uci).device;
        let shared = (out.list.iter())
            .position(|g| g.explicit_device && Some(&g.gateway.interface) == device.as_ref());
        let slot = Slot {
            index: shared.unwrap_or(out.list.len()),
            merging: shared.is_some(),
        };
        let index = slot.index;
        let Some(gw) = interface(cx, s, &uci, id as u32, mask, &mut names, slot) else {
            continue;
        };
        match shared {
            Some(i) => {
                if merge(cx, s, &mut out.list[i], gw) {
                    out.by_uci.insert(uci, i);
                }
            }
            None => {
                out.by_uci.insert(uci, index);
                out.list.push(gw);
            }
        }
    }
    out
}

/// Folds interface `s` (`other`) into the gateway of the interface with the same device:
/// one family each, so the gateway carries both; their targets are checked together.
fn merge(cx: &mut Cx<'_>, s: &Section, into: &mut Gw, other: Gw) -> bool {
    let (a, b) = (&mut into.gateway, other.gateway);
    if (into.v4 && other.v4) || (into.v6 && other.v6) {
        cx.err(
            s.line,
            format!(
                "device {} is already interface {}'s, of the same family; an uplink is one device",
                show(&a.interface),
                into.uci
            ),
        );
        return false;
    }
    into.v4 |= other.v4;
    into.v6 |= other.v6;
    a.address = a.address.or(b.address);
    a.via = a.via.or(b.via);
    a.address6 = a.address6.or(b.address6);
    a.via6 = a.via6.or(b.via6);
    a.flush_conntrack |= b.flush_conntrack;
    let health = match (a.health.take(), b.health) {
        (Some(mut h), Some(o)) => {
            h.targets.extend(o.targets);
            h.queries.extend(o.queries);
            Some(h)
        }
        (h, o) => h.or(o),
    };
    a.health = health;
    let why = format!(
        "-> gateway {} together with interface {}: the same device {}, so one gateway carries both families; one health state from both interfaces' targets, with {}'s timing; {}'s mark and routing table",
        a.name, into.uci, a.interface, into.uci, into.uci
    );
    cx.section(s, What::Approx(why));
    true
}

/// Where an interface goes: a new gateway at `index`, or merged into the one there.
#[derive(Debug, Clone, Copy)]
struct Slot {
    index: usize,
    merging: bool,
}

fn interface(
    cx: &mut Cx<'_>,
    s: &Section,
    uci: &str,
    id: u32,
    mask: u32,
    names: &mut Names,
    slot: Slot,
) -> Option<Gw> {
    let at = format!("gateways[{}]", slot.index);
    let gw_name = if slot.merging {
        String::new()
    } else {
        let (gw_name, renamed) = names.assign(uci, "gw_");
        let mapped = if renamed {
            format!(" (the UCI name {} is not a valid gateway name)", show(uci))
        } else {
            String::new()
        };
        cx.section(s, What::Spec(format!("-> {at}, name {gw_name}{mapped}")));
        gw_name
    };
    if let Some(o) = s.option("enabled") {
        cx.at(s, o, What::Spec(format!("-> {at} (enabled)")));
    }
    let ipv6 = match cx.single(s, "family") {
        None => false,
        Some((o, "ipv4")) => {
            cx.at(
                s,
                o,
                What::Spec(format!("-> {at}: IPv4 addresses and targets")),
            );
            false
        }
        Some((o, "ipv6")) => {
            cx.at(
                s,
                o,
                What::Spec(format!("-> {at}: IPv6 addresses and targets")),
            );
            true
        }
        Some((o, v)) => {
            cx.err(
                o.value().line,
                format!("family: {} is not ipv4 or ipv6", show(v)),
            );
            false
        }
    };
    let net = cx.net.iface(uci);
    let device = match &net.device {
        Some(d) => d.clone(),
        None if name::interface(uci).is_ok() => {
            cx.report.need(format!("{at} ({uci}): interface is {uci}, mwan3's logical name; give the device with --define {uci}.device=DEV (pppoe-{uci}, eth0.2, wwan0, ...)"));
            uci.to_string()
        }
        None => {
            cx.err(s.line, format!("interface {}: its name is not a device name; give the device with --define {uci}.device=DEV", show(uci)));
            return None;
        }
    };
    let route_table = net.table.unwrap_or(id);
    if net.table.is_none() {
        cx.report.need(format!("{at} ({uci}): routing table {id}, the number mwan3 gives this interface; change it with --define {uci}.table=N"));
    }
    if net.via.is_none() && net.via6.is_none() {
        cx.report.need(format!("{at} ({uci}): no next hop: the uplink's route is dev-only (right for PPP and LTE); give --define {uci}.via=ADDR (or via6) for an Ethernet uplink"));
    }
    let health = health(cx, s, ipv6, &at);
    let flush_conntrack = flush(cx, s, &at);
    report_tracker_only(cx, s);
    cx.unknown(s, KNOWN);
    let gateway = Gateway {
        name: gw_name,
        interface: device,
        mark: id2mask(id, mask),
        weight: 1,
        address: net.address,
        via: net.via,
        address6: net.address6,
        via6: net.via6,
        route_table,
        health,
        flush_conntrack,
    };
    Some(Gw {
        gateway,
        uci: uci.to_string(),
        v4: !ipv6,
        v6: ipv6,
        explicit_device: net.device.is_some(),
    })
}

/// `flush_conntrack`: the events on which mwan3 flushes conntrack.
fn flush(cx: &mut Cx<'_>, s: &Section, at: &str) -> bool {
    let Some(o) = s.option("flush_conntrack") else {
        return false;
    };
    let mut flush = false;
    for v in &o.values {
        let what = match v.text.as_str() {
            "disconnected" | "ifdown" => {
                flush = true;
                What::Spec(format!("-> {at}.flush_conntrack = true (when watch marks it down)"))
            }
            "connected" | "ifup" => What::Ignored("nftbalance flushes a gateway's connections when it goes down, not when it comes up".into()),
            other => What::Ignored(format!("{} is not an event mwan3 knows", show(other))),
        };
        cx.value(s, o, v, what);
    }
    flush
}

/// Options of mwan3's tracker that the spec has no field for.
fn report_tracker_only(cx: &mut Cx<'_>, s: &Section) {
    let why: &[(&str, &str)] = &[
        (
            "failure_interval",
            "nftbalance probes at one interval, failing or not",
        ),
        (
            "recovery_interval",
            "nftbalance probes at one interval, recovering or not",
        ),
        ("keep_failure_interval", "nftbalance probes at one interval"),
        ("size", "nftbalance's ICMP probes have a fixed size"),
        ("max_ttl", "nftbalance's probes use the default TTL"),
        (
            "initial_state",
            "watch starts every gateway as usable and judges it from its first probes",
        ),
        ("httping_ssl", "read with track_method httping"),
    ];
    for (name, reason) in why {
        if let Some(o) = s.option(name) {
            if *name != "httping_ssl" {
                cx.at(s, o, What::Ignored((*reason).into()));
            }
        }
    }
}

/// The tracker's settings: `None` without `track_ip` (mwan3 then runs no tracker and keeps
/// the interface up while its link is up).
fn health(cx: &mut Cx<'_>, s: &Section, ipv6: bool, at: &str) -> Option<Health> {
    let method = cx.single(s, "track_method").map(|(_, v)| v.to_string());
    let method = method.unwrap_or_else(|| "ping".into());
    let Some(track) = s.option("track_ip") else {
        for name in [
            "track_method",
            "reliability",
            "count",
            "timeout",
            "interval",
            "up",
            "down",
            "check_quality",
            "failure_latency",
            "failure_loss",
            "recovery_latency",
            "recovery_loss",
            "httping_ssl",
        ] {
            if let Some(o) = s.option(name) {
                cx.at(
                    s,
                    o,
                    What::Ignored("no track_ip: mwan3 runs no tracker for this interface".into()),
                );
            }
        }
        return None;
    };
    if !track.list {
        cx.at(s, track, What::Ignored("written as option: mwan3 reads track_ip as a list (list track_ip '...') and ignores an option, so it runs no tracker".into()));
        return None;
    }
    let ssl = cx.boolean(s, "httping_ssl", false);
    let errors = cx.errors.len();
    let mut targets = Vec::new();
    let mut queries = Vec::new();
    for (i, v) in track.values.iter().enumerate() {
        let Ok(addr) = v.text.parse::<IpAddr>() else {
            cx.err(
                v.line,
                format!(
                    "track_ip: {} is not an IP address; nftbalance probes addresses",
                    show(&v.text)
                ),
            );
            continue;
        };
        if addr.is_ipv6() != ipv6 {
            let fam = if ipv6 { "ipv6" } else { "ipv4" };
            cx.err(
                v.line,
                format!("track_ip: {addr} is not an {fam} address, the interface's family"),
            );
            continue;
        }
        let (what, approx) = target(&method, ssl, addr, &mut targets, &mut queries);
        let text = format!("-> {at}.health.targets[{i}]: {what}");
        let w = match approx {
            Some(why) => What::Approx(format!("{text} ({why})")),
            None => What::Spec(text),
        };
        cx.value(s, track, v, w);
    }
    if let Some(o) = s.option("track_method") {
        cx.at(s, o, What::Spec(format!("-> kind of {at}.health.targets")));
    }
    if let Some(o) = s.option("httping_ssl") {
        cx.at(
            s,
            o,
            What::Spec(format!(
                "-> kind of {at}.health.targets (with track_method httping)"
            )),
        );
    }
    if cx.errors.len() > errors {
        return None;
    }
    let count = targets.len() + queries.len();
    let timing = timing(cx, s, at, count)?;
    Some(Health {
        targets,
        queries,
        ..timing
    })
}

/// One track_ip as the spec's target: what it became and, when it differs, why.
fn target(
    method: &str,
    ssl: bool,
    addr: IpAddr,
    targets: &mut Vec<HealthTarget>,
    queries: &mut Vec<QueryTarget>,
) -> (String, Option<String>) {
    let query = |q: QueryTarget, queries: &mut Vec<QueryTarget>| {
        let s = q.to_string();
        queries.push(q);
        s
    };
    match method {
        "ping" | "nping-icmp" => {
            targets.push(HealthTarget::Icmp(addr));
            (format!("ICMP echo to {addr}"), None)
        }
        "nslookup" => {
            let q = QueryTarget::Dns {
                server: SocketAddr::new(addr, 53),
                name: NSLOOKUP_NAME.into(),
            };
            (query(q, queries), None)
        }
        "httping" if !ssl => {
            let q = QueryTarget::Http {
                addr: SocketAddr::new(addr, 80),
                path: "/".into(),
            };
            (query(q, queries), None)
        }
        "httping" => {
            let t = SocketAddr::new(addr, 443);
            targets.push(HealthTarget::Tcp(t));
            (
                format!("TCP connect to {t}"),
                Some("nftbalance does not speak HTTPS; a TCP connect to port 443 instead".into()),
            )
        }
        "nping-tcp" => {
            let t = SocketAddr::new(addr, 80);
            targets.push(HealthTarget::Tcp(t));
            (
                format!("TCP connect to {t}"),
                Some("nping --tcp probes port 80; a TCP connect to it instead".into()),
            )
        }
        other => {
            targets.push(HealthTarget::Icmp(addr));
            (format!("ICMP echo to {addr}"), Some(format!("track_method {}: nftbalance has no such probe; ICMP echo instead (mwan3 too falls back to ping when its method is missing)", show(other))))
        }
    }
}

/// Intervals, counts and quality thresholds, with mwan3's defaults where the file is silent.
fn timing(cx: &mut Cx<'_>, s: &Section, at: &str, count: usize) -> Option<Health> {
    let h = format!("{at}.health");
    let spec = |cx: &mut Cx<'_>, name: &str, to: String| {
        if let Some(o) = s.option(name) {
            cx.at(s, o, What::Spec(format!("-> {h}.{to}")));
        }
    };
    let interval = cx.number(s, "interval", 10, 1, 3600);
    spec(cx, "interval", format!("interval = {interval}s"));
    let mut timeout = cx.number(s, "timeout", 4, 1, 3600);
    if timeout > interval {
        if let Some(o) = s.option("timeout") {
            cx.at(s, o, What::Approx(format!("-> {h}.timeout = {interval}s: nftbalance ends a probe before the next starts, so at most the interval")));
        }
        timeout = interval;
    } else {
        spec(cx, "timeout", format!("timeout = {timeout}s"));
    }
    let up = cx.number(s, "up", 5, 1, 100);
    spec(cx, "up", format!("up = {up}"));
    let down = cx.number(s, "down", 5, 1, 100);
    spec(cx, "down", format!("down = {down}"));
    let reliability = cx.number(s, "reliability", 1, 1, 1000);
    if reliability as usize > count {
        let line = s.option("reliability").map_or(s.line, |o| o.value().line);
        cx.err(line, format!("reliability {reliability} is more than the {count} track_ip targets: mwan3 would never see the interface up"));
        return None;
    }
    spec(cx, "reliability", format!("reliability = {reliability}"));
    let window = cx.number(s, "count", 1, 1, 100);
    let quality = cx.boolean(s, "check_quality", false);
    let mut health = Health {
        targets: Vec::new(),
        queries: Vec::new(),
        interval_ms: interval * 1000,
        timeout_ms: timeout * 1000,
        up,
        down,
        reliability,
        window: DEFAULT_WINDOW,
        max_loss: None,
        recover_loss: None,
        max_latency_ms: None,
        recover_latency_ms: None,
        hold_down_ms: 0,
    };
    if quality {
        health = thresholds(cx, s, &h, health, window)?;
    } else {
        if let Some(o) = s.option("count") {
            cx.at(s, o, What::Approx(format!("one probe per target per round: mwan3 sends {window} and counts the target up when any answers")));
        }
        for name in [
            "check_quality",
            "failure_latency",
            "failure_loss",
            "recovery_latency",
            "recovery_loss",
        ] {
            if let Some(o) = s.option(name) {
                let why = if name == "check_quality" {
                    "off: up/down counts only"
                } else {
                    "used only with check_quality 1"
                };
                cx.at(s, o, What::Ignored(why.into()));
            }
        }
    }
    cx.report.note(format!("{h}: interval {interval}s, timeout {timeout}s, up {up}, down {down}, reliability {reliability} (mwan3's defaults where the file sets none: 10s, 4s, 5, 5, 1)"));
    Some(health)
}

/// check_quality: mwan3 fails a target at loss >= failure_loss or latency >= failure_latency
/// and recovers it at <= the recovery values; the spec's `max_*` are "above", so one less.
fn thresholds(
    cx: &mut Cx<'_>,
    s: &Section,
    h: &str,
    mut health: Health,
    window: u32,
) -> Option<Health> {
    let fail_lat = cx.number(s, "failure_latency", 1000, 2, 3_600_000);
    let rec_lat = cx.number(s, "recovery_latency", 500, 1, 3_600_000);
    let fail_loss = cx.number(s, "failure_loss", 40, 1, 100);
    let rec_loss = cx.number(s, "recovery_loss", 10, 0, 100);
    let line = |name: &str| s.option(name).map_or(s.line, |o| o.value().line);
    if rec_loss >= fail_loss - 1 {
        cx.err(line("recovery_loss"), format!("recovery_loss {rec_loss}% must be below failure_loss {fail_loss}% less one: a gateway between them would flap"));
        return None;
    }
    if rec_lat >= fail_lat - 1 {
        cx.err(line("recovery_latency"), format!("recovery_latency {rec_lat}ms must be below failure_latency {fail_lat}ms less one: a gateway between them would flap"));
        return None;
    }
    health.window = window;
    health.max_loss = Some((fail_loss - 1) as u8);
    health.recover_loss = Some(rec_loss as u8);
    let report = |cx: &mut Cx<'_>, name: &str, w: What| {
        if let Some(o) = s.option(name) {
            cx.at(s, o, w);
        }
    };
    if fail_lat - 1 < health.timeout_ms {
        health.max_latency_ms = Some(fail_lat - 1);
        health.recover_latency_ms = Some(rec_lat);
        report(
            cx,
            "failure_latency",
            What::Spec(format!(
                "-> {h}.max_latency = {}ms (mwan3 fails at >= {fail_lat}ms)",
                fail_lat - 1
            )),
        );
        report(
            cx,
            "recovery_latency",
            What::Spec(format!("-> {h}.recover_latency = {rec_lat}ms")),
        );
    } else {
        let why = "not below the timeout: a probe that slow times out, which mwan3 and nftbalance both count as a failure";
        report(cx, "failure_latency", What::Ignored(why.into()));
        report(cx, "recovery_latency", What::Ignored(why.into()));
    }
    report(
        cx,
        "check_quality",
        What::Spec(format!(
            "-> {h}.max_loss, max_latency and their recover_* values"
        )),
    );
    report(cx, "failure_loss", What::Approx(format!("-> {h}.max_loss = {}% (mwan3 fails at >= {fail_loss}%), over the last {window} rounds instead of {window} pings in one", fail_loss - 1)));
    report(
        cx,
        "recovery_loss",
        What::Spec(format!("-> {h}.recover_loss = {rec_loss}%")),
    );
    report(cx, "count", What::Approx(format!("-> {h}.window = {window}: loss and latency over the last {window} rounds, one probe each, where mwan3 sends {window} pings per round")));
    cx.report.note(format!("{h}: quality judged on the whole gateway over {window} rounds (mwan3 judges each target on its pings, then counts targets)"));
    Some(health)
}
