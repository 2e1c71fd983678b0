//! The netfilter netlink socket: generation id query, sending batches, draining error ACKs.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::consts::*;
use crate::ffi::sock;

/// A `NETLINK_NETFILTER` socket (via libmnl), bound to the network namespace of the thread that
/// opened it. Not `Send`: open it on the thread (namespace) where it is used.
pub struct Socket {
    inner: mnl::Socket,
    seq: Cell<u32>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.fd())
            .field("portid", &self.portid())
            .finish()
    }
}

/// Receive buffer for one datagram (one error ACK or reply).
const RECV_BUF: usize = 64 * 1024;

/// Errors are collected per message; a capped error ACK is ~100 bytes plus extended-ACK TLVs,
/// but the socket accounts the skb's truesize: measured on 6.18, 5000 failing rules need a
/// setting of ~900 bytes per message (the kernel doubles it). Budget with a 2x margin.
const RCVBUF_PER_MSG: usize = 2048;
const RCVBUF_MIN: usize = 256 * 1024;

impl Socket {
    /// Opens and binds a netfilter netlink socket, with `NETLINK_EXT_ACK` (kernel error strings
    /// and attribute offsets) and `NETLINK_CAP_ACK` (error ACKs do not echo the whole failing
    /// message, which keeps ACKs for huge element messages small).
    pub fn open() -> io::Result<Socket> {
        let inner = mnl::Socket::new(mnl::Bus::Netfilter)?;
        let fd = inner.as_raw_fd();
        sock::set_int_opt(fd, libc::SOL_NETLINK, NETLINK_EXT_ACK, 1)?;
        sock::set_int_opt(fd, libc::SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Socket {
            inner,
            seq: Cell::new(start),
        })
    }

    /// Opens a socket that receives the nf_tables notifications of its network namespace
    /// (`NFNLGRP_NFTABLES`: every committed change of any table, and the new generation),
    /// for a watcher that repairs its table when someone else changes it. Read it with
    /// [`Socket::wait_notification`]; it sends nothing.
    pub fn open_notifications() -> io::Result<Socket> {
        let socket = Socket::open()?;
        sock::set_int_opt(
            socket.fd(),
            libc::SOL_NETLINK,
            NETLINK_ADD_MEMBERSHIP,
            NFNLGRP_NFTABLES,
        )?;
        // A commit of a large table is many messages; a full queue (ENOBUFS) only means
        // "something changed", which the caller treats as any notification.
        let _ = sock::set_int_opt(socket.fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 1 << 20);
        Ok(socket)
    }

    /// Blocks until notifications arrive and discards them; returns how many datagrams.
    /// `ENOBUFS` (notifications were lost because the queue was full) counts as one.
    pub fn wait_notification(&self) -> io::Result<usize> {
        let mut buf = vec![0u8; RECV_BUF];
        let mut n = match sock::recv_blocking(self.fd(), &mut buf) {
            Ok(_) => 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => 1,
            Err(e) => return Err(e),
        };
        while let Ok(Some(_)) = sock::recv_nonblocking(self.fd(), &mut buf) {
            n += 1;
        }
        Ok(n)
    }

    /// The netlink port id the kernel assigned.
    pub fn portid(&self) -> u32 {
        self.inner.portid()
    }

    /// Reserves `n` consecutive sequence numbers and returns the first.
    pub(crate) fn next_seq(&self, n: u32) -> u32 {
        let s = self.seq.get();
        self.seq.set(s.wrapping_add(n.max(1)));
        s
    }

