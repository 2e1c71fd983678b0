#!/usr/bin/env python3
"""The seed spec with N exclusion prefixes: disjoint, non-adjacent /30s (so nothing merges)."""
import json
import sys

n = int(sys.argv[1])
with open(sys.argv[2]) as f:
    spec = json.load(f)
prefixes = []
for i in range(n):
    a = i * 8  # every other /30 of 10.0.0.0/8: never adjacent
    prefixes.append(f"10.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/30")
spec["balance"]["exclude"] = prefixes + ["192.168.0.0/16"]
json.dump(spec, sys.stdout, indent=1)
