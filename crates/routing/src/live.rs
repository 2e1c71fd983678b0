//! The effects part: reads the kernel's rules, routes and links over rtnetlink and sends the
//! [`Op`]s that `reconcile` decided, handling the kernel's answers. It decides nothing itself
//! beyond how to treat those answers.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::rule::RuleMessage;
use netlink_packet_route::RouteNetlinkMessage;

use crate::error::Error;
use crate::learned::{Learned, LearnedUplink};
use crate::links::{Link, Links};
use crate::message::{address_family, OwnedState, RouteKey};
use crate::nl::Socket;
use crate::plan::{IpFamily, RoutingPlan, SkipReason, Warning};
use crate::reconcile::{
    check_converged, check_rules_installed, compare, extra_routes, flush_ops, reconcile,
    restore_ops, Op, Stale,
};

const ESRCH: i32 = 3;
const ENOENT: i32 = 2;
const ENODEV: i32 = 19;
const ENETDOWN: i32 = 100;
const ENETUNREACH: i32 = 101;
const EHOSTUNREACH: i32 = 113;

impl Links {
    /// The interfaces of the socket's network namespace.
    pub fn read(sock: &Socket) -> Result<Links, Error> {
        let msgs = sock.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            "listing the interfaces",
        )?;
        let mut links = Links::default();
        for msg in msgs {
            if let RouteNetlinkMessage::NewLink(link) = msg {
                let name = link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                });
                if let Some(name) = name {
                    links.insert(
                        name,
                        Link {
                            index: link.header.index,
                            up: link.header.flags.contains(LinkFlags::Up),
                        },
                    );
                }
            }
        }
        Ok(links)
    }
}

impl Learned {
    /// Each interface's primary IPv4 address, its point-to-point peer and the next hop of
    /// the main table's default route on it that nftbalance did not install.
    pub fn read(sock: &Socket, links: &Links) -> Result<Learned, Error> {
        let mut by_index: BTreeMap<u32, LearnedUplink> = BTreeMap::new();
        let mut req = AddressMessage::default();
        req.header.family = address_family(IpFamily::V4);
        for msg in sock.dump(
            RouteNetlinkMessage::GetAddress(req),
            "listing the addresses",
        )? {
            let RouteNetlinkMessage::NewAddress(a) = msg else {
                continue;
            };
            let primary = a.header.scope == AddressScope::Universe
                && !a.header.flags.contains(AddressHeaderFlags::Secondary);
            let entry = by_index.entry(a.header.index).or_default();
            if !primary || entry.address.is_some() {
                continue;
            }
            let v4 = |want_local: bool| {
                a.attributes
                    .iter()
                    .find_map(|attr| match (attr, want_local) {
                        (AddressAttribute::Local(IpAddr::V4(x)), true) => Some(*x),
                        (AddressAttribute::Address(IpAddr::V4(x)), false) => Some(*x),
                        _ => None,
                    })
            };
            let (local, address) = (v4(true), v4(false));
            entry.address = local.or(address);
            entry.peer = local.and(address).filter(|p| Some(*p) != local);
        }
        let mut metrics: BTreeMap<u32, u32> = BTreeMap::new();
        for r in dump_routes(sock)? {
            if let Some((oif, via, metric)) = main_default_v4(&r) {
                let entry = by_index.entry(oif).or_default();
                if metrics.get(&oif).is_none_or(|m| metric < *m) {
                    metrics.insert(oif, metric);
                    entry.default_via = Some(via);
                }
            }
        }
        let mut learned = Learned::default();
        for (index, uplink) in by_index {
            if let Some(name) = links.name_of(index) {
                learned.insert(name, uplink);
            }
        }
        Ok(learned)
    }
}

