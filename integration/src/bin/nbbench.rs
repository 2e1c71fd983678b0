//! `make bench`: failover update against full apply, and the data path: new-flow rate through
//! the namespaced router (LAN host -> router -> provider -> server), one UDP datagram per new
//! flow from `nbflood`, for: no ruleset; conntrack with one mark rule (all flows on one
//! uplink, and spread over both by numgen); nftbalance with none and with 100k exclusion
//! prefixes; the seed-style iptables-legacy chains with the same 100k exclusions as RETURN
//! rules. Each configuration has its own topology; the rows take turns, round by round.

use std::time::Duration;

use nftbalance_integration::topology::{lan_hosts, Backend, Topology, SERVER};
use nftbalance_integration::{slash30, target_binary};
use serde_json::Value;

const ROUNDS: usize = 7;
const SECONDS: u64 = 2;
const PREFIXES: usize = 100_000;

/// The seed spec with a UDP forward selector and `n` disjoint /30 exclusions.
fn spec(n: usize, snat: bool) -> String {
    let prefixes: Vec<String> = (0..n as u32).map(|i| slash30(i, 0)).collect();
    format!(
        r#"{{ "gateways": [
            {{ "name": "isp1", "interface": "ppp0", "mark": 1, "address": "100.0.1.1", "via": "100.0.1.254", "route_table": 101 }},
            {{ "name": "isp2", "interface": "ppp1", "mark": 2, "address": "100.0.2.1", "via": "100.0.2.254", "route_table": 102 }} ],
          "balance": {{ "forward": [ {{ "iif": "eth0", "protocol": "udp" }} ],
                        "exclude": [ {} ] }},
          "snat": {snat} }}"#,
        prefixes.join(",")
    )
}

