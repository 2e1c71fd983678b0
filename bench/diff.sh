#!/usr/bin/env bash
# `dump` and `diff` of the seed spec with 100k forward selectors (one rule each; issue 22 item
# 6: both were quadratic in rules), in one throwaway network namespace. Median of RUNS runs
# (hyperfine) and peak RSS (/usr/bin/time). SELECTORS changes the size.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/target/release/nftbalance
RUNS=${RUNS:-3}
N=${SELECTORS:-100000}
work=$(mktemp -d)
ns="nbbench-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ip netns add "$ns"

python3 bench/gen_spec.py --selectors "$N" fixtures/specs/seed.json > "$work/spec.json"
ip netns exec "$ns" "$BIN" apply "$work/spec.json" > /dev/null 2>&1
# `nft list` of the same table: the kernel's rule dump that diff reads too, for scale.
hyperfine --style none --runs "$RUNS" --export-json "$work/h.json" \
  -n dump "$BIN dump $work/spec.json" \
  -n diff "ip netns exec $ns $BIN diff $work/spec.json" \
  -n "nft list" "ip netns exec $ns nft list table inet nftbalance" > /dev/null 2> "$work/warnings" \
  || { cat "$work/warnings" >&2; exit 1; }
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
rss_dump=$(rss "$BIN" dump "$work/spec.json")
rss_diff=$(rss ip netns exec "$ns" "$BIN" diff "$work/spec.json")
echo "| $N selectors | median | peak RSS |"
echo "|---|---:|---:|"
python3 - "$work/h.json" "$rss_dump" "$rss_diff" <<'PY'
import json, sys
runs = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
rss = {"dump": int(sys.argv[2]), "diff": int(sys.argv[3])}
for name, label in [("dump", "nftbalance dump"), ("diff", "nftbalance diff"), ("nft list", "nft list table")]:
    mb = f"{rss[name] / 1024:.0f} MB" if name in rss else ""
    print(f"| {label} | {runs[name] * 1000:.0f} ms | {mb} |")
PY
echo
if grep -q outliers "$work/warnings"; then echo "hyperfine saw statistical outliers (a noisy machine)."; fi
echo "Medians of $RUNS runs (hyperfine); peak RSS from /usr/bin/time. $(date -u +%F), $(nproc) cores, kernel $(uname -r), $(nft --version)."
