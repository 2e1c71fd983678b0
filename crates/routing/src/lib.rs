//! Policy routing for nftbalance: a routing table per uplink and the ip rules that send marked
//! connections (and connections bound to an uplink's address) to it.
//!
//! Marks route nothing by themselves. For every gateway of a spec this crate owns
//!
//! * a **default route** in the gateway's `route_table`: `via` the next hop on its interface,
//!   or, for a point-to-point link without `via`, a dev-only route (`default dev ppp0`); the
//!   same for IPv6 with `via6` (a gateway with only `address6` gets a dev-only IPv6 route);
//! * a **fwmark rule** `fwmark MARK/MASK lookup TABLE` (the mask is the spec's `mark_mask`),
//! * a **from rule** `from ADDRESS lookup TABLE` for `address` and `address6`,
//!
//! and, once per address family, a rule `lookup main suppress_prefixlength 0` ahead of the
//! fwmark rules.
//!
//! # Why `suppress_prefixlength 0` and not copies of the main table
//!
//! Marked packets must still reach local destinations (the LAN, a VPN, the router's own
//! subnets). The seed's script copied the main table's non-default routes into every uplink
//! table; such copies go stale as soon as an address, a VPN route or a DHCP lease changes, and
//! nothing re-copies them. The rule `lookup main suppress_prefixlength 0` consults the live main
//! table but ignores any answer whose prefix length is 0 (its default route), so every specific
//! route the main table has *now* wins, and only what would have left by the main default route
//! falls through to the fwmark rules. Nothing has to be kept in sync.
//!
//! # Rule order
//!
//! Rules are consulted by ascending priority: `suppress` (local destinations), then the fwmark
//! rules, then the from rules. A locally generated connection is bound to the main table's
//! source address before it is balanced; a from rule ahead of the fwmark rules would keep such
//! a connection on the first uplink whatever its mark.
//!
//! # Ownership
//!
//! Owned rules are the rules with a priority in [`OWNED_PRIORITIES`] (in both families); owned
//! routes are the routes with protocol [`ROUTE_PROTOCOL`] (any table, both families). `apply`
//! adds, replaces and deletes only those, so it is idempotent and leaves every foreign rule and
//! route alone; `flush` removes exactly those. Rules are also tagged with `protocol`
//! [`ROUTE_PROTOCOL`], so `ip rule` shows who made them.
//!
//! # Layout
//!
//! [`plan`] and [`render_ip_batch`] are pure (no syscalls, environment or clock) and
//! golden-tested. What [`apply`], [`install`], [`restore`] and [`flush`] change is decided
//! purely too (`reconcile`: plan × owned state × links → ops, over the typed rule and route
//! keys of `message`) and table-tested; [`Socket`], [`Links::read`], [`read_owned`] and those
//! functions' executor in `live` talk rtnetlink over a synchronous `netlink-sys` socket.

#![forbid(unsafe_code)]

mod error;
mod events;
mod learned;
mod links;
mod live;
mod message;
mod nl;
mod plan;
mod reconcile;

pub use error::Error;
pub use events::RouteEvents;
pub use learned::{Learned, LearnedUplink};
pub use links::{Link, Links};
pub use live::{
    apply, differences, flush, in_force, install, lookup, read_owned, restore, ApplyReport, Lookup,
};
pub use message::OwnedState;
pub use nl::Socket;
pub use plan::{
    plan, plan_learned, render_ip_batch, render_ip_batch_family, IpFamily, NextHop, Route,
    RoutingPlan, Rule, RuleSelector, SkipReason, Warning, IPV4_SECTION, IPV6_SECTION,
};

use std::ops::RangeInclusive;

/// Priority of the `lookup main suppress_prefixlength 0` rule (local destinations first).
///
/// 1000 keeps clear of the kernel's own rules (0 `local`, 32766 `main`, 32767 `default`) and of
/// the ranges other tools use by default (wg-quick 32764/32765, Tailscale 5210-5270,
/// NetworkManager's from 30000 up). It is the priority the README's hand-written recipe used, so
/// an `apply` over such a setup replaces it instead of stacking a second copy.
pub const PRIORITY_SUPPRESS: u32 = 1000;
/// Priority of the fwmark rule of the gateway at index `i` of the spec: `PRIORITY_FWMARK + i`
/// (at most 64 gateways, so 1001..=1064).
pub const PRIORITY_FWMARK: u32 = 1001;
/// Priority of the from rules of the gateway at index `i`: `PRIORITY_FROM + i` (1101..=1164).
pub const PRIORITY_FROM: u32 = 1101;
/// Every rule with a priority in this range is nftbalance's: apply replaces it, flush deletes it.
pub const OWNED_PRIORITIES: RangeInclusive<u32> = 1000..=1199;
/// The protocol number (`proto 110`) of every route nftbalance installs, and of its rules.
///
/// Numbers at or above 4 (`static`) are not interpreted by the kernel; they only mark the
/// origin. 110 (ASCII `n`) is in no iproute2 `rt_protos` file and no kernel `RTPROT_*`
/// constant (those used are 0-4, 8-18, 42, 99, 186-192), and none of the routing daemons that
/// register numbers (bird 12, zebra/FRR 11 and 186-192, babel 42, keepalived 18, dhcp 16,
/// ra 9) use it. Add `110 nftbalance` to `/etc/iproute2/rt_protos.d/nftbalance.conf` to see
/// the name in `ip route` and `ip rule`.
pub const ROUTE_PROTOCOL: u8 = 110;
/// The kernel's main routing table.
pub const MAIN_TABLE: u32 = 254;

/// Gateways the spec may hold at most (the fwmark and from priorities assume it).
const MAX_GATEWAYS: u32 = 64;

const _: () = {
    assert!(PRIORITY_SUPPRESS < PRIORITY_FWMARK);
    assert!(PRIORITY_FWMARK + MAX_GATEWAYS <= PRIORITY_FROM);
    assert!(PRIORITY_FROM + MAX_GATEWAYS <= *OWNED_PRIORITIES.end());
    assert!(*OWNED_PRIORITIES.start() == PRIORITY_SUPPRESS);
    assert!(*OWNED_PRIORITIES.end() < 32766);
};
