//! The transaction around the lowered ruleset: refusals change nothing and name the rule,
//! a concurrent commit makes it rebuild and retry, endless interference gives up cleanly.

use std::cell::Cell;

use nftbalance_netlink::transaction::{self, TransactionError, MAX_ATTEMPTS};
use nftbalance_netlink::{lower, Batch, Commit, Expr, Family, Rule, Socket, Table, Verdict};
use nftbalance_ruleset::{compile, Ruleset};
use nftbalance_spec::Spec;
use nftbalance_testns::Netns;

fn ruleset(name: &str) -> Ruleset {
    let path = format!("{}/../../fixtures/specs/{name}", env!("CARGO_MANIFEST_DIR"));
    let spec = Spec::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
    compile(&spec)
}

fn apply(ns: &Netns, rs: &Ruleset) {
    let rs = rs.clone();
    ns.run(move || {
        let socket = Socket::open().unwrap();
        transaction::run(&socket, Commit::Yes, || lower::replace_batch(&rs)).unwrap();
    });
}

#[test]
fn a_refused_transaction_names_the_rule_and_changes_nothing() {
    let ns = Netns::new("refuse");
    apply(&ns, &ruleset("seed.json"));
    let before = ns.ruleset_json();
    let next = ruleset("weighted-3-2-1.json");
    let err = ns.run(move || {
        let socket = Socket::open().unwrap();
        transaction::run(&socket, Commit::Yes, || {
            let mut b = lower::replace_batch(&next)?;
            // Test-only injection: a rule that jumps to a chain that does not exist.
            b.add_rule(
                &Rule::new(
                    Family::Inet,
                    "nftbalance",
                    "balance",
                    vec![Expr::Verdict(Verdict::Jump("nowhere".into()))],
                ),
                "chain balance, rule 99: jump nowhere",
            )?;
            Ok(b)
        })
        .unwrap_err()
    });
    let text = err.to_string();
    assert!(matches!(err, TransactionError::Rejected(_)), "{text}");
    assert!(
        text.contains("chain balance, rule 99: jump nowhere: No such file or directory"),
        "{text}"
    );
    assert!(text.contains("nothing was changed"), "{text}");
    assert_eq!(
        ns.ruleset_json(),
        before,
        "a refused transaction changed the ruleset"
    );
}

/// Commits an unrelated table through a second socket: another program at work.
fn interfere(n: u32) -> Batch {
    let mut b = Batch::new();
    b.add_table(&Table::new(Family::Ip, format!("other{n}")), "other")
        .unwrap();
    b
}

#[test]
fn a_concurrent_commit_makes_it_rebuild_and_retry() {
    let ns = Netns::new("retry");
    let rs = ruleset("seed.json");
    let attempts = ns.run(move || {
        let socket = Socket::open().unwrap();
        let other = Socket::open().unwrap();
        let builds = Cell::new(0);
        let attempts = transaction::run(&socket, Commit::Yes, || {
            builds.set(builds.get() + 1);
            if builds.get() == 1 {
                interfere(1).send(&other, Commit::Yes, None).unwrap();
            }
            lower::replace_batch(&rs)
        })
        .unwrap();
        assert_eq!(builds.get(), 2);
        attempts
    });
    assert_eq!(attempts, 2);
    let listing = ns.ruleset_text();
    assert!(listing.contains("table inet nftbalance"), "{listing}");
    assert!(listing.contains("table ip other1"), "{listing}");
}

#[test]
fn endless_interference_gives_up_and_changes_nothing_of_ours() {
    let ns = Netns::new("busy");
    let rs = ruleset("seed.json");
    let err = ns.run(move || {
        let socket = Socket::open().unwrap();
        let other = Socket::open().unwrap();
        let n = Cell::new(0);
        transaction::run(&socket, Commit::Yes, || {
            n.set(n.get() + 1);
            interfere(n.get()).send(&other, Commit::Yes, None).unwrap();
            lower::replace_batch(&rs)
        })
        .unwrap_err()
    });
    assert!(
        matches!(
            err,
            TransactionError::Busy {
                attempts: MAX_ATTEMPTS
            }
        ),
        "{err}"
    );
    assert!(!ns.ruleset_text().contains("nftbalance"));
}
