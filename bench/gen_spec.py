#!/usr/bin/env python3
"""Large variants of a spec.

gen_spec.py N SPEC                  SPEC with N exclusion prefixes: disjoint, non-adjacent /30s
                                    (so nothing merges).
gen_spec.py --selectors N SPEC      SPEC with N forward selectors, each matching one source
                                    /32 (one rule each).
"""
import json
import sys

args = sys.argv[1:]
selectors = args[0] == "--selectors"
if selectors:
    args = args[1:]
n = int(args[0])
with open(args[1]) as f:
    spec = json.load(f)
if selectors:
    # 10.0.0.1, 10.0.0.2, ...: distinct sources, never a network or broadcast address.
    spec["balance"]["forward"] = [
        {"iif": "eth0", "saddr": [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/32"]}
        for i in range(1, n + 1)
    ]
else:
    prefixes = []
    for i in range(n):
        a = i * 8  # every other /30 of 10.0.0.0/8: never adjacent
        prefixes.append(f"10.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/30")
    spec["balance"]["exclude"] = prefixes + ["192.168.0.0/16"]
json.dump(spec, sys.stdout, indent=1)
