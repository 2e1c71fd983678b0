//! A generator of legacy (iptables mangle) balancers in the shapes found in the field, with
//! what each one does to chosen probe connections: for the differential test of `translate`
//! (the rules in iptables-legacy against the translated spec applied by nftbalance).
//!
//! Shapes: a split chain jumped to from PREROUTING; the split inline in PREROUTING (each
//! later rule guarded by the connection mark); nth/random rules jumping to per-mark chains
//! (MARK + save-mark) with no ingress marks; mwan3's masked restore/save and masked mark
//! conditions with a "main table" mark for exclusions. Random: interfaces, marks, masks,
//! weights 1-10, 2-6 gateways, port sets, exclusions, a shadowing ACCEPT, a pin by source.

use std::fmt::Write;
use std::net::Ipv4Addr;

/// The router's uplink interfaces a test rig has (the generator picks among them).
pub const UPLINKS: [&str; 6] = ["wan0", "wan1", "wan2", "wan3", "wan4", "wan5"];
/// The LAN interfaces: lan0 carries the balanced LAN (two subnets), lan1 another one.
pub const LANS: [&str; 2] = ["lan0", "lan1"];
/// LAN sources: lan0's two subnets and lan1's.
pub const SRC_MAIN: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 10);
pub const SRC_PINNED: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 10);
pub const SRC_OTHER_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 70, 10);

/// The next hop of uplink `k` (on its /30 to the rig's sink).
pub fn next_hop(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, k as u8, 2)
}

/// A small deterministic generator (xorshift64*): the same seed, the same balancer.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    SplitChain,
    Inline,
    PerMarkChains,
    Mwan3,
}

#[derive(Debug, Clone)]
pub struct Uplink {
    /// Index into [`UPLINKS`].
    pub slot: usize,
    pub mark: u32,
    pub weight: u32,
    pub table: u32,
}

/// What a probe's connections must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Split over the uplinks by weight.
    Balanced,
    /// Not marked: the main table.
    Unmarked,
    /// Always this uplink (index into `uplinks`).
    Pinned(usize),
}

/// A class of new connections to send, and what it must do.
#[derive(Debug, Clone)]
pub struct Probe {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub udp: bool,
    pub dport: u16,
    pub expect: Expect,
    pub why: &'static str,
}

/// One generated balancer.
#[derive(Debug, Clone)]
pub struct Generated {
    pub seed: u64,
    pub shape: Shape,
    /// iptables-save text (mangle only).
    pub save: String,
    /// `ip rule`/`ip route` lines (a shell script translate reads too).
    pub ip_lines: String,
    pub uplinks: Vec<Uplink>,
    pub mask: u32,
    pub random: bool,
    pub probes: Vec<Probe>,
}

impl Generated {
    /// Sum of the weights: the nth period.
    pub fn period(&self) -> u32 {
        self.uplinks.iter().map(|u| u.weight).sum()
    }
}

const EXCLUDABLE: [(&str, Ipv4Addr); 3] = [
    ("10.0.0.0/8", Ipv4Addr::new(10, 1, 2, 3)),
    ("172.16.0.0/12", Ipv4Addr::new(172, 20, 0, 9)),
    ("203.0.113.0/24", Ipv4Addr::new(203, 0, 113, 77)),
];
const BALANCED_DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const PORTS: [u16; 8] = [22, 53, 80, 123, 443, 993, 5060, 8080];

/// The selection: all of lan0, or one protocol with a port set.
#[derive(Debug, Clone)]
struct Selection {
    proto: Option<&'static str>,
    ports: Vec<u16>,
}

impl Selection {
    fn args(&self) -> String {
        match (self.proto, self.ports.as_slice()) {
            (None, _) => String::new(),
            (Some(p), [one]) => format!(" -p {p} -m {p} --dport {one}"),
            (Some(p), many) => {
                let list: Vec<String> = many.iter().map(u16::to_string).collect();
                format!(" -p {p} -m multiport --dports {}", list.join(","))
            }
        }
    }
}

