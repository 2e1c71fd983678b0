//! `make bench`'s data path (the failover update is `benches/failover.rs`): new-flow rate through
//! the namespaced router (LAN host -> router -> provider -> server), one UDP datagram per new
//! flow from `nbflood`, for: no ruleset; conntrack with one mark rule (all flows on one
//! uplink, and spread over both by numgen); nftbalance with none and with 100k exclusion
//! prefixes; the seed-style iptables-legacy chains with the same 100k exclusions as RETURN
//! rules. The nftables rows share one topology and take turns on it, round by round (a
//! topology of its own would add its own bias: two identical ones measured 0.90x and 0.93x
//! of a third in one hand-run comparison);
//! before each flood the router's ruleset is replaced and its conntrack table emptied.
//! The new-flow table also has the rulesets two peers produce for the same job (VyOS 1.4+
//! load-balancing wan, mwan3 as iptables-nft; `peers.rs`); a second table measures
//! established packets: 64 long-lived UDP flows, each answered once by the server, then
//! flooding (`nbbench established` runs it alone, `nbbench new-flows` the first).
//!
//! `nbbench compare [--perf] FILE...` measures nft rulesets of your own the same way (each
//! loaded with `nft -f` under nftbalance's policy routing), against the one-mark baseline;
//! `--perf` profiles one flood per row instead and prints the share of the CPU in nf_tables.

use std::time::Duration;

use nftbalance_integration::peers;
use nftbalance_integration::topology::{lan_hosts, Backend, Topology, SERVER};
use nftbalance_integration::{bench_spec as spec, target_binary};

