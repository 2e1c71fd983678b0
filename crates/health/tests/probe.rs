//! Probes through a namespaced two-uplink router (see `common` for the topology): they leave
//! through the uplink they test, detect a dead link and a dead upstream behind a live link, and
//! respect their timeout.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{Lab, DEAD4, DEAD6, PORT, SERVER4, SERVER6};
use nftbalance_health::{probe, probe_with, IcmpSocket, Probe, ProbeOutcome, Target, TargetResult};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(host: &str, port: u16) -> Target {
    Target::Tcp(SocketAddr::new(ip(host), port))
}

/// The four kinds of target at the server.
fn server_targets() -> Vec<Target> {
    vec![
        Target::Icmp(ip(SERVER4)),
        Target::Icmp(ip(SERVER6)),
        tcp(SERVER4, PORT),
        tcp(SERVER6, PORT),
    ]
}

/// A probe of uplink `i` (interface up<i>, mark i, source 10.<i>.0.1 / fd00:<i>::1 by family).
fn uplink(i: u32, target: Target, timeout: Duration) -> Probe {
    let v6 = target.addr().is_ipv6();
    let source = if v6 {
        ip(&format!("fd00:{i}::1"))
    } else {
        ip(&format!("10.{i}.0.1"))
    };
    Probe {
        interface: format!("up{i}"),
        mark: i,
        source: Some(source),
        targets: vec![target],
        reliability: 1,
        timeout,
    }
}

const OK_TIMEOUT: Duration = Duration::from_secs(3);
const DEAD_TIMEOUT: Duration = Duration::from_millis(400);

fn run(lab: &Lab, p: &Probe) -> ProbeOutcome {
    let p = p.clone();
    lab.router.run(move || probe(&p))
}

/// A recovered uplink may need a few probes: the first one can still meet a neighbour entry
/// that failed while the link was down ("ICMP destination unreachable (code 1)"), exactly as
/// `watch` would see it; `up` consecutive successes decide there.
fn assert_recovers(lab: &Lab, p: &Probe) {
    let mut last = None;
    for _ in 0..5 {
        let out = run(lab, p);
        if out.ok {
            return;
        }
        last = out.reason();
        std::thread::sleep(Duration::from_millis(200));
    }
    for cmd in [
        "-6 route show table 102",
        "-6 neigh",
        "-6 addr show up2",
        "-6 rule",
    ] {
        eprintln!("{cmd}: {}", lab.router.cmd(&format!("ip {cmd}")));
    }
    eprintln!("p2: {}", lab.providers[1].cmd("ip -6 neigh"));
    eprintln!("p2: {}", lab.providers[1].cmd("ip -6 addr"));
    eprintln!("fwd {}", lab.forwarded(2));
    panic!("{:?} did not recover: {last:?}", p.targets);
}

fn assert_ok(out: &ProbeOutcome, what: &str) {
    assert!(out.ok, "{what}: expected success, got {:?}", out.reason());
    assert!(out.answered_by().is_some());
}

/// Fails and returned within a generous bound of the timeout.
fn assert_failed(out: &ProbeOutcome, timeout: Duration, what: &str) -> String {
    assert!(!out.ok, "{what}: expected failure, got {out:?}");
    assert!(
        out.elapsed < timeout * 3,
        "{what}: took {:?} with a timeout of {timeout:?}",
        out.elapsed
    );
    out.reason().unwrap()
}

#[test]
fn probes_leave_through_the_uplink_they_test() {
    let lab = Lab::new();
    for i in [1u32, 2] {
        let other = 3 - i as usize;
        let (before, before_other) = (lab.forwarded(i as usize), lab.forwarded(other));
        for t in server_targets() {
            let out = run(&lab, &uplink(i, t.clone(), OK_TIMEOUT));
            assert_ok(&out, &format!("uplink {i}, {t}"));
        }
        // ICMP: 1 packet each; TCP: SYN, ACK, RST each (at least)
        assert!(
            lab.forwarded(i as usize) >= before + 8,
            "provider {i} forwarded {} packets for 8+ probe packets",
            lab.forwarded(i as usize) - before
        );
        assert_eq!(
            lab.forwarded(other),
            before_other,
            "probes of uplink {i} went through provider {other}"
        );
        // without a source address the kernel picks the uplink's own
        let mut p = uplink(i, tcp(SERVER4, PORT), OK_TIMEOUT);
        p.source = None;
        assert_ok(&run(&lab, &p), "no source");
    }

    // the mark selects the routing table: uplink 2's interface with mark 1 (whose table routes
    // through uplink 1) has no route; uplink 1's interface with mark 2 neither
    for (iface, mark) in [("up2", 1), ("up1", 2)] {
        for t in [Target::Icmp(ip(SERVER4)), tcp(SERVER6, PORT)] {
            let mut p = uplink(mark, t.clone(), DEAD_TIMEOUT);
            p.interface = iface.into();
            p.source = None;
            let out = run(&lab, &p);
            assert_failed(&out, DEAD_TIMEOUT, &format!("{iface} mark {mark}"));
        }
    }
}