/// A main-table IPv4 default route through a next hop that is not ours: (oif, via, metric).
fn main_default_v4(r: &RouteMessage) -> Option<(u32, Ipv4Addr, u32)> {
    let h = &r.header;
    if h.destination_prefix_length != 0
        || u8::from(h.protocol) == crate::ROUTE_PROTOCOL
        || h.address_family != address_family(IpFamily::V4)
    {
        return None;
    }
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(h.table));
    if table != crate::MAIN_TABLE {
        return None;
    }
    let (mut oif, mut via, mut metric) = (None, None, 0);
    for a in &r.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => via = Some(*g),
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    Some((oif?, via?, metric))
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Gateways whose routes were skipped (interface missing or down, or refused by the
    /// kernel); their rules are installed.
    pub warnings: Vec<Warning>,
    pub rules_added: usize,
    pub rules_deleted: usize,
    pub routes_replaced: usize,
    pub routes_deleted: usize,
}

impl ApplyReport {
    /// Whether the kernel already held the plan (nothing was changed).
    pub fn unchanged(&self) -> bool {
        self.rules_added + self.rules_deleted + self.routes_replaced + self.routes_deleted == 0
    }

    /// Gateways with at least one route not installed: they should receive no balanced
    /// connections until a later apply installs it.
    pub fn unrouted_gateways(&self) -> BTreeSet<String> {
        self.warnings.iter().map(|w| w.gateway.clone()).collect()
    }
}

/// Reads the owned rules (priority in [`crate::OWNED_PRIORITIES`]) and routes (protocol
/// [`crate::ROUTE_PROTOCOL`]) of both families.
pub fn read_owned(sock: &Socket) -> Result<OwnedState, Error> {
    Ok(OwnedState::of(dump_rules(sock)?, &dump_routes(sock)?))
}

/// Makes the owned rules and routes exactly the plan: adds what is missing, replaces what
/// differs and deletes owned extras; leaves everything else alone. Idempotent: a second apply
/// of the same plan changes nothing.
///
/// A route whose interface is missing or down is skipped with a warning naming its gateway
/// (the gateway's rules are installed); so is a route the kernel refuses because its next hop
/// is not reachable on the link yet. If a step fails, the owned rules and routes are restored
/// to what they were before ([`Error::RolledBack`]). Callers that run a later step (the
/// nftables transaction) take a [`read_owned`] snapshot first and [`restore`] it if that
/// step fails.
pub fn apply(sock: &Socket, plan: &RoutingPlan, links: &Links) -> Result<ApplyReport, Error> {
    apply_as(sock, plan, links, Stale::Delete)
}

/// The first half of a make-before-break change: like [`apply`], but owned rules and routes
/// the plan does not have stay in place, so a ruleset that still sets the old marks keeps
/// routing by them until the new ruleset is committed; an [`apply`] afterwards removes them.
/// (New rules at a priority the old ones share come after them, so the old ones win there
/// until they go.)
pub fn install(sock: &Socket, plan: &RoutingPlan, links: &Links) -> Result<ApplyReport, Error> {
    apply_as(sock, plan, links, Stale::Keep)
}

fn apply_as(
    sock: &Socket,
    plan: &RoutingPlan,
    links: &Links,
    stale: Stale,
) -> Result<ApplyReport, Error> {
    let all_routes = dump_routes(sock)?;
    let before = OwnedState::of(dump_rules(sock)?, &all_routes);
    let reconciled = reconcile(plan, links, &before, &all_routes, stale)?;
    let mut report = ApplyReport {
        warnings: reconciled.warnings,
        ..ApplyReport::default()
    };
    let mut installed = reconciled.present;
    let outcome = send_all(sock, &reconciled.ops, &mut report, &mut installed)
        .and_then(|()| finish(sock, plan, stale, &mut report, &mut installed));
    match outcome {
        Ok(()) => Ok(report),
        Err(cause) if report.unchanged() => Err(cause),
        Err(cause) => match restore(sock, &before) {
            Ok(skipped) => Err(Error::RolledBack {
                skipped,
                cause: Box::new(cause),
            }),
            Err(rollback) => Err(Error::RollbackFailed {
                cause: Box::new(cause),
                rollback: Box::new(rollback),
            }),
        },
    }
}

