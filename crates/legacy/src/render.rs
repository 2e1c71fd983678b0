//! Spec -> iptables-restore input, in the seed recipe's shape, inside the tool's own chains.

use std::collections::BTreeSet;
use std::fmt::Write;

use ipnet::IpNet;
use nftbalance_spec::name::restore_word;
use nftbalance_spec::{Family, Gateway, Method, Selector, Spec, DEFAULT_MARK_MASK};

/// Prefix of every chain the tool owns; built-in chains only get one jump rule each.
pub const CHAIN_PREFIX: &str = "NFTBALANCE-";

/// What the iptables backend cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    #[error("the iptables backend writes IPv4 rules only, and this spec configures IPv6 ({0}); use the nftables backend")]
    Ipv6(String),
    #[error("source-hash needs HMARK, which overwrites the whole packet mark; with mark_mask {0:#x} that would clobber other users' bits. Use the nftables backend, or the full mask")]
    HmarkWithMask(u32),
    #[error("the iptables backend has no policies ({0}): their tiers change at failover, which watch does only on nftables; use the nftables backend")]
    Policies(String),
    #[error("the iptables backend has no router pair (ha): the sync link and the routers' own addresses are exempted only in the nftables ruleset; use the nftables backend")]
    Pair,
}

/// The tool's chains per table, in creation order: (table, chains).
pub fn chains(spec: &Spec) -> Vec<(&'static str, Vec<String>)> {
    let mut mangle = vec![chain("PREROUTING"), chain("OUTPUT"), chain("BALANCE")];
    mangle.extend(pinned(spec).iter().map(|(i, _)| pin_chain(*i)));
    let mut out = vec![("mangle", mangle)];
    if spec.snat {
        out.push(("nat", vec![chain("POSTROUTING")]));
    }
    out
}

fn chain(suffix: &str) -> String {
    format!("{CHAIN_PREFIX}{suffix}")
}

/// Chain names must fit iptables' 28 characters, so pins are numbered by gateway position.
fn pin_chain(index: usize) -> String {
    chain(&format!("PIN-{}", index + 1))
}

/// Pinned gateways in gateway order: (position, gateway).
fn pinned(spec: &Spec) -> Vec<(usize, &Gateway)> {
    let b = &spec.balance;
    spec.gateways
        .iter()
        .enumerate()
        .filter(|(_, g)| {
            b.forward
                .iter()
                .chain(&b.local)
                .any(|s| s.gateway.as_deref() == Some(g.name.as_str()))
        })
        .collect()
}

/// Mark operations in iptables' words under `mark_mask`.
struct Marks {
    mask: u32,
}

impl Marks {
    fn full(&self) -> bool {
        self.mask == DEFAULT_MARK_MASK
    }
    fn mask_suffix(&self) -> String {
        if self.full() {
            String::new()
        } else {
            format!("/{:#x}", self.mask)
        }
    }
    /// `-m connmark [!] --mark V[/M]`
    fn connmark(&self, negate: bool, value: u32) -> String {
        let not = if negate { "! " } else { "" };
        format!("-m connmark {not}--mark {value:#x}{}", self.mask_suffix())
    }
    fn set_connmark(&self, value: u32) -> String {
        if self.full() {
            format!("-j CONNMARK --set-mark {value:#x}")
        } else {
            format!("-j CONNMARK --set-xmark {value:#x}/{:#x}", self.mask)
        }
    }
    fn set_mark(&self, value: u32) -> String {
        if self.full() {
            format!("-j MARK --set-mark {value:#x}")
        } else {
            format!("-j MARK --set-xmark {value:#x}/{:#x}", self.mask)
        }
    }
    fn masks(&self) -> String {
        if self.full() {
            String::new()
        } else {
            format!(" --nfmask {m:#x} --ctmask {m:#x}", m = self.mask)
        }
    }
    fn restore(&self) -> String {
        format!("-j CONNMARK --restore-mark{}", self.masks())
    }
    fn save(&self) -> String {
        format!("-j CONNMARK --save-mark{}", self.masks())
    }
}

const ESTABLISHED: &str = "-m state --state RELATED,ESTABLISHED";
const NEW: &str = "-m state --state NEW";

/// The whole iptables-restore input (for `--noflush`): the tool's chains declared (which
/// creates or empties them), their rules, and one jump from each built-in chain.
pub fn render(spec: &Spec) -> Result<String, LegacyError> {
    render_with(spec, &BTreeSet::new())
}