fn load_nft(topo: &Topology, text: &str) {
    let out = topo.router.exec("nft", &["-f", "-"], Some(text.as_bytes()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn delivered(topo: &Topology) -> u64 {
    let text = topo
        .server
        .ok("nft", &["-j", "list", "table", "inet", "sink"]);
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .flat_map(|r| r["expr"].as_array().unwrap())
        .filter_map(|e| e.get("counter"))
        .map(|c| c["packets"].as_u64().unwrap())
        .sum()
}

/// A fresh topology for one data-path row: no source filtering upstream (the baselines do no
/// NAT), a counting sink on the server, short UDP timeouts so rounds do not pile up entries.
fn data_path_topology(setup: impl Fn(&Topology)) -> Topology {
    let topo = Topology::new(2);
    topo.router.ok(
        "sysctl",
        &["-qw", "net.netfilter.nf_conntrack_udp_timeout=1"],
    );
    load_nft_in(&topo.server, "table inet sink {\n chain input { type filter hook input priority 0;\n  udp dport 1024-65535 counter drop\n }\n}\n");
    for isp in &topo.isps {
        isp.ok("nft", &["delete", "table", "inet", "bcp38"]);
    }
    setup(&topo);
    topo
}

/// New flows per second delivered to the server during one flood of `SECONDS`.
fn flood(topo: &Topology) -> f64 {
    let from: Vec<String> = lan_hosts().iter().map(ToString::to_string).collect();
    let before = delivered(topo);
    topo.lan.ok(
        &target_binary("nbflood"),
        &[
            SERVER,
            "--seconds",
            &SECONDS.to_string(),
            "--from",
            &from.join(","),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let rate = (delivered(topo) - before) as f64 / SECONDS as f64;
    // Let the single-datagram flows expire before the next flood.
    std::thread::sleep(Duration::from_secs(2));
    rate
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Every row's topology exists for the whole run and the rows take turns round by round (each
/// round starting at the next row), so a drift of the machine hits every row alike. A row's ratio to a baseline row is the median
/// of its per-round ratios (each against the baseline measured in the same round).
fn data_path_rows(rows: &[(&str, Topology)], bases: &[usize]) -> Vec<(f64, Vec<f64>)> {
    let n = rows.len();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..ROUNDS {
        // Each round starts at another row, so no row always follows the same one.
        for i in (0..n).map(|k| (k + round) % n) {
            rates[i].push(flood(&rows[i].1));
        }
    }
    (0..rows.len())
        .map(|i| {
            let ratios = bases
                .iter()
                .map(|&b| median((0..ROUNDS).map(|r| rates[i][r] / rates[b][r]).collect()))
                .collect();
            (median(rates[i].clone()), ratios)
        })
        .collect()
}

fn load_nft_in(ns: &nftbalance_integration::netns::Netns, text: &str) {
    let out = ns.exec("nft", &["-f", "-"], Some(text.as_bytes()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Median of `rounds` timings of `f`, in milliseconds.
fn median_ms(rounds: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = std::time::Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

/// A failover update (one gateway down: the split and nothing else) against a full apply of
/// the same ruleset, with 1k and 100k exclusion prefixes, in-process in a namespace.
fn failover_rows() -> Vec<(usize, f64, f64)> {
    use nftbalance_netlink::{lower, transaction, Commit, Socket};
    use nftbalance_ruleset::{compile_with, Availability};
    let ns = nftbalance_integration::netns::Netns::new("bfail");
    let name = ns.name().to_string();
    [1_000usize, 100_000]
        .into_iter()
        .map(|n| {
            let spec = nftbalance_spec::Spec::from_json(&spec(n, true)).unwrap();
            let name = name.clone();
            std::thread::scope(|s| {
                s.spawn(move || {
                    let f = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
                    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    let socket = Socket::open().unwrap();
                    let all = compile_with(&spec, &Availability::default());
                    let one_down = compile_with(
                        &spec,
                        &Availability {
                            unavailable: ["isp2".to_string()].into(),
                        },
                    );
                    let run = |b: &dyn Fn() -> Result<_, _>| {
                        transaction::run(&socket, Commit::Yes, b).unwrap();
                    };
                    run(&|| lower::replace_batch(&all));
                    let mut state = false;
                    let update = median_ms(7, || {
                        let (from, to) = if state {
                            (&one_down, &all)
                        } else {
                            (&all, &one_down)
                        };
                        run(&|| lower::update_batch(from, to));
                        state = !state;
                    });
                    let full = median_ms(7, || run(&|| lower::replace_batch(&all)));
                    (n, update, full)
                })
                .join()
                .unwrap()
            })
        })
        .collect()
}

fn main() {
    // `nbbench failover` or `nbbench data-path` runs one part; no argument runs both.
    let part = std::env::args().nth(1).unwrap_or_default();
    if part != "data-path" {
        failover_table();
    }
    if part != "failover" {
        data_path_table();
    }
}

fn failover_table() {
    println!("| failover update (7 rounds, median) | update | full apply | ratio |");
    println!("|---|---:|---:|---:|");
    for (n, update, full) in failover_rows() {
        println!(
            "| {n} exclusion prefixes | {update:.1} ms | {full:.1} ms | {:.3}x |",
            update / full
        );
    }
    println!();
}

fn data_path_table() {
    // Without SNAT the rows differ only in the balancer; the baselines do no NAT either.
    // The same ip rules and tables nftbalance installs, by hand, under one mark rule.
    let one_rule = |rule: &'static str| {
        move |t: &Topology| {
            t.policy_routing(&[1, 2], 0xffff_ffff);
            load_nft(
                t,
                &format!("table inet bench {{\n chain pre {{ type filter hook prerouting priority mangle;\n  ct state new {rule}\n }}\n}}\n"),
            )
        }
    };
    let rows = vec![
        ("no ruleset", data_path_topology(|_| {})),
        (
            "conntrack + one mark rule (every flow on uplink 1)",
            data_path_topology(one_rule("meta mark set 0x1")),
        ),
        (
            "conntrack + one numgen mark rule (flows on both uplinks)",
            data_path_topology(one_rule(
                "meta mark set numgen inc mod 2 map { 0 : 0x1, 1 : 0x2 }",
            )),
        ),
        (
            "conntrack + one numgen mark rule (every flow on uplink 1)",
            data_path_topology(one_rule(
                "meta mark set numgen inc mod 2 map { 0 : 0x1, 1 : 0x1 }",
            )),
        ),
        (
            "nftbalance, no exclusion prefixes",
            data_path_topology(|t| t.apply_with(Backend::Nftables, &spec(0, false))),
        ),
        (
            "nftbalance, 100k exclusion prefixes",
            data_path_topology(|t| t.apply_with(Backend::Nftables, &spec(PREFIXES, false))),
        ),
        (
            "nftbalance, 100k exclusion prefixes, with SNAT",
            data_path_topology(|t| t.apply_with(Backend::Nftables, &spec(PREFIXES, true))),
        ),
        (
            "seed-style iptables-legacy, 100k RETURN rules",
            data_path_topology(|t| t.apply_with(Backend::IptablesLegacy, &spec(PREFIXES, false))),
        ),
    ];
    println!("| data path ({ROUNDS} interleaved rounds of {SECONDS} s, medians) | new flows/s | vs one mark rule | vs one numgen rule |");
    println!("|---|---:|---:|---:|");
    for ((name, _), (rate, ratios)) in rows.iter().zip(data_path_rows(&rows, &[1, 2])) {
        println!(
            "| {name} | {rate:.0} | {:.2}x | {:.2}x |",
            ratios[0], ratios[1]
        );
    }
}
