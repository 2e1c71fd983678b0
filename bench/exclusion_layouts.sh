#!/usr/bin/env bash
# How the exclusion sets' layout costs on the data path (root; needs perf, Debian: linux-perf):
# the bench spec with 100k exclusion prefixes of one length (one hash set), of four lengths
# (four hash sets: what nftbalance dumps), and the same four-length prefixes in one interval
# set (the dump rewritten), each profiled during one flood by `nbbench compare --perf`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/target/release/nftbalance
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def spec(prefixes):
    return {"gateways": [
        {"name": "isp1", "interface": "ppp0", "mark": 1, "address": "100.0.1.1", "via": "100.0.1.254", "route_table": 101},
        {"name": "isp2", "interface": "ppp1", "mark": 2, "address": "100.0.2.1", "via": "100.0.2.254", "route_table": 102}],
        "balance": {"forward": [{"iif": "eth0", "protocol": "udp"}], "exclude": prefixes}}
def addr(a):
    return f"10.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"
# Disjoint, never adjacent: one prefix per 64 addresses (so nothing merges).
one = [f"{addr(i * 64)}/30" for i in range(100000)]
four = [f"{addr(i * 64)}/{27 + i % 4}" for i in range(100000)]
json.dump(spec(one), open(f"{work}/one-length.json", "w"))
json.dump(spec(four), open(f"{work}/four-lengths.json", "w"))
PY
"$BIN" dump "$work/one-length.json" > "$work/one-length-hash.nft"
"$BIN" dump "$work/four-lengths.json" > "$work/four-lengths-hash.nft"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
text = open(f"{work}/four-lengths-hash.nft").read()
prefixes = json.load(open(f"{work}/four-lengths.json"))["balance"]["exclude"]
lines, skip = [], False
for line in text.split("\n"):
    if line.startswith("\tset exclude_v4_"):
        skip = True
    if not skip and "@exclude_v4_" not in line:
        lines.append(line)
    if skip and line == "\t}":
        skip = False
out = "\n".join(lines)
interval = ("\tset exclude_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { "
            + ", ".join(prefixes) + " }\n\t}\n")
out = out.replace("\tmap ingress_mark", interval + "\n\tmap ingress_mark", 1)
out = out.replace("\tchain balance {\n", "\tchain balance {\n\t\tip daddr @exclude_v4 return\n", 1)
open(f"{work}/four-lengths-interval.nft", "w").write(out)
PY
nft -c -f "$work/four-lengths-interval.nft"
cd "$work"
"$OLDPWD/target/release/nbbench" compare --perf one-length-hash.nft four-lengths-hash.nft four-lengths-interval.nft