/// Rounds per table (`NBBENCH_ROUNDS` overrides, for a shorter run).
fn rounds() -> usize {
    std::env::var("NBBENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(9)
}
const SECONDS: u64 = 2;
const PREFIXES: u32 = 100_000;

fn delivered(topo: &Topology) -> u64 {
    topo.server
        .rule_counters(&["table", "inet", "sink"])
        .iter()
        .sum()
}

/// A data-path topology: no source filtering upstream (the baselines do no NAT), a counting
/// sink on the server, short UDP timeouts (the router's table is emptied before each flood
/// anyway).
fn data_path_topology(setup: impl Fn(&Topology)) -> Topology {
    let topo = Topology::new(2);
    topo.router.ok(
        "sysctl",
        &["-qw", "net.netfilter.nf_conntrack_udp_timeout=1"],
    );
    topo.server.load_nft(&format!("table inet sink {{\n chain input {{ type filter hook input priority 0;\n  udp dport 1024-65535 counter drop\n  udp dport {ECHO_PORT} counter\n }}\n}}\n"));
    // The established flows' one answer goes back through uplink 1 (no NAT in these rows).
    let lan = "192.168.1.0/24";
    topo.server
        .ok("ip", &["route", "add", lan, "via", "172.31.1.1"]);
    for (isp, up) in topo.isps.iter().zip(&topo.uplinks) {
        isp.ok("nft", &["delete", "table", "inet", "bcp38"]);
        isp.ok("ip", &["route", "add", lan, "via", &up.address.to_string()]);
    }
    setup(&topo);
    topo
}

/// New flows per second delivered to the server during one flood of `SECONDS`.
fn flood(topo: &Topology) -> f64 {
    let before = delivered(topo);
    run_flood(topo, &[]);
    std::thread::sleep(Duration::from_millis(300));
    (delivered(topo) - before) as f64 / SECONDS as f64
}

const ECHO_PORT: u16 = 7;
const FLOWS: usize = 64;

/// Established packets per second delivered during one flood of `SECONDS` by `FLOWS` UDP
/// flows, each made established first by one answered datagram (the server's responder
/// answers each flow once, then leaves the socket unread: the rest is counted and dropped).
fn established_flood(topo: &Topology) -> f64 {
    let sock = topo
        .server
        .run(|| std::net::UdpSocket::bind((SERVER, ECHO_PORT)).expect("bind echo"));
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let responder = std::thread::spawn(move || {
        let mut seen = std::collections::HashSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 64];
        while seen.len() < FLOWS && std::time::Instant::now() < deadline {
            if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                if seen.insert(peer) {
                    let _ = sock.send_to(b"hi", peer);
                }
            }
        }
        sock
    });
    let before = delivered(topo);
    let sent = run_flood(
        topo,
        &[
            "--established",
            &FLOWS.to_string(),
            "--port",
            &ECHO_PORT.to_string(),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    drop(responder.join().expect("responder"));
    assert!(sent > 0, "no established flood");
    (delivered(topo) - before) as f64 / SECONDS as f64
}

/// Runs nbflood from the LAN host addresses to the server with these extra arguments;
/// returns the datagrams it sent.
fn run_flood(topo: &Topology, extra: &[&str]) -> u64 {
    let from: Vec<String> = lan_hosts().iter().map(ToString::to_string).collect();
    let secs = SECONDS.to_string();
    let from = from.join(",");
    let mut args = vec![SERVER, "--seconds", &secs, "--from", &from];
    args.extend_from_slice(extra);
    let out = topo.lan.ok(&target_binary("nbflood"), &args);
    out.trim().parse().unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// What a data-path row puts on the router before each of its floods.
enum Setup {
    /// Its own topology, configured once (the legacy row: iptables-legacy tables, once
    /// instantiated in a namespace, stay hooked in, so they must not share one).
    Fixed,
    /// Any nftables ruleset flushed, nothing loaded.
    Empty,
    /// This nft text, loaded with `nft -f`.
    Nft(String),
    /// `nftbalance apply` of this spec.
    Apply(String),
}

struct Row {
    name: String,
    topo: usize,
    setup: Setup,
}

/// Puts the row's ruleset on its router and empties the router's conntrack table, so every
/// flood starts from the same state whatever ran before it.
fn install(topo: &Topology, setup: &Setup) {
    match setup {
        Setup::Fixed => {}
        Setup::Empty => {
            topo.router.ok("nft", &["flush", "ruleset"]);
        }
        Setup::Nft(text) => {
            topo.router.ok("nft", &["flush", "ruleset"]);
            topo.router.load_nft(text);
        }
        Setup::Apply(spec) => {
            topo.router.ok("nft", &["flush", "ruleset"]);
            topo.apply(spec);
        }
    }
    topo.router.run(|| {
        let socket = nftbalance_netlink::Socket::open().unwrap();
        nftbalance_netlink::conntrack::delete_by_mark(&socket, 0, 0).unwrap();
    });
}

/// The rows take turns round by round (each round starting at the next row), so a drift of
/// the machine hits every row alike. A row's ratio to a baseline row is the median of its
/// per-round ratios (each against the baseline measured in the same round). Per row: its
/// median rate, its lowest and highest round, and its ratio to each baseline.
fn data_path_rows(
    topos: &[Topology],
    rows: &[Row],
    bases: &[usize],
    flood: fn(&Topology) -> f64,
) -> Vec<(f64, (f64, f64), Vec<f64>)> {
    let (n, rounds) = (rows.len(), rounds());
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..rounds {
        for i in (0..n).map(|k| (k + round) % n) {
            let topo = &topos[rows[i].topo];
            install(topo, &rows[i].setup);
            // Let the kernel finish freeing what the install replaced (RCU callbacks for
            // the old table's elements, the deleted conntrack entries) before measuring.
            std::thread::sleep(Duration::from_secs(1));
            rates[i].push(flood(topo));
        }
    }
    (0..n)
        .map(|i| {
            let ratios = bases
                .iter()
                .map(|&b| median((0..rounds).map(|r| rates[i][r] / rates[b][r]).collect()))
                .collect();
            let low = rates[i].iter().copied().fold(f64::INFINITY, f64::min);
            let high = rates[i].iter().copied().fold(0.0, f64::max);
            (median(rates[i].clone()), (low, high), ratios)
        })
        .collect()
}

/// The shared topology of the nftables rows: nftbalance's policy routing (installed by an
/// apply, so the baselines route exactly as nftbalance does) and nothing else left loaded.
fn nftables_topology() -> Topology {
    let topo = data_path_topology(|t| t.apply(&spec(0, false)));
    topo.router.ok("nft", &["flush", "ruleset"]);
    topo
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("compare") if args.get(1).map(String::as_str) == Some("--perf") => {
            compare(args[2..].to_vec(), true)
        }
        Some("compare") => compare(args[1..].to_vec(), false),
        None | Some("data-path") => {
            data_path_table();
            established_table();
        }
        Some("new-flows") => data_path_table(),
        Some("established") => established_table(),
        Some(_) => {
            eprintln!("usage: nbbench [data-path | new-flows | established] | nbbench compare [--perf] FILE...");
            std::process::exit(2)
        }
    }
}

/// `nbbench compare [--perf] FILE...`: each file's nft ruleset against the one-mark baseline.
/// With `--perf`, one flood per row under `perf record -a` instead, and the share of the busy
/// CPU samples that nf_tables code took.
fn compare(files: Vec<String>, perf: bool) {
    let mut rows = vec![Row {
        name: "conntrack + one mark rule".to_string(),
        topo: 0,
        setup: Setup::Nft(one_rule("meta mark set 0x1")),
    }];
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        rows.push(Row {
            name: f,
            topo: 0,
            setup: Setup::Nft(text),
        });
    }
    let topos = [nftables_topology()];
    if perf {
        perf_table(&topos[0], &rows);
    } else {
        print_data_path(&topos, &rows, &[(0, "vs one mark rule")], NEW_FLOWS);
    }
}

