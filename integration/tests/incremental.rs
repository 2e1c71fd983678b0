//! Incremental apply (issue 19): a re-apply over the table nftbalance last committed sends
//! only the difference, and the result is exactly what a full apply (and `nft -f` of the
//! dump) gives; counters of kept gateways survive; a table changed by hand is replaced whole.

use nftbalance_engine::backend::{update, Updated};
use nftbalance_integration::cli::{nftbalance, ok, text};
use nftbalance_integration::netns::Netns;
use nftbalance_integration::uplinks::add_uplinks;
use nftbalance_integration::watch::TempFile;
use nftbalance_integration::{fixture_files, repo_root};
use nftbalance_netlink::{lower, read, transaction, Commit, Socket};
use nftbalance_ruleset::{self as ruleset, Ruleset};
use nftbalance_spec::Spec;
use serde_json::{json, Value};

fn compile(spec: &Value) -> Ruleset {
    ruleset::compile(&Spec::from_json(&spec.to_string()).expect("a valid spec"))
}

fn replace(socket: &Socket, rs: &Ruleset) {
    transaction::run(socket, Commit::Yes, || lower::replace_batch(rs)).expect("replace");
}

/// Moves the live table from `from` to `to` and checks it is exactly `to`: `diff` finds
/// nothing, and `nft -j list ruleset` equals that of `nft -f` of `to_dump` in `oracle`.
/// A full replace is accepted only where the change needs it (a set's declaration).
fn step(ns: &Netns, oracle: &Netns, from: &Ruleset, to: &Ruleset, to_dump: &str, what: &str) {
    let unfit = matches!(
        lower::delta_batch(from, to),
        Err(lower::DeltaError::Unfit(_))
    );
    let u = ns.run(|| {
        let socket = Socket::open().unwrap();
        let u = update(&socket, Ok(from), to, &|_| {}).unwrap();
        let left = read::diff(&socket, to).unwrap();
        assert!(
            left.is_empty(),
            "{what}: not exactly the new ruleset: {left:?}"
        );
        u
    });
    assert!(
        u.how != Updated::Replaced || unfit,
        "{what}: replaced ({:?}) where a delta fits",
        u.why_replaced
    );
    if from == to {
        assert_eq!(u.how, Updated::Unchanged, "{what}");
    }
    oracle.ok("nft", &["flush", "ruleset"]);
    oracle.load_nft(to_dump);
    assert_eq!(
        canonical(ns.ruleset_json()),
        canonical(oracle.ruleset_json()),
        "{what}: the incremental result and nft -f of the dump differ"
    );
}

/// `nft -j list ruleset` with sets, maps and chains in name order: nft lists them in the
/// order they were created, which a delta cannot choose (a set added later lists last).
/// Rules keep their order within their chain, which is what counts.
fn canonical(mut doc: Value) -> Value {
    let items = doc["nftables"].as_array_mut().unwrap();
    let key = |o: &Value| -> (u8, String) {
        let (kind, body) = o.as_object().unwrap().iter().next().unwrap();
        let rank = match kind.as_str() {
            "table" => 0,
            "set" | "map" => 1,
            "chain" => 2,
            _ => 3,
        };
        let name = body.get("chain").or(body.get("name"));
        (rank, name.and_then(Value::as_str).unwrap_or("").to_string())
    };
    items.sort_by_key(key); // stable: rules stay in order within a chain
    doc
}

/// A fixture with its exclusions, selectors' address lists and weights stripped: the
/// predecessor and successor of the fixture in [`every_fixture_is_reached_and_left_incrementally`].
fn stripped(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(b) = s.get_mut("balance").and_then(Value::as_object_mut) {
        b.remove("exclude");
        for key in ["forward", "local"] {
            for sel in b
                .get_mut(key)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(sel) = sel.as_object_mut() {
                    sel.remove("daddr");
                    sel.remove("saddr");
                }
            }
        }
    }
    for g in s["gateways"].as_array_mut().unwrap() {
        g["weight"] = json!(7);
    }
    s
}

