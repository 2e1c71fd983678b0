//! `status` as Prometheus metrics, in the text exposition format 0.0.4 (what promtool and
//! node_exporter's textfile collector read). Pure: a fresh registry per rendering, filled
//! from one [`Status`], so every value is exactly what `status --json` shows.

use nftbalance_engine::inspect::Status;
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// The HTTP content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const GATEWAY: &[&str] = &["gateway", "interface"];

/// One metric family being filled.
struct Families {
    registry: Registry,
}

impl Families {
    fn register<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> M {
        // Names are constants of this file and unique: registering cannot fail.
        self.registry
            .register(Box::new(m.clone()))
            .expect("unique metric names");
        m
    }
    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.register(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }
    fn int_gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The metrics of one `status`.
pub fn render(s: &Status) -> String {
    let f = Families {
        registry: Registry::new_custom(Some("nftbalance".into()), None).expect("valid prefix"),
    };
    gateways(&f, s);
    policies(&f, s);
    table(&f, s);
    let mut out = Vec::new();
    // Encoding into a Vec only fails on metrics we did not build.
    TextEncoder::new()
        .encode(&f.registry.gather(), &mut out)
        .expect("encodable metrics");
    String::from_utf8(out).expect("the text format is UTF-8")
}

fn gateways(f: &Families, s: &Status) {
    let up = f.int_gauge(
        "gateway_up",
        "1 when the gateway's health checks find it up (or it has none), 0 when down.",
        GATEWAY,
    );
    let available = f.int_gauge(
        "gateway_available",
        "1 when the ruleset in force gives the gateway new connections (only with a running watch).",
        GATEWAY,
    );
    let rtt = f.gauge(
        "gateway_rtt_seconds",
        "Median round-trip time of the answered probe rounds in the health window.",
        GATEWAY,
    );
    let loss = f.gauge(
        "gateway_loss_ratio",
        "Share of failed probe rounds in the health window (0 to 1).",
        GATEWAY,
    );
    let transitions = f.counter(
        "gateway_transitions_total",
        "State changes (up/down) since watch started.",
        GATEWAY,
    );
    let rounds = f.counter(
        "gateway_probe_rounds_total",
        "Probe rounds since watch started.",
        GATEWAY,
    );
    let packets = f.counter(
        "gateway_packets_total",
        "Packets of the gateway's connections, both directions, since the last full apply.",
        GATEWAY,
    );
    let bytes = f.counter(
        "gateway_bytes_total",
        "Bytes of the gateway's connections, both directions, since the last full apply.",
        GATEWAY,
    );
    let new = f.counter(
        "gateway_new_connections_total",
        "New connections marked for the gateway since the last full apply.",
        GATEWAY,
    );
    let live = f.int_gauge(
        "gateway_live_connections",
        "Conntrack entries with the gateway's mark now.",
        GATEWAY,
    );
    let weight = f.int_gauge(
        "gateway_weight",
        "The gateway's weight in the spec.",
        GATEWAY,
    );
    for g in &s.gateways {
        let l = [g.name.as_str(), g.interface.as_str()];
        up.with_label_values(&l).set(i64::from(g.state != "down"));
        if let Some(a) = g.available {
            available.with_label_values(&l).set(i64::from(a));
        }
        if let Some(ms) = g.rtt_ms {
            rtt.with_label_values(&l).set(f64::from(ms) / 1000.0);
        }
        if let Some(p) = g.loss_percent {
            loss.with_label_values(&l).set(f64::from(p) / 100.0);
        }
        if let Some(t) = g.transitions {
            transitions.with_label_values(&l).inc_by(t);
        }
        if let Some(r) = g.probe_rounds {
            rounds.with_label_values(&l).inc_by(r);
        }
        packets.with_label_values(&l).inc_by(g.packets);
        bytes.with_label_values(&l).inc_by(g.bytes);
        new.with_label_values(&l).inc_by(g.new_connections);
        live.with_label_values(&l).set(clamp(g.live_connections));
        weight.with_label_values(&l).set(i64::from(g.weight));
    }
}

fn policies(f: &Families, s: &Status) {
    let tier = f.int_gauge(
        "policy_active_tier",
        "The policy's active tier (1 is preferred); 0 when no member is usable and its last resort is in force.",
        &["policy"],
    );
    let share = f.gauge(
        "policy_member_share_ratio",
        "Share of the policy's new connections a member takes now (0 to 1).",
        &["policy", "gateway"],
    );
    for p in &s.policies {
        tier.with_label_values(&[p.name.as_str()])
            .set(i64::from(p.tier.unwrap_or(0)));
        for m in &p.members {
            share
                .with_label_values(&[p.name.as_str(), m.gateway.as_str()])
                .set(m.share / 100.0);
        }
    }
}

fn table(f: &Families, s: &Status) {
    let labels = &["table", "family"];
    let l = [s.table.as_str(), s.family.as_str()];
    f.int_gauge(
        "table_applied",
        "1 when the table is in the kernel.",
        labels,
    )
    .with_label_values(&l)
    .set(i64::from(s.applied));
    f.int_gauge(
        "watch_running",
        "1 when a watch runs for the table (states come from it).",
        labels,
    )
    .with_label_values(&l)
    .set(i64::from(s.state_source == "watch"));
    if let Some(a) = &s.last_apply {
        f.int_gauge(
            "last_apply_timestamp_seconds",
            "Unix time of the last change of the table (apply, or watch's update).",
            labels,
        )
        .with_label_values(&l)
        .set(clamp(a.at));
        if let Some(ms) = a.duration_ms {
            f.gauge(
                "last_apply_duration_seconds",
                "How long the last change of the table took.",
                labels,
            )
            .with_label_values(&l)
            .set(ms as f64 / 1000.0);
        }
        f.int_gauge(
            "last_apply_success",
            "1 when the last change stands, 0 while watch has a change it could not make yet.",
            labels,
        )
        .with_label_values(&l)
        .set(i64::from(a.ok));
    }
    if let Some(c) = s.conntrack {
        f.int_gauge("conntrack_entries", "Entries in the conntrack table.", &[])
            .with_label_values::<&str>(&[])
            .set(clamp(c.count));
        f.int_gauge(
            "conntrack_entries_limit",
            "The conntrack table's limit (0: none).",
            &[],
        )
        .with_label_values::<&str>(&[])
        .set(clamp(c.max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftbalance_engine::inspect::{GatewayStatus, LastApply, MemberShare, PolicyStatus};

    fn status() -> Status {
        let gw = |name: &str, state: &str, rtt_ms| GatewayStatus {
            name: name.into(),
            interface: format!("{name}0"),
            state: state.into(),
            available: Some(state != "down"),
            weight: 1,
            packets: 10,
            bytes: 1500,
            new_connections: 3,
            live_connections: 2,
            new_connection_share: 50.0,
            byte_share: 50.0,
            loss_percent: Some(20),
            rtt_ms,
            transitions: Some(1),
            probe_rounds: Some(7),
        };
        Status {
            table: "nftbalance".into(),
            family: "inet".into(),
            applied: true,
            state_source: "watch".into(),
            pending: None,
            gateways: vec![gw("fibre", "up", Some(12)), gw("lte", "down", None)],
            policies: vec![PolicyStatus {
                name: "(default)".into(),
                tier: Some(1),
                members: vec![MemberShare {
                    gateway: "fibre".into(),
                    share: 100.0,
                }],
                last_resort: None,
            }],
            conntrack: None,
            counters_since: None,
            last_apply: Some(LastApply {
                at: 1_700_000_000,
                duration_ms: Some(25),
                ok: true,
            }),
        }
    }

    #[test]
    fn names_units_and_values_follow_the_conventions() {
        let text = render(&status());
        for line in [
            "# TYPE nftbalance_gateway_bytes_total counter",
            "nftbalance_gateway_up{gateway=\"lte\",interface=\"lte0\"} 0",
            "nftbalance_gateway_up{gateway=\"fibre\",interface=\"fibre0\"} 1",
            "nftbalance_gateway_rtt_seconds{gateway=\"fibre\",interface=\"fibre0\"} 0.012",
            "nftbalance_gateway_loss_ratio{gateway=\"fibre\",interface=\"fibre0\"} 0.2",
            "nftbalance_gateway_probe_rounds_total{gateway=\"lte\",interface=\"lte0\"} 7",
            "nftbalance_policy_active_tier{policy=\"(default)\"} 1",
            "nftbalance_policy_member_share_ratio{gateway=\"fibre\",policy=\"(default)\"} 1",
            "nftbalance_last_apply_duration_seconds{family=\"inet\",table=\"nftbalance\"} 0.025",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // No RTT without answered rounds.
        assert!(!text.contains("nftbalance_gateway_rtt_seconds{gateway=\"lte\""));
    }
}
