#!/usr/bin/env bash
# Apply time and peak memory: `nftbalance apply` vs `nft -f` of the same dump vs
# `iptables-legacy-restore` of `dump --format iptables`, seed spec with 1k, 10k and 100k
# exclusion prefixes, in one throwaway network namespace, same run. Every apply replaces the
# table whole (NFTBALANCE_FULL_REPLACE=1), as nft -f does; bench/reapply.sh times re-applies.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/target/release/nftbalance
RUNS=${RUNS:-7}
work=$(mktemp -d)
ns="nbbench-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ip netns add "$ns"

echo "| exclusion prefixes | nftbalance apply | nft -f (same dump) | ratio | iptables-legacy-restore | ratio | peak RSS apply | peak RSS nft -f |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for n in 1000 10000 100000; do
  python3 bench/gen_spec.py "$n" fixtures/specs/seed.json > "$work/spec.json"
  "$BIN" dump "$work/spec.json" > "$work/dump.nft"
  "$BIN" dump --format iptables "$work/spec.json" > "$work/dump.rules"
  hyperfine --style none --runs "$RUNS" --warmup 1 --export-json "$work/h.json" \
    -n apply "env NFTBALANCE_FULL_REPLACE=1 ip netns exec $ns $BIN apply $work/spec.json" \
    -n nft "ip netns exec $ns nft -f $work/dump.nft" \
    -n legacy "ip netns exec $ns iptables-legacy-restore $work/dump.rules" > /dev/null 2>> "$work/warnings" || { cat "$work/warnings" >&2; exit 1; }
  rss() { /usr/bin/time -f %M ip netns exec "$ns" "$@" 2>&1 >/dev/null | tail -1; }
  rss_apply=$(rss "$BIN" apply "$work/spec.json")
  rss_nft=$(rss nft -f "$work/dump.nft")
  python3 - "$work/h.json" "$n" "$rss_apply" "$rss_nft" <<'PY'
import json, sys
runs = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
n, ra, rn = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
a, f, l = runs["apply"], runs["nft"], runs["legacy"]
print(f"| {int(n):,} | {a*1000:.0f} ms | {f*1000:.0f} ms | {a/f:.2f}x | {l*1000:.0f} ms | {a/l:.2f}x | {ra/1024:.0f} MB | {rn/1024:.0f} MB |")
PY
done
echo
if grep -q outliers "$work/warnings" 2>/dev/null; then
  echo "hyperfine saw statistical outliers in $(grep -c outliers "$work/warnings") of the 3 rows (a noisy machine)."
fi
echo "Medians of $RUNS runs each (hyperfine), both sides in the same run; peak RSS from /usr/bin/time."
echo "Ratios = nftbalance / peer; below 1 is faster. $(date -u +%F), $(nproc) cores, kernel $(uname -r), $(nft --version)."