#[test]
fn every_fixture_is_reached_and_left_incrementally() {
    let ns = Netns::new("incfix");
    let oracle = Netns::new("incfixo");
    for file in fixture_files("specs", "json") {
        let stem = file.file_stem().unwrap().to_str().unwrap().to_string();
        let spec: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let dump =
            std::fs::read_to_string(repo_root().join(format!("fixtures/dump/{stem}.nft"))).unwrap();
        let (full, other) = (compile(&spec), compile(&stripped(&spec)));
        ns.ok("nft", &["flush", "ruleset"]);
        ns.run(|| replace(&Socket::open().unwrap(), &other));
        step(
            &ns,
            &oracle,
            &other,
            &full,
            &dump,
            &format!("{stem}: reached"),
        );
        step(&ns, &oracle, &full, &full, &dump, &format!("{stem}: again"));
        let other_dump = ruleset::nft::render(&other);
        step(
            &ns,
            &oracle,
            &full,
            &other,
            &other_dump,
            &format!("{stem}: left"),
        );
    }
}

/// xorshift64: the edit sequence is the same in every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn gateway(k: u64) -> Value {
    json!({ "name": format!("isp{k}"), "interface": format!("ppp{k}"), "mark": k,
            "address": format!("100.0.{k}.1"), "via": format!("100.0.{k}.254"),
            "route_table": 100 + k })
}

/// A random prefix in 10.0.0.0/8 of length 12 to 30, host bits clear.
fn prefix(rng: &mut Rng) -> Value {
    let len = 12 + rng.below(19) as u32;
    let addr = (10u32 << 24) | (rng.below(1 << 24) as u32);
    let net = addr & (u32::MAX << (32 - len));
    json!(format!("{}/{len}", std::net::Ipv4Addr::from(net)))
}

/// One random edit of the kinds the issue names; returns what it did.
fn edit(spec: &mut Value, rng: &mut Rng) -> String {
    let gateways = spec["gateways"].as_array_mut().unwrap();
    match rng.below(6) {
        0 if gateways.len() < 6 => {
            let used: Vec<u64> = gateways
                .iter()
                .map(|g| g["mark"].as_u64().unwrap())
                .collect();
            let k = (1..).find(|k| !used.contains(k)).unwrap();
            gateways.push(gateway(k));
            format!("add gateway isp{k}")
        }
        1 if gateways.len() > 1 => {
            let g = gateways.remove(rng.below(gateways.len() as u64) as usize);
            format!("remove gateway {}", g["name"])
        }
        2 => {
            let n = 1 + rng.below(40);
            let exclude = spec["balance"]["exclude"].as_array_mut().unwrap();
            for _ in 0..n {
                exclude.push(prefix(rng));
            }
            format!("add {n} exclusions")
        }
        3 => {
            let exclude = spec["balance"]["exclude"].as_array_mut().unwrap();
            let n = rng.below(exclude.len() as u64 / 2 + 1) as usize;
            for _ in 0..n {
                exclude.remove(rng.below(exclude.len() as u64) as usize);
            }
            format!("remove {n} exclusions")
        }
        4 => {
            let forward = spec["balance"]["forward"].as_array_mut().unwrap();
            if forward.len() > 1 && rng.below(2) == 0 {
                forward.remove(rng.below(forward.len() as u64) as usize);
                "remove a selector".into()
            } else {
                let daddr: Vec<Value> = (0..1 + rng.below(3)).map(|_| prefix(rng)).collect();
                forward.insert(
                    0,
                    json!({ "iif": format!("eth{}", rng.below(3)), "protocol": "tcp",
                            "dports": [1 + rng.below(1000)], "daddr": daddr }),
                );
                "add a selector".into()
            }
        }
        _ => {
            let i = rng.below(gateways.len() as u64) as usize;
            let w = 1 + rng.below(5);
            gateways[i]["weight"] = json!(w);
            format!("weight of {} to {w}", gateways[i]["name"])
        }
    }
}

