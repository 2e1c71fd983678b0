//! `make demo`: the seed recipe's router, for real, in throwaway network namespaces.
//! Builds the topology, applies fixtures/specs/seed.json with `nftbalance apply`, drives
//! 200 connections from the LAN, prints what each uplink carried, and tears it all down.

use std::collections::BTreeMap;
use std::time::Duration;

use nftbalance_integration::repo_root;
use nftbalance_integration::topology::{lan_hosts, Topology, Which, SERVER};
use nftbalance_integration::watch::{probed_spec, uplinks, TempFile, Watch};
use serde_json::Value;

const CONNECTIONS: usize = 200;

/// Bytes sent and received on a router interface (`ip -s -j link`).
fn interface_bytes(topo: &Topology, ifname: &str) -> u64 {
    let text = topo
        .router
        .ok("ip", &["-s", "-j", "link", "show", "dev", ifname]);
    let doc: Value = serde_json::from_str(&text).expect("ip -j prints JSON");
    let stats = &doc[0]["stats64"];
    stats["rx"]["bytes"].as_u64().unwrap_or(0) + stats["tx"]["bytes"].as_u64().unwrap_or(0)
}

fn main() {
    let spec_path = repo_root().join("fixtures/specs/seed.json");
    let spec = std::fs::read_to_string(&spec_path).expect("fixtures/specs/seed.json");
    println!("Building the network: LAN -> router (eth0; uplinks ppp0, ppp1) -> two providers");
    println!("with ingress filtering -> server {SERVER}, in throwaway network namespaces.");
    let mut topo = Topology::new(2);
    println!("Applying {} with `nftbalance apply` (ip rules, per-uplink tables, one nftables transaction).", spec_path.display());
    topo.apply(&spec);
    for port in [22, 25, 80, 443] {
        topo.serve(Which::Server, &format!("{SERVER}:{port}"), false);
    }
    let before: Vec<u64> = topo
        .uplinks
        .iter()
        .map(|u| interface_bytes(&topo, &u.interface))
        .collect();

    println!("Opening {CONNECTIONS} connections from 10 LAN hosts to ports 22, 25, 80 and 443,");
    println!("each streaming echo traffic for 2 seconds...\n");
    let hosts: Vec<String> = lan_hosts().iter().map(ToString::to_string).collect();
    let runs: Vec<_> = [22, 25, 80, 443]
        .into_iter()
        .map(|port| {
            topo.spawn_traffic(
                Which::Lan,
                &[
                    "stream",
                    &format!("{SERVER}:{port}"),
                    "--count",
                    &(CONNECTIONS / 4).to_string(),
                    "--seconds",
                    "2",
                    "--from",
                    &hosts.join(","),
                ],
            )
        })
        .collect();
    let results: Vec<Value> = runs.into_iter().flat_map(|r| r.finish()).collect();

    let mut per_uplink: BTreeMap<usize, (usize, u64)> = BTreeMap::new();
    let mut failed = 0;
    for r in &results {
        let uplink = r["seen"].as_str().and_then(|s| topo.uplink_of(s));
        match (r["ok"].as_bool(), uplink) {
            (Some(true), Some(u)) => {
                let e = per_uplink.entry(u).or_default();
                e.0 += 1;
                e.1 += 2 * r["bytes"].as_u64().unwrap_or(0);
            }
            _ => failed += 1,
        }
    }
    let total: usize = per_uplink.values().map(|v| v.0).sum();
    let total_bytes: u64 = per_uplink.values().map(|v| v.1).sum();
    println!("| uplink | interface | connections | share | echo bytes | share | interface bytes |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (i, up) in topo.uplinks.iter().enumerate() {
        let (n, bytes) = per_uplink.get(&i).copied().unwrap_or_default();
        let iface = interface_bytes(&topo, &up.interface) - before[i];
        println!(
            "| isp{} ({}) | {} | {n} | {:.1}% | {bytes} | {:.1}% | {iface} |",
            i + 1,
            up.address,
            up.interface,
            100.0 * n as f64 / total.max(1) as f64,
            100.0 * bytes as f64 / total_bytes.max(1) as f64,
        );
    }
    println!("\n`nftbalance status` on the router (the ruleset's own counters and conntrack):\n");
    let status = topo.router.exec(
        &nftbalance_integration::target_binary("nftbalance"),
        &["status", spec_path.to_str().expect("UTF-8 path")],
        None,
    );
    print!("{}", String::from_utf8_lossy(&status.stdout));
    let drops: Vec<u64> = topo.ingress_drops();
    println!("\nfailed connections: {failed}; packets the providers dropped for a foreign source: {drops:?}");
    println!("Tearing down the namespaces.");
    drop(topo);
    if failed > 0 {
        std::process::exit(1);
    }
    failover_act();
}

/// Fibre and DSL share tier 1 (3:2), LTE waits in tier 2: both tier-1 upstreams die behind
/// live links, `nftbalance watch` moves new connections to LTE, then they come back.
fn failover_act() {
    const INTERVAL_MS: u64 = 300;
    println!("\n# Failover: policy fibre_dsl_then_lte (isp1 weight 3 and isp2 weight 2 in tier 1,");
    println!(
        "# isp3 the LTE backup in tier 2), `nftbalance watch` probing every {INTERVAL_MS} ms.\n"
    );
    let mut topo = Topology::new(3);
    let spec = probed_spec(3, INTERVAL_MS, 2, 2)
        .replacen(r#""mark": 1,"#, r#""mark": 1, "weight": 3,"#, 1)
        .replacen(r#""mark": 2,"#, r#""mark": 2, "weight": 2,"#, 1)
        .replacen(
            r#""balance": {"#,
            r#""policies": { "fibre_dsl_then_lte": { "members": [
                 { "gateway": "isp1" }, { "gateway": "isp2" }, { "gateway": "isp3", "tier": 2 } ] } },
               "balance": {"#,
            1,
        )
        .replacen(r#""protocol": "tcp" }"#, r#""protocol": "tcp", "policy": "fibre_dsl_then_lte" }"#, 1);
    topo.apply(&spec);
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let file = TempFile::new("demo-policy", &spec);
    let _watch = Watch::start(
        &topo,
        &file,
        None,
        Duration::from_millis(INTERVAL_MS * 2 + 300),
    );
    let show = |what: &str| {
        let seen = uplinks(&topo, 10);
        let line: Vec<String> = (0..3)
            .map(|i| format!("isp{} {}", i + 1, seen.get(&i).copied().unwrap_or(0)))
            .collect();
        println!("{what}: 10 new connections -> {}", line.join(", "));
    };
    show("all up");
    let blackhole = "table inet blackhole {\n chain forward { type filter hook forward priority -10; drop\n }\n}\n";
    for isp in &topo.isps[..2] {
        isp.load_nft(blackhole);
    }
    println!("isp1's and isp2's upstreams now drop everything (their links stay up)...");
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * 2 + 1000));
    show("tier 1 dead");
    let status = topo.router.exec(
        &nftbalance_integration::target_binary("nftbalance"),
        &["status", file.path()],
        None,
    );
    print!(
        "\n`nftbalance status`:\n{}\n",
        String::from_utf8_lossy(&status.stdout)
    );
    for isp in &topo.isps[..2] {
        isp.ok("nft", &["delete", "table", "inet", "blackhole"]);
    }
    println!("isp1's and isp2's upstreams are back...");
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * 2 + 1000));
    show("tier 1 back");
    println!("Tearing down the namespaces.");
}