/// After the rules and the replaces: an install checks that the plan's rules are in (what was
/// kept goes with the apply after the commit); an apply deletes the owned routes left over
/// and checks that the kernel holds exactly the plan.
fn finish(
    sock: &Socket,
    plan: &RoutingPlan,
    stale: Stale,
    report: &mut ApplyReport,
    installed: &mut Vec<RouteKey>,
) -> Result<(), Error> {
    if stale == Stale::Keep {
        return check_rules_installed(plan, &read_owned(sock)?);
    }
    let extra = extra_routes(installed, &dump_routes(sock)?);
    send_all(sock, &extra, report, installed)?;
    check_converged(plan, installed, &read_owned(sock)?)
}

/// Sends apply's ops, counting them in the report; a route the kernel refuses because its
/// link is not ready becomes a warning naming its gateway.
fn send_all(
    sock: &Socket,
    ops: &[Op],
    report: &mut ApplyReport,
    installed: &mut Vec<RouteKey>,
) -> Result<(), Error> {
    for op in ops {
        match (send(sock, op, "")?, op) {
            (Sent::Done, Op::DeleteRule(_)) => report.rules_deleted += 1,
            (Sent::Done, Op::AddRule(_)) => report.rules_added += 1,
            (Sent::Done, Op::ReplaceRoute { route, oif }) => {
                report.routes_replaced += 1;
                installed.push(RouteKey::of(route, *oif));
            }
            (Sent::Done, Op::DeleteRoute(_)) => report.routes_deleted += 1,
            (Sent::Done, Op::RestoreRule(_) | Op::RestoreRoute(_)) => {}
            (Sent::LinkNotReady(message), op) => {
                log::warn!("{}: {message}", op.describe());
                if let Op::ReplaceRoute { route, .. } = op {
                    report.warnings.push(Warning {
                        gateway: route.gateway.clone(),
                        interface: route.interface.clone(),
                        reason: SkipReason::Refused(message),
                        routes: vec![route.clone()],
                    });
                }
            }
        }
    }
    Ok(())
}

/// What the kernel made of an op that did not fail.
enum Sent {
    Done,
    /// A route refused because its link is not ready, with the kernel's explanation.
    LinkNotReady(String),
}

/// Sends one op (`context` goes before its description in errors). A delete of something
/// gone already succeeded.
fn send(sock: &Socket, op: &Op, context: &str) -> Result<Sent, Error> {
    let (msg, flags) = op.request();
    match sock.request(msg, flags, &format!("{context}{}", op.describe())) {
        Ok(()) => Ok(Sent::Done),
        Err(Error::Refused { errno, .. })
            if op.deletes() && (errno == ESRCH || errno == ENOENT) =>
        {
            Ok(Sent::Done)
        }
        Err(Error::Refused { errno, message, .. }) if op.adds_route() && link_not_ready(errno) => {
            Ok(Sent::LinkNotReady(message))
        }
        Err(e) => Err(e),
    }
}

/// Puts the owned rules and routes back to a snapshot from [`read_owned`]: deletes owned
/// entries the snapshot does not have and re-adds the ones it has that are gone. Foreign rules
/// and routes are not touched. A snapshot route whose interface has gone or lost its next hop
/// in between cannot come back (the kernel refuses it): it is skipped and returned as a
/// warning, as [`apply`] skips the routes of a link that is not ready, so that putting the
/// routing back never depends on an uplink being up.
pub fn restore(sock: &Socket, snapshot: &OwnedState) -> Result<Vec<String>, Error> {
    let mut skipped = Vec::new();
    for op in restore_ops(snapshot, &read_owned(sock)?) {
        if let Sent::LinkNotReady(message) = send(sock, &op, "restoring: ")? {
            skipped.push(format!(
                "restoring: {} skipped: {message} (the link is gone or not ready; the next \
                 apply or watch puts its routes in when it is back)",
                op.describe()
            ));
        }
    }
    Ok(skipped)
}

