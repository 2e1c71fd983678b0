//! The crate's one error type. Every message names the rule or route concerned.

use std::io;

use crate::plan::IpFamily;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The rtnetlink socket could not be opened.
    #[error("cannot open an rtnetlink socket: {0}")]
    Socket(#[source] io::Error),
    /// EPERM: the caller lacks CAP_NET_ADMIN.
    #[error(
        "{op}: permission denied: changing ip rules and routes needs CAP_NET_ADMIN (run as root)"
    )]
    Permission { op: String },
    /// The kernel refused a request.
    #[error("{op}: the kernel refused it: {message}")]
    Refused {
        op: String,
        /// The positive errno.
        errno: i32,
        /// strerror, the kernel's extended ack text when it sent one, and a hint.
        message: String,
    },
    /// Sending or receiving failed.
    #[error("{op}: rtnetlink I/O failed: {source}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
    /// The kernel's answer could not be decoded.
    #[error("{op}: cannot decode the kernel's answer: {detail}")]
    Decode { op: String, detail: String },
    /// A gateway's table holds a default route that nftbalance does not own: replacing it would
    /// destroy someone else's route, and flush could not bring it back.
    #[error(
        "gateway {gateway}: table {table} already has an {family} default route that nftbalance \
         does not own ({route}); delete it or give the gateway another route_table"
    )]
    ForeignDefault {
        gateway: String,
        family: IpFamily,
        table: u32,
        route: String,
    },
    /// After applying, the kernel does not hold what was applied.
    #[error(
        "after apply the kernel's rules and routes differ from the plan ({detail}); is another \
         program changing them at the same time?"
    )]
    NotConverged { detail: String },
    /// A step failed and the previous rules and routes were put back.
    #[error(
        "{cause}; the previous rules and routes were restored{}",
        skipped_note(skipped)
    )]
    RolledBack {
        cause: Box<Error>,
        /// Routes of links that went away meanwhile, which could not come back.
        skipped: Vec<String>,
    },
    /// A step failed and putting the previous rules and routes back failed too.
    #[error("{cause}; restoring the previous rules and routes failed too: {rollback}")]
    RollbackFailed {
        cause: Box<Error>,
        rollback: Box<Error>,
    },
}

impl Error {
    /// The errno the kernel answered with, if this is a refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Refused { errno, .. } => Some(*errno),
            Error::Permission { .. } => Some(libc_eperm()),
            Error::RolledBack { cause, .. } | Error::RollbackFailed { cause, .. } => cause.errno(),
            _ => None,
        }
    }
}

fn skipped_note(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (but: {})", skipped.join("; "))
    }
}

const fn libc_eperm() -> i32 {
    1
}

/// Builds the error for a negative-acknowledged request.
pub(crate) fn refused(op: String, errno: i32, ext_ack: Option<String>) -> Error {
    if errno == libc_eperm() {
        return Error::Permission { op };
    }
    let mut message = io::Error::from_raw_os_error(errno).to_string();
    if let Some(text) = ext_ack.filter(|t| !t.is_empty()) {
        message.push_str(": ");
        message.push_str(&text);
    }
    let hint = match errno {
        19 => Some("the interface does not exist (any more)"),
        17 => Some("an identical entry exists already"),
        101 | 113 => Some("the next hop is not reachable on that interface"),
        100 => Some("the interface is down"),
        _ => None,
    };
    if let Some(h) = hint {
        message.push_str(" (");
        message.push_str(h);
        message.push(')');
    }
    Error::Refused { op, errno, message }
}