/// [`render`] for the gateways that may take new connections: the `unavailable` ones (no
/// route, or down) are left out of the split and their pins are balanced instead, as the
/// nftables compiler does; their ingress marks and SNAT stay, so their connections live on.
pub fn render_with(spec: &Spec, unavailable: &BTreeSet<String>) -> Result<String, LegacyError> {
    check(spec)?;
    let live: Vec<(usize, &Gateway)> = spec
        .gateways
        .iter()
        .enumerate()
        .filter(|(_, g)| !unavailable.contains(&g.name))
        .collect();
    let m = Marks {
        mask: spec.mark_mask,
    };
    let mut o = String::new();
    let w = &mut o;
    // Writing to a String cannot fail.
    let line = |w: &mut String, s: String| writeln!(w, "{s}").expect("write to String");
    line(
        w,
        format!(
            "# nftbalance: table {}, family {}, {} gateways",
            spec.table,
            spec.family,
            spec.gateways.len()
        ),
    );
    for g in &spec.gateways {
        line(w, format!("# gateway {}", describe(g)));
    }
    line(w, "*mangle".into());
    for c in &chains(spec)[0].1 {
        line(w, format!(":{c} - [0:0]"));
    }
    let (pre, out, bal) = (chain("PREROUTING"), chain("OUTPUT"), chain("BALANCE"));

    // balance: the seed's checks, then the split.
    for rule in guards(spec, &m) {
        line(w, format!("-A {bal} {rule}"));
    }
    for rule in split(spec, &live, &m) {
        line(w, format!("-A {bal} {rule}"));
    }
    for (i, g) in pinned(spec) {
        let c = pin_chain(i);
        line(w, format!("# {c}: pinned to gateway {}", g.name));
        for rule in guards(spec, &m) {
            line(w, format!("-A {c} {rule}"));
        }
        line(w, format!("-A {c} {}", m.set_connmark(g.mark)));
    }

    // prerouting: restore, ingress marks, selection, mark for routing, save.
    line(w, format!("-A {pre} {ESTABLISHED} {}", m.restore()));
    for g in &spec.gateways {
        line(
            w,
            format!(
                "-A {pre} -i {} {NEW} {}",
                restore_word(&g.interface),
                m.set_connmark(g.mark)
            ),
        );
    }
    for rule in selections(spec, unavailable, &spec.balance.forward) {
        line(w, format!("-A {pre} {rule}"));
    }
    for g in &spec.gateways {
        line(
            w,
            format!(
                "-A {pre} {} {}",
                m.connmark(false, g.mark),
                m.set_mark(g.mark)
            ),
        );
    }
    line(
        w,
        format!("-A {pre} {NEW} {} {}", m.connmark(true, 0), m.save()),
    );

    // output: restore, selection, and the first packet's route.
    line(w, format!("-A {out} {ESTABLISHED} {}", m.restore()));
    for rule in selections(spec, unavailable, &spec.balance.local) {
        line(w, format!("-A {out} {rule}"));
    }
    line(
        w,
        "# The first packet of a new local connection left the routing decision with the main \
         table's uplink and address; copying its new connection mark to the packet mark here \
         makes the kernel route it again, by the mark (the seed's rules skip this, and upstream \
         ingress filtering then drops half of the balanced local connections)."
            .into(),
    );
    line(
        w,
        format!("-A {out} {NEW} {} {}", m.connmark(true, 0), m.restore()),
    );
    line(w, format!("-A PREROUTING -j {pre}"));
    line(w, format!("-A OUTPUT -j {out}"));
    line(w, "COMMIT".into());

    if spec.snat {
        let post = chain("POSTROUTING");
        line(w, "*nat".into());
        line(w, format!(":{post} - [0:0]"));
        for g in &spec.gateways {
            let target = match g.address {
                Some(a) => format!("-j SNAT --to-source {a}"),
                None => "-j MASQUERADE".into(),
            };
            line(
                w,
                format!("-A {post} -o {} {target}", restore_word(&g.interface)),
            );
        }
        line(w, format!("-A POSTROUTING -j {post}"));
        line(w, "COMMIT".into());
    }
    Ok(o)
}

/// A gateway's spec fields on one comment line, so `translate` can read them back.
fn describe(g: &Gateway) -> String {
    let mut s = format!(
        "{} interface {} mark {:#x} weight {} route_table {}",
        g.name, g.interface, g.mark, g.weight, g.route_table
    );
    if let Some(a) = g.address {
        let _ = write!(s, " address {a}");
    }
    if let Some(v) = g.via {
        let _ = write!(s, " via {v}");
    }
    s
}

