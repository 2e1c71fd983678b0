//! What a VRRP transition asks of conntrackd, after conntrack-tools' primary-backup.sh (the
//! sequence its authors documented for keepalived), and of nftbalance.
//!
//! Our conntrackd.conf disables the external cache (the peer's connections go straight into
//! the kernel table), so two of that script's steps change meaning: `-c` and `-f` are no-ops
//! in that mode (kept, so a configuration with the cache works too), and `-t` would schedule
//! a flush of the kernel table, the very replica a backup exists to hold: it is left out.

/// The state keepalived reports to its notify command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Backup,
    Fault,
}

/// One action of a transition, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `conntrackd -C CONF FLAG`, and what it does.
    Conntrackd {
        flag: &'static str,
        what: &'static str,
    },
    /// Re-apply the spec (table and policy routing, as `nftbalance apply`), so the new
    /// master routes by the marks whatever happened to its routes while it was backup.
    Apply,
}

const fn ct(flag: &'static str, what: &'static str) -> Step {
    Step::Conntrackd { flag, what }
}

/// The steps of a transition to `role`. Master commits first: until the peer's connections
/// are in the kernel table, their packets find no entry. Every step is attempted even when
/// one fails (a failed commit must not keep the routes from being asserted).
pub fn steps(role: Role) -> Vec<Step> {
    match role {
        Role::Master => vec![
            ct(
                "-c",
                "commit the external cache (the peer's connections) to the kernel",
            ),
            ct("-f", "flush the internal and external caches"),
            ct("-R", "resync the internal cache with the kernel table"),
            ct("-B", "send a bulk update to the peer"),
            Step::Apply,
        ],
        Role::Backup => vec![
            ct("-s", "check that conntrackd runs"),
            ct("-n", "request a resync from the peer"),
        ],
        // The peer takes over; this router keeps its replica for when it is back.
        Role::Fault => vec![ct("-s", "check that conntrackd runs")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_commits_before_anything_else_and_applies_last() {
        let s = steps(Role::Master);
        assert!(matches!(s[0], Step::Conntrackd { flag: "-c", .. }));
        assert_eq!(s.last(), Some(&Step::Apply));
        assert!(!steps(Role::Backup).contains(&Step::Apply));
        for role in [Role::Master, Role::Backup, Role::Fault] {
            let flags: Vec<&str> = steps(role)
                .iter()
                .filter_map(|s| match s {
                    Step::Conntrackd { flag, .. } => Some(*flag),
                    Step::Apply => None,
                })
                .collect();
            assert!(!flags.contains(&"-t"), "{role:?}: -t flushes the replica");
        }
    }
}
