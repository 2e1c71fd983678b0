//! The rulesets two peer balancers produce for the data-path bench's job (LAN `eth0`, UDP
//! balanced over `ppp0`/`ppp1` with nftbalance's marks 1 and 2, the bench's exclusion
//! prefixes kept on the main table), written from their documented structure as nft text.
//! Both use nftbalance's marks so the same policy routing carries their flows.

/// The bench spec's exclusion prefixes (`bench_spec`'s list), bare.
fn exclusions(n: u32) -> String {
    (0..n)
        .map(|i| crate::slash30(i, 0).trim_matches('"').to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An interval set of the exclusions (both peers keep prefixes in one), or none when empty.
fn interval_set(name: &str, n: u32) -> String {
    if n == 0 {
        return format!(" set {name} {{ type ipv4_addr; flags interval; }}\n");
    }
    format!(
        " set {name} {{ type ipv4_addr; flags interval; elements = {{ {} }} }}\n",
        exclusions(n)
    )
}

/// VyOS 1.4+ `load-balancing wan` (data/templates/load-balancing/nftables-wan.j2): ingress
/// marks on new connections of each WAN interface, then per rule an exclusion `return` on
/// the destination group, the `numgen random` spread into per-interface chains that mark
/// packet and connection, and the restore of the connection's mark for established packets.
pub fn vyos(n: u32) -> String {
    let mut t = String::from("table ip vyos_wanloadbalance {\n");
    t += &interval_set("exclude_group", n);
    t += " chain wlb_mangle_prerouting {\n  type filter hook prerouting priority mangle; policy accept;\n";
    t += "  iifname \"ppp0\" ct state new ct mark set 0x1\n";
    t += "  iifname \"ppp1\" ct state new ct mark set 0x2\n";
    t += "  iifname \"eth0\" ip daddr @exclude_group return\n";
    t += "  iifname \"eth0\" meta l4proto udp ct state new numgen random mod 2 vmap { 0 : jump wlb_mangle_isp_ppp0, 1 : jump wlb_mangle_isp_ppp1 }\n";
    t += "  iifname \"eth0\" meta l4proto udp ct state established,related meta mark set ct mark\n }\n";
    for (dev, mark) in [("ppp0", 1), ("ppp1", 2)] {
        t += &format!(
            " chain wlb_mangle_isp_{dev} {{\n  meta mark set {mark:#x} ct mark set {mark:#x} counter accept\n }}\n"
        );
    }
    t + "}\n"
}

/// mwan3 (OpenWrt, net/mwan3/files/lib/mwan3/mwan3.sh) as iptables-nft loads it, in
/// `iptables-restore-translate`'s rendering (every iptables rule counts): `mwan3_hook`
/// restores the masked mark while the packet's is 0, marks by ingress interface
/// (`ifaces_in`), gives destinations in the `connected` ipset (here an interval set with
/// the exclusions) the default mark, sends the rule's traffic to the policy chain's random
/// cascade (`-m statistic --mode random`), and saves the mark. Mask 0xff (mwan3's default
/// is 0x3f00; ids 1 and 2 map to nftbalance's marks), default mark 0xff.
pub fn mwan3(n: u32) -> String {
    let z = "meta mark and 0xff == 0x0";
    let mut t = String::from("table ip mangle {\n");
    t += &interval_set("mwan3_connected_ipv4", n);
    t += " chain PREROUTING {\n  type filter hook prerouting priority mangle; policy accept;\n  counter jump mwan3_hook\n }\n";
    t += &format!(
        " chain mwan3_hook {{\n  {z} counter meta mark set ct mark and 0xff\n  \
         {z} counter jump mwan3_ifaces_in\n  {z} counter jump mwan3_connected_ipv4\n  \
         {z} counter jump mwan3_rules\n  counter ct mark set meta mark and 0xff\n  \
         meta mark and 0xff != 0xff counter jump mwan3_connected_ipv4\n }}\n"
    );
    t += &format!(
        " chain mwan3_ifaces_in {{\n  {z} counter jump mwan3_iface_in_wan1\n  {z} counter jump mwan3_iface_in_wan2\n }}\n"
    );
    for (k, dev) in [(1, "ppp0"), (2, "ppp1")] {
        t += &format!(
            " chain mwan3_iface_in_wan{k} {{\n  iifname \"{dev}\" ip saddr @mwan3_connected_ipv4 {z} counter meta mark set meta mark and 0xffffff00 xor 0xff comment \"default\"\n  \
             iifname \"{dev}\" {z} counter meta mark set meta mark and 0xffffff00 xor {k:#x} comment \"wan{k}\"\n }}\n"
        );
    }
    t += " chain mwan3_connected_ipv4 {\n  ip daddr @mwan3_connected_ipv4 counter meta mark set meta mark and 0xffffff00 xor 0xff\n }\n";
    t += &format!(
        " chain mwan3_rules {{\n  iifname \"eth0\" meta l4proto udp {z} counter jump mwan3_policy_balanced comment \"balanced_udp\"\n }}\n"
    );
    t += &format!(
        " chain mwan3_policy_balanced {{\n  {z} numgen random mod 1000 < 500 counter meta mark set meta mark and 0xffffff00 xor 0x2 comment \"wan2 1 2\"\n  \
         {z} counter meta mark set meta mark and 0xffffff00 xor 0x1 comment \"wan1 1 1\"\n }}\n"
    );
    t + "}\n"
}

#[cfg(test)]
mod tests {
    /// Both rulesets load (checked by the real nft, without touching any namespace).
    #[test]
    fn peers_parse_with_nft() {
        for text in [super::vyos(3), super::mwan3(3)] {
            let path = std::env::temp_dir().join(format!("nbpeers-{}.nft", std::process::id()));
            std::fs::write(&path, &text).unwrap();
            let out = std::process::Command::new("nft")
                .args(["-c", "-f"])
                .arg(&path)
                .output()
                .expect("nft");
            let _ = std::fs::remove_file(&path);
            assert!(
                out.status.success(),
                "{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