/// One flood per row under `perf record -a` (all CPUs, so softirq work is in): busy samples
/// (all but the idle loop) and the share of them in nf_tables functions (`nft_*`,
/// `nf_tables_*`, and `bsearch`, which the interval set's lookup calls).
fn perf_table(topo: &Topology, rows: &[Row]) {
    let dir = std::env::temp_dir().join(format!("nbbench-perf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "| ruleset (one flood of {SECONDS} s under perf record -a) | busy samples | in nf_tables |"
    );
    println!("|---|---:|---:|");
    for (i, row) in rows.iter().enumerate() {
        install(topo, &row.setup);
        std::thread::sleep(Duration::from_secs(1));
        let data = dir.join(format!("{i}.data"));
        let data = data.to_str().unwrap();
        let secs = SECONDS.to_string();
        let mut recorder = std::process::Command::new("perf")
            .args(["record", "-a", "-q", "-o", data, "--", "sleep", &secs])
            .spawn()
            .expect("perf (Debian: linux-perf)");
        flood(topo);
        assert!(recorder.wait().unwrap().success(), "perf record failed");
        let report = std::process::Command::new("perf")
            .args(["report", "-i", data, "--no-children", "--sort", "symbol"])
            .args(["-F", "sample,sym", "--stdio"])
            .output()
            .unwrap();
        let (busy, nft) = busy_and_nft(&String::from_utf8_lossy(&report.stdout));
        println!(
            "| {} | {busy} | {:.1}% |",
            row.name,
            100.0 * nft as f64 / busy.max(1) as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// From `perf report -F sample,sym` lines (`SAMPLES [k] SYMBOL`): samples outside the idle
/// loop, and those of them in nf_tables functions.
fn busy_and_nft(report: &str) -> (u64, u64) {
    let (mut busy, mut nft) = (0, 0);
    for line in report.lines().filter(|l| !l.starts_with('#')) {
        let mut words = line.split_whitespace();
        let (Some(n), Some(_), Some(sym)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        if ["idle", "halt", "mwait"].iter().any(|w| sym.contains(w)) {
            continue;
        }
        busy += n;
        if sym.starts_with("nft_") || sym.starts_with("nf_tables_") || sym == "bsearch" {
            nft += n;
        }
    }
    (busy, nft)
}

/// A baseline table: one rule in a mangle-priority prerouting chain, on new connections.
fn one_rule(rule: &str) -> String {
    format!("table inet bench {{\n chain pre {{ type filter hook prerouting priority mangle;\n  ct state new {rule}\n }}\n}}\n")
}

/// The table: each row's median rate and its ratio to each `(row, column title)` baseline.
fn print_data_path(
    topos: &[Topology],
    rows: &[Row],
    bases: &[(usize, &str)],
    (flood, unit): (fn(&Topology) -> f64, &str),
) {
    let titles: String = bases.iter().map(|(_, t)| format!(" {t} |")).collect();
    let aligns: String = bases.iter().map(|_| "---:|").collect();
    let rounds = rounds();
    println!(
        "| data path ({rounds} interleaved rounds of {SECONDS} s, medians) | {unit} | rounds from-to |{titles}"
    );
    println!("|---|---:|---:|{aligns}");
    let columns: Vec<usize> = bases.iter().map(|(b, _)| *b).collect();
    for (row, (rate, (low, high), ratios)) in rows
        .iter()
        .zip(data_path_rows(topos, rows, &columns, flood))
    {
        let ratios: String = ratios.iter().map(|r| format!(" {r:.2}x |")).collect();
        println!("| {} | {rate:.0} | {low:.0}-{high:.0} |{ratios}", row.name);
    }
}

/// Every nftables row of the two tables, by name, in table order.
fn nft_rows() -> Vec<(&'static str, Setup)> {
    // Without SNAT the rows differ only in the balancer; the baselines do no NAT either.
    vec![
        ("no ruleset", Setup::Empty),
        (
            "conntrack + one mark rule (every flow on uplink 1)",
            Setup::Nft(one_rule("meta mark set 0x1")),
        ),
        (
            "conntrack + one numgen mark rule (flows on both uplinks)",
            Setup::Nft(one_rule(
                "meta mark set numgen inc mod 2 map { 0 : 0x1, 1 : 0x2 }",
            )),
        ),
        (
            "nftbalance, no exclusion prefixes",
            Setup::Apply(spec(0, false)),
        ),
        (
            "nftbalance, 100k exclusion prefixes",
            Setup::Apply(spec(PREFIXES, false)),
        ),
        (
            "nftbalance, 100k exclusion prefixes, with SNAT",
            Setup::Apply(spec(PREFIXES, true)),
        ),
        (
            "VyOS 1.4+ load-balancing wan ruleset, 100k exclusion prefixes",
            Setup::Nft(peers::vyos(PREFIXES)),
        ),
        (
            "mwan3 ruleset (as iptables-nft), 100k exclusion prefixes",
            Setup::Nft(peers::mwan3(PREFIXES)),
        ),
    ]
}

/// The rows of `nft_rows` at these indices, on the first topology.
fn pick(indices: &[usize]) -> Vec<Row> {
    nft_rows()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| indices.contains(i))
        .map(|(_, (name, setup))| Row {
            name: name.to_string(),
            topo: 0,
            setup,
        })
        .collect()
}

fn data_path_table() {
    let mut rows = pick(&[0, 1, 2, 3, 4, 5, 6, 7]);
    rows.push(Row {
        name: "seed-style iptables-legacy, 100k RETURN rules".to_string(),
        topo: 1,
        setup: Setup::Fixed,
    });
    let legacy =
        data_path_topology(|t| t.apply_with(Backend::IptablesLegacy, &spec(PREFIXES, false)));
    print_data_path(
        &[nftables_topology(), legacy],
        &rows,
        &[
            (1, "vs one mark rule"),
            (2, "vs one numgen rule"),
            (6, "vs VyOS"),
            (7, "vs mwan3"),
        ],
        NEW_FLOWS,
    );
}

const NEW_FLOWS: (fn(&Topology) -> f64, &str) = (flood, "new flows/s");

/// Established packets: `FLOWS` long-lived UDP flows through the router, per ruleset.
fn established_table() {
    let rows = pick(&[1, 2, 4, 6, 7]);
    print_data_path(
        &[nftables_topology()],
        &rows,
        &[(0, "vs one mark rule"), (3, "vs VyOS"), (4, "vs mwan3")],
        (established_flood, "established packets/s"),
    );
}
