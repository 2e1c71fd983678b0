//! `nftbalance apply`, `apply --check`, `diff` and `flush` against the kernel, each test in
//! its own namespaces. The binary is run inside the namespace with `ip netns exec`.

use std::path::Path;

use nftbalance_integration::cli::{nftbalance, ok, text};
use nftbalance_integration::netns::Netns;
use nftbalance_integration::uplinks::add_uplinks;
use nftbalance_integration::watch::TempFile;
use nftbalance_integration::{fixture_files, repo_root, target_binary};
use serde_json::Value;

fn spec(name: &str) -> String {
    repo_root()
        .join("fixtures/specs")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

const FOREIGN: &str = "table inet filter {\n chain input { type filter hook input priority 0; policy accept;\n  tcp dport 22 counter accept\n  ct state established,related accept\n }\n}\n\
table ip nat {\n chain post { type nat hook postrouting priority 100;\n  oifname \"eth9\" masquerade\n }\n}\n";

fn foreign(ns: &Netns) {
    let out = ns.exec("nft", &["-f", "-"], Some(FOREIGN.as_bytes()));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A namespace with the spec's uplink interfaces, so every gateway is routed.
fn router_for(tag: &str, spec_file: &str) -> Netns {
    let ns = Netns::new(tag);
    add_uplinks(&ns, &std::fs::read_to_string(spec_file).unwrap());
    ns
}

#[test]
fn apply_programs_what_nft_f_of_the_dump_programs() {
    let loaded = Netns::new("nftf");
    for file in fixture_files("specs", "json") {
        let stem = file.file_stem().unwrap().to_str().unwrap();
        let dump = repo_root()
            .join("fixtures/dump")
            .join(format!("{stem}.nft"));
        let applied = router_for("apply", p(&file));
        ok(&applied, &["apply", p(&file)]);
        let diff = ok(&applied, &["diff", p(&file)]);
        assert!(diff.contains("same as the spec"), "{stem}: {diff}");
        loaded.ok("nft", &["-f", p(&dump)]);
        assert_eq!(
            applied.ruleset_json(),
            loaded.ruleset_json(),
            "{stem}: apply and nft -f differ"
        );
        loaded.ok("nft", &["flush", "ruleset"]);
    }
}

#[test]
fn apply_twice_is_idempotent_and_foreign_tables_are_untouched() {
    let ns = router_for("twice", &spec("seed.json"));
    foreign(&ns);
    let before = ns.ok("nft", &["list", "ruleset"]);
    let seed = spec("seed.json");
    ok(&ns, &["apply", &seed]);
    let once = ns.ruleset_json();
    ok(&ns, &["apply", &seed]);
    assert_eq!(once, ns.ruleset_json());
    let all = ns.ok("nft", &["list", "ruleset"]);
    assert!(all.starts_with(&before), "foreign tables changed:\n{all}");
    ok(&ns, &["flush", &seed]);
    assert_eq!(ns.ok("nft", &["list", "ruleset"]), before);
    ok(&ns, &["flush", &seed]);
    assert_eq!(ns.ok("nft", &["list", "ruleset"]), before);
}

#[test]
fn check_changes_nothing() {
    let ns = router_for("check", &spec("seed.json"));
    let out = ok(&ns, &["apply", "--check", &spec("seed.json")]);
    assert!(out.contains("nothing was changed"), "{out}");
    assert_eq!(ns.ok("nft", &["list", "ruleset"]), "");
    ok(&ns, &["apply", &spec("seed.json")]);
    let before = ns.ruleset_json();
    ok(&ns, &["apply", "--check", &spec("weighted-3-2-1.json")]);
    assert_eq!(ns.ruleset_json(), before);
}

/// The handle of the `index`th rule of a chain.
fn rule_handle(ns: &Netns, family: &str, table: &str, chain: &str, index: usize) -> String {
    let text = ns.ok("nft", &["-a", "-j", "list", "chain", family, table, chain]);
    let doc: Value = serde_json::from_str(&text).unwrap();
    let rules: Vec<&Value> = doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .collect();
    rules[index]["handle"].to_string()
}

#[test]
fn diff_reports_hand_edits_and_is_clean_after_reapply() {
    let ns = Netns::new("diff");
    for name in [
        "seed.json",
        "mark-mask.json",
        "sticky.json",
        "dual-stack.json",
        "source-hash.json",
    ] {
        let s = spec(name);
        let out = nftbalance(&ns, &["diff", &s]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: diff before apply: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stdout).contains("does not exist"),
            "{}",
            text(&out.stdout)
        );
        ok(&ns, &["apply", &s]);
        let out = ok(&ns, &["diff", &s]);
        assert!(out.contains("same as the spec"), "{name}: {out}");
        ok(&ns, &["flush", &s]);
    }

    // The same table loaded by nft itself is the same as the spec too; only the policy
    // routing, which nft does not program, is reported (diff compares routing as well).
    let ns = router_for("diff", &spec("mark-mask.json"));
    let dump = repo_root().join("fixtures/dump/mark-mask.nft");
    ns.ok("nft", &["-f", p(&dump)]);
    let out = nftbalance(&ns, &["diff", &spec("mark-mask.json")]);
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<String> = text(&out.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("  ip rule missing: ") || l.starts_with("  route missing: ")),
        "{lines:#?}"
    );

    let seed = spec("seed.json");
    let ns = router_for("diff", &seed);
    ok(&ns, &["apply", &seed]);
    // A rule deleted by hand.
    let handle = rule_handle(&ns, "inet", "nftbalance", "balance", 2);
    ns.ok(
        "nft",
        &[
            "delete",
            "rule",
            "inet",
            "nftbalance",
            "balance",
            "handle",
            &handle,
        ],
    );
    let out = nftbalance(&ns, &["diff", &seed]);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(
        report.contains("chain balance, rule 3: ct mark set numgen inc mod 2 map")
            && report.contains("missing"),
        "{report}"
    );
    ok(&ns, &["apply", &seed]);
    assert!(ok(&ns, &["diff", &seed]).contains("same as the spec"));

    // An element added by hand, a rule added by hand.
    ns.ok(
        "nft",
        &[
            "add",
            "element",
            "inet",
            "nftbalance",
            "exclude_v4",
            "{ 172.16.0.0/12 }",
        ],
    );
    ns.ok(
        "nft",
        &["add", "rule", "inet", "nftbalance", "prerouting", "counter"],
    );
    let out = nftbalance(&ns, &["diff", &seed]);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(
        report.contains("set exclude_v4: 0 element(s) of the spec missing, "),
        "{report}"
    );
    assert!(report.contains("chain prerouting, rule handle"), "{report}");
    assert!(report.contains("not in the spec"), "{report}");

    // A different spec against the applied one.
    let out = nftbalance(&ns, &["diff", &spec("weighted-3-2-1.json")]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn without_cap_net_admin_the_message_is_clear_and_nothing_changes() {
    let ns = Netns::new("nopriv");
    foreign(&ns);
    let before = ns.ok("nft", &["list", "ruleset"]);
    let bin = target_binary("nftbalance");
    let seed = spec("seed.json");
    for cmd in ["apply", "flush", "diff", "watch", "status", "recover"] {
        // recover takes no spec.
        let args: &[&str] = if cmd == "recover" { &[] } else { &[&seed] };
        let mut argv = vec![
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
            "--",
            &bin,
            cmd,
        ];
        argv.extend(args);
        let out = ns.exec("setpriv", &argv, None);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = text(&out.stderr);
        assert!(err.contains("needs CAP_NET_ADMIN"), "{cmd}: {err}");
        assert!(!err.contains("os error"), "{cmd}: raw errno in {err}");
    }
    assert_eq!(ns.ok("nft", &["list", "ruleset"]), before);
}

#[test]
fn a_bad_spec_applies_nothing() {
    let ns = Netns::new("badspec");
    ok(&ns, &["apply", &spec("seed.json")]);
    let before = ns.ruleset_json();
    let bad = repo_root().join("fixtures/bad/mark-zero.json");
    let out = nftbalance(&ns, &["apply", p(&bad)]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(ns.ruleset_json(), before);
}

/// Rules and routes of the namespace, both families, every table.
fn routing_state(ns: &Netns) -> String {
    let mut out = String::new();
    for args in [
        &["rule"][..],
        &["-6", "rule"],
        &["route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
    ] {
        out.push_str(&ns.ok("ip", args));
    }
    out
}

#[test]
fn a_refused_transaction_puts_the_routing_back() {
    let seed = spec("seed.json");
    let ns = router_for("rollback", &seed);
    let before = routing_state(&ns);
    // Another program owns a table of the same name (NFT_TABLE_F_OWNER, as firewalld uses):
    // the kernel refuses our delete of it, after apply has already installed the routing.
    let (owned_tx, owned_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let name = ns.name().to_string();
    let owner = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = nftbalance_netlink::Socket::open().unwrap();
        let mut b = nftbalance_netlink::Batch::new();
        let mut table =
            nftbalance_netlink::Table::new(nftbalance_netlink::Family::Inet, "nftbalance");
        table.flags = nftbalance_netlink::table_flags::OWNER;
        b.add_table(&table, "owned table").unwrap();
        b.send(&socket, nftbalance_netlink::Commit::Yes, None)
            .unwrap();
        owned_tx.send(()).unwrap();
        // The table lives as long as this socket.
        let _ = stop_rx.recv();
        drop(socket);
    });
    owned_rx.recv().unwrap();
    let out = nftbalance(&ns, &["apply", &seed]);
    stop_tx.send(()).unwrap();
    owner.join().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("put back as they were"), "{err}");
    assert_eq!(routing_state(&ns), before, "routing was not rolled back");
}

/// 22.9: two tables in one namespace fought over the policy routing: applying a second spec
/// removed the first one's fwmark rules, flushing it removed everything of the first, and
/// diff of the first said "same as the spec" because it did not look at routing.
#[test]
fn a_second_table_in_a_namespace_is_refused_and_diff_sees_routing() {
    let seed = spec("seed.json");
    let ns = router_for("twotables", &seed);
    ok(&ns, &["apply", &seed]);
    let rules = ns.ok("ip", &["rule", "list"]);
    let second_spec = std::fs::read_to_string(&seed)
        .unwrap()
        .replace("\"table\": \"nftbalance\"", "\"table\": \"second\"")
        .replace("\"route_table\": 101", "\"route_table\": 201")
        .replace("\"route_table\": 102", "\"route_table\": 202");
    assert!(second_spec.contains("second"));
    let file = TempFile::new("second", &second_spec);
    let second = file.path().to_string();

    let out = nftbalance(&ns, &["apply", &second]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("table inet nftbalance (nftables) is applied in this network namespace"),
        "{err}"
    );
    assert_eq!(
        ns.ok("ip", &["rule", "list"]),
        rules,
        "the refused apply changed ip rules"
    );
    let out = ok(&ns, &["flush", &second]);
    assert!(out.contains("routing: left as it is"), "{out}");
    assert_eq!(
        ns.ok("ip", &["rule", "list"]),
        rules,
        "flush of the other table took ours"
    );
    assert!(ok(&ns, &["diff", &seed]).contains("same as the spec"));

    // A rule someone deleted is a difference.
    ns.ok("ip", &["rule", "del", "priority", "1001"]);
    let out = nftbalance(&ns, &["diff", &seed]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("ip rule missing: "),
        "{}",
        text(&out.stdout)
    );
    ok(&ns, &["apply", &seed]);
    assert!(ok(&ns, &["diff", &seed]).contains("same as the spec"));
    ok(&ns, &["flush", &seed]);
}

/// Issue 16: a hook program that does not exist is refused with its JSON path, and nothing
/// is applied (watch runs hooks; apply refuses the spec all the same).
#[test]
fn a_missing_hook_program_is_refused_and_nothing_is_applied() {
    let seed = spec("seed.json");
    let ns = router_for("hookpath", &seed);
    let with_hook = std::fs::read_to_string(&seed).unwrap().replacen(
        "\"snat\": true",
        "\"snat\": true, \"hooks\": { \"on_change\": [\"/nonexistent/notify-uplink\"] }",
        1,
    );
    assert!(with_hook.contains("hooks"));
    let file = TempFile::new("hookpath", &with_hook);
    let out = nftbalance(&ns, &["apply", file.path()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("hooks.on_change[0]"), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(
        ns.ok("nft", &["list", "ruleset"]),
        "",
        "something was applied"
    );
}
