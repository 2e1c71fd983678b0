//! Root test: the seed ruleset programmed through this crate is identical (`nft -j list ruleset`,
//! handles and metainfo stripped) to what `nft -f tests/data/seed.nft` produces.

mod common;

use common::seed::{seed_batch, seed_nft};
use nftbalance_nftnl::{Commit, Socket};
use nftbalance_testns::{assert_same_ruleset, Netns};

#[test]
fn seed_ruleset_matches_nft() {
    let ours = Netns::new("seed-api");
    let reference = Netns::new("seed-nft");

    ours.run(|| {
        let sock = Socket::open().expect("open netlink socket");
        seed_batch()
            .send(&sock, Commit::Yes, None)
            .unwrap_or_else(|e| panic!("seed batch rejected: {e}"));
    });
    reference.load_nft(&seed_nft());

    assert_same_ruleset(&ours.ruleset_json(), &reference.ruleset_json());
    assert_eq!(ours.ruleset_text(), reference.ruleset_text());

    // Sending the same batch again is an atomic replace and converges to the same state.
    ours.run(|| {
        let sock = Socket::open().unwrap();
        let genid = sock.generation().unwrap();
        seed_batch()
            .send(&sock, Commit::Yes, Some(genid))
            .unwrap_or_else(|e| panic!("replace rejected: {e}"));
        assert_ne!(
            sock.generation().unwrap(),
            genid,
            "commit bumps the generation"
        );
    });
    assert_same_ruleset(&ours.ruleset_json(), &reference.ruleset_json());
}
