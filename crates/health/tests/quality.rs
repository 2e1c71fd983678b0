//! DNS and HTTP probes, `reliability`, and the quality tracker fed by real probes through the
//! namespaced two-uplink router (see `common`): slow answers and lossy upstreams take a
//! gateway down, recovery waits for the window and the hold-down.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Lab, DEAD4, DNS_PORT, HTTP_PORT, PORT, SERVER4, SERVER6, SLOW};
use nftbalance_health::{
    probe, Cause, Probe, ProbeOutcome, Quality, State, Target, TargetResult, Thresholds,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn dns(host: &str, name: &str) -> Target {
    Target::Dns {
        server: SocketAddr::new(ip(host), DNS_PORT),
        name: name.into(),
    }
}

fn http(host: &str, port: u16, path: &str) -> Target {
    Target::Http {
        addr: SocketAddr::new(ip(host), port),
        path: path.into(),
    }
}

/// A probe of uplink `i` (interface up<i>, mark i, source 10.<i>.0.1 or fd00:<i>::1 by the
/// first target's family).
fn uplink(i: u32, targets: Vec<Target>, reliability: u32, timeout: Duration) -> Probe {
    let source = if targets[0].addr().is_ipv6() {
        ip(&format!("fd00:{i}::1"))
    } else {
        ip(&format!("10.{i}.0.1"))
    };
    Probe {
        interface: format!("up{i}"),
        mark: i,
        source: Some(source),
        targets,
        reliability,
        timeout,
    }
}

const OK_TIMEOUT: Duration = Duration::from_secs(3);
const DEAD_TIMEOUT: Duration = Duration::from_millis(400);

fn run(lab: &Lab, p: &Probe) -> ProbeOutcome {
    lab.router.run(|| probe(p))
}

fn failure(out: &ProbeOutcome, what: &str) -> String {
    assert!(!out.ok, "{what}: expected failure, got {out:?}");
    assert_eq!(out.rtt, None);
    out.reason().unwrap()
}

#[test]
fn dns_and_http_probes_leave_through_the_uplink_they_test() {
    let lab = Lab::new();
    let _dns = lab.dns_responder();
    let web = lab.http_responder();
    let good = [
        dns(SERVER4, "example.test"),
        dns(SERVER6, "example.test"),
        // NXDOMAIN is an answer: the server answered through the uplink
        dns(SERVER4, "nx.test"),
        http(SERVER4, HTTP_PORT, "/generate_204"),
        http(SERVER6, HTTP_PORT, "/generate_204"),
        http(SERVER4, HTTP_PORT, "/moved"),
    ];
    for i in [1u32, 2] {
        let other = 3 - i as usize;
        let (before, before_other) = (lab.forwarded(i as usize), lab.forwarded(other));
        for t in &good {
            let out = run(&lab, &uplink(i, vec![t.clone()], 1, OK_TIMEOUT));
            assert!(out.ok, "uplink {i}, {t}: {:?}", out.reason());
            assert!(out.rtt.is_some_and(|r| r < OK_TIMEOUT), "{out:?}");
        }
        assert!(
            lab.forwarded(i as usize) >= before + good.len() as u64,
            "the probes went through provider {i}"
        );
        assert_eq!(
            lab.forwarded(other),
            before_other,
            "not through provider {other}"
        );
    }
    let requests = web.requests.lock().unwrap().clone();
    assert_eq!(
        requests[0],
        "GET /generate_204 HTTP/1.1\r\nHost: 10.9.9.9\r\nConnection: close\r\n\
         User-Agent: nftbalance\r\n\r\n"
    );
    assert!(
        requests.iter().any(|r| r.contains("Host: [fd00:9::9]\r\n")),
        "{requests:?}"
    );

    // answers that are failures, each with its reason and without waiting for the timeout
    for (t, says) in [
        (dns(SERVER4, "refused.test"), "DNS REFUSED"),
        (http(SERVER4, HTTP_PORT, "/missing"), "HTTP status 404"),
        // nobody on port 54: the ICMP port unreachable ends the target at once
        (
            Target::Dns {
                server: SocketAddr::new(ip(SERVER4), 54),
                name: "example.test".into(),
            },
            "Connection refused",
        ),
    ] {
        let out = run(&lab, &uplink(1, vec![t.clone()], 1, OK_TIMEOUT));
        let reason = failure(&out, &t.to_string());
        assert!(reason.contains(says), "{t}: {reason}");
        assert!(out.elapsed < OK_TIMEOUT / 2, "{t}: {:?}", out.elapsed);
    }
    // port 8080 accepts connections but never answers: no status line in time
    let t = http(SERVER4, PORT, "/");
    let reason = failure(&run(&lab, &uplink(1, vec![t], 1, DEAD_TIMEOUT)), "silent");
    assert!(reason.contains("no answer within 400ms"), "{reason}");

    // a dead upstream behind a live link
    lab.provider_drops_all(2);
    for t in &good {
        let out = run(&lab, &uplink(2, vec![t.clone()], 1, DEAD_TIMEOUT));
        let reason = failure(&out, &format!("uplink 2 dropped, {t}"));
        assert!(reason.contains("no answer within 400ms"), "{t}: {reason}");
        assert!(out.elapsed < DEAD_TIMEOUT * 3, "{:?}", out.elapsed);
        let out = run(&lab, &uplink(1, vec![t.clone()], 1, OK_TIMEOUT));
        assert!(out.ok, "uplink 1, {t}: {:?}", out.reason());
    }
}

#[test]
fn reliability_counts_the_targets_that_answer() {
    let lab = Lab::new();
    let _dns = lab.dns_responder();
    let _web = lab.http_responder();
    let live_dns = dns(SERVER4, "example.test");
    let live_http = http(SERVER4, HTTP_PORT, "/");
    let dead_icmp = Target::Icmp(ip(DEAD4));
    let dead_tcp = Target::Tcp(SocketAddr::new(ip(DEAD4), PORT));

    // 2 of 3 with one dead target: ok once both live ones answered (not at the first)
    let p = uplink(
        1,
        vec![live_dns.clone(), dead_icmp.clone(), live_http.clone()],
        2,
        OK_TIMEOUT,
    );
    let out = run(&lab, &p);
    assert!(out.ok, "{:?}", out.reason());
    let answered: Vec<&Target> = out.answered().map(|(t, _)| t).collect();
    assert_eq!(answered, [&live_dns, &live_http]);
    let slowest = out.answered().map(|(_, rtt)| rtt).max();
    assert_eq!(out.rtt, slowest, "the round took until the second answer");
    assert_eq!(out.targets[1].result, TargetResult::NotAwaited);
    assert!(out.elapsed < OK_TIMEOUT, "{:?}", out.elapsed);

    // 2 of 3 with two dead: failed after the timeout
    let mut p = uplink(
        1,
        vec![live_dns.clone(), dead_icmp, dead_tcp],
        2,
        DEAD_TIMEOUT,
    );
    let out = run(&lab, &p);
    let reason = failure(&out, "two dead");
    assert!(out.elapsed >= DEAD_TIMEOUT, "{:?}", out.elapsed);
    assert!(
        reason.contains("dns 10.9.9.9:53 example.test: answered"),
        "{reason}"
    );
    assert!(
        reason.contains("icmp 10.9.9.10: no answer within"),
        "{reason}"
    );

    // as soon as too many have failed for the rest to make up the number, it gives up
    p.targets = vec![
        dns(SERVER4, "refused.test"),
        http(SERVER4, HTTP_PORT, "/missing"),
        Target::Icmp(ip(DEAD4)),
    ];
    p.timeout = OK_TIMEOUT;
    let out = run(&lab, &p);
    failure(&out, "two refused");
    assert!(out.elapsed < OK_TIMEOUT / 2, "{:?}", out.elapsed);
    assert_eq!(out.targets[2].result, TargetResult::NotAwaited);

    // every target, of all four kinds
    p.targets = vec![
        live_dns,
        live_http,
        Target::Icmp(ip(SERVER4)),
        Target::Tcp(SocketAddr::new(ip(SERVER4), PORT)),
    ];
    p.reliability = 4;
    let out = run(&lab, &p);
    assert!(out.ok, "{:?}", out.reason());
    assert_eq!(out.answered().count(), 4);
}

/// One round every `interval`: probe, record at the time the answer came, wait for the rest
/// of the interval.
fn round(
    lab: &Lab,
    p: &Probe,
    q: &mut Quality,
    interval: Duration,
) -> Option<nftbalance_health::Change> {
    let started = Instant::now();
    let out = run(lab, p);
    let change = q.record(out.rtt, Instant::now());
    if let Some(rest) = interval.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    change
}

#[test]
fn slow_answers_take_the_gateway_down_by_latency() {
    let lab = Lab::new();
    let _dns = lab.dns_responder();
    let th = Thresholds {
        max_latency: Some(Duration::from_millis(200)),
        ..Thresholds::consecutive(1, 3, 3)
    };
    let mut q = Quality::starting_as(State::Up, th, Instant::now());
    let p = uplink(
        1,
        vec![dns(SERVER4, "slow.test")],
        1,
        Duration::from_millis(800),
    );
    let mut change = None;
    for _ in 0..6 {
        change = round(&lab, &p, &mut q, Duration::from_millis(100));
        if change.is_some() {
            break;
        }
    }
    let change = change.expect("the slow gateway should go down");
    assert_eq!((change.from, change.to), (State::Up, State::Down));
    assert!(
        matches!(change.cause, Cause::Latency(d) if d >= SLOW),
        "{change}"
    );
    assert_eq!(q.rounds(), 3, "down once the window of 3 was full");
    assert_eq!(q.loss_percent(), Some(0), "every round answered, slowly");
}

#[test]
fn loss_takes_the_gateway_down_and_hold_down_brings_it_back() {
    let lab = Lab::new();
    let hold_down = Duration::from_millis(500);
    let th = Thresholds {
        max_loss: Some(20),
        recover_loss: Some(5),
        hold_down,
        // only the loss can take it down here
        ..Thresholds::consecutive(2, 100, 10)
    };
    let mut q = Quality::starting_as(State::Up, th, Instant::now());
    let interval = Duration::from_millis(100);
    let p = uplink(2, vec![Target::Icmp(ip(SERVER4))], 1, interval);

    // 30% of the echo requests dropped by provider 2
    lab.provider_drops_share(2, 3);
    let mut down = None;
    for _ in 0..200 {
        if let Some(c) = round(&lab, &p, &mut q, interval) {
            down = Some(c);
            break;
        }
    }
    let down = down.expect("30% loss should take the gateway down with max_loss 20");
    assert!(
        matches!(down.cause, Cause::Loss(pct, 10) if pct > 20),
        "{down}"
    );

    lab.provider_forwards(2);
    let cleared = Instant::now();
    let mut rounds = 0;
    let up = loop {
        rounds += 1;
        assert!(
            rounds <= 60,
            "no recovery after {rounds} clean rounds: {q:?}"
        );
        if let Some(c) = round(&lab, &p, &mut q, interval) {
            break c;
        }
    };
    assert_eq!((up.from, up.to), (State::Down, State::Up));
    assert!(
        matches!(up.cause, Cause::HeldDown(d) if d >= hold_down),
        "{up}"
    );
    // recover_loss 5 of a window of 10: no failure left in the window (how many clean rounds
    // that takes depends on where the last failure was), then the hold-down
    let took = cleared.elapsed();
    assert!(
        took >= hold_down + interval,
        "up {took:?} after the drops stopped, {rounds} rounds: {up}"
    );
    assert_eq!(q.loss_percent(), Some(0));
}
