//! Phase 2: the gateways. Marks -> interfaces from the nftbalance header, from ingress
//! classes (every new connection arriving on one interface gets one mark), and from the ip
//! lines (`ip rule fwmark` -> table -> `ip route ... dev`); every other mark the classes end
//! with that names no interface is no gateway (its classes stay outside the spec).

use std::collections::BTreeMap;

use crate::error::Loc;
use crate::eval::Evaluation;
use crate::iptables::Target;
use crate::report::{Report, What};
use crate::script::{Script, Table};

use super::{routing, Gw};

/// The gateways in order (header, then first rule setting each mark), and which input
/// interfaces are the gateways' own (their new connections keep the gateway's mark).
pub fn find(
    script: &Script,
    mangle: &Table,
    fwd: &Evaluation,
    local: &Evaluation,
    report: &mut Report,
) -> Vec<Gw> {
    let mut gws: Vec<Gw> = script
        .header_gateways
        .iter()
        .map(|h| {
            report.add(
                &h.loc,
                What::Spec(format!(
                    "gateway {} (the header written by nftbalance)",
                    h.name
                )),
            );
            Gw {
                name: Some(h.name.clone()),
                interface: Some(h.interface.clone()),
                mark: h.mark,
                weight: Some(h.weight),
                address: h.address,
                via: h.via,
                route_table: Some(h.route_table),
                ingress: false,
            }
        })
        .collect();
    let first_set = first_setter(mangle);
    let order = |m: u32| first_set.get(&m).cloned();
    // Ingress candidates: every class of one exact interface ends with one mark.
    let mut ingress: Vec<(String, u32)> = Vec::new();
    for (k, iif) in fwd.dims.iifs.iter().enumerate() {
        let Some(name) = &iif.exact else { continue };
        let mut marks = fwd
            .classes
            .iter()
            .filter(|(c, _)| c.iif == Some(k))
            .map(|(_, o)| {
                (o.unknown.is_none() && !o.dropped)
                    .then(|| o.fixed())
                    .flatten()
            });
        let Some(Some(m)) = marks.next() else {
            continue;
        };
        if m != 0 && marks.all(|x| x == Some(m)) {
            ingress.push((name.clone(), m));
        }
    }
    ingress.sort_by_key(|(_, m)| order(*m));
    for (iif, m) in ingress {
        let routed = routing::interface_of_mark(script, m);
        match gws.iter_mut().find(|g| g.mark == m) {
            Some(g) if g.interface.as_deref() == Some(iif.as_str()) => g.ingress = true,
            // The mark's uplink is another interface: this one is pinned, not an uplink.
            Some(_) => {}
            None if routed.as_ref().is_some_and(|d| *d != iif) => {}
            None => gws.push(Gw {
                interface: Some(iif),
                mark: m,
                ingress: true,
                ..Gw::default()
            }),
        }
    }
    // Marks the classes end with that no gateway has yet, by the first rule setting them.
    let mut marks: Vec<u32> = Vec::new();
    for (_, o) in fwd.classes.iter().chain(&local.classes) {
        for (m, _) in &o.marks {
            if *m != 0 && !marks.contains(m) && !gws.iter().any(|g| g.mark == *m) {
                marks.push(*m);
            }
        }
    }
    let main = routing::main_table_marks(script);
    marks.retain(|m| !main.iter().any(|(v, k)| m & k == *v));
    marks.sort_by_key(|m| order(*m));
    for m in marks {
        match routing::interface_of_mark(script, m) {
            Some(dev) => gws.push(Gw { interface: Some(dev), mark: m, ..Gw::default() }),
            None => report.note(format!(
                "new connections end with mark {m:#x}, but no rule or route names an interface for it: no gateway"
            )),
        }
    }
    gws
}

/// For each mark, where the first rule that sets it is (input order).
fn first_setter(mangle: &Table) -> BTreeMap<u32, Loc> {
    let mut out: BTreeMap<u32, Loc> = BTreeMap::new();
    for c in &mangle.chains {
        for r in &c.rules {
            if let Some(Target::SetConnmark { value, .. } | Target::SetMark { value, .. }) =
                &r.rule.target
            {
                let e = out.entry(*value).or_insert_with(|| r.loc.clone());
                if r.loc < *e {
                    *e = r.loc.clone();
                }
            }
        }
    }
    out
}
