//! `make bench`'s failover row (criterion): the transaction `watch` sends when a gateway goes
//! down (the split and nothing else) against a full apply of the same ruleset, with 1k and
//! 100k exclusion prefixes, in a throwaway network namespace (root). After criterion's own
//! report it prints a Markdown table of the medians.

use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode};
use nftbalance_integration::bench_spec;
use nftbalance_integration::netns::Netns;
use nftbalance_netlink::{lower, transaction, Commit, Socket};
use nftbalance_ruleset::{compile_with, Availability, Ruleset};
use serde_json::Value;

const GROUP: &str = "failover";
const SIZES: [u32; 2] = [1_000, 100_000];

fn main() {
    let ns = Netns::new("bfail");
    let out = std::env::temp_dir().join(format!("nbbench-criterion-{}", std::process::id()));
    // Criterion runs every sample on the calling thread: here, one inside the namespace.
    ns.run(|| measure(&out));
    table(&out);
    let _ = std::fs::remove_dir_all(&out);
}

fn measure(out: &Path) {
    let mut c = Criterion::default()
        .configure_from_args()
        .output_directory(out)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    let socket = Socket::open().expect("netlink socket");
    let run = |batch: &dyn Fn() -> Result<_, _>| {
        transaction::run(&socket, Commit::Yes, batch).expect("transaction");
    };
    let mut group = c.benchmark_group(GROUP);
    // One full apply at 100k takes long enough that each sample is one iteration.
    group.sampling_mode(SamplingMode::Flat);
    for n in SIZES {
        let spec = nftbalance_spec::Spec::from_json(&bench_spec(n, true)).expect("bench spec");
        let all = compile_with(&spec, &Availability::default());
        let one_down = compile_with(&spec, &Availability::without(["isp2".to_string()].into()));
        run(&|| lower::replace_batch(&all));
        // Each update goes from what the table holds to the other ruleset.
        let mut live_is_all = true;
        group.bench_function(BenchmarkId::new("update", n), |b| {
            b.iter(|| {
                let (from, to): (&Ruleset, &Ruleset) = if live_is_all {
                    (&all, &one_down)
                } else {
                    (&one_down, &all)
                };
                run(&|| lower::update_batch(from, to));
                live_is_all = !live_is_all;
            })
        });
        group.bench_function(BenchmarkId::new("full_apply", n), |b| {
            b.iter(|| run(&|| lower::replace_batch(&all)))
        });
    }
    group.finish();
    c.final_summary();
}

/// Criterion's median estimate of one benchmark, in milliseconds.
fn median_ms(out: &Path, name: &str, n: u32) -> f64 {
    let path = out
        .join(GROUP)
        .join(name)
        .join(n.to_string())
        .join("new/estimates.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).expect("criterion estimates");
    doc["median"]["point_estimate"].as_f64().expect("median") / 1e6
}

fn table(out: &Path) {
    println!();
    println!("| failover update (criterion, median) | update | full apply | ratio |");
    println!("|---|---:|---:|---:|");
    for n in SIZES {
        let (update, full) = (median_ms(out, "update", n), median_ms(out, "full_apply", n));
        println!(
            "| {n} exclusion prefixes | {update:.2} ms | {full:.1} ms | {:.3}x |",
            update / full
        );
    }
    println!();
}
