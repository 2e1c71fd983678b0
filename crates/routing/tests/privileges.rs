//! Without CAP_NET_ADMIN, apply and flush stop with a message that says so, and change
//! nothing. The unprivileged side is this test binary re-run under `setpriv` as nobody inside
//! the test's namespace.

mod common;

use std::process::Command;

use common::{netns, spec, RoutingNs};
use nftbalance_routing::{apply, flush, plan, Error, Links, Socket};

const SPEC: &str = r#"{ "gateways": [
  { "name": "isp1", "interface": "ppp0", "mark": 1, "route_table": 101,
    "address": "100.0.1.1", "via": "100.0.1.254" } ] }"#;

/// Set in the environment of the unprivileged child.
const CHILD: &str = "NBR_UNPRIVILEGED_CHILD";

#[test]
fn without_cap_net_admin_apply_and_flush_fail_clearly_and_change_nothing() {
    let ns = netns("eperm");
    ns.gateway_ifaces(&spec(SPEC));
    // Something owned to flush, with another mark than the spec's so apply has work to do.
    let mut other = plan(&spec(SPEC));
    if let nftbalance_routing::RuleSelector::FwMark { mark, .. } = &mut other.rules[1].selector {
        *mark = 7;
    }
    ns.apply(&other).unwrap();
    let before = ns.routing();

    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&exe)
        .args(["--exact", "unprivileged_child", "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("CHILD-CHECKED"),
        "child did not run:\n{stdout}"
    );
    eprintln!("{stdout}");
    assert_eq!(
        ns.routing(),
        before,
        "an unprivileged apply or flush changed something"
    );
}

/// The unprivileged half, run only by the test above.
#[test]
#[ignore = "run by without_cap_net_admin_apply_and_flush_fail_clearly_and_change_nothing"]
fn unprivileged_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let sock = Socket::open().expect("opening a socket needs no privilege");
    let links = Links::read(&sock).expect("reading needs no privilege");
    let err = apply(&sock, &plan(&spec(SPEC)), &links).unwrap_err();
    let text = err.to_string();
    println!("apply: {text}");
    assert!(matches!(err, Error::Permission { .. }), "{err:?}");
    assert!(text.contains("CAP_NET_ADMIN"), "{text}");
    assert!(
        text.contains("rule priority 1001"),
        "names the rule: {text}"
    );
    let err = flush(&sock).unwrap_err();
    println!("flush: {err}");
    assert!(matches!(err, Error::Permission { .. }), "{err:?}");
    println!("CHILD-CHECKED");
}