#[test]
fn random_edit_sequences_apply_incrementally_to_exactly_the_full_result() {
    let ns = Netns::new("incrand");
    let oracle = Netns::new("incrando");
    let mut spec = json!({
        "gateways": [gateway(1), gateway(2)],
        "balance": { "forward": [ { "iif": "eth0" } ], "exclude": [] },
    });
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut current = compile(&spec);
    ns.run(|| replace(&Socket::open().unwrap(), &current));
    for round in 0..40 {
        let mut next_spec = spec.clone();
        let what = edit(&mut next_spec, &mut rng);
        if Spec::from_json(&next_spec.to_string()).is_err() {
            continue; // an edit the spec refuses (e.g. a pin left without its gateway)
        }
        let next = compile(&next_spec);
        let dump = ruleset::nft::render(&next);
        step(
            &ns,
            &oracle,
            &current,
            &next,
            &dump,
            &format!("round {round}: {what}"),
        );
        (spec, current) = (next_spec, next);
    }
}

/// Packets of the rule counters of `chain` (nft's listing).
fn counters(ns: &Netns, chain: &str) -> u64 {
    ns.rule_counters(&["chain", "inet", "nftbalance", chain])
        .iter()
        .sum()
}

/// A few local TCP connections to port 80 (balanced by the seed's `local` selector), to a
/// closed port of this namespace: each is one new connection answered by a reset.
fn connect_locally(ns: &Netns) {
    ns.ok(
        "bash",
        &[
            "-c",
            "for i in 1 2 3 4 5 6; do (exec 3<>/dev/tcp/127.0.0.1/80) 2>/dev/null; done; true",
        ],
    );
}

#[test]
fn reapplies_keep_counters_and_a_hand_edited_table_is_replaced() {
    let seed: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("fixtures/specs/seed.json")).unwrap(),
    )
    .unwrap();
    let ns = Netns::new("incapply");
    add_uplinks(&ns, &seed.to_string());
    let file = TempFile::new("incapply", &seed.to_string());
    let first = ok(&ns, &["apply", file.path()]);
    assert!(first.contains("full replace: no record"), "{first}");
    connect_locally(&ns);
    let before = (counters(&ns, "gw_new_isp1"), counters(&ns, "gw_new_isp2"));
    assert!(
        before.0 + before.1 >= 6,
        "no new connections counted: {before:?}"
    );

    // The same spec again: nothing to send, and nothing written (the applied record stays
    // byte for byte, the pid of the apply that committed included; no journal is begun).
    let ino = std::fs::metadata(format!("/var/run/netns/{}", ns.name()))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let record = format!("/run/nftbalance/{ino}-inet-nftbalance.applied.json");
    let committed = std::fs::read(&record).unwrap();
    let again = ok(&ns, &["apply", file.path()]);
    assert!(again.contains("unchanged, nothing sent"), "{again}");
    assert_eq!(
        std::fs::read(&record).unwrap(),
        committed,
        "the record was rewritten"
    );

    // More exclusions, other weights and a third gateway: isp1 and isp2 are kept, and so
    // are their counters.
    let mut edited = seed.clone();
    edited["balance"]["exclude"]
        .as_array_mut()
        .unwrap()
        .extend([json!("172.16.0.0/12"), json!("100.64.0.0/10")]);
    edited["gateways"][0]["weight"] = json!(3);
    let mut third = gateway(3);
    third["interface"] = json!("ppp2");
    edited["gateways"].as_array_mut().unwrap().push(third);
    ns.ok(
        "ip",
        &[
            "link", "add", "ppp2", "type", "veth", "peer", "name", "nbpeer2",
        ],
    );
    ns.ok("ip", &["link", "set", "nbpeer2", "up"]);
    ns.ok("ip", &["link", "set", "ppp2", "up"]);
    ns.ok("ip", &["addr", "add", "100.0.3.1/24", "dev", "ppp2"]);
    let edited_file = TempFile::new("incapply-edited", &edited.to_string());
    let out = ok(&ns, &["apply", edited_file.path()]);
    assert!(out.contains("applied incrementally"), "{out}");
    assert!(out.contains("counters kept"), "{out}");
    assert_eq!(
        (counters(&ns, "gw_new_isp1"), counters(&ns, "gw_new_isp2")),
        before,
        "the counters of the kept gateways restarted"
    );
    let status = ok(&ns, &["status", edited_file.path()]);
    assert!(status.contains("counters since"), "{status}");
    let diff = ok(&ns, &["diff", edited_file.path()]);
    assert!(diff.contains("same as the spec"), "{diff}");

    // Someone changes the table by hand: the next apply cannot prove what is there and
    // replaces it whole, and the hand edit is gone.
    ns.ok(
        "nft",
        &[
            "add",
            "rule",
            "inet",
            "nftbalance",
            "balance",
            "meta",
            "mark",
            "0x63",
            "counter",
        ],
    );
    let out = ok(&ns, &["apply", file.path()]);
    assert!(
        out.contains("full replace: the live table is not the one last applied"),
        "{out}"
    );
    let oracle = Netns::new("incapplyo");
    oracle.load_nft(&std::fs::read_to_string(repo_root().join("fixtures/dump/seed.nft")).unwrap());
    assert_eq!(ns.ruleset_json(), oracle.ruleset_json());

    // The escape hatch forces the old behaviour.
    let forced = ns.exec(
        "env",
        &[
            "NFTBALANCE_FULL_REPLACE=1",
            &nftbalance_integration::target_binary("nftbalance"),
            "apply",
            file.path(),
        ],
        None,
    );
    let forced_out = text(&forced.stdout);
    assert!(
        forced_out.contains("NFTBALANCE_FULL_REPLACE=1 is set"),
        "{forced_out}"
    );
    let _ = nftbalance(&ns, &["flush", file.path()]);
}

