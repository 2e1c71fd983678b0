//! Fills the conntrack table of the calling thread's network namespace with ASSURED filler
//! entries, created over ctnetlink (`IPCTNL_MSG_CT_NEW`), to test a full table. Call it inside
//! `Netns::run`. Assured, because on a full table the kernel first early-drops a non-assured
//! entry and only drops the new packet when there is none. `nf_conntrack_max` is global and
//! read-only in a namespace, but the count is per namespace, so only the namespace fills up.
//! Remove the entries again with `nftbalance_netlink::conntrack::delete_by_mark`.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

// include/uapi/linux/netfilter/nfnetlink_conntrack.h and netlink.h
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPS_SEEN_REPLY: u32 = 1 << 1;
const IPS_ASSURED: u32 = 1 << 2;
const IPS_CONFIRMED: u32 = 1 << 3;
const AF_INET: u8 = 2;
const IPPROTO_UDP: u8 = 17;

/// Requests per `send()`: ~150 bytes each; only the last asks for an ACK, errors come anyway.
const BATCH: u32 = 256;
/// Long enough to outlive any test; the namespace's deletion frees them anyway.
const TIMEOUT_SECS: u32 = 600;
/// Filler tuples: 198.18.0.0/15 (benchmarking range, RFC 2544), used by nothing else here.
const BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);

/// Tuple index of the next filler, so that repeated fills never collide (EEXIST).
static NEXT: AtomicU32 = AtomicU32::new(0);

/// The result of a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Filler entries created.
    pub created: u64,
    /// Creations the kernel refused because the table was full (ENOMEM).
    pub refused_full: u64,
    /// `nf_conntrack_count` afterwards.
    pub count: u64,
    /// `nf_conntrack_max`.
    pub max: u64,
}

/// `/proc/sys/net/netfilter/NAME` of the calling thread's namespace.
pub fn sysctl(name: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))?;
    text.trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {e}")))
}

/// Creates assured filler entries with connection mark `mark` until `nf_conntrack_count`
/// reaches `nf_conntrack_max` (tops up when entries vanish meanwhile). Conntrack must be
/// loaded in the namespace (a ruleset using `ct` loads it).
pub fn fill_to_max(mark: u32) -> io::Result<Fill> {
    fill(mark).map_err(|e| io::Error::new(e.kind(), format!("creating filler entries: {e}")))
}

fn fill(mark: u32) -> io::Result<Fill> {
    let fd = open()?;
    let max = sysctl("nf_conntrack_max")?;
    if max == 0 {
        return Err(io::Error::other(
            "nf_conntrack_max is 0 (no limit): cannot fill",
        ));
    }
    let (status, mut seq) = status_bits(&fd, mark)?;
    let mut fill = Fill {
        created: 1,
        refused_full: 0,
        count: 0,
        max,
    };
    for _ in 0..10 {
        fill.count = sysctl("nf_conntrack_count")?;
        if fill.count >= max {
            return Ok(fill);
        }
        let mut missing = max - fill.count;
        while missing > 0 {
            let n = missing.min(u64::from(BATCH)) as u32;
            let first = NEXT.fetch_add(n, Ordering::Relaxed);
            let mut buf = Vec::with_capacity(n as usize * 160);
            for i in 0..n {
                let ack = i + 1 == n;
                buf.extend(create_request(
                    first + i,
                    mark,
                    status,
                    seq.wrapping_add(i),
                    ack,
                ));
            }
            send(fd.as_raw_fd(), &buf, MsgFlags::empty()).map_err(io::Error::from)?;
            let (ok, full) = collect_acks(&fd, seq, n)?;
            seq = seq.wrapping_add(n);
            fill.created += u64::from(ok);
            fill.refused_full += u64::from(full);
            missing -= u64::from(n);
            if full > 0 {
                break;
            }
        }
    }
    fill.count = sysctl("nf_conntrack_count")?;
    Ok(fill)
}

/// The CTA_STATUS that makes an entry assured, found by creating the first filler. Kernels
/// that mark a new entry confirmed before applying CTA_STATUS (6.18 here) refuse a status
/// without IPS_CONFIRMED (EBUSY: it cannot be cleared); others refuse one with it.
/// Returns the status and the next sequence number.
fn status_bits(fd: &OwnedFd, mark: u32) -> io::Result<(u32, u32)> {
    let mut last = None;
    for (seq, status) in [
        (1, IPS_ASSURED | IPS_SEEN_REPLY | IPS_CONFIRMED),
        (2, IPS_ASSURED | IPS_SEEN_REPLY),
    ] {
        let index = NEXT.fetch_add(1, Ordering::Relaxed);
        send(
            fd.as_raw_fd(),
            &create_request(index, mark, status, seq, true),
            MsgFlags::empty(),
        )
        .map_err(io::Error::from)?;
        match collect_acks(fd, seq, 1) {
            Ok((1, 0)) => return Ok((status, 3)),
            Ok(r) => return Err(io::Error::other(format!("first filler not created: {r:?}"))),
            Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap())
}

fn open() -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    // Room for an error per request (each echoes its request); FORCE needs CAP_NET_ADMIN.
    let size = 4 << 20;
    if setsockopt(&fd, sockopt::RcvBufForce, &size).is_err() {
        setsockopt(&fd, sockopt::RcvBuf, &size)?;
    }
    Ok(fd)
}

