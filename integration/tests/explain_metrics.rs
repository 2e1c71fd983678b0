//! `explain`, `simulate` and the Prometheus metrics against real traffic (issue 21): what
//! explain says of a tuple is the uplink and source address the server saw; simulate's shares
//! are the ones measured after the same gateways go down; promtool accepts the textfile
//! output and a scrape of watch's endpoint, whose values are `status --json`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use nftbalance_integration::cli;
use nftbalance_integration::netns::PATH;
use nftbalance_integration::topology::{lan_hosts, Topology, Which, SERVER, SERVER_EXCLUDED};
use nftbalance_integration::watch::{probed_spec, wait_for, TempFile, Watch};
use serde_json::Value;

fn explain(topo: &Topology, spec: &TempFile, args: &[&str]) -> Value {
    let mut all = vec!["explain", spec.path(), "--json"];
    all.extend(args);
    serde_json::from_str(&cli::ok(&topo.router, &all)).unwrap()
}

/// The outcome explain gives for `gateway` (None: the main table).
fn outcome<'a>(e: &'a Value, gateway: Option<&str>) -> &'a Value {
    e["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["gateway"].as_str() == gateway)
        .unwrap_or_else(|| panic!("no outcome for {gateway:?}: {e:#}"))
}

/// The source address an outcome says the far end sees.
fn source(o: &Value) -> String {
    let s = &o["source"];
    s["nat"]["address"]
        .as_str()
        .or(s["address"].as_str())
        .unwrap_or_else(|| panic!("no source address: {o:#}"))
        .to_string()
}

/// One connection from the LAN (or the router); the address the server saw.
fn seen(topo: &Topology, from: Which, to: &str, host: Option<&str>) -> String {
    let mut args = vec!["connect", to, "--timeout-ms", "1500"];
    if let Some(h) = host {
        args.extend(["--from", h]);
    }
    let r = topo.traffic(from, &args);
    assert_eq!(r[0]["ok"], true, "{r:?}");
    r[0]["seen"].as_str().unwrap().to_string()
}

