//! `nftbalance schema` against the parser. A real validator (Debian's python3-jsonschema, the
//! reference implementation of JSON Schema in Python) checks that every spec the parser
//! accepts validates and that every `fixtures/bad` spec that is a schema violation fails; the
//! parser's own record of the keys each object accepts is compared with the schema's
//! properties, object by object, so a field added to one and not the other fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nftbalance_spec::{objects_read, Spec};
use nftbalance_testns::repo_root;
use serde_json::{json, Value};

/// Bad fixtures the parser refuses for what they mean, not for their shape: each value on its
/// own is what the schema allows. The test fails if one of these starts failing the schema
/// (then it belongs with the others) or a fixture not listed passes it.
const SEMANTIC: &[(&str, &str)] = &[
    (
        "bad-ha-duplicates",
        "two routers share a name, priority and address: uniqueness across items",
    ),
    (
        "bad-ha-family",
        "a pair in an ip6 spec: refused by the spec's family, another field",
    ),
    (
        "duplicate-interface",
        "two gateways share an interface: uniqueness across items",
    ),
    (
        "duplicate-mark",
        "1 and \"0x1\" are the same mark: uniqueness by numeric value",
    ),
    (
        "duplicate-name",
        "two gateways share a name: uniqueness across items",
    ),
    (
        "duplicate-route-table",
        "two gateways share a routing table: uniqueness across items",
    ),
    (
        "ipv4-in-ip6-spec",
        "an IPv4 address is refused by the spec's family, another field",
    ),
    (
        "ipv6-in-ip-spec",
        "an IPv6 address is refused by the spec's family, another field",
    ),
    (
        "mark-outside-mask",
        "mark bits outside mark_mask compare two fields",
    ),
    (
        "mark-zero",
        "0 is a 32-bit number; reserved for \"not balanced\" by meaning",
    ),
    (
        "pin-to-unknown-gateway",
        "a gateway name that no gateway has: a cross-reference",
    ),
    (
        "reserved-route-table",
        "254 is a 32-bit number; the kernel's main table by meaning",
    ),
    (
        "selector-families-disjoint",
        "saddr and daddr of different families: two fields",
    ),
    (
        "iif-in-local-selector",
        "forward and local selectors share one shape; iif is a local's error",
    ),
    (
        "bad-prefix",
        "\"10.0.0.0/33\" is text; prefix syntax is the parser's",
    ),
    (
        "policy-health-targets",
        "probe targets are text; their syntax is the parser's",
    ),
];

/// Bad fixtures that are not JSON at all: no schema can judge them.
const NOT_JSON: &[&str] = &["malformed-json", "nul-byte", "truncated"];

fn schema() -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_nftbalance"))
        .arg("schema")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every `.json` file under `fixtures/`, by path relative to the repository.
fn fixture_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "json") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&repo_root().join("fixtures"), &mut found);
    found.sort();
    found
}

/// Validates each instance with python3-jsonschema (draft 2020-12, formats checked); returns
/// each instance's errors. The schema itself is first checked against the meta-schema.
fn validate(schema: &Value, instances: &BTreeMap<String, Value>) -> BTreeMap<String, Vec<String>> {
    const SCRIPT: &str = r#"
import json, sys
from jsonschema import Draft202012Validator, FormatChecker
data = json.load(sys.stdin)
Draft202012Validator.check_schema(data["schema"])
v = Draft202012Validator(data["schema"], format_checker=FormatChecker())
json.dump({name: ["/".join(map(str, e.absolute_path)) + ": " + e.message
                  for e in v.iter_errors(inst)]
           for name, inst in data["instances"].items()}, sys.stdout)
"#;
    // Debian's python3 and python3-jsonschema (APT_PACKAGES), not whatever python3 is first
    // on PATH.
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "/usr/bin/python3 (Debian's python3 and python3-jsonschema; make test installs them)",
        );
    let input = json!({ "schema": schema, "instances": instances });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3-jsonschema failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn name_of(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap()
        .display()
        .to_string()
}

/// Every fixture the parser accepts as a spec validates against the schema.
#[test]
fn every_spec_the_parser_accepts_validates() {
    let mut specs = BTreeMap::new();
    for path in fixture_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // not UTF-8 (fixtures/hostile)
        };
        if Spec::from_json(&text).is_ok() {
            specs.insert(name_of(&path), serde_json::from_str(&text).unwrap());
        }
    }
    for dir in ["fixtures/specs/", "fixtures/policies/", "fixtures/schema/"] {
        assert!(
            specs.keys().any(|k| k.starts_with(dir)),
            "no spec in {dir}: {specs:?}"
        );
    }
    let failed: Vec<_> = validate(&schema(), &specs)
        .into_iter()
        .filter(|(_, errors)| !errors.is_empty())
        .collect();
    assert!(
        failed.is_empty(),
        "valid specs the schema refuses: {failed:#?}"
    );
}