    fn fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }

    /// The cookie of the socket's network namespace (`SO_NETNS_COOKIE`, Linux 5.14): unique
    /// until reboot, unlike the namespace's inode number, which a new namespace may reuse.
    pub fn netns_cookie(&self) -> io::Result<u64> {
        /// `SO_NETNS_COOKIE` from asm-generic/socket.h (not in every libc crate version).
        const SO_NETNS_COOKIE: libc::c_int = 71;
        sock::get_u64_opt(self.fd(), libc::SOL_SOCKET, SO_NETNS_COOKIE)
    }

    /// Current ruleset generation id (`NFT_MSG_GETGEN`). Pass it to
    /// [`crate::Batch::send`] to make the transaction fail with `ERESTART` if anything else
    /// commits in between.
    pub fn generation(&self) -> io::Result<u32> {
        let seq = self.next_seq(1);
        let mut msg = Vec::with_capacity(20);
        msg.extend_from_slice(&20u32.to_ne_bytes());
        msg.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[0, NFNETLINK_V0, 0, 0]);
        self.discard_pending()?;
        self.send(&msg)?;
        let mut buf = vec![0u8; RECV_BUF];
        let mut genid = None;
        loop {
            let n = sock::recv_blocking(self.fd(), &mut buf)?;
            for m in parse_messages(&buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                if m.msg_type == NLMSG_ERROR {
                    let e = parse_error(&m);
                    if e.errno != 0 {
                        return Err(io::Error::from_raw_os_error(e.errno));
                    }
                    // the ACK comes after the reply
                    return genid.ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "GETGEN: no NEWGEN reply")
                    });
                }
                if m.msg_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                    genid = parse_attrs(m.payload.get(4..).unwrap_or(&[]))
                        .into_iter()
                        .find(|(t, v)| *t == NFTA_GEN_ID && v.len() == 4)
                        .map(|(_, v)| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                }
            }
        }
    }

    /// A dump request (`NLM_F_DUMP`) of nf_tables message type `msg_type` for `family`, with
    /// filter attributes; returns each reply's attributes (after the nfgenmsg header).
    pub fn dump(
        &self,
        msg_type: u16,
        family: u8,
        attrs: &[(u16, &[u8])],
    ) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.dump_each(
            (NFNL_SUBSYS_NFTABLES << 8) | msg_type,
            family,
            attrs,
            |payload| {
                out.push(payload.get(4..).unwrap_or(&[]).to_vec());
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// A dump request (`NLM_F_DUMP`) of the full nfnetlink message type `nl_type`
    /// (`subsystem << 8 | message`) for `family`, with attributes; calls `each` with every
    /// reply's payload (the 4-byte nfgenmsg header, then the attributes) as it arrives, so
    /// that large dumps (conntrack tables) are not buffered. An error from `each` stops
    /// reading; the rest of the dump is discarded before the next request.
    pub fn dump_each(
        &self,
        nl_type: u16,
        family: u8,
        attrs: &[(u16, &[u8])],
        mut each: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let seq = self.next_seq(1);
        let msg = encode_request(nl_type, NLM_F_REQUEST | NLM_F_DUMP, seq, family, attrs);
        self.discard_pending()?;
        self.send(&msg)?;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let n = sock::recv_blocking(self.fd(), &mut buf)?;
            let mut done = false;
            let mut off = 0usize;
            // parse_messages stops at NLMSG_DONE; detect it by walking headers ourselves.
            while let Some(len) = u32_at(&buf[..n], off).map(|l| l as usize) {
                if len < NLMSG_HDRLEN || off + len > n {
                    break;
                }
                let t = u16_at(&buf, off + 4).unwrap_or(0);
                let s = u32_at(&buf, off + 8).unwrap_or(0);
                if s == seq {
                    if t == NLMSG_DONE {
                        done = true;
                    } else if t == NLMSG_ERROR {
                        let m = RawMsg {
                            msg_type: t,
                            flags: 0,
                            seq: s,
                            payload: &buf[off + NLMSG_HDRLEN..off + len],
                        };
                        let e = parse_error(&m);
                        if e.errno != 0 {
                            return Err(io::Error::from_raw_os_error(e.errno));
                        }
                        done = true;
                    } else {
                        each(&buf[off + NLMSG_HDRLEN..off + len])?;
                    }
                }
                off += (len + 3) & !3;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Sends `msgs` (complete request messages, each with `NLM_F_ACK` and a distinct sequence
    /// number in `first_seq..first_seq + msgs.len()`) in one `sendmsg()` and waits for every
    /// ACK; returns the errno of each message in order (0 = success).
    pub(crate) fn send_acked(
        &self,
        msgs: &[u8],
        first_seq: u32,
        count: u32,
    ) -> io::Result<Vec<i32>> {
        self.discard_pending()?;
        self.send(msgs)?;
        let mut errnos = vec![None; count as usize];
        let mut missing = count as usize;
        let mut buf = vec![0u8; RECV_BUF];
        while missing > 0 {
            let n = sock::recv_blocking(self.fd(), &mut buf)?;
            for m in parse_messages(&buf[..n]) {
                if m.msg_type != NLMSG_ERROR {
                    continue;
                }
                let e = parse_error(&m);
                let i = e.seq.wrapping_sub(first_seq) as usize;
                if let Some(slot @ None) = errnos.get_mut(i) {
                    *slot = Some(e.errno);
                    missing -= 1;
                }
            }
        }
        Ok(errnos.into_iter().map(|e| e.unwrap_or(0)).collect())
    }

    /// Grows the socket buffers so that a `len`-byte batch can be sent in one `sendmsg()` and an
    /// error for each of `msgs` messages can be queued without loss (what nft does too).
    pub(crate) fn prepare_for_batch(&self, len: usize, msgs: usize) -> io::Result<()> {
        let fd = self.fd();
        // The kernel doubles the value and rejects sends larger than sk_sndbuf - 32.
        let want_snd = len + 4096;
        let have_snd = sock::get_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)? as usize;
        if have_snd < want_snd {
            let v = libc::c_int::try_from(want_snd / 2 + 1).map_err(io::Error::other)?;
            if sock::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v).is_err() {
                sock::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, v)?;
            }
        }
        let want_rcv = (msgs * RCVBUF_PER_MSG).max(RCVBUF_MIN);
        let have_rcv = sock::get_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)? as usize;
        if have_rcv < want_rcv {
            let v = libc::c_int::try_from(want_rcv / 2 + 1).map_err(io::Error::other)?;
            if sock::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v).is_err() {
                sock::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, v)?;
            }
        }
        Ok(())
    }

    /// Sends one buffer (a whole batch) with a single `sendto()`.
    pub(crate) fn send(&self, buf: &[u8]) -> io::Result<()> {
        let n = self.inner.send(buf)?;
        if n != buf.len() {
            return Err(io::Error::other(format!(
                "netlink send was truncated: {n} of {} bytes",
                buf.len()
            )));
        }
        Ok(())
    }

    /// Drops anything still queued (stale replies).
    pub(crate) fn discard_pending(&self) -> io::Result<()> {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            match sock::recv_nonblocking(self.fd(), &mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                // an overrun from an earlier exchange: already reported there
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads every queued message without blocking and returns the non-zero error ACKs, and
    /// whether the receive buffer overran (some replies were dropped by the kernel).
    pub(crate) fn collect_errors(&self) -> io::Result<(Vec<AckError>, bool)> {
        let mut buf = vec![0u8; RECV_BUF];
        let mut out = Vec::new();
        let mut overrun = false;
        loop {
            let n = match sock::recv_nonblocking(self.fd(), &mut buf) {
                Ok(Some(n)) => n,
                Ok(None) => return Ok((out, overrun)),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    overrun = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for m in parse_messages(&buf[..n]) {
                if m.msg_type == NLMSG_ERROR {
                    let e = parse_error(&m);
                    if e.errno != 0 {
                        out.push(e);
                    }
                }
            }
        }
    }
}

/// A parsed netlink message header + payload.
#[derive(Debug)]
pub(crate) struct RawMsg<'a> {
    pub(crate) msg_type: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) payload: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Appends one netlink attribute (header, value, padding to 4 bytes).
pub(crate) fn put_attr(buf: &mut Vec<u8>, attr_type: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&attr_type.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize((buf.len() + 3) & !3, 0);
}

/// One nfnetlink request message: netlink header (`nl_type`, `flags`, `seq`, port 0), nfgenmsg
/// (`family`, version 0, resource id 0), then the attributes.
pub(crate) fn encode_request(
    nl_type: u16,
    flags: u16,
    seq: u32,
    family: u8,
    attrs: &[(u16, &[u8])],
) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in attrs {
        put_attr(&mut body, *t, v);
    }
    let total = NLMSG_HDRLEN + 4 + body.len();
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&nl_type.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&[family, NFNETLINK_V0, 0, 0]);
    msg.extend_from_slice(&body);
    msg
}