/// Checks that a connection landed on one of the outcomes explain gave, with its source.
fn landed_as_explained(topo: &Topology, e: &Value, seen: &str) {
    let k = topo
        .uplink_of(seen)
        .unwrap_or_else(|| panic!("{seen}: no uplink"));
    let o = e["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["interface"] == topo.uplinks[k].interface.as_str())
        .unwrap_or_else(|| panic!("landed on uplink {k}, not one explain named: {e:#}"));
    assert_eq!(source(o), seen, "{e:#}");
    assert_eq!(o["mark"], (k + 1) as u64, "{e:#}");
    assert_eq!(o["route"]["table"], (101 + k) as u64, "{e:#}");
}

#[test]
fn explain_says_where_each_kind_of_connection_goes() {
    let mut topo = Topology::new(2);
    // The main table leaves by uplink 2, so "main" and "first uplink" differ.
    topo.router
        .ok("ip", &["route", "replace", "default", "via", "100.0.2.254"]);
    let spec = r#"{ "gateways": [
        { "name": "isp1", "interface": "ppp0", "mark": 1, "address": "100.0.1.1", "via": "100.0.1.254", "route_table": 101 },
        { "name": "isp2", "interface": "ppp1", "mark": 2, "address": "100.0.2.1", "via": "100.0.2.254", "route_table": 102 } ],
      "balance": { "forward": [ { "iif": "eth0", "protocol": "tcp", "dports": [80] },
                                { "iif": "eth0", "protocol": "tcp", "dports": [22], "gateway": "isp2" } ],
                   "local": [ { "protocol": "tcp", "dports": [80] } ],
                   "exclude": [ "198.51.100.20", "192.168.0.0/16" ] } }"#;
    topo.apply(spec);
    let file = TempFile::new("explain", spec);
    topo.serve(Which::Server, "0.0.0.0:80", false);
    topo.serve(Which::Server, "0.0.0.0:22", false);
    let host = lan_hosts()[0].to_string();
    let lan = |port: u16| {
        let to = format!("{SERVER}:{port}");
        vec![
            "--iif".to_string(),
            "eth0".into(),
            "--from".into(),
            host.clone(),
            "--to".into(),
            to,
        ]
    };
    let strs = |v: &[String]| v.to_vec();

    // Balanced: a round-robin split over both; each connection lands on a member as said.
    let args = strs(&lan(80));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = explain(&topo, &file, &a);
    assert_eq!(e["decision"]["kind"], "split", "{e:#}");
    assert_eq!(
        e["decision"]["members"],
        serde_json::json!(["isp1", "isp2"])
    );
    assert_eq!(e["selector"], "balance.forward[0]");
    for o in e["outcomes"].as_array().unwrap() {
        assert_eq!(o["percent"], 50.0, "{e:#}");
    }
    let mut used = BTreeSet::new();
    for _ in 0..4 {
        let s = seen(&topo, Which::Lan, &format!("{SERVER}:80"), Some(&host));
        landed_as_explained(&topo, &e, &s);
        used.insert(s);
    }
    assert_eq!(used.len(), 2, "round robin used one uplink: {used:?}");

    // Pinned: isp2 only.
    let args = strs(&lan(22));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = explain(&topo, &file, &a);
    assert_eq!(
        e["decision"],
        serde_json::json!({"kind": "gateway", "gateway": "isp2"})
    );
    assert_eq!(e["policy"]["name"], "(pin:isp2)");
    for _ in 0..3 {
        let s = seen(&topo, Which::Lan, &format!("{SERVER}:22"), Some(&host));
        assert_eq!(s, source(outcome(&e, Some("isp2"))));
    }

    // Excluded: the main table, which the kernel says leaves by ppp1, SNAT to isp2's address.
    let to = format!("{SERVER_EXCLUDED}:80");
    let e = explain(
        &topo,
        &file,
        &["--iif", "eth0", "--from", &host, "--to", &to],
    );
    assert_eq!(e["decision"]["kind"], "excluded", "{e:#}");
    assert_eq!(e["decision"]["prefix"], "198.51.100.20/32");
    let main = outcome(&e, None);
    assert_eq!(main["route"]["dev"], "ppp1", "{e:#}");
    assert_eq!(seen(&topo, Which::Lan, &to, Some(&host)), source(main));

    // Local: the router's own connections split as well.
    let to = format!("{SERVER}:80");
    let e = explain(&topo, &file, &["--local", "--to", &to]);
    assert_eq!(e["decision"]["kind"], "split", "{e:#}");
    assert_eq!(e["selector"], "balance.local[0]");
    for _ in 0..2 {
        let s = seen(&topo, Which::Router, &to, None);
        landed_as_explained(&topo, &e, &s);
    }

    // Inbound: arriving on ppp1, marked for isp2, answered from the address it was sent to.
    topo.serve(Which::Router, "0.0.0.0:8000", false);
    let e = explain(
        &topo,
        &file,
        &["--iif", "ppp1", "--from", SERVER, "--to", "100.0.2.1:8000"],
    );
    assert_eq!(
        e["decision"],
        serde_json::json!({"kind": "inbound", "gateway": "isp2"})
    );
    let o = outcome(&e, Some("isp2"));
    assert_eq!(
        (o["mark"].as_u64(), source(o)),
        (Some(2), "100.0.2.1".into())
    );
    let r = topo.traffic(
        Which::Server,
        &[
            "connect",
            "100.0.2.1:8000",
            "--from",
            SERVER,
            "--timeout-ms",
            "1500",
        ],
    );
    assert_eq!(r[0]["ok"], true, "{r:?}");

    // Not selected (UDP): the main table.
    let e = explain(
        &topo,
        &file,
        &[
            "--iif",
            "eth0",
            "--proto",
            "udp",
            "--to",
            "198.51.100.10:53",
        ],
    );
    assert_eq!(e["decision"]["kind"], "not-selected", "{e:#}");
}