/// Every fixtures/bad spec fails the schema, but those listed in SEMANTIC (which pass it) and
/// those that are not JSON.
#[test]
fn bad_specs_that_break_the_shape_fail_the_schema() {
    let dir = repo_root().join("fixtures/bad");
    let mut instances = BTreeMap::new();
    let mut not_json = Vec::new();
    for path in fixture_files().into_iter().filter(|p| p.starts_with(&dir)) {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(Spec::from_json(&text).is_err(), "{name} is a valid spec");
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => drop(instances.insert(name, v)),
            Err(_) => not_json.push(name),
        }
    }
    assert_eq!(not_json, NOT_JSON);
    let semantic: BTreeSet<&str> = SEMANTIC.iter().map(|(n, _)| *n).collect();
    let results = validate(&schema(), &instances);
    let mut wrong = Vec::new();
    for (name, errors) in &results {
        match (semantic.contains(name.as_str()), errors.is_empty()) {
            (true, false) => wrong.push(format!("{name}: listed as semantic, fails: {errors:?}")),
            (false, true) => wrong.push(format!("{name}: passes the schema")),
            _ => {}
        }
    }
    for name in &semantic {
        assert!(
            results.contains_key(*name),
            "SEMANTIC names a missing fixture {name}"
        );
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The schema node at a JSON `$ref` ("#/$defs/Name"), and the definition's name.
fn deref<'s>(root: &'s Value, node: &'s Value) -> (&'s Value, Option<&'s str>) {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/$defs/").expect("local $ref");
            (&root["$defs"][name], Some(name))
        }
        None => (node, None),
    }
}

/// The schema of the object at a parser path ("gateways[0].health", "" for the top).
fn schema_at<'s>(
    root: &'s Value,
    path: &str,
    defs_seen: &mut BTreeSet<String>,
) -> Option<&'s Value> {
    let mut node = root;
    let words = path.split('.').filter(|w| !w.is_empty());
    for word in words {
        let (key, indexes) = match word.find('[') {
            Some(i) => (&word[..i], word[i..].matches('[').count()),
            None => (word, 0),
        };
        let (object, _) = deref(root, node);
        node = object["properties"]
            .get(key)
            .or_else(|| object.get("additionalProperties").filter(|a| a.is_object()))?;
        for _ in 0..indexes {
            node = deref(root, node).0.get("items")?;
        }
    }
    let (object, def) = deref(root, node);
    if let Some(def) = def {
        defs_seen.insert(def.to_string());
    }
    Some(object)
}

/// "gateways[3].health" -> "gateways[].health": one problem per kind of object.
fn without_indexes(path: &str) -> String {
    let mut words = path.split('[');
    let first = words.next().unwrap_or_default().to_string();
    words.fold(first, |shown, w| {
        format!("{shown}[]{}", w.split_once(']').map_or(w, |(_, rest)| rest))
    })
}

/// At every object the parser reads in any accepted fixture, the schema allows exactly the
/// keys the parser accepts and no others; and every object the schema describes is read in
/// some fixture, so that no part of the schema goes unchecked.
#[test]
fn schema_has_exactly_the_fields_the_parser_accepts() {
    let schema = schema();
    let mut defs_seen = BTreeSet::new();
    // Problem (with the object's path, indexes left out) -> the first fixture showing it.
    let mut problems: BTreeMap<String, String> = BTreeMap::new();
    for path in fixture_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if Spec::from_json(&text).is_err() {
            continue;
        }
        for object in objects_read(&text) {
            let at = without_indexes(&object.path);
            let mut problem = |p: String| {
                problems.entry(p).or_insert_with(|| name_of(&path));
            };
            let Some(node) = schema_at(&schema, &object.path, &mut defs_seen) else {
                problem(format!("{at:?}: no schema for this object"));
                continue;
            };
            let in_schema: BTreeSet<&str> = node["properties"]
                .as_object()
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let in_parser: BTreeSet<&str> = object.accepted.iter().copied().collect();
            if in_schema != in_parser {
                problem(format!(
                    "{at:?}: only the parser accepts {:?}; only the schema allows {:?}",
                    in_parser.difference(&in_schema).collect::<Vec<_>>(),
                    in_schema.difference(&in_parser).collect::<Vec<_>>()
                ));
            }
            if node.get("additionalProperties") != Some(&Value::Bool(false)) {
                problem(format!("{at:?}: the schema allows unknown fields"));
            }
        }
    }
    let objects: BTreeSet<String> = schema["$defs"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, d)| d.get("properties").is_some())
        .map(|(name, _)| name.clone())
        .collect();
    for never in objects.difference(&defs_seen) {
        problems.insert(
            format!("no fixture has a {never}"),
            "add one to fixtures/schema/every-field.json".into(),
        );
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// An editor's `$schema` key is accepted and ignored; any other type there is an error.
#[test]
fn dollar_schema_key_is_accepted() {
    let base = r#"{"gateways":[{"name":"a","interface":"eth1","mark":1,"route_table":101}]}"#;
    let with = base.replacen(
        '{',
        r#"{"$schema":"file:///usr/share/nftbalance/spec.schema.json","#,
        1,
    );
    assert_eq!(Spec::from_json(&with), Spec::from_json(base));
    let wrong = base.replacen('{', r#"{"$schema":1,"#, 1);
    let errors = Spec::from_json(&wrong).unwrap_err().to_string();
    assert_eq!(errors, "$schema: expected a string, found a number");
}
