//! Change notifications of the kernel's routing: links, addresses, rules and routes of both
//! families (rtnetlink multicast groups), for a watcher that must notice at once when an
//! uplink comes or goes or someone removes an owned rule or route. Says only "something
//! changed"; the watcher reads the state it needs itself.

use netlink_sys::{protocols::NETLINK_ROUTE, Socket as NlSocket};

use crate::error::Error;

/// rtnetlink multicast groups (linux/rtnetlink.h `enum rtnetlink_groups`).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV4_RULE: u32 = 8;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const RTNLGRP_IPV6_RULE: u32 = 19;
const ENOBUFS: i32 = 105;
/// `MSG_DONTWAIT` (the same on every Linux architecture).
const MSG_DONTWAIT: i32 = 0x40;

/// A socket subscribed to the routing groups of its network namespace.
pub struct RouteEvents {
    sock: NlSocket,
}

impl std::fmt::Debug for RouteEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteEvents").finish_non_exhaustive()
    }
}

impl RouteEvents {
    /// Subscribes; the socket stays in the network namespace of the calling thread.
    pub fn open() -> Result<RouteEvents, Error> {
        let mut sock = NlSocket::new(NETLINK_ROUTE).map_err(Error::Socket)?;
        sock.bind_auto().map_err(Error::Socket)?;
        for group in [
            RTNLGRP_LINK,
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV4_RULE,
            RTNLGRP_IPV6_IFADDR,
            RTNLGRP_IPV6_ROUTE,
            RTNLGRP_IPV6_RULE,
        ] {
            sock.add_membership(group).map_err(Error::Socket)?;
        }
        // A flap storm queues many messages; losing some (ENOBUFS) still means "changed".
        let _ = sock.set_rx_buf_sz(1 << 20);
        Ok(RouteEvents { sock })
    }

    /// Blocks until notifications arrive, discards them and returns how many datagrams.
    /// Lost notifications (`ENOBUFS`) count as one.
    pub fn wait(&self) -> Result<usize, Error> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = match self.sock.recv(&mut &mut buf[..], 0) {
            Ok(_) => 1,
            Err(e) if e.raw_os_error() == Some(ENOBUFS) => 1,
            Err(e) => return Err(Error::Socket(e)),
        };
        while let Ok(got) = self.sock.recv(&mut &mut buf[..], MSG_DONTWAIT) {
            if got == 0 {
                break;
            }
            n += 1;
        }
        Ok(n)
    }
}