/// Counts of connections per uplink index.
fn counts(topo: &Topology, results: &[Value]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for u in topo.uplinks_used(results) {
        *m.entry(u).or_default() += 1;
    }
    m
}

/// A metric's value in a text exposition, by its name and one label.
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} {label} not in:\n{text}"))
}

fn promtool_accepts(text: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .env("PATH", PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; make test installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejects the {what}: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn simulate_live_and_metrics_follow_a_failover() {
    let mut topo = Topology::new(3);
    let spec = probed_spec(3, 300, 2, 2);
    topo.apply(&spec);
    let (file, state) = (
        TempFile::new("sim", &spec),
        TempFile::new("sim-state", "{}"),
    );
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let port = 19_000 + std::process::id() % 1000;
    let endpoint = format!("127.0.0.1:{port}");
    let _watch = Watch::start_with(
        &topo,
        &file,
        Some(&state),
        Duration::from_millis(1000),
        &["--metrics", &endpoint],
    );

    // simulate before: isp2 down leaves isp1 and isp3 at half each.
    let sim: Value = serde_json::from_str(&cli::ok(
        &topo.router,
        &[
            "simulate",
            file.path(),
            "--down",
            "isp2",
            "--json",
            "--state-file",
            state.path(),
        ],
    ))
    .unwrap();
    let after = &sim["policies"][0]["after"]["members"];
    let predicted: BTreeMap<String, f64> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["gateway"].as_str().unwrap().to_string(),
                m["percent"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sim["gateways"][0]["fate"], "kept", "{sim:#}");
    assert!(sim["gateways"][0]["connections"].is_u64(), "{sim:#}");

    // --live finds running streams, each on the uplink the server saw.
    let streams = topo.spawn_traffic(
        Which::Lan,
        &[
            "stream",
            &format!("{SERVER}:80"),
            "--count",
            "3",
            "--seconds",
            "3",
        ],
    );
    std::thread::sleep(Duration::from_millis(700));
    let to = format!("{SERVER}:80");
    let live: Value = serde_json::from_str(&cli::ok(
        &topo.router,
        &["explain", file.path(), "--live", "--to", &to, "--json"],
    ))
    .unwrap();
    let results = streams.finish();
    let mut live_seen: Vec<String> = live
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seen_as"].as_str().unwrap().to_string())
        .collect();
    let mut stream_seen: Vec<String> = results
        .iter()
        .map(|r| r["seen"].as_str().unwrap().to_string())
        .collect();
    live_seen.sort();
    stream_seen.sort();
    assert_eq!(live_seen, stream_seen, "{live:#}");
    for e in live.as_array().unwrap() {
        let k = topo.uplink_of(e["seen_as"].as_str().unwrap()).unwrap();
        assert_eq!(e["interface"], topo.uplinks[k].interface.as_str(), "{e}");
    }

    // isp2 goes down: the measured shares are simulate's.
    topo.isps[1].ok("ip", &["link", "set", "rtr", "down"]);
    let down = wait_for(Duration::from_secs(10), || {
        let e = explain(
            &topo,
            &file,
            &["--iif", "eth0", "--to", &to, "--state-file", state.path()],
        );
        e["unavailable"] == serde_json::json!(["isp2"])
    });
    assert!(down.is_some(), "watch did not take isp2 out");
    let r = topo.traffic(
        Which::Lan,
        &["connect", &to, "--count", "20", "--timeout-ms", "1500"],
    );
    let measured = counts(&topo, &r);
    let expect: BTreeMap<usize, usize> = predicted
        .iter()
        .map(|(g, p)| {
            // isp{i} is uplink i (from 1).
            let k = g.trim_start_matches("isp").parse::<usize>().unwrap() - 1;
            (k, (p / 100.0 * 20.0).round() as usize)
        })
        .collect();
    assert_eq!(measured, expect, "simulate said {predicted:?}");

    // explain of the failed-over state: a split over isp1 and isp3, as the server saw.
    let e = explain(
        &topo,
        &file,
        &["--iif", "eth0", "--to", &to, "--state-file", state.path()],
    );
    assert_eq!(
        e["decision"]["members"],
        serde_json::json!(["isp1", "isp3"]),
        "{e:#}"
    );
    let s = seen(&topo, Which::Lan, &to, None);
    landed_as_explained(&topo, &e, &s);

    // Metrics: the textfile output and a scrape by curl pass promtool, with status's values.
    let textfile = cli::ok(
        &topo.router,
        &[
            "status",
            file.path(),
            "--format",
            "prometheus",
            "--state-file",
            state.path(),
        ],
    );
    let json: Value = serde_json::from_str(&cli::ok(
        &topo.router,
        &[
            "status",
            file.path(),
            "--json",
            "--state-file",
            state.path(),
        ],
    ))
    .unwrap();
    let url = format!("http://{endpoint}/metrics");
    let scrape = cli::text(
        &topo
            .router
            .exec("curl", &["-sf", "--max-time", "5", &url], None)
            .stdout,
    );
    for (text, what) in [(&textfile, "textfile output"), (&scrape, "scrape")] {
        promtool_accepts(text, what);
        for g in json["gateways"].as_array().unwrap() {
            let label = format!("gateway=\"{}\"", g["name"].as_str().unwrap());
            let up = if g["state"] == "down" { 0.0 } else { 1.0 };
            assert_eq!(metric(text, "nftbalance_gateway_up", &label), up, "{what}");
            assert_eq!(
                metric(text, "nftbalance_gateway_new_connections_total", &label),
                g["new_connections"].as_f64().unwrap(),
                "{what}"
            );
            assert_eq!(
                metric(text, "nftbalance_gateway_bytes_total", &label),
                g["bytes"].as_f64().unwrap(),
                "{what}"
            );
        }
        assert_eq!(
            metric(text, "nftbalance_policy_active_tier", "(default)"),
            1.0
        );
        let isp2 = "gateway=\"isp2\"";
        assert!(
            metric(text, "nftbalance_gateway_transitions_total", isp2) >= 1.0,
            "{what}"
        );
        assert!(
            metric(text, "nftbalance_gateway_probe_rounds_total", isp2) >= 3.0,
            "{what}"
        );
    }
}

/// source-hash: explain computes the kernel's jhash of a known source, so it names the one
/// member each host gets; every host's connection lands there.
#[test]
fn explain_names_the_member_a_source_hash_gives_each_host() {
    let mut topo = Topology::new(2);
    let spec = r#"{ "gateways": [
        { "name": "isp1", "interface": "ppp0", "mark": 1, "address": "100.0.1.1", "via": "100.0.1.254", "route_table": 101 },
        { "name": "isp2", "interface": "ppp1", "mark": 2, "address": "100.0.2.1", "via": "100.0.2.254", "route_table": 102 } ],
      "balance": { "method": "source-hash", "forward": [ { "iif": "eth0", "protocol": "tcp" } ] } }"#;
    topo.apply(spec);
    let file = TempFile::new("hash", spec);
    topo.serve(Which::Server, &format!("{SERVER}:80"), false);
    let to = format!("{SERVER}:80");
    let mut chosen = BTreeSet::new();
    for host in lan_hosts() {
        let h = host.to_string();
        let e = explain(&topo, &file, &["--iif", "eth0", "--from", &h, "--to", &to]);
        assert_eq!(e["decision"]["method"], "source-hash", "{e:#}");
        let member = e["decision"]["chosen"].as_str().unwrap().to_string();
        let expected = source(outcome(&e, Some(&member)));
        assert_eq!(
            seen(&topo, Which::Lan, &to, Some(&h)),
            expected,
            "{h}: {e:#}"
        );
        chosen.insert(member);
    }
    assert_eq!(chosen.len(), 2, "ten hosts on one member: {chosen:?}");
}
