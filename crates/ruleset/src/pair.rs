//! The router pair (spec `ha`): conntrackd's replication over the sync link is the routers'
//! own traffic and is never balanced or marked, so it always takes the main table; and each
//! router's own uplink addresses (its probe sources) are never rewritten to the floating
//! gateway address, which only the master holds: a backup's probe answers come back to it.

use nftbalance_spec::Spec;

use crate::compile::names;
use crate::model::*;

/// Every node's own uplink addresses, sorted: the same ruleset on both routers.
fn own_addresses(spec: &Spec) -> Vec<Value> {
    let Some(ha) = &spec.ha else {
        return Vec::new();
    };
    let mut addrs: Vec<_> = ha
        .nodes
        .iter()
        .flat_map(|n| n.probe_addresses.values().copied())
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs.into_iter().map(Value::Ipv4).collect()
}

fn accept_if(m: Match, doc: &'static str) -> Rule {
    Rule {
        matches: vec![m],
        stmts: vec![Stmt::Verdict(Verdict::Accept)],
        doc: Some(doc),
        counts: None,
        selector: None,
    }
}

/// Puts `iifname SYNC accept` at the top of the prerouting chain, `oifname SYNC accept` at
/// the top of the output chain and `ip saddr { OWN } accept` at the top of the NAT chain when
/// the spec describes a pair; leaves the rest as it is.
pub(crate) fn leave_sync_link_alone(spec: &Spec, chains: &mut [Chain]) {
    let Some(ha) = &spec.ha else { return };
    let own = own_addresses(spec);
    for chain in chains.iter_mut() {
        let key = match chain.name.as_str() {
            names::PREROUTING => MetaKey::IifName,
            names::OUTPUT => MetaKey::OifName,
            names::POSTROUTING if !own.is_empty() => {
                let m = Match::InSet {
                    left: Expr::Payload(Field::IpSaddr),
                    set: SetRef::Anonymous(own.clone()),
                };
                let doc = "pair: a router's own uplink addresses (probe sources) keep their source";
                chain.rules.insert(0, accept_if(m, doc));
                continue;
            }
            _ => continue,
        };
        let m = Match::Cmp {
            left: Expr::Meta(key),
            negate: false,
            right: Value::IfName(ha.sync_interface.clone()),
        };
        let doc = "pair: conntrackd's sync link is never balanced or marked";
        chain.rules.insert(0, accept_if(m, doc));
    }
}
