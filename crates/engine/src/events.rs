//! Wakes watch when the kernel reports a change: rtnetlink (links, addresses, rules,
//! routes) and nf_tables notifications, each read on its own thread that only raises a
//! flag. Watch reads the state it needs itself; without a listener (the socket cannot be
//! opened) its periodic check still finds every change, only later.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nftbalance_netlink::Socket;
use nftbalance_routing::RouteEvents;

/// Raised by the listeners, taken by watch.
#[derive(Debug, Clone, Default)]
pub(crate) struct Changed {
    flag: Arc<AtomicBool>,
}

impl Changed {
    /// Whether anything changed since the last call.
    pub(crate) fn take(&self) -> bool {
        self.flag.swap(false, Ordering::Relaxed)
    }
}

/// Starts both listeners for the process's network namespace; they run until it exits.
pub(crate) fn listen() -> Changed {
    let changed = Changed::default();
    let flag = changed.flag.clone();
    spawn("rtnetlink", move || {
        let events = RouteEvents::open().map_err(|e| e.to_string())?;
        loop {
            events.wait().map_err(|e| e.to_string())?;
            flag.store(true, Ordering::Relaxed);
        }
    });
    let flag = changed.flag.clone();
    spawn("nftables", move || {
        // Opened on its thread: the socket is not Send.
        let socket = Socket::open_notifications().map_err(|e| e.to_string())?;
        loop {
            socket.wait_notification().map_err(|e| e.to_string())?;
            flag.store(true, Ordering::Relaxed);
        }
    });
    changed
}

/// Runs a listener; if it fails it is restarted after a pause (the periodic check covers
/// the gap), and said once.
fn spawn(what: &'static str, listen: impl Fn() -> Result<(), String> + Send + 'static) {
    thread::spawn(move || {
        let mut said = false;
        loop {
            if let Err(e) = listen() {
                if !said {
                    log::warn!("{what} notifications: {e}; relying on the check every second");
                    said = true;
                }
            }
            thread::sleep(Duration::from_secs(5));
        }
    });
}