/// Iterates over the netlink messages in a datagram (stops at the first malformed one).
pub(crate) fn parse_messages(buf: &[u8]) -> impl Iterator<Item = RawMsg<'_>> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let len = u32_at(buf, off)? as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return None;
        }
        let m = RawMsg {
            msg_type: u16_at(buf, off + 4)?,
            flags: u16_at(buf, off + 6)?,
            seq: u32_at(buf, off + 8)?,
            payload: &buf[off + NLMSG_HDRLEN..off + len],
        };
        off += (len + 3) & !3;
        if m.msg_type == NLMSG_DONE {
            return None;
        }
        Some(m)
    })
}

/// Splits a netlink attribute stream into (type, value) pairs (type includes the nested /
/// byte-order bits).
pub fn parse_attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let (Some(len), Some(t)) = (u16_at(buf, off), u16_at(buf, off + 2)) {
        let len = len as usize;
        if len < 4 || off + len > buf.len() {
            break;
        }
        out.push((t, &buf[off + 4..off + len]));
        off += (len + 3) & !3;
    }
    out
}

/// A decoded `NLMSG_ERROR`.
#[derive(Debug, Clone)]
pub(crate) struct AckError {
    /// sequence number of the message the error is about
    pub(crate) seq: u32,
    /// positive errno (0 = ACK)
    pub(crate) errno: i32,
    pub(crate) message: Option<String>,
    pub(crate) attr_offset: Option<u32>,
}