pub fn generate(seed: u64) -> Generated {
    let mut r = Rng::new(seed);
    let shape = [
        Shape::SplitChain,
        Shape::Inline,
        Shape::PerMarkChains,
        Shape::Mwan3,
    ][r.below(4)];
    let masks: &[u32] = if shape == Shape::Mwan3 {
        &[0x3f00, 0xff00, 0xf0]
    } else {
        &[0xffff_ffff, 0xff, 0xff00, 0x3f00, 0xf0]
    };
    let mask = masks[r.below(masks.len())];
    let shift = mask.trailing_zeros();
    // mwan3's "main table" mark is every bit of the mask; no gateway may have it.
    let values = (mask >> shift) - u32::from(shape == Shape::Mwan3);
    let n = 2 + r.below(5);
    let mut slots: Vec<usize> = (0..UPLINKS.len()).collect();
    r.shuffle(&mut slots);
    let mut marks: Vec<u32> = Vec::new();
    while marks.len() < n {
        let m = (1 + (r.next_u64() % u64::from(values.min(4096))) as u32) << shift;
        if !marks.contains(&m) {
            marks.push(m);
        }
    }
    let uplinks: Vec<Uplink> = (0..n)
        .map(|i| Uplink {
            slot: slots[i],
            mark: marks[i],
            weight: 1 + r.below(10) as u32,
            table: 100 + slots[i] as u32,
        })
        .collect();
    let random = r.chance(50);
    let sel = if r.chance(40) {
        Selection {
            proto: None,
            ports: Vec::new(),
        }
    } else {
        let mut ports = PORTS.to_vec();
        r.shuffle(&mut ports);
        ports.truncate(2 + r.below(3));
        Selection {
            proto: Some(if r.chance(50) { "tcp" } else { "udp" }),
            ports,
        }
    };
    let excluded: Vec<usize> = (0..EXCLUDABLE.len()).filter(|_| r.chance(40)).collect();
    // A shadowing ACCEPT for one selected port (only where the selection has ports: the
    // spec's narrower selector), a pin by source subnet.
    let pin = r.chance(35).then(|| r.below(n));
    // mwan3's pin applies to all of lan0: a port hole in it is no selector (out of model).
    let shadowable =
        sel.proto.is_some() && sel.ports.len() > 1 && !(shape == Shape::Mwan3 && pin.is_some());
    let shadow = (shadowable && r.chance(50)).then(|| sel.ports[0]);
    let ingress = shape != Shape::PerMarkChains && r.chance(60);
    let g = Gen {
        shape,
        mask,
        uplinks: &uplinks,
        sel: &sel,
        random,
        excluded: &excluded,
        shadow,
        pin,
        ingress,
    };
    let save = g.save();
    let ip_lines = g.ip_lines();
    let probes = g.probes();
    Generated {
        seed,
        shape,
        save,
        ip_lines,
        uplinks,
        mask,
        random,
        probes,
    }
}

struct Gen<'a> {
    shape: Shape,
    mask: u32,
    uplinks: &'a [Uplink],
    sel: &'a Selection,
    random: bool,
    excluded: &'a [usize],
    shadow: Option<u16>,
    pin: Option<usize>,
    ingress: bool,
}

