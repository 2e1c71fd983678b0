//! `render_ip_batch` of every fixture spec against its golden `fixtures/routing/NAME.ip`
//! (`make bless` rewrites them; review with `git diff`), and every golden fed to the
//! real `ip -batch` in a namespace gives exactly what `apply` gives in another.

mod common;

use std::fs;
use std::path::PathBuf;

use common::{netns, RoutingNs};
use nftbalance_routing::{
    plan, render_ip_batch, render_ip_batch_family, IpFamily, IPV4_SECTION, IPV6_SECTION,
};
use nftbalance_spec::Spec;
use nftbalance_testns::golden::{assert_all, check, fixture_files, fixtures_dir, line_diff};

fn specs() -> Vec<(String, Spec)> {
    let files = fixture_files("specs", "json");
    assert!(files.len() >= 8, "fixture specs missing: {files:?}");
    files
        .into_iter()
        .map(|f| {
            let stem = f.file_stem().unwrap().to_str().unwrap().to_string();
            let spec = Spec::from_json(&fs::read_to_string(&f).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (stem, spec)
        })
        .collect()
}

fn golden_path(stem: &str) -> PathBuf {
    fixtures_dir().join("routing").join(format!("{stem}.ip"))
}

#[test]
fn ip_batches_match_goldens() {
    let mut failures = Vec::new();
    for (stem, spec) in specs() {
        let text = render_ip_batch(&plan(&spec));
        assert_eq!(
            render_ip_batch(&plan(&spec)),
            text,
            "{stem}: output is not deterministic"
        );
        failures.extend(check(&golden_path(&stem), &text));
    }
    assert_all(&failures);
}

#[test]
fn no_stale_goldens() {
    let stems: Vec<String> = specs().into_iter().map(|(s, _)| s).collect();
    for entry in fs::read_dir(fixtures_dir().join("routing")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        assert!(
            stems.contains(&stem),
            "{} has no spec in fixtures/specs",
            path.display()
        );
    }
}

/// The IPv4 (`ip -batch`) and IPv6 (`ip -6 -batch`) parts of a golden file.
fn sections(text: &str) -> (String, String) {
    let (mut v4, mut v6) = (String::new(), String::new());
    let mut current = None;
    for line in text.lines() {
        if line == IPV4_SECTION {
            current = Some(false);
        } else if line == IPV6_SECTION {
            current = Some(true);
        } else {
            match current {
                Some(false) => v4.push_str(line),
                Some(true) => v6.push_str(line),
                None => {
                    assert!(
                        line.starts_with('#'),
                        "a command before any section: {line}"
                    );
                    continue;
                }
            }
            if current == Some(true) {
                v6.push('\n');
            } else {
                v4.push('\n');
            }
        }
    }
    (v4, v6)
}

#[test]
fn every_golden_through_ip_batch_equals_apply() {
    for (stem, spec) in specs() {
        let text = fs::read_to_string(golden_path(&stem))
            .unwrap_or_else(|e| panic!("{stem}: {e} (run `make bless`)"));
        let p = plan(&spec);
        let (v4, v6) = sections(&text);
        assert_eq!(v4, render_ip_batch_family(&p, IpFamily::V4), "{stem}");
        assert_eq!(v6, render_ip_batch_family(&p, IpFamily::V6), "{stem}");

        let by_ip = netns(&format!("batch-{stem}"));
        by_ip.gateway_ifaces(&spec);
        if !v4.is_empty() {
            by_ip.ip_batch(false, &v4);
        }
        if !v6.is_empty() {
            by_ip.ip_batch(true, &v6);
        }

        let by_apply = netns(&format!("apply-{stem}"));
        by_apply.gateway_ifaces(&spec);
        let report = by_apply.apply(&p).unwrap();
        assert!(report.warnings.is_empty(), "{stem}: {:?}", report.warnings);

        let (a, b) = (by_ip.owned(), by_apply.owned());
        assert_eq!(a, b, "{stem}: ip -batch vs apply:\n{}", line_diff(&a, &b));
        assert!(
            a.contains("lookup main suppress_prefixlength 0"),
            "{stem}: {a}"
        );
        // apply recognises what iproute2 made as its own: nothing to change.
        let again = by_ip.apply(&p).unwrap();
        assert!(
            again.unchanged(),
            "{stem}: apply over ip -batch changed {again:?}"
        );
        assert_eq!(by_ip.owned(), a);
    }
}
