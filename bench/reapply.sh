#!/usr/bin/env bash
# Re-apply and first-apply time at 100k exclusions (issue 19), each row side by side in one
# run: `nftbalance apply` (incremental where it can prove the live table), `nft -f` of the
# same dump, and the full replace every apply did before (NFTBALANCE_FULL_REPLACE=1).
#   re-apply, unchanged   the same spec again (a reconnect hook)
#   re-apply, 1% changed  1,000 of the 100k /30s moved (a config push)
#   first apply           onto an empty namespace: the /30 list, and a 100k mixed-length
#                         (/8 to /24) list read from a file ("@list"), as a country list
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/target/release/nftbalance
RUNS=${RUNS:-7}
N=${N:-100000}
work=$(mktemp -d)
ns="nbbench-re-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ip netns add "$ns"
in_ns() { echo "ip netns exec $ns $*"; }

python3 bench/gen_spec.py "$N" fixtures/specs/seed.json > "$work/a.json"
python3 bench/gen_spec.py --changed "$N" fixtures/specs/seed.json > "$work/b.json"
python3 bench/gen_spec.py --mixed "$N" fixtures/specs/seed.json "$work/mixed.txt" > "$work/mixed.json"
for s in a b mixed; do "$BIN" dump "$work/$s.json" > "$work/$s.nft"; done
flush="$(in_ns "$BIN" flush "$work/a.json") >/dev/null; $(in_ns "$BIN" flush "$work/mixed.json") >/dev/null"

# Each command gets its own --prepare (in order): the state the row starts from.
row() { # name, then triples of (label, prepare, command)
  local name=$1; shift
  local args=()
  while [ $# -gt 0 ]; do args+=(--prepare "$2" -n "$1" "$3"); shift 3; done
  hyperfine --style none --runs "$RUNS" --warmup 1 --export-json "$work/h.json" "${args[@]}" \
    > /dev/null 2>> "$work/warnings" || { cat "$work/warnings" >&2; exit 1; }
  python3 - "$work/h.json" "$name" <<'PY'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
wall = lambda c: res[c]["median"]
cpu = lambda c: res[c]["user"] + res[c]["system"]  # hyperfine: means of the runs
def cell(c):
    return [f"{wall(c)*1000:.0f} ms ({cpu(c)*1000:.0f} ms)", f"{wall('apply')/wall(c):.3f}x ({cpu('apply')/cpu(c):.3f}x)"]
cells = [sys.argv[2], f"{wall('apply')*1000:.0f} ms ({cpu('apply')*1000:.0f} ms)"]
cells += cell("nft")
cells += cell("full") if "full" in res else ["-", "-"]
print("| " + " | ".join(cells) + " |")
PY
}

apply_a="$(in_ns "$BIN" apply "$work/a.json") >/dev/null"
echo "| $N exclusions: wall median (CPU user+system) | nftbalance apply | nft -f (same dump) | ratio | full replace | ratio |"
echo "|---|---:|---:|---:|---:|---:|"
row "re-apply, unchanged" \
  apply "$apply_a" "$(in_ns "$BIN" apply "$work/a.json")" \
  nft "$apply_a" "$(in_ns nft -f "$work/a.nft")" \
  full "$apply_a" "env NFTBALANCE_FULL_REPLACE=1 $(in_ns "$BIN" apply "$work/a.json")"
row "re-apply, 1% changed" \
  apply "$apply_a" "$(in_ns "$BIN" apply "$work/b.json")" \
  nft "$apply_a" "$(in_ns nft -f "$work/b.nft")" \
  full "$apply_a" "env NFTBALANCE_FULL_REPLACE=1 $(in_ns "$BIN" apply "$work/b.json")"
row "first apply, /30 list" \
  apply "$flush" "$(in_ns "$BIN" apply "$work/a.json")" \
  nft "$flush" "$(in_ns nft -f "$work/a.nft")"
row "first apply, mixed /8-/24 list from a file" \
  apply "$flush" "$(in_ns "$BIN" apply "$work/mixed.json")" \
  nft "$flush" "$(in_ns nft -f "$work/mixed.nft")"
echo
if grep -q outliers "$work/warnings" 2>/dev/null; then
  echo "hyperfine saw statistical outliers in $(grep -c outliers "$work/warnings") of the 4 rows (a noisy machine)."
fi
echo "Wall: medians of $RUNS runs each (hyperfine), all columns of a row in the same run; CPU: mean"
echo "user+system time of the runs (what a loaded machine does not inflate)."
echo "Ratios = nftbalance apply / peer; below 1 is faster. $(date -u +%F), $(nproc) cores, kernel $(uname -r), $(nft --version)."