impl Gen<'_> {
    fn m(&self, v: u32) -> String {
        format!("{v:#x}/{:#x}", self.mask)
    }

    /// Each gateway's split rules' conditions and targets (nth slots or a random cascade),
    /// `guard` the connection-mark condition each rule after the first needs.
    fn split(
        &self,
        chain: &str,
        target: &dyn Fn(usize) -> String,
        guard: &str,
        keep_guard_first: bool,
        out: &mut String,
    ) {
        let total: u32 = self.uplinks.iter().map(|u| u.weight).sum();
        if self.random {
            let mut left = total;
            for (i, u) in self.uplinks.iter().enumerate() {
                let g = if i > 0 || keep_guard_first { guard } else { "" };
                if i + 1 == self.uplinks.len() {
                    let _ = writeln!(out, "-A {chain}{g} -j {}", target(i));
                } else {
                    let p = f64::from(u.weight) / f64::from(left);
                    let _ = writeln!(
                        out,
                        "-A {chain}{g} -m statistic --mode random --probability {p:.11} -j {}",
                        target(i)
                    );
                }
                left -= u.weight;
            }
        } else if keep_guard_first {
            // Guarded cascade: slot s sees the T-s connections the earlier slots left.
            let mut s = 0;
            for (i, u) in self.uplinks.iter().enumerate() {
                for _ in 0..u.weight {
                    let _ = writeln!(
                        out,
                        "-A {chain}{guard} -m statistic --mode nth --every {} --packet 0 -j {}",
                        total - s,
                        target(i)
                    );
                    s += 1;
                }
            }
        } else {
            // One counter per slot, every rule sees every connection.
            let mut s = 0;
            for (i, u) in self.uplinks.iter().enumerate() {
                for _ in 0..u.weight {
                    let _ = writeln!(
                        out,
                        "-A {chain} -m statistic --mode nth --every {total} --packet {s} -j {}",
                        target(i)
                    );
                    s += 1;
                }
            }
        }
    }

    fn save(&self) -> String {
        let mut out = String::from("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
        match self.shape {
            Shape::SplitChain | Shape::Inline => self.ct_shape(&mut out),
            Shape::PerMarkChains => self.per_mark(&mut out),
            Shape::Mwan3 => self.mwan3(&mut out),
        }
        out.push_str("COMMIT\n");
        out
    }

    /// Prefix rules of PREROUTING: restore, ingress marks, the shadowing ACCEPT.
    fn head(&self, restore: &str, out: &mut String) {
        let _ = writeln!(out, "{restore}");
        if self.ingress {
            self.ingress_rules("PREROUTING", " -m state --state NEW", "CONNMARK", out);
        }
        self.shadow_rule("PREROUTING", "ACCEPT", out);
    }

    /// One rule per uplink giving its inbound connections its mark.
    fn ingress_rules(&self, chain: &str, cond: &str, target: &str, out: &mut String) {
        for u in self.uplinks {
            let (i, m) = (UPLINKS[u.slot], self.m(u.mark));
            let _ = writeln!(out, "-A {chain} -i {i}{cond} -j {target} --set-xmark {m}");
        }
    }

    /// The rule ahead of the balancer that shadows one selected port, if any.
    fn shadow_rule(&self, chain: &str, verdict: &str, out: &mut String) {
        if let (Some(p), Some(proto)) = (self.shadow, self.sel.proto) {
            let _ = writeln!(
                out,
                "-A {chain} -i lan0 -p {proto} -m {proto} --dport {p} -j {verdict}"
            );
        }
    }

    /// Connection marks set by CONNMARK, in a split chain or inline.
    fn ct_shape(&self, out: &mut String) {
        let mask = self.mask;
        let chain = if self.shape == Shape::Inline {
            "PREROUTING"
        } else {
            "SPLIT"
        };
        if chain == "SPLIT" {
            out.push_str(":SPLIT - [0:0]\n");
        }
        let restore = format!("-A PREROUTING -m state --state RELATED,ESTABLISHED -j CONNMARK --restore-mark --nfmask {mask:#x} --ctmask {mask:#x}");
        self.head(&restore, out);
        let sel = format!(" -i lan0{} -m state --state NEW", self.sel.args());
        let (pre, cond) = if chain == "SPLIT" {
            let _ = writeln!(out, "-A PREROUTING{sel} -j SPLIT");
            (String::new(), String::new())
        } else {
            (String::new(), sel.clone())
        };
        let _ = pre;
        for &e in self.excluded {
            let _ = writeln!(out, "-A {chain}{cond} -d {} -j RETURN", EXCLUDABLE[e].0);
        }
        if let Some(k) = self.pin {
            let _ = writeln!(
                out,
                "-A {chain}{cond} -s 192.168.60.0/24 -j CONNMARK --set-xmark {}",
                self.m(self.uplinks[k].mark)
            );
        }
        let guard = format!("{cond} -m connmark --mark {}", self.m(0));
        let target = |i: usize| format!("CONNMARK --set-xmark {}", self.m(self.uplinks[i].mark));
        let inline = chain == "PREROUTING";
        if !inline && self.pin.is_some() {
            let _ = writeln!(out, "-A SPLIT -m connmark ! --mark {} -j RETURN", self.m(0));
        }
        if inline || self.pin.is_some() || self.random {
            self.split(chain, &target, &guard, inline || self.pin.is_some(), out);
        } else {
            self.split(chain, &target, "", false, out);
        }
        let _ = writeln!(out, "-A PREROUTING -m connmark ! --mark {} -j CONNMARK --restore-mark --nfmask {mask:#x} --ctmask {mask:#x}", self.m(0));
    }

    /// nth/random rules jumping to per-mark chains doing MARK + save-mark; no ingress marks.
    fn per_mark(&self, out: &mut String) {
        let mask = self.mask;
        for u in self.uplinks {
            let _ = writeln!(out, ":TO_{} - [0:0]", UPLINKS[u.slot].to_uppercase());
        }
        let _ = writeln!(
            out,
            "-A PREROUTING -j CONNMARK --restore-mark --nfmask {mask:#x} --ctmask {mask:#x}"
        );
        let sel = format!(" -i lan0{}", self.sel.args());
        for &e in self.excluded {
            let _ = writeln!(out, "-A PREROUTING{sel} -d {} -j RETURN", EXCLUDABLE[e].0);
        }
        self.shadow_rule("PREROUTING", "ACCEPT", out);
        if let Some(k) = self.pin {
            let _ = writeln!(
                out,
                "-A PREROUTING{sel} -s 192.168.60.0/24 -m mark --mark {} -j TO_{}",
                self.m(0),
                UPLINKS[self.uplinks[k].slot].to_uppercase()
            );
        }
        let guard = format!("{sel} -m mark --mark {}", self.m(0));
        let target = |i: usize| format!("TO_{}", UPLINKS[self.uplinks[i].slot].to_uppercase());
        self.split("PREROUTING", &target, &guard, true, out);
        for u in self.uplinks {
            let c = format!("TO_{}", UPLINKS[u.slot].to_uppercase());
            let _ = writeln!(out, "-A {c} -j MARK --set-xmark {}", self.m(u.mark));
            let _ = writeln!(
                out,
                "-A {c} -j CONNMARK --save-mark --nfmask {mask:#x} --ctmask {mask:#x}"
            );
        }
    }

    /// mwan3: masked restore without state, masked mark conditions, a policy chain, and
    /// exclusions as the "main table" mark (every bit of the mask).
    fn mwan3(&self, out: &mut String) {
        let mask = self.mask;
        out.push_str(":mwan3_hook - [0:0]\n:mwan3_ifaces_in - [0:0]\n:mwan3_rules - [0:0]\n:mwan3_policy - [0:0]\n");
        out.push_str("-A PREROUTING -j mwan3_hook\n");
        let z = self.m(0);
        let _ = writeln!(out, "-A mwan3_hook -m mark --mark {z} -j CONNMARK --restore-mark --nfmask {mask:#x} --ctmask {mask:#x}");
        if self.ingress {
            let _ = writeln!(out, "-A mwan3_hook -m mark --mark {z} -j mwan3_ifaces_in");
            self.ingress_rules(
                "mwan3_ifaces_in",
                &format!(" -m mark --mark {z}"),
                "MARK",
                out,
            );
        }
        self.shadow_rule("mwan3_hook", "RETURN", out);
        let _ = writeln!(
            out,
            "-A mwan3_hook -i lan0 -m mark --mark {z} -j mwan3_rules"
        );
        let _ = writeln!(
            out,
            "-A mwan3_hook -j CONNMARK --save-mark --nfmask {mask:#x} --ctmask {mask:#x}"
        );
        for &e in self.excluded {
            let _ = writeln!(
                out,
                "-A mwan3_rules -d {} -m mark --mark {z} -j MARK --set-xmark {}",
                EXCLUDABLE[e].0,
                self.m(mask)
            );
        }
        if let Some(k) = self.pin {
            let _ = writeln!(
                out,
                "-A mwan3_rules -s 192.168.60.0/24 -m mark --mark {z} -j MARK --set-xmark {}",
                self.m(self.uplinks[k].mark)
            );
        }
        let _ = writeln!(
            out,
            "-A mwan3_rules{} -m mark --mark {z} -j mwan3_policy",
            self.sel.args()
        );
        let target = |i: usize| format!("MARK --set-xmark {}", self.m(self.uplinks[i].mark));
        self.split(
            "mwan3_policy",
            &target,
            &format!(" -m mark --mark {z}"),
            true,
            out,
        );
    }

    fn ip_lines(&self) -> String {
        let mut out = String::new();
        if self.shape == Shape::Mwan3 {
            let _ = writeln!(
                out,
                "ip rule add priority 900 fwmark {mask:#x}/{mask:#x} lookup main",
                mask = self.mask
            );
        }
        for (i, u) in self.uplinks.iter().enumerate() {
            let _ = writeln!(
                out,
                "ip rule add priority {} fwmark {:#x}/{:#x} lookup {}",
                1000 + i,
                u.mark,
                self.mask,
                u.table
            );
            let _ = writeln!(
                out,
                "ip route add default via {} dev {} table {}",
                next_hop(u.slot),
                UPLINKS[u.slot],
                u.table
            );
        }
        out
    }

    fn probes(&self) -> Vec<Probe> {
        let (udp, port) = match self.sel.proto {
            None => (true, 4000),
            Some(p) => (p == "udp", *self.sel.ports.last().expect("ports")),
        };
        let probe = |src, dst, udp, dport, expect, why| Probe {
            src,
            dst,
            udp,
            dport,
            expect,
            why,
        };
        let mut out = vec![probe(
            SRC_MAIN,
            BALANCED_DST,
            udp,
            port,
            Expect::Balanced,
            "selected",
        )];
        out.push(probe(
            SRC_OTHER_LAN,
            BALANCED_DST,
            udp,
            port,
            Expect::Unmarked,
            "another LAN",
        ));
        if self.sel.proto.is_some() {
            let unselected = (1..)
                .map(|p| 7000 + p)
                .find(|p| !self.sel.ports.contains(p))
                .expect("a port");
            out.push(probe(
                SRC_MAIN,
                BALANCED_DST,
                udp,
                unselected,
                Expect::Unmarked,
                "unselected port",
            ));
        }
        for &e in self.excluded {
            out.push(probe(
                SRC_MAIN,
                EXCLUDABLE[e].1,
                udp,
                port,
                Expect::Unmarked,
                "excluded destination",
            ));
        }
        if let Some(p) = self.shadow {
            out.push(probe(
                SRC_MAIN,
                BALANCED_DST,
                udp,
                p,
                Expect::Unmarked,
                "shadowed by ACCEPT",
            ));
        }
        if let Some(k) = self.pin {
            out.push(probe(
                SRC_PINNED,
                BALANCED_DST,
                udp,
                port,
                Expect::Pinned(k),
                "pinned source",
            ));
        }
        out
    }
}
