//! The router pair (spec `ha`): conntrackd's replication over the sync link is the routers'
//! own traffic and is never balanced or marked, so it always takes the main table.

use nftbalance_spec::Spec;

use crate::compile::names;
use crate::model::*;

/// Puts `iifname SYNC accept` at the top of the prerouting chain and `oifname SYNC accept`
/// at the top of the output chain when the spec describes a pair; leaves the rest as it is.
pub(crate) fn leave_sync_link_alone(spec: &Spec, chains: &mut [Chain]) {
    let Some(ha) = &spec.ha else { return };
    for chain in chains.iter_mut() {
        let key = match chain.name.as_str() {
            names::PREROUTING => MetaKey::IifName,
            names::OUTPUT => MetaKey::OifName,
            _ => continue,
        };
        let bypass = Rule {
            matches: vec![Match::Cmp {
                left: Expr::Meta(key),
                negate: false,
                right: Value::IfName(ha.sync_interface.clone()),
            }],
            stmts: vec![Stmt::Verdict(Verdict::Accept)],
            doc: Some("pair: conntrackd's sync link is never balanced or marked"),
            counts: None,
        };
        chain.rules.insert(0, bypass);
    }
}
