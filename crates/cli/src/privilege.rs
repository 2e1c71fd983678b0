//! Refuse early, before anything is touched, when the process cannot change network state.

use anyhow::bail;

/// CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// Fails with a clear message when the effective capabilities lack CAP_NET_ADMIN.
/// Where /proc cannot say, the kernel's own answer (EPERM) is explained later instead.
pub fn require_net_admin(command: &str) -> anyhow::Result<()> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Ok(());
    };
    if let Some(caps) = effective_caps(&status) {
        if caps & (1u64 << CAP_NET_ADMIN) == 0 {
            bail!(
                "`nftbalance {command}` needs CAP_NET_ADMIN to change nftables and routing: \
                 run it as root; nothing was changed"
            );
        }
    }
    Ok(())
}

fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("Name: x\n"), None);
    }
}
