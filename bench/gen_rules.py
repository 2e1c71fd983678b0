#!/usr/bin/env python3
"""An iptables-save file with N filter rules (varied shapes) plus the seed's balancer."""
import sys

n = int(sys.argv[1])
seed = open(sys.argv[2]).read() if len(sys.argv) > 2 else ""
out = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]", ":HOSTS - [0:0]"]
shapes = [
    "-A HOSTS -s 10.{a}.{b}.{c}/32 -p tcp -m tcp --dport {p} -m conntrack --ctstate NEW -j ACCEPT",
    "-A HOSTS -d 172.16.{b}.{c}/32 -i eth0 -p udp -m multiport --dports 53,{p},1000:2000 -j ACCEPT",
    "-A HOSTS -s 10.{a}.{b}.0/24 -m mark --mark 0x{c:x}/0xff -m comment --comment \"host {a} {b}\" -j RETURN",
    "-A HOSTS ! -s 192.168.{b}.{c}/32 -o ppp0 -m state --state RELATED,ESTABLISHED -j ACCEPT",
    "-A HOSTS -s 10.{a}.{b}.{c}/32 -j LOG --log-prefix \"h{a}-{b}: \" --log-level 6",
]
out.append("-A FORWARD -j HOSTS")
for i in range(n - 1):
    a, b, c = (i >> 16) & 255, (i >> 8) & 255, i & 255
    out.append(shapes[i % len(shapes)].format(a=a, b=b, c=c, p=1024 + i % 60000))
out.append("COMMIT")
print("\n".join(out))
if seed:
    print(seed, end="")
