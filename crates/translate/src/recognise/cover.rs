//! Phase 3: classes grouped back into the spec's terms. Destination prefixes that no new
//! connection is marked for become exclusions; the classes of each pin and each split become
//! selectors (interface, protocol, port set, prefixes), each an exact product of values, found
//! by splitting a group on one dimension at a time until every part is one.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;
use nftbalance_spec::{PortRange, Protocol};

use crate::eval::{Class, Dims, Evaluation};

use super::Key;

/// Most selectors one key may take before the group is left outside the spec.
const MAX_RECTS: usize = 256;

/// A selector in the evaluator's terms, with the classes it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rect {
    pub iif: Option<String>,
    pub protocol: Option<Protocol>,
    pub dports: Vec<PortRange>,
    pub saddr: Vec<Ipv4Net>,
    pub daddr: Vec<Ipv4Net>,
    pub classes: Vec<usize>,
}

/// Destination prefixes the rules test for which no class (besides `skip` ones, in either
/// hook) is marked, while some other class is: the balancer's exclusions (outermost only).
pub fn exclusions(hooks: &[(&Evaluation, &[Key])]) -> Vec<Ipv4Net> {
    let mut prefixes: BTreeSet<Ipv4Net> = BTreeSet::new();
    for (ev, _) in hooks {
        prefixes.extend(ev.dims.dsts.iter().filter_map(|r| r.prefix));
    }
    let marked_somewhere = hooks.iter().any(|(_, keys)| {
        keys.iter()
            .any(|k| matches!(k, Key::Pin(_) | Key::Split(_)))
    });
    if !marked_somewhere {
        return Vec::new();
    }
    let zero_inside = |p: &Ipv4Net| {
        hooks.iter().all(|(ev, keys)| {
            ev.classes.iter().zip(keys.iter()).all(|((c, _), k)| {
                !p.contains(&ev.dims.dsts[c.dst].rep) || matches!(k, Key::Zero | Key::Ingress)
            })
        })
    };
    let excluded: Vec<Ipv4Net> = prefixes
        .iter()
        .filter(|p| zero_inside(p))
        .copied()
        .collect();
    // Outermost only.
    excluded
        .iter()
        .filter(|p| !excluded.iter().any(|q| q != *p && q.contains(*p)))
        .copied()
        .collect()
}

/// The selectors of every key (pins and splits), in key order.
pub fn cover(ev: &Evaluation, keys: &[Key], exclude: &[Ipv4Net]) -> Vec<(Key, Rect)> {
    let mut wanted: Vec<Key> = keys
        .iter()
        .copied()
        .filter(|k| matches!(k, Key::Pin(_) | Key::Split(_)))
        .collect();
    wanted.sort();
    wanted.dedup();
    let g = Grid { ev, keys, exclude };
    let mut out = Vec::new();
    for k in wanted {
        let set: Vec<usize> = (0..keys.len()).filter(|&i| keys[i] == k).collect();
        let mut rects = Vec::new();
        g.cover(&set, 0, &mut rects);
        out.extend(rects.into_iter().map(|r| (k, r)));
    }
    out
}

struct Grid<'a> {
    ev: &'a Evaluation,
    keys: &'a [Key],
    exclude: &'a [Ipv4Net],
}

