#!/usr/bin/env bash
# Translation time: `nftbalance translate --to nft` vs `iptables-restore-translate` of the same
# iptables-save file (100k filter rules of several shapes plus the seed's balancer), same run.
# Both only read and print text: no namespace, nothing loaded.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/target/release/nftbalance
RUNS=${RUNS:-7}
N=${N:-100000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 bench/gen_rules.py "$N" fixtures/legacy/seed.save > "$work/rules.save"
rules=$(grep -c '^-A\|^\[' "$work/rules.save")
hyperfine --style none --runs "$RUNS" --warmup 1 --export-json "$work/h.json" \
  -n translate "$BIN translate --to nft $work/rules.save" \
  -n peer "iptables-restore-translate -f $work/rules.save" > /dev/null
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
rss_t=$(rss "$BIN" translate --to nft "$work/rules.save")
rss_p=$(rss iptables-restore-translate -f "$work/rules.save")
python3 - "$work/h.json" "$rules" "$rss_t" "$rss_p" <<'PY'
import json, sys
runs = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
n, rt, rp = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t, p = runs["translate"], runs["peer"]
print("| rules | nftbalance translate --to nft | iptables-restore-translate | ratio | peak RSS translate | peak RSS peer |")
print("|---:|---:|---:|---:|---:|---:|")
print(f"| {n:,} | {t*1000:.0f} ms | {p*1000:.0f} ms | {t/p:.2f}x | {rt/1024:.0f} MB | {rp/1024:.0f} MB |")
PY
echo
echo "Medians of $RUNS runs each (hyperfine), same run; ratio = nftbalance / iptables-restore-translate."
echo "$(date -u +%F), $(nproc) cores, $(iptables-restore-translate --version 2>&1 | head -1)."
