//! Root tests of the transaction semantics: rejected batches change nothing and name the
//! offending object, check-only batches commit nothing, stale generation ids give ERESTART.

mod common;

use common::seed::{seed_batch, seed_nft, TABLE};
use nftbalance_nftnl::{
    priority, Batch, BatchError, Chain, ChainType, Commit, Expr, Family, Hook, Policy, Rule,
    Socket, Table, Verdict,
};
use nftbalance_testns::Netns;

/// The seed replace batch plus one extra rule in `balance` that jumps to a chain which does
/// not exist.
fn seed_with_bad_jump() -> (Batch, String) {
    let mut b = seed_batch();
    let label = "chain balance, rule 12 (jump nowhere)".to_owned();
    b.add_rule(
        &Rule::new(
            Family::Inet,
            TABLE,
            "balance",
            vec![Expr::Verdict(Verdict::Jump("nowhere".into()))],
        ),
        label.clone(),
    )
    .unwrap();
    (b, label)
}

#[test]
fn rejected_batch_leaves_ruleset_untouched_and_names_the_object() {
    let ns = Netns::new("reject");
    ns.load_nft(&seed_nft());
    let before_text = ns.ruleset_text();
    let before_json = ns.ruleset_json();

    let (batch, label) = seed_with_bad_jump();
    let n_msgs = batch.len();
    let err = ns.run(move || {
        let sock = Socket::open().unwrap();
        let genid = sock.generation().unwrap();
        let err = batch
            .send(&sock, Commit::Yes, None)
            .expect_err("kernel must reject a jump to a missing chain");
        assert_eq!(sock.generation().unwrap(), genid, "nothing was committed");
        err
    });
    let errors = err.errors();
    assert_eq!(errors.len(), 1, "exactly one error expected: {err}");
    let e = &errors[0];
    assert_eq!(e.label, label);
    assert_eq!(e.index, Some(n_msgs - 1));
    assert_eq!(e.errno, libc::ENOENT);
    assert_eq!(
        err.to_string(),
        format!("{label}: No such file or directory")
    );
    assert!(!err.is_generation_mismatch());

    assert_eq!(ns.ruleset_text(), before_text, "ruleset changed");
    assert_eq!(ns.ruleset_json(), before_json, "ruleset changed");
}

#[test]
fn several_errors_are_all_reported_in_batch_order() {
    let ns = Netns::new("multi");
    let err = ns.run(|| {
        let sock = Socket::open().unwrap();
        let mut b = Batch::new();
        b.add_table(&Table::new(Family::Ip, "t"), "table t")
            .unwrap();
        b.add_chain(&Chain::regular(Family::Ip, "t", "c"), "chain c")
            .unwrap();
        // rule in a chain that does not exist
        b.add_rule(
            &Rule::new(Family::Ip, "t", "missing", vec![Expr::Counter]),
            "chain missing, rule 1",
        )
        .unwrap();
        // fine
        b.add_rule(
            &Rule::new(Family::Ip, "t", "c", vec![Expr::Counter]),
            "chain c, rule 1",
        )
        .unwrap();
        // deleting a table that does not exist
        b.delete_table(Family::Ip6, "nope", "delete ip6 nope")
            .unwrap();
        b.send(&sock, Commit::Yes, None).unwrap_err()
    });
    let labels: Vec<_> = err.errors().iter().map(|e| e.label.as_str()).collect();
    assert_eq!(
        labels,
        ["chain missing, rule 1", "delete ip6 nope"],
        "{err}"
    );
    assert!(err.errors().iter().all(|e| e.errno == libc::ENOENT));
    assert_eq!(ns.ruleset_text(), "");
}

#[test]
fn check_only_commits_nothing() {
    let ns = Netns::new("check");
    ns.run(|| {
        let sock = Socket::open().unwrap();
        let genid = sock.generation().unwrap();
        // A valid batch: accepted, but not committed.
        seed_batch()
            .send(&sock, Commit::CheckOnly, None)
            .unwrap_or_else(|e| panic!("valid batch rejected in check mode: {e}"));
        assert_eq!(sock.generation().unwrap(), genid);
        // An invalid batch is still fully checked.
        let (bad, label) = seed_with_bad_jump();
        let err = bad.send(&sock, Commit::CheckOnly, None).unwrap_err();
        assert_eq!(err.errors().len(), 1, "{err}");
        assert_eq!(err.errors()[0].label, label);
        assert_eq!(sock.generation().unwrap(), genid);
    });
    assert_eq!(
        ns.ruleset_text(),
        "",
        "check-only batch committed something"
    );

    // Same over an existing ruleset: it stays byte-identical.
    ns.load_nft(&seed_nft());
    let before = ns.ruleset_text();
    ns.run(|| {
        let sock = Socket::open().unwrap();
        let mut b = Batch::new();
        b.replace_table(&Table::new(Family::Inet, TABLE), "table")
            .unwrap();
        b.send(&sock, Commit::CheckOnly, None).unwrap();
    });
    assert_eq!(ns.ruleset_text(), before);
}

/// Kernel 6.18 reports jump loops as EMLINK ("Too many links"), older ones as ELOOP.
fn is_loop(errno: i32) -> bool {
    errno == libc::ELOOP || errno == libc::EMLINK
}

const LOOP_NFT: &str = "table ip t {
	chain in {
		type filter hook input priority filter; policy accept;
		jump a
	}
	chain a {
		jump b
	}
	chain b {
		jump a
	}
}
";

