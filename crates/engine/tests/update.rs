//! A failover update when another program commits between build and send (issue 15): the
//! retry rebuilds from the live table, so the result is always exactly `next`.

use nftbalance_engine::backend::{update_table, Updated};
use nftbalance_netlink::{lower, read, transaction, Commit, Socket};
use nftbalance_ruleset::{self as ruleset, Availability, Ruleset};
use nftbalance_spec::Spec;
use nftbalance_testns::Netns;

fn spec() -> Spec {
    Spec::from_json(
        r#"{ "gateways": [
            { "name": "isp1", "interface": "ppp0", "mark": 1, "route_table": 101 },
            { "name": "isp2", "interface": "ppp1", "mark": 2, "route_table": 102 },
            { "name": "isp3", "interface": "ppp2", "mark": 3, "route_table": 103 } ],
          "balance": { "forward": [ { "iif": "eth0" } ] } }"#,
    )
    .unwrap()
}

fn without(names: &[&str]) -> Ruleset {
    ruleset::compile_with(
        &spec(),
        &Availability::without(names.iter().map(|n| n.to_string()).collect()),
    )
}

fn replace(socket: &Socket, rs: &Ruleset) {
    transaction::run(socket, Commit::Yes, || lower::replace_batch(rs)).unwrap();
}

/// Runs one update from `current` to `next` in a fresh namespace, with `meddle` committing
/// through another socket right after the first batch is built.
fn update_with_interference(meddle: impl Fn(&Socket) + Sync) -> (Updated, Vec<String>) {
    let ns = Netns::new("update");
    ns.run(|| {
        let socket = Socket::open().unwrap();
        let (current, next) = (without(&[]), without(&["isp2"]));
        replace(&socket, &current);
        let other = Socket::open().unwrap();
        let how = update_table(&socket, &current, &next, &|attempt| {
            if attempt == 1 {
                meddle(&other);
            }
        })
        .unwrap();
        let left: Vec<String> = read::diff(&socket, &next)
            .unwrap()
            .into_iter()
            .map(|d| d.to_string())
            .collect();
        (how, left)
    })
}

#[test]
fn a_commit_elsewhere_between_build_and_send_keeps_the_delta() {
    let (how, left) = update_with_interference(|other| {
        let mut foreign = spec();
        foreign.table = "foreign".into();
        replace(other, &ruleset::compile(&foreign));
    });
    assert_eq!(
        how,
        Updated::Delta,
        "our table was untouched: the delta still holds"
    );
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_commit_to_our_table_between_build_and_send_makes_the_retry_replace_it() {
    let (how, left) = update_with_interference(|other| {
        // Someone else rewrites our table: another split and an exclusion set the delta
        // (which replaces only the split's chains) would never put right.
        let mut edited = spec();
        edited.balance.exclude = vec!["10.0.0.0/8".parse().unwrap()];
        let rs =
            ruleset::compile_with(&edited, &Availability::without(["isp3".to_string()].into()));
        replace(other, &rs);
    });
    assert_eq!(how, Updated::Replaced, "a stale delta was re-sent");
    assert!(left.is_empty(), "the table is not exactly next: {left:?}");
}