fn parse_error(m: &RawMsg<'_>) -> AckError {
    let p = m.payload;
    let err = u32_at(p, 0).map_or(-libc::EPROTO, |v| v as i32);
    // struct nlmsgerr { int error; struct nlmsghdr msg; } followed by the echoed payload
    // unless capped, then the extended-ACK TLVs.
    let orig_len = u32_at(p, 4).unwrap_or(0) as usize;
    let orig_seq = u32_at(p, 4 + 8).unwrap_or(m.seq);
    let mut message = None;
    let mut attr_offset = None;
    if m.flags & NLM_F_ACK_TLVS != 0 {
        let tlv_start = if m.flags & NLM_F_CAPPED != 0 {
            4 + NLMSG_HDRLEN
        } else {
            4 + ((orig_len + 3) & !3)
        };
        for (t, v) in parse_attrs(p.get(tlv_start..).unwrap_or(&[])) {
            match t {
                NLMSGERR_ATTR_MSG => {
                    let s = v.split(|&b| b == 0).next().unwrap_or(&[]);
                    message = Some(String::from_utf8_lossy(s).into_owned());
                }
                NLMSGERR_ATTR_OFFS if v.len() == 4 => {
                    attr_offset = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]));
                }
                _ => {}
            }
        }
    }
    AckError {
        seq: orig_seq,
        errno: err.checked_neg().unwrap_or(libc::EPROTO),
        message,
        attr_offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_msg(seq: u32, errno: i32, tlvs: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&(-errno).to_ne_bytes());
        // echoed header of the original message (capped)
        p.extend_from_slice(&100u32.to_ne_bytes());
        p.extend_from_slice(&0x0a06u16.to_ne_bytes());
        p.extend_from_slice(&0u16.to_ne_bytes());
        p.extend_from_slice(&seq.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        p.extend_from_slice(tlvs);
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + p.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        let flags = if tlvs.is_empty() {
            NLM_F_CAPPED
        } else {
            NLM_F_CAPPED | NLM_F_ACK_TLVS
        };
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&1234u32.to_ne_bytes());
        m.extend_from_slice(&p);
        m
    }

    #[test]
    fn parses_capped_error_with_ext_ack() {
        let mut tlvs = Vec::new();
        tlvs.extend_from_slice(&8u16.to_ne_bytes());
        tlvs.extend_from_slice(&NLMSGERR_ATTR_OFFS.to_ne_bytes());
        tlvs.extend_from_slice(&36u32.to_ne_bytes());
        tlvs.extend_from_slice(&8u16.to_ne_bytes());
        tlvs.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        tlvs.extend_from_slice(b"bad\0");
        let mut buf = error_msg(42, libc::ENOENT, &tlvs);
        buf.extend(error_msg(43, libc::EEXIST, &[]));
        let msgs: Vec<_> = parse_messages(&buf).collect();
        assert_eq!(msgs.len(), 2);
        let e = parse_error(&msgs[0]);
        assert_eq!((e.seq, e.errno), (42, libc::ENOENT));
        assert_eq!(e.attr_offset, Some(36));
        assert_eq!(e.message.as_deref(), Some("bad"));
        let e = parse_error(&msgs[1]);
        assert_eq!((e.seq, e.errno, e.message), (43, libc::EEXIST, None));
    }

    #[test]
    fn truncated_input_is_ignored() {
        let buf = error_msg(1, libc::ENOENT, &[]);
        assert_eq!(parse_messages(&buf[..buf.len() - 1]).count(), 0);
        assert!(parse_attrs(&[5, 0, 1]).is_empty());
    }
}
