//! The real `nft` as an oracle.

use serde_json::Value;

use crate::netns::Netns;

/// `nft -j list ruleset` without handles and the metainfo object, so that two namespaces
/// that hold the same ruleset compare equal.
pub fn ruleset_json(ns: &Netns) -> Value {
    let text = ns.ok("nft", &["-j", "list", "ruleset"]);
    let mut doc: Value = serde_json::from_str(&text).expect("nft -j prints JSON");
    let items = doc["nftables"].as_array_mut().expect("nftables array");
    items.retain(|o| o.get("metainfo").is_none());
    for item in items.iter_mut() {
        strip_handles(item);
    }
    doc
}

fn strip_handles(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("handle");
            map.values_mut().for_each(strip_handles);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_handles),
        _ => {}
    }
}