/// How the owned rules and routes differ from the plan, one line each; empty when they are
/// the same. Routes of links that are missing or down are not expected (apply skips them).
pub fn differences(sock: &Socket, plan: &RoutingPlan, links: &Links) -> Result<Vec<String>, Error> {
    Ok(compare(plan, links, &read_owned(sock)?))
}

/// Whether the owned rules and routes read before (`owned`) are exactly the plan, so that
/// [`install`] and [`apply`] would send nothing.
pub fn in_force(plan: &RoutingPlan, links: &Links, owned: &OwnedState) -> bool {
    compare(plan, links, owned).is_empty()
}

/// Deletes every owned rule and route (twice is fine). Returns how many rules and routes.
pub fn flush(sock: &Socket) -> Result<(usize, usize), Error> {
    let now = read_owned(sock)?;
    for op in flush_ops(&now) {
        send(sock, &op, "")?;
    }
    Ok(now.len())
}

/// Errors of a route whose link is not ready yet: its next hop is not reachable on it
/// (ENETUNREACH for IPv4, EHOSTUNREACH for IPv6: "Nexthop has invalid gateway"), or the link
/// went away or down since it was listed. A warning, not a failure.
fn link_not_ready(errno: i32) -> bool {
    matches!(errno, ENODEV | ENETDOWN | ENETUNREACH | EHOSTUNREACH)
}

fn dump_rules(sock: &Socket) -> Result<Vec<RuleMessage>, Error> {
    let mut out = Vec::new();
    for family in IpFamily::ALL {
        let mut req = RuleMessage::default();
        req.header.family = address_family(family);
        for msg in sock.dump(
            RouteNetlinkMessage::GetRule(req),
            &format!("listing the {family} rules"),
        )? {
            if let RouteNetlinkMessage::NewRule(r) = msg {
                out.push(r);
            }
        }
    }
    Ok(out)
}

fn dump_routes(sock: &Socket) -> Result<Vec<RouteMessage>, Error> {
    let mut out = Vec::new();
    for family in IpFamily::ALL {
        let mut req = RouteMessage::default();
        req.header.address_family = address_family(family);
        for msg in sock.dump(
            RouteNetlinkMessage::GetRoute(req),
            &format!("listing the {family} routes"),
        )? {
            if let RouteNetlinkMessage::NewRoute(r) = msg {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// The route the kernel picks now for a packet to `dst` with this mark (`ip route get DST
/// mark MARK`): its output interface and next hop, after the ip rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub dev: Option<String>,
    pub via: Option<IpAddr>,
    pub table: Option<u32>,
}

pub fn lookup(sock: &Socket, dst: IpAddr, mark: u32) -> Result<Lookup, Error> {
    use netlink_packet_route::route::{RouteAddress, RouteAttribute};
    use netlink_packet_route::AddressFamily;
    let mut msg = RouteMessage::default();
    msg.header.address_family = match dst {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    if mark != 0 {
        msg.attributes.push(RouteAttribute::Mark(mark));
    }
    let op = format!("looking up the route to {dst}");
    let answer = sock.get(RouteNetlinkMessage::GetRoute(msg), &op)?;
    let RouteNetlinkMessage::NewRoute(route) = answer else {
        return Ok(Lookup {
            dev: None,
            via: None,
            table: None,
        });
    };
    let links = Links::read(sock)?;
    let mut out = Lookup {
        dev: None,
        via: None,
        table: Some(u32::from(route.header.table)),
    };
    for a in &route.attributes {
        match a {
            RouteAttribute::Oif(i) => out.dev = links.name_of(*i).map(str::to_string),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => out.via = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => out.via = Some(IpAddr::V6(*a)),
            RouteAttribute::Table(t) => out.table = Some(*t),
            _ => {}
        }
    }
    Ok(out)
}