impl Grid<'_> {
    fn dims(&self) -> &Dims {
        &self.ev.dims
    }
    fn class(&self, i: usize) -> &Class {
        &self.ev.classes[i].0
    }
    /// Classes whose key does not matter: inbound on a gateway's interface, or excluded.
    fn dont_care(&self, i: usize) -> bool {
        let c = self.class(i);
        self.keys[i] == Key::Ingress
            || self
                .exclude
                .iter()
                .any(|e| e.contains(&self.dims().dsts[c.dst].rep))
    }

    /// Covers `set` with selectors, splitting on dimension `dim` and the ones after it; the
    /// classes no selector can stand for are left out (the check names their rules).
    fn cover(&self, set: &[usize], dim: usize, out: &mut Vec<Rect>) {
        if out.len() > MAX_RECTS {
            return;
        }
        if let Some(r) = self.express(set) {
            out.push(r);
            return;
        }
        for d in dim..5 {
            let mut parts: Vec<(usize, Vec<usize>)> = Vec::new();
            for &i in set {
                let c = self.class(i);
                let v = match d {
                    0 => c.iif.unwrap_or(usize::MAX),
                    1 => self.proto_group(c.proto),
                    2 => c.dst,
                    3 => c.src,
                    _ => c.proto,
                };
                match parts.iter_mut().find(|(k, _)| *k == v) {
                    Some((_, p)) => p.push(i),
                    None => parts.push((v, vec![i])),
                }
            }
            if parts.len() > 1 {
                for (_, p) in &parts {
                    self.cover(p, d, out);
                }
                return;
            }
        }
    }

    /// Protocol name, as an index (the first class with that name).
    fn proto_group(&self, p: usize) -> usize {
        let name = &self.dims().protos[p].proto;
        self.dims()
            .protos
            .iter()
            .position(|x| x.proto == *name)
            .unwrap_or(p)
    }

    /// One selector for exactly `set` (and classes that do not matter), if there is one: the
    /// widest of the candidate values of each dimension that matches no other class.
    fn express(&self, set: &[usize]) -> Option<Rect> {
        let dims = self.dims();
        let key = self.keys[set[0]];
        // The spec tries pins before balanced selectors: a balanced selector may cover pins.
        let shadowed =
            |i: usize| matches!(key, Key::Split(_)) && matches!(self.keys[i], Key::Pin(_));
        let care: Vec<usize> = (0..self.keys.len())
            .filter(|&i| !self.dont_care(i) && !shadowed(i))
            .collect();
        let of = |f: &dyn Fn(&Class) -> usize| -> BTreeSet<usize> {
            set.iter().map(|&i| f(self.class(i))).collect()
        };
        // Interface: any, or the one exact name.
        let iifs = of(&|c| c.iif.unwrap_or(usize::MAX));
        let mut iif_options = vec![None];
        if let [k] = iifs.iter().copied().collect::<Vec<_>>()[..] {
            iif_options.extend(dims.iifs.get(k).and_then(|x| x.exact.clone()).map(Some));
        }
        let protos = of(&|c| c.proto);
        let proto_options = proto_options(dims, &protos);
        let nets = |got: BTreeSet<usize>, prefix: &dyn Fn(usize) -> Option<Ipv4Net>| {
            let mut v = vec![Vec::new()];
            v.extend(got.iter().map(|&k| prefix(k)).collect::<Option<Vec<_>>>());
            v
        };
        let dst_options = nets(of(&|c| c.dst), &|k| dims.dsts[k].prefix);
        let src_options = nets(of(&|c| c.src), &|k| dims.srcs[k].prefix);
        for iif in &iif_options {
            for (protocol, dports) in &proto_options {
                for daddr in &dst_options {
                    for saddr in &src_options {
                        let rect = Rect {
                            iif: iif.clone(),
                            protocol: *protocol,
                            dports: dports.clone(),
                            saddr: saddr.clone(),
                            daddr: daddr.clone(),
                            classes: set.to_vec(),
                        };
                        // Every class of the set matches; no class that matters with another key does.
                        let covers = set.iter().all(|&i| matches(dims, self.class(i), &rect));
                        if covers
                            && care.iter().all(|&i| {
                                self.keys[i] == key || !matches(dims, self.class(i), &rect)
                            })
                        {
                            return Some(rect);
                        }
                    }
                }
            }
        }
        None
    }
}

/// Protocol and port candidates for a set of protocol classes, widest first.
fn proto_options(dims: &Dims, protos: &BTreeSet<usize>) -> Vec<(Option<Protocol>, Vec<PortRange>)> {
    let mut out = vec![(None, Vec::new())];
    let names: BTreeSet<&str> = protos
        .iter()
        .map(|&p| dims.protos[p].proto.as_str())
        .collect();
    let [name] = names.into_iter().collect::<Vec<_>>()[..] else {
        return out;
    };
    let protocol = match name {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return out,
    };
    out.push((Some(protocol), Vec::new()));
    out.push((
        Some(protocol),
        merged_ports(protos.iter().filter_map(|&p| dims.protos[p].ports)),
    ));
    out
}

fn merged_ports(it: impl Iterator<Item = (u16, u16)>) -> Vec<PortRange> {
    let mut v: Vec<(u16, u16)> = it.collect();
    v.sort();
    let mut out: Vec<PortRange> = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(l) if u32::from(l.last) + 1 == u32::from(a) => l.last = b,
            _ => out.push(PortRange { first: a, last: b }),
        }
    }
    out
}

/// Whether a class's connections match a selector.
pub fn matches(dims: &Dims, c: &Class, r: &Rect) -> bool {
    let iif_ok = match (&r.iif, c.iif) {
        (None, _) => true,
        (Some(n), Some(k)) => dims.iifs[k].exact.as_deref() == Some(n.as_str()),
        (Some(_), None) => false,
    };
    let p = &dims.protos[c.proto];
    let proto_ok = r.protocol.is_none_or(|x| x.as_str() == p.proto)
        && (r.dports.is_empty()
            || p.ports
                .is_some_and(|(a, _)| r.dports.iter().any(|d| d.first <= a && a <= d.last)));
    let net_ok = |nets: &[Ipv4Net], a| nets.is_empty() || nets.iter().any(|n| n.contains(&a));
    iif_ok
        && proto_ok
        && net_ok(&r.daddr, dims.dsts[c.dst].rep)
        && net_ok(&r.saddr, dims.srcs[c.src].rep)
}
