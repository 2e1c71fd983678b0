//! `Netns` against the real kernel and tools (root): what runs inside stays inside, the
//! ruleset comes back without handles, and the namespace is gone after drop, also on panic.

use nftbalance_testns::Netns;

fn exists(name: &str) -> bool {
    std::path::Path::new("/var/run/netns").join(name).exists()
}

#[test]
fn load_nft_and_ruleset_json_without_handles_or_metainfo() {
    let ns = Netns::new("self");
    assert_eq!(ns.ruleset_text(), "");
    ns.load_nft("table inet t {\n\tchain c {\n\t\tcounter\n\t}\n}\n");
    let json = ns.ruleset_json().to_string();
    assert!(
        json.contains(r#""table":{"family":"inet","name":"t"}"#),
        "{json}"
    );
    assert!(
        !json.contains("handle") && !json.contains("metainfo"),
        "{json}"
    );
    assert!(ns.nft(&["list", "tables"]).contains("table inet t"));
    assert!(ns.cmd("ip -br link show lo").starts_with("lo "));
    ns.sysctl(&["net.ipv4.ip_forward=1"]);
    assert_eq!(ns.ip(&["-4", "route"]), "");
}

#[test]
fn the_namespace_is_deleted_on_drop_and_on_panic() {
    let ns = Netns::new("drop");
    let name = ns.name().to_string();
    assert!(exists(&name));
    drop(ns);
    assert!(!exists(&name));

    let name = std::panic::catch_unwind(|| {
        let ns = Netns::new("panic");
        let name = ns.name().to_string();
        ns.run(|| panic!("{name}"));
    })
    .unwrap_err()
    .downcast::<String>()
    .unwrap();
    assert!(!exists(&name), "{name} left behind");
}
