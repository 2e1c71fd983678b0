//! A synchronous rtnetlink socket: one request at a time, acknowledged or dumped.

use std::cell::Cell;
use std::fmt;
use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket as NlSocket, SocketAddr};

use crate::error::{refused, Error};

/// `NLM_F_CAPPED` on an error message: the echoed request is its header alone.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS` on an error message: extended-ack attributes follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's text explaining an error.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// How often a dump that the kernel flags as interrupted (`NLM_F_DUMP_INTR`) is retried.
const DUMP_TRIES: usize = 5;

/// An rtnetlink socket of the network namespace of the thread that opened it.
pub struct Socket {
    sock: NlSocket,
    seq: Cell<u32>,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("seq", &self.seq.get())
            .finish()
    }
}

impl Socket {
    /// Opens a socket. It stays bound to the network namespace of the calling thread.
    pub fn open() -> Result<Socket, Error> {
        let mut sock = NlSocket::new(NETLINK_ROUTE).map_err(Error::Socket)?;
        sock.bind_auto().map_err(Error::Socket)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(Error::Socket)?;
        // Extended acks carry the kernel's explanation ("Nexthop has invalid gateway"); capped
        // acks do not echo whole requests. Both are optional: older kernels lack them.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        Ok(Socket {
            sock,
            seq: Cell::new(1),
        })
    }

    fn next_seq(&self) -> u32 {
        let s = self.seq.get().wrapping_add(1).max(1);
        self.seq.set(s);
        s
    }

    fn send(&self, payload: RouteNetlinkMessage, flags: u16, op: &str) -> Result<u32, Error> {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        let sent = self.sock.send(&buf, 0).map_err(|source| Error::Io {
            op: op.to_string(),
            source,
        })?;
        if sent != buf.len() {
            return Err(Error::Io {
                op: op.to_string(),
                source: io::Error::other(format!("sent {sent} of {} bytes", buf.len())),
            });
        }
        Ok(seq)
    }

    /// Receives the messages of one datagram that answer `seq`.
    fn recv(&self, seq: u32, op: &str) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, Error> {
        loop {
            let (buf, _) = self.sock.recv_from_full().map_err(|source| Error::Io {
                op: op.to_string(),
                source,
            })?;
            let mut out = Vec::new();
            let mut off = 0;
            while off + 16 <= buf.len() {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                if len < 16 || off + len > buf.len() {
                    return Err(Error::Decode {
                        op: op.to_string(),
                        detail: format!("netlink message of length {len} at offset {off}"),
                    });
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len])
                    .map_err(|e| Error::Decode {
                        op: op.to_string(),
                        detail: e.to_string(),
                    })?;
                if msg.header.sequence_number == seq {
                    out.push(msg);
                }
                off += (len + 3) & !3;
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Sends a request with `NLM_F_ACK` and waits for its acknowledgement. `flags` are added
    /// to `NLM_F_REQUEST | NLM_F_ACK` (`NLM_F_CREATE`, `NLM_F_REPLACE`, ...).
    pub(crate) fn request(
        &self,
        payload: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<(), Error> {
        let seq = self.send(payload, NLM_F_REQUEST | NLM_F_ACK | flags, op)?;
        loop {
            for msg in self.recv(seq, op)? {
                if let NetlinkPayload::Error(e) = msg.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(code) => Err(refused(
                            op.to_string(),
                            code.get().abs(),
                            ext_ack_message(msg.header.flags, &e.header),
                        )),
                    };
                }
            }
        }
    }

    /// Sends one request and returns its one answer (`RTM_GETROUTE` without a dump).
    pub(crate) fn get(
        &self,
        payload: RouteNetlinkMessage,
        op: &str,
    ) -> Result<RouteNetlinkMessage, Error> {
        let seq = self.send(payload, NLM_F_REQUEST, op)?;
        loop {
            for msg in self.recv(seq, op)? {
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => return Ok(m),
                    NetlinkPayload::Error(e) => {
                        let code = e.code.map_or(0, |c| c.get().abs());
                        return Err(refused(
                            op.to_string(),
                            code,
                            ext_ack_message(msg.header.flags, &e.header),
                        ));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Dumps every object of a kind (`NLM_F_DUMP`), retrying when the kernel flags the dump as
    /// interrupted by a concurrent change.
    pub(crate) fn dump(
        &self,
        payload: RouteNetlinkMessage,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        for _ in 0..DUMP_TRIES {
            let seq = self.send(payload.clone(), NLM_F_REQUEST | NLM_F_DUMP, op)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            'dump: loop {
                for msg in self.recv(seq, op)? {
                    interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                    match msg.payload {
                        NetlinkPayload::InnerMessage(m) => out.push(m),
                        NetlinkPayload::Done(_) => break 'dump,
                        NetlinkPayload::Error(e) => match e.code {
                            None => break 'dump,
                            Some(code) => {
                                return Err(refused(
                                    op.to_string(),
                                    code.get().abs(),
                                    ext_ack_message(msg.header.flags, &e.header),
                                ))
                            }
                        },
                        _ => {}
                    }
                }
            }
            if !interrupted {
                return Ok(out);
            }
            log::debug!("{op}: dump interrupted by a concurrent change, retrying");
        }
        Err(Error::Io {
            op: op.to_string(),
            source: io::Error::other(format!(
                "the dump was interrupted by concurrent changes {DUMP_TRIES} times"
            )),
        })
    }
}

/// The `NLMSGERR_ATTR_MSG` text of an error message's payload (after its errno).
fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < 16 {
        return None;
    }
    let inner = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        u32::from_ne_bytes(payload[0..4].try_into().ok()?) as usize
    };
    let mut off = (inner + 3) & !3;
    while off + 4 <= payload.len() {
        let len = u16::from_ne_bytes(payload[off..off + 2].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(payload[off + 2..off + 4].try_into().ok()?) & 0x3fff;
        if len < 4 || off + len > payload.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &payload[off + 4..off + len];
            let text = text.split(|b| *b == 0).next().unwrap_or(text);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        off += (len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_text_is_found_after_a_capped_header() {
        let mut payload = vec![0u8; 16];
        let text = b"Nexthop has invalid gateway\0";
        let len = (4 + text.len()) as u16;
        payload.extend_from_slice(&len.to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload).as_deref(),
            Some("Nexthop has invalid gateway")
        );
        assert_eq!(ext_ack_message(NLM_F_CAPPED, &payload), None);
    }
}