fn check(spec: &Spec) -> Result<(), LegacyError> {
    if spec.family == Family::Ip6 {
        return Err(LegacyError::Ipv6("family ip6".into()));
    }
    if let Some(name) = spec.policies.keys().next() {
        return Err(LegacyError::Policies(format!("policies.{name}")));
    }
    if spec.ha.is_some() {
        return Err(LegacyError::Pair);
    }
    if spec.watch.all_down == nftbalance_spec::AllDown::Unreachable {
        return Err(LegacyError::Policies("watch.all_down: unreachable".into()));
    }
    for (i, g) in spec.gateways.iter().enumerate() {
        if g.address6.is_some() || g.via6.is_some() {
            return Err(LegacyError::Ipv6(format!(
                "gateways[{i}] has address6/via6"
            )));
        }
    }
    let b = &spec.balance;
    let v6 = |n: &IpNet| matches!(n, IpNet::V6(_));
    if let Some(n) = b.exclude.iter().find(|n| v6(n)) {
        return Err(LegacyError::Ipv6(format!("exclude has {n}")));
    }
    for s in b.forward.iter().chain(&b.local) {
        if let Some(n) = s.saddr.iter().chain(&s.daddr).find(|n| v6(n)) {
            return Err(LegacyError::Ipv6(format!("a selector has {n}")));
        }
    }
    if b.method == Method::SourceHash && spec.mark_mask != DEFAULT_MARK_MASK {
        return Err(LegacyError::HmarkWithMask(spec.mark_mask));
    }
    Ok(())
}

/// The seed's checks: excluded destinations, marked and established connections return.
fn guards(spec: &Spec, m: &Marks) -> Vec<String> {
    let mut rules: Vec<String> = IpNet::aggregate(&spec.balance.exclude)
        .into_iter()
        .map(|n| format!("-d {n} -j RETURN"))
        .collect();
    rules.push(format!("{} -j RETURN", m.connmark(true, 0)));
    rules.push(format!("{ESTABLISHED} -j RETURN"));
    rules
}

/// Weights reduced by their greatest common divisor: 3:3 splits like 1:1 with fewer rules.
fn reduced_weights(live: &[(usize, &Gateway)]) -> Vec<u32> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = live.iter().fold(0, |acc, (_, gw)| gcd(acc, gw.weight));
    live.iter().map(|(_, gw)| gw.weight / g.max(1)).collect()
}

fn split(spec: &Spec, live: &[(usize, &Gateway)], m: &Marks) -> Vec<String> {
    let gws: Vec<&Gateway> = live.iter().map(|(_, g)| *g).collect();
    let weights = reduced_weights(live);
    let cycle: u32 = weights.iter().sum();
    let mut rules = Vec::new();
    let sticky = spec.balance.sticky.map(|s| s.timeout_secs);
    if let Some(secs) = sticky {
        for (i, g) in live {
            rules.push(format!(
                "-m recent --name {} --update --seconds {secs} --rsource {}",
                recent_list(spec, *i),
                m.set_connmark(g.mark)
            ));
        }
        rules.push(format!("{} -j RETURN", m.connmark(true, 0)));
    }
    if gws.is_empty() {
        // No gateway may take new connections: they stay unmarked, on the main table.
        return rules;
    }
    if let [only] = gws.as_slice() {
        rules.push(m.set_connmark(only.mark));
    } else {
        match spec.balance.method {
            // One cycle shared by all rules: every rule sees every packet (CONNMARK does not
            // end the chain), each matches its own slot, so 3:2:1 is slots 0-2, 3-4, 5 of 6.
            Method::RoundRobin => {
                let mut slot = 0;
                for (g, w) in gws.iter().zip(&weights) {
                    for _ in 0..*w {
                        rules.push(format!(
                            "-m statistic --mode nth --every {cycle} --packet {slot} {}",
                            m.set_connmark(g.mark)
                        ));
                        slot += 1;
                    }
                }
            }
            // A cascade: each gateway takes its weight's share of what the ones before left.
            Method::Random => {
                let mut left = cycle;
                for (i, (g, w)) in gws.iter().zip(&weights).enumerate() {
                    let guard = if i == 0 {
                        String::new()
                    } else {
                        format!("{} ", m.connmark(false, 0))
                    };
                    if i + 1 == gws.len() {
                        rules.push(format!("{guard}{}", m.set_connmark(g.mark)));
                    } else {
                        let p = f64::from(*w) / f64::from(left);
                        rules.push(format!(
                            "{guard}-m statistic --mode random --probability {p:.10} {}",
                            m.set_connmark(g.mark)
                        ));
                    }
                    left -= w;
                }
            }
            // HMARK hashes the source into the packet mark; each slot's mark picks a gateway.
            Method::SourceHash => {
                rules.push(format!(
                    "-j HMARK --hmark-tuple src --hmark-mod {cycle} --hmark-rnd {:#x}",
                    spec.balance.hash_seed
                ));
                let mut slot = 0;
                for (g, w) in gws.iter().zip(&weights) {
                    for _ in 0..*w {
                        rules.push(format!(
                            "-m mark --mark {slot:#x} {}",
                            m.set_connmark(g.mark)
                        ));
                        slot += 1;
                    }
                }
            }
        }
    }
    if sticky.is_some() {
        for (i, g) in live {
            rules.push(format!(
                "{} -m recent --name {} --set --rsource",
                m.connmark(false, g.mark),
                recent_list(spec, *i)
            ));
        }
    }
    rules
}