#[test]
fn lists_from_files_apply_and_a_changed_list_is_an_incremental_change() {
    let ns = Netns::new("inclist");
    let seed = std::fs::read_to_string(repo_root().join("fixtures/specs/seed.json")).unwrap();
    add_uplinks(&ns, &seed);
    let dir = std::env::temp_dir().join(format!("nbt-inclist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("countries.txt");
    // Mixed lengths, as a country list.
    let lines: Vec<String> = (0..500u32)
        .map(|i| match i % 2 {
            0 => format!("{}.{}.0.0/16", 20 + i / 256, i % 256),
            _ => format!("40.{}.{}.0/24", i / 256, i % 256),
        })
        .collect();
    std::fs::write(&list, format!("# a country list\n{}\n", lines.join("\n"))).unwrap();
    let mut spec: Value = serde_json::from_str(&seed).unwrap();
    spec["balance"]["exclude"] = json!(["192.168.0.0/16", "@countries.txt"]);
    let spec_file = dir.join("spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let spec_path = spec_file.to_str().unwrap();
    let out = ok(&ns, &["apply", spec_path]);
    assert!(out.contains("full replace"), "{out}");
    let diff = ok(&ns, &["diff", spec_path]);
    assert!(diff.contains("same as the spec"), "{diff}");

    // The list changes (5 prefixes out, 5 in): the re-apply sends only those, and what is
    // in force is the new list, not the file as read at the first apply.
    let mut changed = lines[5..].to_vec();
    changed.extend((0..5).map(|i| format!("30.{i}.0.0/16")));
    std::fs::write(&list, changed.join("\n")).unwrap();
    let out = ok(&ns, &["apply", spec_path]);
    assert!(out.contains("applied incrementally"), "{out}");
    let diff = ok(&ns, &["diff", spec_path]);
    assert!(diff.contains("same as the spec"), "{diff}");

    // A bad line: exit 2, nothing applied, the message names entry, file and line.
    std::fs::write(&list, "10.0.0.0/8\n\n# fine so far\n10.1.2.3/8\n").unwrap();
    let out = nftbalance(&ns, &["apply", spec_path]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("balance.exclude[1] (countries.txt:4): 10.1.2.3/8 has host bits set"),
        "{err}"
    );
    let _ = nftbalance(&ns, &["flush", spec_path]);
    let _ = std::fs::remove_dir_all(&dir);
}
