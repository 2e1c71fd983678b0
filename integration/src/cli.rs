//! The `nftbalance` binary run inside a test namespace: its output, and its output when it
//! must succeed.

use std::process::Output;

use crate::netns::Netns;
use crate::target_binary;

/// `nftbalance ARGS` in `ns`.
pub fn nftbalance(ns: &Netns, args: &[&str]) -> Output {
    ns.exec(&target_binary("nftbalance"), args, None)
}

/// Output bytes as text (lossy: a test message must never panic on its input).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `nftbalance ARGS` in `ns`, which must exit 0; its standard output.
pub fn ok(ns: &Netns, args: &[&str]) -> String {
    let out = nftbalance(ns, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "nftbalance {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}
