//! Rules and routes as rtnetlink messages and back: the requests apply sends, the typed keys
//! and identities of dumped messages, and the owned snapshot. Pure: it builds and reads
//! messages, it never sends or receives them.

use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{Emitable, Parseable};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleHeader, RuleMessage};
use netlink_packet_route::AddressFamily;

use crate::plan::{IpFamily, NextHop, Route, Rule, RuleSelector};
use crate::{MAIN_TABLE, OWNED_PRIORITIES, ROUTE_PROTOCOL};

/// The kernel's table number field of a header: tables above 255 only fit the attribute.
const RT_TABLE_COMPAT: u8 = 252;
/// The metric the kernel gives an IPv6 route added without one (`IP6_RT_PRIO_USER`).
pub(crate) const IPV6_DEFAULT_METRIC: u32 = 1024;

/// The owned rules and routes as the kernel held them when read: the snapshot that
/// [`crate::restore`] puts back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedState {
    pub(crate) rules: Vec<RuleMessage>,
    pub(crate) routes: Vec<RouteMessage>,
}

impl OwnedState {
    /// The owned part of a dump: rules with a priority in [`OWNED_PRIORITIES`], routes with
    /// protocol [`ROUTE_PROTOCOL`].
    pub(crate) fn of(rules: Vec<RuleMessage>, routes: &[RouteMessage]) -> OwnedState {
        OwnedState {
            rules: rules
                .into_iter()
                .filter(|r| OWNED_PRIORITIES.contains(&rule_priority(r)))
                .collect(),
            routes: routes
                .iter()
                .filter(|r| is_owned_route(r))
                .cloned()
                .collect(),
        }
    }

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

/// Whether a dumped route is nftbalance's (protocol [`ROUTE_PROTOCOL`]).
pub(crate) fn is_owned_route(msg: &RouteMessage) -> bool {
    u8::from(msg.header.protocol) == ROUTE_PROTOCOL
}

/// Whether two lists hold the same elements the same number of times, in any order.
fn same_multiset<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    let mut unmatched: Vec<&T> = b.iter().collect();
    a.len() == b.len()
        && a.iter()
            .all(|x| match unmatched.iter().position(|y| *y == x) {
                Some(i) => {
                    unmatched.swap_remove(i);
                    true
                }
                None => false,
            })
}

/// A dumped rule's identity for restore: the whole message, attributes in any order.
#[derive(Debug, Clone)]
pub(crate) struct RuleId<'a>(pub(crate) &'a RuleMessage);

impl PartialEq for RuleId<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.header == other.0.header && same_multiset(&self.0.attributes, &other.0.attributes)
    }
}

impl Eq for RuleId<'_> {}

/// A dumped route's identity for restore: the request that adds it again (header without the
/// kernel's status flags, attributes without what only the kernel reports), attributes in any
/// order.
#[derive(Debug, Clone)]
pub(crate) struct RouteId(RouteMessage);

impl RouteId {
    pub(crate) fn of(msg: &RouteMessage) -> RouteId {
        RouteId(route_readd(msg))
    }
}

impl PartialEq for RouteId {
    fn eq(&self, other: &Self) -> bool {
        self.0.header == other.0.header && same_multiset(&self.0.attributes, &other.0.attributes)
    }
}

impl Eq for RouteId {}

pub(crate) fn address_family(family: IpFamily) -> AddressFamily {
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
pub(crate) struct RuleKey {
    family: IpFamily,
    priority: u32,
    selector: RuleSelector,
    table: u32,
    protocol: u8,
}

impl RuleKey {
    pub(crate) fn of(rule: &Rule) -> RuleKey {
        RuleKey {
            family: rule.family,
            priority: rule.priority,
            selector: rule.selector,
            table: rule.table,
            protocol: ROUTE_PROTOCOL,
        }
    }

    /// The key of a rule as dumped, `None` when it has anything a planned rule never has.
    pub(crate) fn parse(msg: &RuleMessage) -> Option<RuleKey> {
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

pub(crate) fn rule_message(rule: &Rule) -> RuleMessage {
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

pub(crate) fn describe_rule(msg: &RuleMessage) -> String {
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
pub(crate) struct RouteKey {
    family: IpFamily,
    table: u32,
    next_hop: NextHop,
    oif: u32,
    protocol: u8,
}

impl RouteKey {
    pub(crate) fn of(route: &Route, oif: u32) -> RouteKey {
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
    pub(crate) fn parse(msg: &RouteMessage) -> Option<RouteKey> {
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
pub(crate) fn same_slot(msg: &RouteMessage, family: IpFamily, table: u32) -> bool {
    ip_family(msg.header.address_family) == Some(family)
        && msg.header.destination_prefix_length == 0
        && msg.header.tos == 0
        && route_table(msg) == table
        && route_metric(msg) == default_metric(family)
}

pub(crate) fn route_message(route: &Route, oif: u32) -> RouteMessage {
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
pub(crate) fn route_delete(msg: &RouteMessage) -> RouteMessage {
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
pub(crate) fn route_readd(msg: &RouteMessage) -> RouteMessage {
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

pub(crate) fn describe_route(msg: &RouteMessage) -> String {
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
pub(crate) mod tests {
    use super::*;
    use nftbalance_spec::Spec;

    pub(crate) fn seed_plan() -> crate::RoutingPlan {
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

    /// A planned route as the kernel reports it (IPv6 routes get the default metric).
    pub(crate) fn kernel_route(route: &Route, oif: u32) -> RouteMessage {
        let mut msg = route_message(route, oif);
        if route.family == IpFamily::V6 {
            msg.attributes
                .push(RouteAttribute::Priority(IPV6_DEFAULT_METRIC));
        }
        msg
    }

    #[test]
    fn rule_identity_ignores_attribute_order_but_not_content() {
        let rule = rule_message(&seed_plan().rules[1]);
        let mut reordered = rule.clone();
        reordered.attributes.reverse();
        assert_eq!(RuleId(&rule), RuleId(&reordered));
        let mut other = rule.clone();
        other.attributes.push(RuleAttribute::Iifname("eth0".into()));
        assert_ne!(RuleId(&rule), RuleId(&other), "an extra attribute");
        let mut doubled = rule.clone();
        doubled.attributes.push(rule.attributes[0].clone());
        assert_ne!(
            RuleId(&doubled),
            RuleId(&other),
            "same length, another multiset"
        );
        let mut header = rule.clone();
        header.header.tos = 4;
        assert_ne!(RuleId(&rule), RuleId(&header), "another header");
    }

    #[test]
    fn route_identity_ignores_what_only_the_kernel_reports() {
        let route = kernel_route(&seed_plan().routes[0], 7);
        let mut dumped = route.clone();
        dumped.header.flags = RouteFlags::Offload;
        dumped.attributes.insert(0, RouteAttribute::Expires(30));
        assert_eq!(RouteId::of(&route), RouteId::of(&dumped));
        let mut onlink = route.clone();
        onlink.header.flags = RouteFlags::Onlink;
        assert_ne!(
            RouteId::of(&route),
            RouteId::of(&onlink),
            "onlink is asked for"
        );
        let mut other = route.clone();
        other.attributes.push(RouteAttribute::Priority(50));
        assert_ne!(RouteId::of(&route), RouteId::of(&other));
    }

    #[test]
    fn same_multiset_counts_repeats() {
        assert!(same_multiset(&[1, 2, 2], &[2, 1, 2]));
        assert!(!same_multiset(&[1, 2, 2], &[1, 1, 2]));
        assert!(!same_multiset(&[1, 2], &[1, 2, 2]));
    }
}