/// xt_recent list of a gateway's sticky sources.
fn recent_list(spec: &Spec, index: usize) -> String {
    restore_word(&format!("{}_{}", spec.table, spec.gateways[index].name)).into_owned()
}

/// Selection rules: pinned first, then balanced; one rule per port and prefix combination.
fn selections(spec: &Spec, unavailable: &BTreeSet<String>, selectors: &[Selector]) -> Vec<String> {
    let pinned_first = selectors
        .iter()
        .filter(|s| s.gateway.is_some())
        .chain(selectors.iter().filter(|s| s.gateway.is_none()));
    let mut rules = Vec::new();
    for s in pinned_first {
        let target = match &s.gateway {
            Some(name) if !unavailable.contains(name) => {
                let i = spec
                    .gateways
                    .iter()
                    .position(|g| &g.name == name)
                    .unwrap_or(0);
                pin_chain(i)
            }
            _ => chain("BALANCE"),
        };
        let ports: Vec<Option<String>> = if s.dports.is_empty() {
            vec![None]
        } else {
            s.dports
                .iter()
                .map(|p| {
                    Some(if p.first == p.last {
                        p.first.to_string()
                    } else {
                        format!("{}:{}", p.first, p.last)
                    })
                })
                .collect()
        };
        let nets = |l: &[IpNet]| -> Vec<Option<IpNet>> {
            if l.is_empty() {
                vec![None]
            } else {
                IpNet::aggregate(&l.to_vec())
                    .into_iter()
                    .map(Some)
                    .collect()
            }
        };
        for saddr in nets(&s.saddr) {
            for daddr in nets(&s.daddr) {
                for port in &ports {
                    let mut r = String::new();
                    if let Some(i) = &s.iif {
                        let _ = write!(r, "-i {} ", restore_word(i));
                    }
                    if let Some(n) = saddr {
                        let _ = write!(r, "-s {} ", host_or_net(n));
                    }
                    if let Some(n) = daddr {
                        let _ = write!(r, "-d {} ", host_or_net(n));
                    }
                    if let Some(p) = s.protocol {
                        let _ = write!(r, "-p {} ", p.as_str());
                    }
                    if let Some(port) = port {
                        let _ = write!(r, "--dport {port} ");
                    }
                    let _ = write!(r, "{NEW} -j {target}");
                    rules.push(r);
                }
            }
        }
    }
    rules
}

