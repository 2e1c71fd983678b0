# The seed's ip lines (../shared/seed/multi-gateway-iptables.txt) with its variables
# substituted: given together with seed.save (iptables-legacy-save has no routes), they
# supply route_table and via.
echo -e "101 connection1\n102 connection2" | sudo tee -a /etc/iproute2/rt_tables
ip route add table connection1 default via 100.0.1.254
ip route add table connection2 default via 100.0.2.254
ip rule add from 100.0.1.1 lookup connection1
ip rule add from 100.0.2.1 lookup connection2
ip rule add fwmark 1 lookup connection1
ip rule add fwmark 2 lookup connection2