#[test]
fn jump_loop_check_mode_agrees_with_nft_c_and_commit_names_the_rule() {
    // A jump loop reachable from a base chain is detected by the table validation that runs at
    // commit time. Whether the abort path of a batch without end message (`nft -c`) runs it
    // depends on the kernel; CheckOnly must behave exactly like `nft -c`.
    let ns = Netns::new("loop");
    let path = std::env::temp_dir().join(format!("{}.nft", ns.name()));
    std::fs::write(&path, LOOP_NFT).unwrap();
    let nft_c_ok = ns
        .exec("nft", &["-c", "-f", path.to_str().unwrap()], None)
        .status
        .success();
    let _ = std::fs::remove_file(&path);

    let build = || {
        let f = Family::Ip;
        let mut b = Batch::new();
        b.add_table(&Table::new(f, "t"), "table t").unwrap();
        b.add_chain(
            &Chain::base(
                f,
                "t",
                "in",
                ChainType::Filter,
                Hook::Input,
                priority::FILTER,
                Policy::Accept,
            ),
            "chain in",
        )
        .unwrap();
        b.add_chain(&Chain::regular(f, "t", "a"), "chain a")
            .unwrap();
        b.add_chain(&Chain::regular(f, "t", "b"), "chain b")
            .unwrap();
        let jump = |from: &str, to: &str, label: &str, b: &mut Batch| {
            b.add_rule(
                &Rule::new(f, "t", from, vec![Expr::Verdict(Verdict::Jump(to.into()))]),
                label,
            )
            .unwrap();
        };
        jump("in", "a", "chain in, rule 1", &mut b);
        jump("a", "b", "chain a, rule 1", &mut b);
        jump("b", "a", "chain b, rule 1", &mut b);
        b
    };
    let (check, commit) = ns.run(|| {
        let sock = Socket::open().unwrap();
        let check = build().send(&sock, Commit::CheckOnly, None);
        let commit = build().send(&sock, Commit::Yes, None).unwrap_err();
        (check, commit)
    });
    assert_eq!(
        check.is_ok(),
        nft_c_ok,
        "CheckOnly disagrees with nft -c: {check:?}"
    );
    if let Err(err) = &check {
        assert!(err.errors().iter().any(|e| is_loop(e.errno)), "{err}");
    }
    let loops: Vec<_> = commit
        .errors()
        .iter()
        .filter(|e| is_loop(e.errno))
        .collect();
    assert!(!loops.is_empty(), "expected ELOOP/EMLINK, got: {commit}");
    assert!(
        loops.iter().all(|e| e.label.starts_with("chain ")),
        "loop error should map to a rule: {commit:?}"
    );
    eprintln!("loop: nft -c ok = {nft_c_ok}; commit error = {commit}");
    assert_eq!(ns.ruleset_text(), "");
}

#[test]
fn stale_generation_id_is_refused_with_erestart() {
    let ns = Netns::new("genid");
    let (stale, fresh) = ns.run(|| {
        let sock = Socket::open().unwrap();
        let genid = sock.generation().unwrap();
        // Someone else commits in between (a second socket stands in for another process).
        {
            let other = Socket::open().unwrap();
            let mut b = Batch::new();
            b.add_table(&Table::new(Family::Ip, "other"), "table other")
                .unwrap();
            b.send(&other, Commit::Yes, None).unwrap();
        }
        let stale = seed_batch()
            .send(&sock, Commit::Yes, Some(genid))
            .unwrap_err();
        // Re-read and retry: succeeds.
        let now = sock.generation().unwrap();
        assert_ne!(now, genid);
        let fresh = seed_batch().send(&sock, Commit::Yes, Some(now));
        (stale, fresh)
    });
    assert!(stale.is_generation_mismatch(), "{stale:?}");
    let e = &stale.errors()[0];
    assert_eq!(
        (e.label.as_str(), e.index, e.errno),
        ("batch", None, libc::ERESTART)
    );
    assert!(matches!(fresh, Ok(())), "{fresh:?}");
    // the stale attempt committed nothing; the retry did
    let text = ns.ruleset_text();
    assert!(text.contains("table ip other"));
    assert!(text.contains("table inet nftbalance"));
}

#[test]
fn stale_generation_in_check_mode_too() {
    let ns = Netns::new("genid-check");
    let err: BatchError = ns.run(|| {
        let sock = Socket::open().unwrap();
        let genid = sock.generation().unwrap();
        let mut b = Batch::new();
        b.add_table(&Table::new(Family::Ip, "x"), "table x")
            .unwrap();
        b.send(&sock, Commit::Yes, None).unwrap();
        seed_batch()
            .send(&sock, Commit::CheckOnly, Some(genid))
            .unwrap_err()
    });
    assert!(err.is_generation_mismatch(), "{err}");
}

#[test]
fn thousands_of_errors_are_all_received() {
    // Every message fails: the receive buffer must hold one error per message.
    const RULES: usize = 5000;
    let ns = Netns::new("many-errors");
    let err = ns.run(|| {
        let sock = Socket::open().unwrap();
        let mut b = Batch::new();
        b.add_table(&Table::new(Family::Ip, "t"), "table t")
            .unwrap();
        for i in 0..RULES {
            b.add_rule(
                &Rule::new(Family::Ip, "t", "missing", vec![Expr::Counter]),
                format!("rule {i}"),
            )
            .unwrap();
        }
        b.send(&sock, Commit::Yes, None).unwrap_err()
    });
    let errors = err.errors();
    assert_eq!(errors.len(), RULES);
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e.label, format!("rule {i}"));
        assert_eq!(e.index, Some(i + 1));
        assert_eq!(e.errno, libc::ENOENT);
    }
    assert_eq!(ns.ruleset_text(), "");
}