/// Reads replies up to the ACK of request `first + n - 1`; returns (created, refused as full).
/// Any other error fails the fill, except EEXIST (a tuple left from an earlier fill).
fn collect_acks(fd: &OwnedFd, first: u32, n: u32) -> io::Result<(u32, u32)> {
    let last = first.wrapping_add(n - 1);
    let mut failed = 0u32;
    let mut full = 0u32;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let len = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(io::Error::from)?;
        let mut off = 0usize;
        while off + 16 <= len {
            let h = &buf[off..];
            let msg_len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let msg_type = u16::from_ne_bytes([h[4], h[5]]);
            let seq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
            if msg_len < 16 || off + msg_len > len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink reply",
                ));
            }
            if msg_type == NLMSG_ERROR && msg_len >= 20 {
                let errno = -i32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
                match errno {
                    0 => {}
                    e if e == Errno::ENOMEM as i32 => {
                        failed += 1;
                        full += 1;
                    }
                    e if e == Errno::EEXIST as i32 => failed += 1,
                    e => return Err(io::Error::from_raw_os_error(e)),
                }
                if seq == last {
                    return Ok((n - failed, full));
                }
            }
            off += (msg_len + 3) & !3;
        }
    }
}

/// One `IPCTNL_MSG_CT_NEW` request: an assured UDP entry with tuple number `index`.
fn create_request(index: u32, mark: u32, status: u32, seq: u32, ack: bool) -> Vec<u8> {
    let src = Ipv4Addr::from(BASE + (index & 0xffff));
    let dst = Ipv4Addr::from(BASE + 0x1_0000 + ((index >> 16) & 0xffff));
    let sport = 1024 + (index % 60_000) as u16;
    let dport = 53u16;
    let mut attrs = Vec::new();
    put(
        &mut attrs,
        CTA_TUPLE_ORIG | NLA_F_NESTED,
        &tuple(src, dst, sport, dport),
    );
    put(
        &mut attrs,
        CTA_TUPLE_REPLY | NLA_F_NESTED,
        &tuple(dst, src, dport, sport),
    );
    put(&mut attrs, CTA_STATUS, &status.to_be_bytes());
    put(&mut attrs, CTA_TIMEOUT, &TIMEOUT_SECS.to_be_bytes());
    put(&mut attrs, CTA_MARK, &mark.to_be_bytes());

    let mut flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL;
    if ack {
        flags |= NLM_F_ACK;
    }
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    m.extend_from_slice(&[AF_INET, 0, 0, 0]); // nfgenmsg: family, NFNETLINK_V0, res_id
    m.extend_from_slice(&attrs);
    m
}

fn tuple(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut ip = Vec::new();
    put(&mut ip, CTA_IP_V4_SRC, &src.octets());
    put(&mut ip, CTA_IP_V4_DST, &dst.octets());
    let mut proto = Vec::new();
    put(&mut proto, CTA_PROTO_NUM, &[IPPROTO_UDP]);
    put(&mut proto, CTA_PROTO_SRC_PORT, &sport.to_be_bytes());
    put(&mut proto, CTA_PROTO_DST_PORT, &dport.to_be_bytes());
    let mut t = Vec::new();
    put(&mut t, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    put(&mut t, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
    t
}

/// Appends one netlink attribute, padded to 4 bytes.
fn put(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize((buf.len() + 3) & !3, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let m = create_request(0x1_0002, 0x7700, 6, 5, true);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(m.len() % 4, 0);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0100);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 0x0605);
        // first attribute: the original tuple, nested; its first nested: the addresses
        assert_eq!(u16::from_ne_bytes([m[22], m[23]]), 0x8001);
        assert_eq!(u16::from_ne_bytes([m[26], m[27]]), 0x8001);
        assert_eq!(&m[32..36], &[198, 18, 0, 2]);
        assert_eq!(&m[40..44], &[198, 19, 0, 1]);
        assert_eq!(&m[m.len() - 4..], &0x7700u32.to_be_bytes());
    }
}