#[test]
fn dead_link_fails_only_its_uplink_and_recovers() {
    let lab = Lab::new();
    // carrier loss: the provider's end goes down, the router's interface stays configured
    lab.providers[1].cmd("ip link set dn down");
    for t in server_targets() {
        let out = run(&lab, &uplink(2, t.clone(), DEAD_TIMEOUT));
        let reason = assert_failed(&out, DEAD_TIMEOUT, &format!("uplink 2 carrier down, {t}"));
        eprintln!("uplink 2 carrier down, {t}: {reason}");
        assert_ok(&run(&lab, &uplink(1, t.clone(), OK_TIMEOUT)), "uplink 1");
    }
    lab.providers[1].cmd("ip link set dn up");
    for t in server_targets() {
        assert_recovers(&lab, &uplink(2, t.clone(), OK_TIMEOUT));
    }
    // administratively down on the router: no route through it at all
    lab.router.cmd("ip link set up2 down");
    for t in server_targets() {
        let out = run(&lab, &uplink(2, t.clone(), DEAD_TIMEOUT));
        let reason = assert_failed(&out, DEAD_TIMEOUT, &format!("up2 admin down, {t}"));
        eprintln!("up2 admin down, {t}: {reason}");
        assert_ok(&run(&lab, &uplink(1, t.clone(), OK_TIMEOUT)), "uplink 1");
    }
}

#[test]
fn dead_upstream_behind_a_live_link_is_detected() {
    let lab = Lab::new();
    lab.provider_drops_all(2);
    let before = lab.forwarded(2);
    for t in server_targets() {
        let out = run(&lab, &uplink(2, t.clone(), DEAD_TIMEOUT));
        let reason = assert_failed(&out, DEAD_TIMEOUT, &format!("uplink 2 upstream dead, {t}"));
        assert!(reason.contains("no answer within 400ms"), "{reason}");
        assert_ok(&run(&lab, &uplink(1, t.clone(), OK_TIMEOUT)), "uplink 1");
    }
    // the link is up and the probes did reach the provider: it is the upstream that is dead
    let link = lab.router.cmd("ip -br link show up2");
    assert!(link.contains(" UP "), "uplink 2 should be up: {link}");
    assert!(
        lab.forwarded(2) >= before + 4,
        "the probes reached provider 2"
    );
    lab.provider_forwards(2);
    for t in server_targets() {
        assert_recovers(&lab, &uplink(2, t.clone(), OK_TIMEOUT));
    }
}

#[test]
fn timeouts_errors_and_any_target_answering() {
    let lab = Lab::new();
    let base = uplink(1, Target::Icmp(ip(SERVER4)), DEAD_TIMEOUT);

    // every target dead (silently dropped): fails after the timeout, each with a reason
    let mut p = base.clone();
    p.targets = vec![
        Target::Icmp(ip(DEAD4)),
        tcp(DEAD4, PORT),
        Target::Icmp(ip(DEAD6)),
        tcp(DEAD6, PORT),
    ];
    let out = run(&lab, &p);
    assert_failed(&out, DEAD_TIMEOUT, "dead targets");
    assert!(
        out.elapsed >= DEAD_TIMEOUT,
        "gave up early: {:?}",
        out.elapsed
    );
    // Silence, or (IPv6 neighbour discovery giving up on a timing-dependent schedule) an
    // unreachable: both are failures with a reason.
    for t in &out.targets {
        assert!(
            matches!(&t.result, TargetResult::Failed(r)
                if r.contains("no answer within") || r.contains("unreachable")),
            "{t:?}"
        );
    }

    // one live target among dead ones is enough; the probe returns at its answer
    p.targets.push(tcp(SERVER4, PORT));
    p.timeout = OK_TIMEOUT;
    let out = run(&lab, &p);
    assert_ok(&out, "one live target");
    assert_eq!(out.answered_by().unwrap().0, &tcp(SERVER4, PORT));
    assert!(out.elapsed < OK_TIMEOUT, "{:?}", out.elapsed);
    assert_eq!(out.targets[0].result, TargetResult::NotAwaited);

    // errors end a target early: the provider has no route (ICMP net unreachable quoting
    // our request), the server refuses the port
    let mut p = base.clone();
    p.timeout = Duration::from_secs(5);
    p.targets = vec![Target::Icmp(ip("10.8.8.8")), tcp(SERVER4, 9)];
    let out = run(&lab, &p);
    let reason = assert_failed(&out, p.timeout, "errors");
    assert!(out.elapsed < p.timeout, "errors should end the probe early");
    assert!(
        reason.contains("icmp 10.8.8.8: ICMP destination unreachable (code 0) from 10.1.0.2"),
        "{reason}"
    );
    assert!(reason.contains("Connection refused"), "{reason}");
}

#[test]
fn ping_sockets_work_through_the_uplink_too() {
    let lab = Lab::new();
    // allow ping sockets for root's group in the router namespace only
    lab.router.sysctl(&["net.ipv4.ping_group_range=0 0"]);
    for t in [Target::Icmp(ip(SERVER4)), Target::Icmp(ip(SERVER6))] {
        let before = lab.forwarded(2);
        let p = uplink(2, t.clone(), OK_TIMEOUT);
        let out = lab.router.run(|| probe_with(&p, IcmpSocket::Datagram));
        assert_ok(&out, &format!("ping socket {t}"));
        assert_eq!(
            lab.forwarded(2),
            before + 1,
            "one echo request via provider 2"
        );
    }
    lab.provider_drops_all(2);
    for t in [Target::Icmp(ip(SERVER4)), Target::Icmp(ip(SERVER6))] {
        let p = uplink(2, t.clone(), DEAD_TIMEOUT);
        let out = lab.router.run(|| probe_with(&p, IcmpSocket::Datagram));
        assert_failed(&out, DEAD_TIMEOUT, "ping socket, upstream dead");
    }
}
