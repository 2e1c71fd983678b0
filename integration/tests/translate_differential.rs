//! `translate` against the kernel on generated legacy balancers (`legacy_gen`): for each
//! one, the rules loaded with iptables-legacy-restore in one router namespace and the
//! translated spec applied by `nftbalance apply` in another must send every probed class of
//! new connections to the same uplinks: exactly the weights for nth splits (whole periods),
//! within bounds for random ones, and every packet to the one expected uplink for unmarked,
//! excluded, shadowed and pinned classes.
//!
//! Each rig is three namespaces: a LAN, the router, and a sink holding every uplink's far
//! end (and the main table's), which counts the first packets per interface and drops them:
//! UDP datagrams or TCP SYNs from fresh source ports, so each is a new connection.
//! `NFTBALANCE_DIFF_INPUTS` sets how many inputs (default 40; `make stress` runs more).

use std::io::ErrorKind;
use std::net::{SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nftbalance_integration::legacy_gen::{self, Expect, Generated, Probe, LANS, UPLINKS};
use nftbalance_integration::netns::{Netns, PATH};
use nftbalance_integration::target_binary;
use nftbalance_translate::{to_spec, Input};

/// The sink's counter index of the main table's interface (after the uplinks').
const MAIN: usize = UPLINKS.len();

fn mac(a: u8, b: u8, side: u8) -> String {
    format!("02:00:00:{a:02x}:{b:02x}:{side:02x}")
}

struct Rig {
    lan: Netns,
    router: Netns,
    sink: Netns,
    next_port: u16,
}

fn batch(ns: &Netns, lines: &str) {
    let out = ns.exec("ip", &["-batch", "-"], Some(lines.as_bytes()));
    assert!(
        out.status.success(),
        "ip -batch in {}: {}\n{lines}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Rig {
    fn new() -> Rig {
        let (lan, router, sink) = (
            Netns::new("dflan"),
            Netns::new("dfrtr"),
            Netns::new("dfsink"),
        );
        router.sysctl(&[
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ]);
        let (mut r, mut s, mut l) = (String::new(), String::new(), String::new());
        let uplinks = UPLINKS
            .iter()
            .enumerate()
            .map(|(k, n)| (k as u8, *n))
            .chain([(9u8, "main0")]);
        for (k, name) in uplinks {
            let (ours, theirs) = (mac(0, k, 1), mac(0, k, 2));
            r += &format!("link add {name} address {ours} type veth peer name {name} address {theirs} netns {}\n", sink.name());
            r += &format!("addr add 100.64.{k}.1/30 dev {name}\nlink set {name} up\n");
            r += &format!("neigh replace 100.64.{k}.2 lladdr {theirs} dev {name} nud permanent\n");
            s += &format!("addr add 100.64.{k}.2/30 dev {name}\nlink set {name} up\n");
        }
        for (k, name) in LANS.iter().enumerate() {
            let (ours, theirs) = (mac(1, k as u8, 1), mac(1, k as u8, 2));
            r += &format!("link add {name} address {ours} type veth peer name {name} address {theirs} netns {}\n", lan.name());
            r += &format!("link set {name} up\n");
            l += &format!("link set {name} up\n");
            let nets: &[u8] = if k == 0 { &[50, 60] } else { &[70] };
            for n in nets {
                r += &format!("addr add 192.168.{n}.1/24 dev {name}\n");
                r += &format!(
                    "neigh replace 192.168.{n}.10 lladdr {theirs} dev {name} nud permanent\n"
                );
                l += &format!("addr add 192.168.{n}.10/24 dev {name}\n");
                l += &format!(
                    "neigh replace 192.168.{n}.1 lladdr {ours} dev {name} nud permanent\n"
                );
            }
        }
        r += "route add default via 100.64.9.2 dev main0\n";
        l += "route add default via 192.168.50.1 dev lan0\nrule add from 192.168.70.0/24 lookup 70\n";
        l += "route add default via 192.168.70.1 dev lan1 table 70\n";
        batch(&router, &r);
        batch(&sink, &s);
        batch(&lan, &l);
        let mut nft = String::from("table ip sink {\n chain pre {\n  type filter hook prerouting priority -500; policy accept;\n");
        for name in UPLINKS.iter().chain(&["main0"]) {
            nft += &format!("  iifname \"{name}\" meta l4proto {{ tcp, udp }} counter drop\n");
        }
        nft += " }\n}\n";
        sink.load_nft(&nft);
        Rig {
            lan,
            router,
            sink,
            next_port: 20000,
        }
    }

    fn counts(&self) -> Vec<u64> {
        self.sink.rule_counters(&["table", "ip", "sink"])
    }

    /// Sends `n` new connections of the probe's class; how many reached each sink interface.
    fn send(&mut self, p: &Probe, n: u32) -> Vec<u64> {
        let before = self.counts();
        let first = self.next_port;
        self.next_port += n as u16;
        self.lan.run(|| {
            for port in first..first + n as u16 {
                let from = SocketAddrV4::new(p.src, port);
                let to = SocketAddrV4::new(p.dst, p.dport);
                if p.udp {
                    let s = UdpSocket::bind(from).expect("bind");
                    s.send_to(b"probe", to).expect("send");
                } else {
                    syn(from, to);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let after = self.counts();
            let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
            if delta.iter().sum::<u64>() >= u64::from(n) || Instant::now() > deadline {
                return delta;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A TCP SYN from `from` (a non-blocking connect, then closed).
fn syn(from: SocketAddrV4, to: SocketAddrV4) {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    s.set_nonblocking(true).expect("nonblocking");
    s.bind(&from.into()).expect("bind");
    match s.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(115) || e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => panic!("connect {to}: {e}"),
    }
}

fn scratch(g: &Generated) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("nbt-diff-{}-{}", std::process::id(), g.seed));
    std::fs::create_dir_all(&dir).unwrap();
    let (save, ip) = (dir.join("rules.save"), dir.join("ip.sh"));
    std::fs::write(&save, &g.save).unwrap();
    std::fs::write(&ip, &g.ip_lines).unwrap();
    (save, ip)
}

/// `nftbalance translate` of the generated input: it must translate completely (exit 0).
fn translate(g: &Generated) -> String {
    let (save, ip) = scratch(g);
    let out = std::process::Command::new(target_binary("nftbalance"))
        .args(["translate", save.to_str().unwrap(), ip.to_str().unwrap()])
        .env("PATH", PATH)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(save.parent().unwrap());
    assert!(
        out.status.success(),
        "seed {}: translate failed\n{}\n{}{}",
        g.seed,
        String::from_utf8_lossy(&out.stderr),
        g.save,
        g.ip_lines
    );
    String::from_utf8(out.stdout).unwrap()
}

fn legacy_router(g: &Generated) -> Rig {
    let rig = Rig::new();
    let out = rig
        .router
        .exec("iptables-legacy-restore", &[], Some(g.save.as_bytes()));
    assert!(
        out.status.success(),
        "seed {}: {}\n{}",
        g.seed,
        String::from_utf8_lossy(&out.stderr),
        g.save
    );
    batch(
        &rig.router,
        &g.ip_lines
            .lines()
            .map(|l| l.trim_start_matches("ip "))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    rig
}

fn spec_router(g: &Generated, spec: &str) -> Rig {
    let rig = Rig::new();
    let out = rig.router.exec(
        &target_binary("nftbalance"),
        &["apply", "-"],
        Some(spec.as_bytes()),
    );
    assert!(
        out.status.success(),
        "seed {}: apply: {}\n{spec}",
        g.seed,
        String::from_utf8_lossy(&out.stderr)
    );
    rig
}

/// How many connections a probe sends, and each sink interface's expected share.
fn plan(g: &Generated, p: &Probe) -> (u32, Vec<f64>) {
    let mut share = vec![0.0; UPLINKS.len() + 1];
    match p.expect {
        Expect::Unmarked => share[MAIN] = 1.0,
        Expect::Pinned(k) => share[g.uplinks[k].slot] = 1.0,
        Expect::Balanced => {
            let t = f64::from(g.period());
            for u in &g.uplinks {
                share[u.slot] = f64::from(u.weight) / t;
            }
        }
    }
    let n = match (p.expect, g.random) {
        (Expect::Balanced, true) => 400,
        (Expect::Balanced, false) => 2 * g.period(),
        _ => 6,
    };
    (n, share)
}

/// Pearson's chi-square statistic of one random-split probe's counts against its shares
/// (expectations from the connections that arrived), with its degrees of freedom (uplinks
/// with a share, less one).
fn chi_square(share: &[f64], got: &[u64]) -> (f64, u32) {
    let cells = share.iter().zip(got).filter(|(s, _)| **s > 0.0);
    let n: u64 = cells.clone().map(|(_, g)| g).sum();
    let stat = cells
        .clone()
        .map(|(s, &g)| {
            let e = n as f64 * s;
            (g as f64 - e).powi(2) / e
        })
        .sum();
    (stat, cells.count() as u32 - 1)
}

/// The chi-square quantile with `df` degrees of freedom whose upper tail is `z`'s one-sided
/// normal tail (Wilson-Hilferty; within a fraction of a percent for the run's hundreds of df).
fn chi_square_quantile(df: u32, z: f64) -> f64 {
    let d = f64::from(df);
    let a = 2.0 / (9.0 * d);
    d * (1.0 - a + z * a.sqrt()).powi(3)
}

/// The normal quantile of the two-sided 3-sd tail (p = 0.0027) taken as one upper tail.
const Z_3SD: f64 = 2.782;
/// The per-probe sanity bound: a chi-square this far out has a tail near 1e-9, so hundreds
/// of probes almost never trip it, while a swapped or wrong weight at n = 400 is far past it.
const Z_GROSS: f64 = 6.0;

/// Exact for deterministic classes and nth (whole periods): every count equals its
/// expectation. For random splits, a probe is only checked against a wide bound here (every
/// uplink without a share gets nothing, and its chi-square is below the `Z_GROSS` quantile);
/// the 3-sd test is one chi-square over all random probes of the run ([`random_verdict`]),
/// since 3 sd per count over hundreds of counts fails good runs about one time in three.
/// Returns the probe's chi-square and degrees of freedom (random) or None.
fn check(
    g: &Generated,
    p: &Probe,
    who: &str,
    n: u32,
    share: &[f64],
    got: &[u64],
) -> Option<(f64, u32)> {
    let ctx = || {
        format!("seed {} ({:?}, {}): probe {p:?} ({}): {who} sent {n}, sinks got {got:?}, want shares {share:?}\n{}{}", g.seed, g.shape, if g.random { "random" } else { "nth" }, p.why, g.save, g.ip_lines)
    };
    let random = g.random && p.expect == Expect::Balanced;
    for (k, s) in share.iter().enumerate() {
        let want = f64::from(n) * s;
        let ok = if random && *s > 0.0 {
            true
        } else {
            got[k] as f64 == want
        };
        assert!(ok, "{}", ctx());
    }
    if !random {
        return None;
    }
    let (stat, df) = chi_square(share, got);
    let bound = chi_square_quantile(df, Z_GROSS);
    assert!(
        stat <= bound,
        "chi-square {stat:.1} > {bound:.1} (df {df}): {}",
        ctx()
    );
    Some((stat, df))
}

/// The run's 3-sd test: the sum of every random probe's chi-square (independent probes, so
/// it is chi-square with the summed df) against the quantile of upper tail p = 0.0027.
fn random_verdict(stats: &[(f64, u32)]) {
    let stat: f64 = stats.iter().map(|s| s.0).sum();
    let df: u32 = stats.iter().map(|s| s.1).sum();
    if df == 0 {
        return;
    }
    let bound = chi_square_quantile(df, Z_3SD);
    eprintln!("random splits: chi-square {stat:.1}, {df} df, bound {bound:.1}");
    assert!(
        stat <= bound,
        "random splits: chi-square {stat:.1} over {} probes exceeds {bound:.1}, the p = 0.0027 quantile with {df} df",
        stats.len()
    );
}

/// Both routers on every probe; the random probes' chi-squares, for [`random_verdict`].
fn differential(g: &Generated) -> Vec<(f64, u32)> {
    let spec = translate(g);
    let mut legacy = legacy_router(g);
    let mut ours = spec_router(g, &spec);
    let mut stats = Vec::new();
    for p in &g.probes {
        let (n, share) = plan(g, p);
        let theirs = legacy.send(p, n);
        stats.extend(check(g, p, "iptables-legacy", n, &share, &theirs));
        let mine = ours.send(p, n);
        stats.extend(check(g, p, "nftbalance", n, &share, &mine));
        if !g.random {
            assert_eq!(theirs, mine, "seed {}: {p:?}", g.seed);
        }
    }
    stats
}

fn inputs() -> u64 {
    std::env::var("NFTBALANCE_DIFF_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

#[test]
fn generated_legacy_balancers_and_their_translated_specs_route_alike() {
    let n = inputs();
    let seeds: Vec<u64> = (1..=n).collect();
    // Two workers: each input's two rigs are built and probed in sequence.
    let stats: Vec<(f64, u32)> = std::thread::scope(|s| {
        let workers: Vec<_> = seeds
            .chunks(seeds.len().div_ceil(2).max(1))
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .flat_map(|&seed| differential(&legacy_gen::generate(seed)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    random_verdict(&stats);
}

#[test]
fn the_random_verdict_accepts_chance_and_rejects_a_wrong_weight() {
    // Chi-square quantiles: 1 df at 3 sd is 9 (z^2); 100 df at p = 0.0027 is about 144.
    assert!((chi_square_quantile(1, Z_3SD) - 9.0).abs() < 0.6);
    assert!((chi_square_quantile(100, Z_3SD) - 144.0).abs() < 3.0);
    let share = [0.25, 0.75, 0.0];
    assert_eq!(chi_square(&share, &[100, 300, 0]), (0.0, 1));
    // Weights swapped (3:1 read as 1:3) at n = 400: far past even the per-probe bound.
    let (stat, df) = chi_square(&share, &[300, 100, 0]);
    assert!(stat > chi_square_quantile(df, Z_GROSS), "{stat}");
}

/// Without the kernel: every generated input translates completely, with its gateways,
/// marks and weights (many more inputs than the packet test, in milliseconds).
#[test]
fn generated_legacy_balancers_translate_completely() {
    for seed in 1..=300 {
        let g = legacy_gen::generate(seed);
        let inputs = [
            Input {
                name: "rules.save",
                text: &g.save,
            },
            Input {
                name: "ip.sh",
                text: &g.ip_lines,
            },
        ];
        let (spec, report) = to_spec(&inputs, &Default::default())
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}{}", g.save, g.ip_lines));
        let marking: Vec<String> = report
            .marking()
            .map(|e| format!("{}: {}", e.loc, e.text))
            .collect();
        assert!(
            marking.is_empty(),
            "seed {seed}: {marking:?}\n{report}\n{}{}",
            g.save,
            g.ip_lines
        );
        assert_eq!(
            spec.gateways.len(),
            g.uplinks.len(),
            "seed {seed}\n{}",
            g.save
        );
        let total: u32 = g.uplinks.iter().map(|u| u.weight).sum();
        let spec_total: u32 = spec.gateways.iter().map(|x| x.weight).sum();
        for u in &g.uplinks {
            let gw = spec
                .gateways
                .iter()
                .find(|x| x.mark == u.mark)
                .unwrap_or_else(|| panic!("seed {seed}: mark {:#x}", u.mark));
            assert_eq!(gw.interface, UPLINKS[u.slot], "seed {seed}");
            assert_eq!(
                u64::from(gw.weight) * u64::from(total),
                u64::from(u.weight) * u64::from(spec_total),
                "seed {seed}: weights\n{}",
                g.save
            );
        }
        assert_eq!(spec.mark_mask, g.mask, "seed {seed}");
    }
}
