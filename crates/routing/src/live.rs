//! The effects part: reading, applying, restoring and flushing the owned rules and routes over
//! rtnetlink.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{Emitable, Parseable, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleHeader, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Error;
use crate::links::{Link, Links};
use crate::nl::Socket;
use crate::plan::{IpFamily, NextHop, Route, RoutingPlan, Rule, RuleSelector, SkipReason, Warning};
use crate::{MAIN_TABLE, OWNED_PRIORITIES, ROUTE_PROTOCOL};

const ESRCH: i32 = 3;
const ENOENT: i32 = 2;
const ENODEV: i32 = 19;
const ENETDOWN: i32 = 100;
const ENETUNREACH: i32 = 101;
const EHOSTUNREACH: i32 = 113;

/// The kernel's table number field of a header: tables above 255 only fit the attribute.
const RT_TABLE_COMPAT: u8 = 252;
/// The metric the kernel gives an IPv6 route added without one (`IP6_RT_PRIO_USER`).
const IPV6_DEFAULT_METRIC: u32 = 1024;

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

/// The owned rules and routes as the kernel held them when read: the snapshot that
/// [`restore`] puts back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedState {
    rules: Vec<RuleMessage>,
    routes: Vec<RouteMessage>,
}

impl OwnedState {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.routes.is_empty()
    }

    /// How many rules and routes.
    pub fn len(&self) -> (usize, usize) {
        (self.rules.len(), self.routes.len())
    }

    /// The snapshot as rtnetlink messages (rules, routes), for a journal that must outlive
    /// the process that took it.
    pub fn to_wire(&self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        fn emit(m: &impl Emitable) -> Vec<u8> {
            let mut buf = vec![0; m.buffer_len()];
            m.emit(&mut buf);
            buf
        }
        (
            self.rules.iter().map(emit).collect(),
            self.routes.iter().map(emit).collect(),
        )
    }

    /// The snapshot back from [`OwnedState::to_wire`]'s messages.
    pub fn from_wire(rules: &[Vec<u8>], routes: &[Vec<u8>]) -> Result<OwnedState, String> {
        let rules = rules
            .iter()
            .map(|b| RuleMessage::parse(b.as_slice()).map_err(|e| format!("a rule: {e}")))
            .collect::<Result<_, _>>()?;
        let routes = routes
            .iter()
            .map(|b| RouteMessage::parse(b.as_slice()).map_err(|e| format!("a route: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(OwnedState { rules, routes })
    }

    /// One line per rule and route, rules first (for messages and logs).
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.rules.iter().map(describe_rule).collect();
        out.extend(self.routes.iter().map(describe_route));
        out
    }
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

/// Reads the owned rules (priority in [`OWNED_PRIORITIES`]) and routes (protocol
/// [`ROUTE_PROTOCOL`]) of both families.
pub fn read_owned(sock: &Socket) -> Result<OwnedState, Error> {
    Ok(owned_of(dump_rules(sock)?, &dump_routes(sock)?))
}

fn owned_of(rules: Vec<RuleMessage>, routes: &[RouteMessage]) -> OwnedState {
    OwnedState {
        rules: rules
            .into_iter()
            .filter(|r| OWNED_PRIORITIES.contains(&rule_priority(r)))
            .collect(),
        routes: routes
            .iter()
            .filter(|r| u8::from(r.header.protocol) == ROUTE_PROTOCOL)
            .cloned()
            .collect(),
    }
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

/// Whether owned rules and routes the plan does not have are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stale {
    Delete,
    Keep,
}

fn apply_as(
    sock: &Socket,
    plan: &RoutingPlan,
    links: &Links,
    stale: Stale,
) -> Result<ApplyReport, Error> {
    let all_routes = dump_routes(sock)?;
    let before = owned_of(dump_rules(sock)?, &all_routes);
    let mut report = ApplyReport::default();
    match apply_inner(sock, plan, links, &before, &all_routes, stale, &mut report) {
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

fn apply_inner(
    sock: &Socket,
    plan: &RoutingPlan,
    links: &Links,
    before: &OwnedState,
    all_routes: &[RouteMessage],
    stale_ones: Stale,
    report: &mut ApplyReport,
) -> Result<(), Error> {
    // Routes that can be installed now; the others become warnings.
    report.warnings = plan.skipped(links);
    let mut routes: Vec<(&Route, u32)> = plan
        .routes
        .iter()
        .filter_map(|r| {
            links
                .get(&r.interface)
                .filter(|l| l.up)
                .map(|l| (r, l.index))
        })
        .collect();

    // Never replace a default route someone else put in a gateway's table.
    for (route, _) in &routes {
        if let Some(foreign) = all_routes.iter().find(|m| {
            u8::from(m.header.protocol) != ROUTE_PROTOCOL && same_slot(m, route.family, route.table)
        }) {
            return Err(Error::ForeignDefault {
                gateway: route.gateway.clone(),
                family: route.family,
                table: route.table,
                route: describe_route(foreign),
            });
        }
    }

    // Rules: delete owned rules the plan does not have (or has once fewer), then add the
    // missing ones. Rules cannot be replaced in place.
    let mut wanted: Vec<RuleKey> = plan.rules.iter().map(RuleKey::of).collect();
    let mut stale = Vec::new();
    for msg in &before.rules {
        match RuleKey::parse(msg).and_then(|k| wanted.iter().position(|w| *w == k)) {
            Some(i) => {
                wanted.swap_remove(i);
            }
            None => stale.push(msg),
        }
    }
    if stale_ones == Stale::Keep {
        stale.clear();
    }
    for msg in stale {
        let op = format!("deleting {}", describe_rule(msg));
        ignore_gone(sock.request(RouteNetlinkMessage::DelRule(msg.clone()), 0, &op))?;
        report.rules_deleted += 1;
    }
    for rule in plan
        .rules
        .iter()
        .filter(|r| wanted.contains(&RuleKey::of(r)))
    {
        let op = format!("adding {rule}");
        sock.request(
            RouteNetlinkMessage::NewRule(rule_message(rule)),
            NLM_F_CREATE,
            &op,
        )?;
        report.rules_added += 1;
    }

    // Routes: replace each one that differs (atomic for traffic), then delete owned extras.
    let mut installed: Vec<RouteKey> = Vec::new();
    routes.retain(|(route, oif)| {
        let key = RouteKey::of(route, *oif);
        let present = before
            .routes
            .iter()
            .any(|m| RouteKey::parse(m).as_ref() == Some(&key));
        if present {
            installed.push(key);
        }
        !present
    });
    for (route, oif) in routes {
        let op = format!("replacing {route}");
        match sock.request(
            RouteNetlinkMessage::NewRoute(route_message(route, oif)),
            NLM_F_CREATE | NLM_F_REPLACE,
            &op,
        ) {
            Ok(()) => {
                report.routes_replaced += 1;
                installed.push(RouteKey::of(route, oif));
            }
            Err(Error::Refused { errno, message, .. }) if link_not_ready(errno) => {
                log::warn!("{op}: {message}");
                report.warnings.push(Warning {
                    gateway: route.gateway.clone(),
                    interface: route.interface.clone(),
                    reason: SkipReason::Refused(message),
                    routes: vec![route.clone()],
                });
            }
            Err(e) => return Err(e),
        }
    }
    if stale_ones == Stale::Keep {
        // The plan's rules must be in; what was kept goes with the apply after the commit.
        let after = read_owned(sock)?;
        let have: Vec<RuleKey> = after.rules.iter().filter_map(RuleKey::parse).collect();
        return match plan
            .rules
            .iter()
            .map(RuleKey::of)
            .find(|k| !have.contains(k))
        {
            Some(missing) => Err(Error::NotConverged {
                detail: format!("rule {missing:?} missing: {}", after.lines().join("; ")),
            }),
            None => Ok(()),
        };
    }
    for msg in dump_routes(sock)?
        .iter()
        .filter(|m| u8::from(m.header.protocol) == ROUTE_PROTOCOL)
    {
        if RouteKey::parse(msg).is_some_and(|k| installed.contains(&k)) {
            continue;
        }
        let op = format!("deleting {}", describe_route(msg));
        ignore_gone(sock.request(RouteNetlinkMessage::DelRoute(route_delete(msg)), 0, &op))?;
        report.routes_deleted += 1;
    }

    // The kernel now holds exactly the plan, or someone else is changing it too.
    let after = read_owned(sock)?;
    let mut wanted: Vec<RuleKey> = plan.rules.iter().map(RuleKey::of).collect();
    let mut have: Vec<Option<RuleKey>> = after.rules.iter().map(RuleKey::parse).collect();
    wanted.sort();
    have.sort();
    if have.iter().cloned().collect::<Option<Vec<_>>>() != Some(wanted) {
        return Err(Error::NotConverged {
            detail: format!("rules: {}", after.lines().join("; ")),
        });
    }
    let mut have: Vec<Option<RouteKey>> = after.routes.iter().map(RouteKey::parse).collect();
    have.sort();
    installed.sort();
    if have.iter().cloned().collect::<Option<Vec<_>>>() != Some(installed) {
        return Err(Error::NotConverged {
            detail: format!("routes: {}", after.lines().join("; ")),
        });
    }
    Ok(())
}

/// Puts the owned rules and routes back to a snapshot from [`read_owned`]: deletes owned
/// entries the snapshot does not have and re-adds the ones it has that are gone. Foreign rules
/// and routes are not touched. A snapshot route whose interface has gone or lost its next hop
/// in between cannot come back (the kernel refuses it): it is skipped and returned as a
/// warning, as [`apply`] skips the routes of a link that is not ready, so that putting the
/// routing back never depends on an uplink being up.
pub fn restore(sock: &Socket, snapshot: &OwnedState) -> Result<Vec<String>, Error> {
    let now = read_owned(sock)?;
    let mut keep: Vec<String> = snapshot.rules.iter().map(rule_identity).collect();
    for msg in &now.rules {
        let id = rule_identity(msg);
        match keep.iter().position(|k| *k == id) {
            Some(i) => {
                keep.swap_remove(i);
            }
            None => {
                let op = format!("restoring: deleting {}", describe_rule(msg));
                ignore_gone(sock.request(RouteNetlinkMessage::DelRule(msg.clone()), 0, &op))?;
            }
        }
    }
    for msg in snapshot
        .rules
        .iter()
        .filter(|m| keep.contains(&rule_identity(m)))
    {
        let op = format!("restoring: adding {}", describe_rule(msg));
        sock.request(
            RouteNetlinkMessage::NewRule(rule_readd(msg)),
            NLM_F_CREATE,
            &op,
        )?;
    }

    let mut skipped = Vec::new();
    let mut keep: Vec<String> = snapshot.routes.iter().map(route_identity).collect();
    for msg in &now.routes {
        let id = route_identity(msg);
        match keep.iter().position(|k| *k == id) {
            Some(i) => {
                keep.swap_remove(i);
            }
            None => {
                let op = format!("restoring: deleting {}", describe_route(msg));
                ignore_gone(sock.request(
                    RouteNetlinkMessage::DelRoute(route_delete(msg)),
                    0,
                    &op,
                ))?;
            }
        }
    }
    for msg in snapshot
        .routes
        .iter()
        .filter(|m| keep.contains(&route_identity(m)))
    {
        let op = format!("restoring: adding {}", describe_route(msg));
        match sock.request(
            RouteNetlinkMessage::NewRoute(route_readd(msg)),
            NLM_F_CREATE | NLM_F_EXCL,
            &op,
        ) {
            Ok(()) => {}
            Err(Error::Refused { errno, message, .. }) if link_not_ready(errno) => {
                skipped.push(format!(
                    "{op} skipped: {message} (the link is gone or not ready; the next apply \
                     or watch puts its routes in when it is back)"
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(skipped)
}

/// How the owned rules and routes differ from the plan, one line each; empty when they are
/// the same. Routes of links that are missing or down are not expected (apply skips them).
pub fn differences(sock: &Socket, plan: &RoutingPlan, links: &Links) -> Result<Vec<String>, Error> {
    Ok(compare(plan, links, &read_owned(sock)?))
}

fn compare(plan: &RoutingPlan, links: &Links, owned: &OwnedState) -> Vec<String> {
    let mut out = Vec::new();
    let mut have: Vec<Option<RuleKey>> = owned.rules.iter().map(RuleKey::parse).collect();
    for rule in &plan.rules {
        let key = Some(RuleKey::of(rule));
        match have.iter().position(|h| *h == key) {
            Some(i) => {
                have.swap_remove(i);
            }
            None => out.push(format!("ip rule missing: {rule}")),
        }
    }
    for msg in owned.rules.iter() {
        let key = RuleKey::parse(msg);
        if let Some(i) = have.iter().position(|h| *h == key) {
            have.swap_remove(i);
            out.push(format!("ip rule not in the spec: {}", describe_rule(msg)));
        }
    }
    let mut have: Vec<Option<RouteKey>> = owned.routes.iter().map(RouteKey::parse).collect();
    for route in &plan.routes {
        let Some(link) = links.get(&route.interface).filter(|l| l.up) else {
            continue;
        };
        let key = Some(RouteKey::of(route, link.index));
        match have.iter().position(|h| *h == key) {
            Some(i) => {
                have.swap_remove(i);
            }
            None => out.push(format!("route missing: {route}")),
        }
    }
    for msg in owned.routes.iter() {
        let key = RouteKey::parse(msg);
        if let Some(i) = have.iter().position(|h| *h == key) {
            have.swap_remove(i);
            out.push(format!("route not in the spec: {}", describe_route(msg)));
        }
    }
    out
}

/// Deletes every owned rule and route (twice is fine). Returns how many rules and routes.
pub fn flush(sock: &Socket) -> Result<(usize, usize), Error> {
    let now = read_owned(sock)?;
    for msg in &now.rules {
        let op = format!("deleting {}", describe_rule(msg));
        ignore_gone(sock.request(RouteNetlinkMessage::DelRule(msg.clone()), 0, &op))?;
    }
    for msg in &now.routes {
        let op = format!("deleting {}", describe_route(msg));
        ignore_gone(sock.request(RouteNetlinkMessage::DelRoute(route_delete(msg)), 0, &op))?;
    }
    Ok(now.len())
}

/// Errors of a route whose link is not ready yet: its next hop is not reachable on it
/// (ENETUNREACH for IPv4, EHOSTUNREACH for IPv6: "Nexthop has invalid gateway"), or the link
/// went away or down since it was listed. A warning, not a failure.
fn link_not_ready(errno: i32) -> bool {
    matches!(errno, ENODEV | ENETDOWN | ENETUNREACH | EHOSTUNREACH)
}

/// A delete of something that is gone already succeeded.
fn ignore_gone(r: Result<(), Error>) -> Result<(), Error> {
    match r {
        Err(Error::Refused { errno, .. }) if errno == ESRCH || errno == ENOENT => Ok(()),
        r => r,
    }
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

fn address_family(family: IpFamily) -> AddressFamily {
    match family {
        IpFamily::V4 => AddressFamily::Inet,
        IpFamily::V6 => AddressFamily::Inet6,
    }
}

fn ip_family(family: AddressFamily) -> Option<IpFamily> {
    match family {
        AddressFamily::Inet => Some(IpFamily::V4),
        AddressFamily::Inet6 => Some(IpFamily::V6),
        _ => None,
    }
}

fn header_table(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(RT_TABLE_COMPAT)
}

fn default_metric(family: IpFamily) -> u32 {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => IPV6_DEFAULT_METRIC,
    }
}

// ---- rules ----

/// What identifies an owned rule: everything the kernel holds of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RuleKey {
    family: IpFamily,
    priority: u32,
    selector: RuleSelector,
    table: u32,
    protocol: u8,
}

impl RuleKey {
    fn of(rule: &Rule) -> RuleKey {
        RuleKey {
            family: rule.family,
            priority: rule.priority,
            selector: rule.selector,
            table: rule.table,
            protocol: ROUTE_PROTOCOL,
        }
    }

    /// The key of a rule as dumped, `None` when it has anything a planned rule never has.
    fn parse(msg: &RuleMessage) -> Option<RuleKey> {
        let h = &msg.header;
        let family = ip_family(h.family)?;
        if h.action != RuleAction::ToTable || !h.flags.is_empty() || h.tos != 0 || h.dst_len != 0 {
            return None;
        }
        let (mut priority, mut table, mut protocol) = (0, u32::from(h.table), 0);
        let (mut mark, mut mask, mut source, mut suppress) = (None, None, None, None);
        for a in &msg.attributes {
            match a {
                RuleAttribute::Priority(p) => priority = *p,
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::Protocol(p) => protocol = u8::from(*p),
                RuleAttribute::FwMark(m) => mark = Some(*m),
                RuleAttribute::FwMask(m) => mask = Some(*m),
                RuleAttribute::Source(s) => source = Some(*s),
                // Newer kernels always report it; u32::MAX (-1) means "not set".
                RuleAttribute::SuppressPrefixLen(u32::MAX) => {}
                RuleAttribute::SuppressPrefixLen(l) => suppress = Some(*l),
                _ => return None,
            }
        }
        let selector = match (mark, source, suppress) {
            (None, None, Some(0)) if table == MAIN_TABLE && h.src_len == 0 => {
                RuleSelector::SuppressDefault
            }
            (Some(mark), None, None) if h.src_len == 0 => RuleSelector::FwMark {
                mark,
                mask: mask.unwrap_or(u32::MAX),
            },
            (None, Some(addr), None)
                if IpFamily::of(&addr) == family && h.src_len == family.host_len() =>
            {
                RuleSelector::From(addr)
            }
            _ => return None,
        };
        Some(RuleKey {
            family,
            priority,
            selector,
            table,
            protocol,
        })
    }
}

fn rule_priority(msg: &RuleMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

fn rule_message(rule: &Rule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header = RuleHeader {
        family: address_family(rule.family),
        table: header_table(rule.table),
        action: RuleAction::ToTable,
        ..RuleHeader::default()
    };
    msg.attributes = vec![
        RuleAttribute::Priority(rule.priority),
        RuleAttribute::Table(rule.table),
        RuleAttribute::Protocol(RouteProtocol::from(ROUTE_PROTOCOL)),
    ];
    match rule.selector {
        RuleSelector::SuppressDefault => {
            msg.attributes.push(RuleAttribute::SuppressPrefixLen(0));
        }
        RuleSelector::FwMark { mark, mask } => {
            msg.attributes.push(RuleAttribute::FwMark(mark));
            msg.attributes.push(RuleAttribute::FwMask(mask));
        }
        RuleSelector::From(addr) => {
            msg.header.src_len = rule.family.host_len();
            msg.attributes.push(RuleAttribute::Source(addr));
        }
    }
    msg
}

/// A dumped rule as a request to add it again.
fn rule_readd(msg: &RuleMessage) -> RuleMessage {
    msg.clone()
}

/// A rule's identity for restore: the whole message, attributes in a canonical order.
fn rule_identity(msg: &RuleMessage) -> String {
    let mut attrs: Vec<String> = msg.attributes.iter().map(|a| format!("{a:?}")).collect();
    attrs.sort();
    format!("{:?} {attrs:?}", msg.header)
}

fn describe_rule(msg: &RuleMessage) -> String {
    match RuleKey::parse(msg) {
        Some(k) => Rule {
            family: k.family,
            priority: k.priority,
            selector: k.selector,
            table: k.table,
            gateway: None,
        }
        .to_string(),
        None => format!(
            "rule priority {} (unrecognised: {:?})",
            rule_priority(msg),
            msg
        ),
    }
}

// ---- routes ----

/// What identifies an owned route as apply installs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RouteKey {
    family: IpFamily,
    table: u32,
    next_hop: NextHop,
    oif: u32,
    protocol: u8,
}

impl RouteKey {
    fn of(route: &Route, oif: u32) -> RouteKey {
        RouteKey {
            family: route.family,
            table: route.table,
            next_hop: route.next_hop,
            oif,
            protocol: route.protocol,
        }
    }

    /// The key of a dumped route, `None` when it is not a plain default route of the kind
    /// apply installs.
    fn parse(msg: &RouteMessage) -> Option<RouteKey> {
        let h = &msg.header;
        let family = ip_family(h.address_family)?;
        if h.destination_prefix_length != 0
            || h.source_prefix_length != 0
            || h.tos != 0
            || h.kind != RouteType::Unicast
        {
            return None;
        }
        let (mut table, mut oif, mut gateway) = (u32::from(h.table), None, None);
        let mut metric = 0;
        for a in &msg.attributes {
            match a {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(g) => gateway = Some(route_ip(g)?),
                RouteAttribute::Priority(p) => metric = *p,
                RouteAttribute::Destination(d) if route_ip(d)?.is_unspecified() => {}
                RouteAttribute::CacheInfo(_)
                | RouteAttribute::Preference(_)
                | RouteAttribute::Metrics(_)
                | RouteAttribute::Expires(_) => {}
                _ => return None,
            }
        }
        if metric != default_metric(family) {
            return None;
        }
        let next_hop = match gateway {
            Some(g) if IpFamily::of(&g) == family => NextHop::Via(g),
            Some(_) => return None,
            None => NextHop::Direct,
        };
        // IPv6 keeps no scope; an IPv4 route's scope follows from its next hop.
        let scope = match next_hop {
            NextHop::Via(_) => RouteScope::Universe,
            NextHop::Direct => RouteScope::Link,
        };
        if family == IpFamily::V4 && h.scope != scope {
            return None;
        }
        Some(RouteKey {
            family,
            table,
            next_hop,
            oif: oif?,
            protocol: u8::from(h.protocol),
        })
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

fn route_metric(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

/// Whether a dumped route occupies the slot (family, table, default destination, default
/// metric) that replacing a gateway's default route would take over.
fn same_slot(msg: &RouteMessage, family: IpFamily, table: u32) -> bool {
    ip_family(msg.header.address_family) == Some(family)
        && msg.header.destination_prefix_length == 0
        && msg.header.tos == 0
        && route_table(msg) == table
        && route_metric(msg) == default_metric(family)
}

fn route_message(route: &Route, oif: u32) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header = RouteHeader {
        address_family: address_family(route.family),
        table: header_table(route.table),
        protocol: RouteProtocol::from(route.protocol),
        // What `ip route` sends: a route without a gateway is on the link.
        scope: match route.next_hop {
            NextHop::Via(_) => RouteScope::Universe,
            NextHop::Direct => RouteScope::Link,
        },
        kind: RouteType::Unicast,
        ..RouteHeader::default()
    };
    msg.attributes = vec![RouteAttribute::Table(route.table), RouteAttribute::Oif(oif)];
    if let NextHop::Via(addr) = route.next_hop {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(addr)));
    }
    msg
}

/// A request that deletes exactly this dumped route.
fn route_delete(msg: &RouteMessage) -> RouteMessage {
    let mut del = RouteMessage::default();
    del.header = msg.header.clone();
    del.header.scope = RouteScope::NoWhere;
    del.header.flags = RouteFlags::empty();
    del.attributes = msg
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a,
                RouteAttribute::Table(_)
                    | RouteAttribute::Destination(_)
                    | RouteAttribute::Source(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::Via(_)
                    | RouteAttribute::MultiPath(_)
            )
        })
        .cloned()
        .collect();
    del
}

/// A dumped route as a request to add it again: without what only the kernel reports.
fn route_readd(msg: &RouteMessage) -> RouteMessage {
    let mut add = RouteMessage::default();
    add.header = msg.header.clone();
    add.header.flags &= RouteFlags::Onlink;
    add.attributes = msg
        .attributes
        .iter()
        .filter(|a| {
            !matches!(
                a,
                RouteAttribute::CacheInfo(_)
                    | RouteAttribute::Expires(_)
                    | RouteAttribute::MulticastExpires(_)
            )
        })
        .cloned()
        .collect();
    add
}

/// A route's identity for restore: header (without the kernel's status flags) and the
/// attributes that define it, in a canonical order.
fn route_identity(msg: &RouteMessage) -> String {
    let add = route_readd(msg);
    let mut attrs: Vec<String> = add.attributes.iter().map(|a| format!("{a:?}")).collect();
    attrs.sort();
    format!("{:?} {attrs:?}", add.header)
}

fn describe_route(msg: &RouteMessage) -> String {
    let family = ip_family(msg.header.address_family).map_or("?", IpFamily::name);
    let mut s = format!("{family} route");
    if msg.header.destination_prefix_length == 0 {
        s.push_str(" default");
    }
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                if let Some(ip) = route_ip(d) {
                    s.push_str(&format!(" {ip}/{}", msg.header.destination_prefix_length));
                }
            }
            RouteAttribute::Gateway(g) => {
                if let Some(ip) = route_ip(g) {
                    s.push_str(&format!(" via {ip}"));
                }
            }
            RouteAttribute::Oif(i) => s.push_str(&format!(" oif {i}")),
            RouteAttribute::Priority(p) => s.push_str(&format!(" metric {p}")),
            _ => {}
        }
    }
    s.push_str(&format!(
        " table {} proto {}",
        route_table(msg),
        u8::from(msg.header.protocol)
    ));
    s
}

impl fmt::Display for OwnedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.lines() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftbalance_spec::Spec;

    fn seed_plan() -> RoutingPlan {
        crate::plan(
            &Spec::from_json(
                r#"{ "mark_mask": "0xff00", "gateways": [
                  { "name": "isp1", "interface": "ppp0", "mark": "0x100", "route_table": 101,
                    "address": "100.0.1.1", "via": "100.0.1.254",
                    "address6": "2001:db8::1", "via6": "fe80::1" },
                  { "name": "isp2", "interface": "ppp1", "mark": "0x200", "route_table": 1000 } ] }"#,
            )
            .unwrap(),
        )
    }

    #[test]
    fn rule_messages_parse_back_to_their_keys() {
        for rule in &seed_plan().rules {
            let msg = rule_message(rule);
            assert_eq!(RuleKey::parse(&msg), Some(RuleKey::of(rule)), "{rule}");
        }
    }

    #[test]
    fn route_messages_parse_back_to_their_keys() {
        for route in &seed_plan().routes {
            let mut msg = route_message(route, 7);
            if route.family == IpFamily::V6 {
                // What the kernel adds to an IPv6 route.
                msg.attributes
                    .push(RouteAttribute::Priority(IPV6_DEFAULT_METRIC));
            }
            assert_eq!(
                RouteKey::parse(&msg),
                Some(RouteKey::of(route, 7)),
                "{route}"
            );
        }
    }

    #[test]
    fn tables_above_255_use_the_compat_header_value() {
        let plan = seed_plan();
        let route = plan.routes.iter().find(|r| r.table == 1000).unwrap();
        let msg = route_message(route, 3);
        assert_eq!(msg.header.table, RT_TABLE_COMPAT);
        assert!(msg.attributes.contains(&RouteAttribute::Table(1000)));
    }

    #[test]
    fn foreign_shapes_are_not_owned_keys() {
        let rule = &seed_plan().rules[1];
        let mut msg = rule_message(rule);
        msg.attributes.push(RuleAttribute::Iifname("eth0".into()));
        assert_eq!(RuleKey::parse(&msg), None);
        let route = &seed_plan().routes[0];
        let mut msg = route_message(route, 3);
        msg.attributes.push(RouteAttribute::Priority(50));
        assert_eq!(RouteKey::parse(&msg), None, "another metric");
    }

    /// Issue 22.9: diff compares routing too.
    #[test]
    fn routing_differences_name_missing_and_extra_entries() {
        let plan = seed_plan();
        let mut links = Links::default();
        links.insert("ppp0", crate::Link { index: 7, up: true });
        let v4 = |r: &&Route| r.family == IpFamily::V4;
        let route = |r: &Route| {
            let mut m = route_message(r, 7);
            if r.family == IpFamily::V6 {
                m.attributes
                    .push(RouteAttribute::Priority(IPV6_DEFAULT_METRIC));
            }
            m
        };
        let exact = OwnedState {
            rules: plan.rules.iter().map(rule_message).collect(),
            routes: plan
                .routes
                .iter()
                .filter(|r| r.interface == "ppp0")
                .map(route)
                .collect(),
        };
        assert_eq!(compare(&plan, &links, &exact), Vec::<String>::new());

        let mut changed = exact.clone();
        changed.rules.remove(1);
        changed.rules.push(rule_message(&plan.rules[0]));
        changed
            .routes
            .retain(|m| m.header.address_family != AddressFamily::Inet);
        let d = compare(&plan, &links, &changed);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("ip rule missing: "), "{d:?}");
        assert!(d[1].starts_with("ip rule not in the spec: "), "{d:?}");
        let missing = plan.routes.iter().find(v4).unwrap();
        assert_eq!(d[2], format!("route missing: {missing}"));
    }
}