fn host_or_net(n: IpNet) -> String {
    match n {
        IpNet::V4(n) if n.prefix_len() == 32 => n.addr().to_string(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str, weights: &[u32]) -> Spec {
        let gws: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                format!(
                    r#"{{"name":"g{}","interface":"ppp{i}","mark":{},"weight":{w},"route_table":{}}}"#,
                    i + 1,
                    i + 1,
                    101 + i
                )
            })
            .collect();
        Spec::from_json(&format!(r#"{{"gateways":[{}]{extra}}}"#, gws.join(","))).unwrap()
    }

    #[test]
    fn weights_share_one_nth_cycle() {
        let text = render(&spec("", &[3, 2, 1])).unwrap();
        let slots: Vec<&str> = text.lines().filter(|l| l.contains("--mode nth")).collect();
        assert_eq!(slots.len(), 6);
        assert!(slots[0].contains("--every 6 --packet 0") && slots[0].ends_with("--set-mark 0x1"));
        assert!(slots[3].contains("--every 6 --packet 3") && slots[3].ends_with("--set-mark 0x2"));
        assert!(slots[5].contains("--every 6 --packet 5") && slots[5].ends_with("--set-mark 0x3"));
    }

    #[test]
    fn equal_weights_reduce_to_the_smallest_cycle() {
        let text = render(&spec("", &[4, 4])).unwrap();
        assert_eq!(text.matches("--every 2 ").count(), 2, "{text}");
    }

    #[test]
    fn random_cascade_gives_weights_as_final_shares() {
        let text = render(&spec(r#","balance":{"method":"random"}"#, &[2, 1, 1])).unwrap();
        // 2/4 first, then 1/2 of the rest, then the rest.
        assert!(
            text.contains("--probability 0.5000000000 -j CONNMARK --set-mark 0x1"),
            "{text}"
        );
        assert!(text.contains("-m connmark --mark 0x0 -m statistic --mode random --probability 0.5000000000 -j CONNMARK --set-mark 0x2"), "{text}");
        assert!(
            text.contains("-m connmark --mark 0x0 -j CONNMARK --set-mark 0x3"),
            "{text}"
        );
    }

    #[test]
    fn narrow_mask_uses_xmark_and_masks() {
        let s = Spec::from_json(
            r#"{"mark_mask":"0xff00","gateways":[
                {"name":"a","interface":"ppp0","mark":"0x100","route_table":101},
                {"name":"b","interface":"ppp1","mark":"0x200","route_table":102}]}"#,
        )
        .unwrap();
        let text = render(&s).unwrap();
        assert!(
            text.contains("-j CONNMARK --set-xmark 0x100/0xff00"),
            "{text}"
        );
        assert!(text.contains("-j CONNMARK --restore-mark --nfmask 0xff00 --ctmask 0xff00"));
        assert!(text.contains("-m connmark ! --mark 0x0/0xff00 -j RETURN"));
        assert!(text.contains("-j MARK --set-xmark 0x200/0xff00"));
        assert!(!text.contains("--set-mark"), "{text}");
    }

    #[test]
    fn what_iptables_cannot_express_is_refused() {
        let s = Spec::from_json(
            r#"{"gateways":[{"name":"a","interface":"ppp0","mark":1,"route_table":101,"via6":"fe80::1"}]}"#,
        )
        .unwrap();
        assert!(matches!(render(&s), Err(LegacyError::Ipv6(_))));
        let s = Spec::from_json(
            r#"{"mark_mask":"0xff","balance":{"method":"source-hash"},"gateways":[
                {"name":"a","interface":"ppp0","mark":1,"route_table":101},
                {"name":"b","interface":"ppp1","mark":2,"route_table":102}]}"#,
        )
        .unwrap();
        assert_eq!(render(&s), Err(LegacyError::HmarkWithMask(0xff)));
    }

    /// Issue 22.10: the legacy backend kept a gateway it could not route in the split.
    #[test]
    fn unavailable_gateways_leave_the_split_and_their_pins_are_balanced() {
        let s = spec(
            r#","balance":{"forward":[{"protocol":"tcp","dports":[25],"gateway":"g2"},{}]}"#,
            &[3, 2, 1],
        );
        let out = |names: &[&str]| {
            let set: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
            render_with(&s, &set).unwrap()
        };
        let text = out(&["g2"]);
        let slots: Vec<&str> = text.lines().filter(|l| l.contains("--mode nth")).collect();
        assert_eq!(slots.len(), 4, "3:1 over g1 and g3: {text}");
        assert!(
            !slots.iter().any(|l| l.ends_with("--set-mark 0x2")),
            "{text}"
        );
        assert!(
            text.contains("--dport 25 -m state --state NEW -j NFTBALANCE-BALANCE"),
            "{text}"
        );
        assert!(
            text.contains("-i ppp1 -m state --state NEW -j CONNMARK --set-mark 0x2"),
            "ingress stays"
        );
        let none = out(&["g1", "g2", "g3"]);
        assert!(!none.contains("--mode nth"), "{none}");
        assert!(
            !none.contains("-A NFTBALANCE-BALANCE -j CONNMARK --set-mark"),
            "{none}"
        );
        assert_eq!(out(&[]), render(&s).unwrap());
    }
}
