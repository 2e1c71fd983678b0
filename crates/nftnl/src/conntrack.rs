//! Connection tracking over ctnetlink (`NFNL_SUBSYS_CTNETLINK` on the same netfilter netlink
//! [`Socket`]): count and delete the connections of one uplink by connection mark.
//!
//! **Filtering**: the dump request carries `CTA_MARK` / `CTA_MARK_MASK`, so the kernel only
//! returns entries whose `ct mark & mask == mark` (supported by every kernel nftables needs; the
//! filter is evaluated per entry in the kernel's dump, nothing else is copied to user space).
//! Every returned entry's `CTA_MARK` is checked again in user space, and a kernel built without
//! `CONFIG_NF_CONNTRACK_MARK` (which refuses the filter with `EOPNOTSUPP`) gets an unfiltered
//! dump filtered here instead.
//!
//! **Families**: the requests use `AF_UNSPEC`, i.e. IPv4 and IPv6 entries alike. **Zones**: all
//! zones; a deletion names the entry's zone.
//!
//! **Deletion** is dump-then-delete, like `conntrack -D --mark`: the matching entries are
//! dumped, then each is deleted by its original tuple, zone and conntrack id (so an entry that
//! died and was replaced by a new connection with the same tuple in between is not touched),
//! in batches of [`DELETE_BATCH`] requests per `sendmsg()`, each acknowledged. Entries that
//! vanished meanwhile (`ENOENT`) are not counted. (The kernel's own flush-by-mark does not say
//! how many it deleted.)

use std::io;
use std::net::IpAddr;

use crate::consts::*;
use crate::socket::{encode_request, parse_attrs, Socket};

/// Delete requests sent per `sendmsg()` (their ACKs fit the receive buffer comfortably).
pub const DELETE_BATCH: usize = 64;

/// `AF_UNSPEC`: every layer-3 family.
const ALL_FAMILIES: u8 = 0;

fn check_mark(mark: u32, mask: u32) -> io::Result<()> {
    if mark & !mask != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "conntrack mark {mark:#x} has bits outside the mask {mask:#x}: nothing could match"
            ),
        ));
    }
    Ok(())
}

/// Number of conntrack entries (all families, all zones) whose `mark & mask == mark`.
/// `mask` 0 and `mark` 0 count every entry. Errors: `InvalidInput` if `mark` has bits outside
/// `mask`; the kernel's errno otherwise (e.g. `EPERM` without CAP_NET_ADMIN).
pub fn count_by_mark(socket: &Socket, mark: u32, mask: u32) -> io::Result<u64> {
    check_mark(mark, mask)?;
    let mut n = 0u64;
    dump_by_mark(socket, mark, mask, |_| {
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// Deletes the conntrack entries whose `mark & mask == mark` and returns how many it deleted
/// (see the module docs for how). Entries that disappear on their own meanwhile are not counted.
/// If the kernel refuses a deletion with anything but `ENOENT`, the remaining deletions are
/// still attempted and the first such error is returned (its message says how many entries
/// were deleted).
pub fn delete_by_mark(socket: &Socket, mark: u32, mask: u32) -> io::Result<u64> {
    check_mark(mark, mask)?;
    let mut keys = Vec::new();
    dump_by_mark(socket, mark, mask, |e| {
        keys.push(e.delete_key());
        Ok(())
    })?;
    let mut deleted = 0u64;
    let mut first_error: Option<io::Error> = None;
    for chunk in keys.chunks(DELETE_BATCH) {
        let first_seq = socket.next_seq(chunk.len() as u32);
        let mut msgs = Vec::new();
        for (i, k) in chunk.iter().enumerate() {
            msgs.extend(k.encode(first_seq.wrapping_add(i as u32)));
        }
        for errno in socket.send_acked(&msgs, first_seq, chunk.len() as u32)? {
            match errno {
                0 => deleted += 1,
                libc::ENOENT => {}
                e => {
                    first_error.get_or_insert_with(|| io::Error::from_raw_os_error(e));
                }
            }
        }
    }
    match first_error {
        None => Ok(deleted),
        Some(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "deleting conntrack entries by mark {mark:#x}/{mask:#x}: {e} (deleted {deleted})"
            ),
        )),
    }
}

/// One direction of a conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IANA protocol number.
    pub protocol: u8,
    /// Ports, for protocols that have them.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// A conntrack entry: the original direction (as the connection was opened), the reply
/// direction (whose destination is the original source after source NAT) and its mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub original: Tuple,
    pub reply: Tuple,
    pub mark: u32,
}

/// The conntrack entries (all families, all zones) whose `mark & mask == mark` and whose
/// original tuple `keep` accepts; `mask` 0 and `mark` 0 list every entry.
pub fn list_by_mark(
    socket: &Socket,
    mark: u32,
    mask: u32,
    keep: impl Fn(&Connection) -> bool,
) -> io::Result<Vec<Connection>> {
    check_mark(mark, mask)?;
    let mut out = Vec::new();
    dump_by_mark(socket, mark, mask, |e| {
        if let Some(c) = e.connection() {
            if keep(&c) {
                out.push(c);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

fn tuple(buf: &[u8]) -> Option<Tuple> {
    let (mut src, mut dst, mut protocol) = (None, None, None);
    let (mut sport, mut dport) = (None, None);
    let be16 = |v: &[u8]| Some(u16::from_be_bytes(v.try_into().ok()?));
    for (t, v) in parse_attrs(buf) {
        match t & NLA_TYPE_MASK {
            CTA_TUPLE_IP => {
                for (t, v) in parse_attrs(v) {
                    let v4 = <[u8; 4]>::try_from(v).ok().map(IpAddr::from);
                    let v6 = <[u8; 16]>::try_from(v).ok().map(IpAddr::from);
                    match t & NLA_TYPE_MASK {
                        CTA_IP_V4_SRC => src = v4,
                        CTA_IP_V4_DST => dst = v4,
                        CTA_IP_V6_SRC => src = v6,
                        CTA_IP_V6_DST => dst = v6,
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (t, v) in parse_attrs(v) {
                    match t & NLA_TYPE_MASK {
                        CTA_PROTO_NUM => protocol = v.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be16(v),
                        CTA_PROTO_DST_PORT => dport = be16(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Tuple {
        src: src?,
        dst: dst?,
        protocol: protocol?,
        sport,
        dport,
    })
}

/// The dump request for entries with `mark & mask == mark`.
fn dump_request_attrs(mark: u32, mask: u32) -> [(u16, [u8; 4]); 2] {
    [
        (CTA_MARK, mark.to_be_bytes()),
        (CTA_MARK_MASK, mask.to_be_bytes()),
    ]
}

fn dump_by_mark(
    socket: &Socket,
    mark: u32,
    mask: u32,
    mut each: impl FnMut(&Entry<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let nl_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    let filter = dump_request_attrs(mark, mask);
    let attrs: Vec<(u16, &[u8])> = filter.iter().map(|(t, v)| (*t, &v[..])).collect();
    let mut visit = |payload: &[u8]| match Entry::parse(payload) {
        Some(e) if e.mark & mask == mark => each(&e),
        _ => Ok(()),
    };
    match socket.dump_each(nl_type, ALL_FAMILIES, &attrs, &mut visit) {
        // no mark support in the kernel's ctnetlink filter: filter here
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            socket.dump_each(nl_type, ALL_FAMILIES, &[], &mut visit)
        }
        r => r,
    }
}

/// The parts of a dumped conntrack entry that we use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry<'a> {
    /// layer-3 family (`AF_INET`, `AF_INET6`) from the nfgenmsg header
    family: u8,
    /// `CTA_MARK` (0 when absent)
    mark: u32,
    /// the value of `CTA_TUPLE_ORIG` (nested attributes)
    tuple: &'a [u8],
    /// the value of `CTA_ZONE` if present (non-default zone)
    zone: Option<&'a [u8]>,
    /// the value of `CTA_ID`
    id: Option<&'a [u8]>,
    /// the value of `CTA_TUPLE_REPLY` (nested attributes)
    reply: &'a [u8],
}

impl<'a> Entry<'a> {
    /// Parses one `IPCTNL_MSG_CT_NEW` dump reply payload (nfgenmsg, then attributes).
    fn parse(payload: &'a [u8]) -> Option<Entry<'a>> {
        let family = *payload.first()?;
        let mut e = Entry {
            family,
            mark: 0,
            tuple: &[],
            zone: None,
            id: None,
            reply: &[],
        };
        let mut have_tuple = false;
        for (t, v) in parse_attrs(payload.get(4..)?) {
            match t & NLA_TYPE_MASK {
                CTA_TUPLE_ORIG => {
                    e.tuple = v;
                    have_tuple = true;
                }
                CTA_MARK if v.len() == 4 => e.mark = u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                CTA_ZONE => e.zone = Some(v),
                CTA_TUPLE_REPLY => e.reply = v,
                CTA_ID => e.id = Some(v),
                _ => {}
            }
        }
        have_tuple.then_some(e)
    }

    fn connection(&self) -> Option<Connection> {
        Some(Connection {
            original: tuple(self.tuple)?,
            reply: tuple(self.reply)?,
            mark: self.mark,
        })
    }

    fn delete_key(&self) -> DeleteKey {
        DeleteKey {
            family: self.family,
            tuple: self.tuple.to_vec(),
            zone: self.zone.map(<[u8]>::to_vec),
            id: self.id.map(<[u8]>::to_vec),
        }
    }
}

/// What identifies one entry for `IPCTNL_MSG_CT_DELETE`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeleteKey {
    family: u8,
    tuple: Vec<u8>,
    zone: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
}

impl DeleteKey {
    fn encode(&self, seq: u32) -> Vec<u8> {
        let mut attrs: Vec<(u16, &[u8])> = vec![(CTA_TUPLE_ORIG | NLA_F_NESTED, &self.tuple)];
        if let Some(z) = &self.zone {
            attrs.push((CTA_ZONE, z));
        }
        if let Some(id) = &self.id {
            attrs.push((CTA_ID, id));
        }
        encode_request(
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            self.family,
            &attrs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::put_attr;

    fn nested(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (t, v) in attrs {
            put_attr(&mut b, *t, v);
        }
        b
    }

    /// An IPv4 UDP tuple as the kernel dumps it.
    fn tuple_v4() -> Vec<u8> {
        let ip = nested(&[(1, &[10, 0, 0, 1]), (2, &[10, 0, 0, 2])]);
        let proto = nested(&[
            (1, &[17]),
            (2, &1000u16.to_be_bytes()),
            (3, &53u16.to_be_bytes()),
        ]);
        nested(&[(1 | NLA_F_NESTED, &ip), (2 | NLA_F_NESTED, &proto)])
    }

    fn dump_reply(family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut p = vec![family, 0, 0, 0];
        p.extend(nested(attrs));
        p
    }

    #[test]
    fn dump_request_encoding() {
        let filter = dump_request_attrs(0x2, 0xff);
        let attrs: Vec<(u16, &[u8])> = filter.iter().map(|(t, v)| (*t, &v[..])).collect();
        let m = encode_request(
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            7,
            ALL_FAMILIES,
            &attrs,
        );
        let mut want = Vec::new();
        want.extend_from_slice(&36u32.to_ne_bytes()); // 16 header + 4 nfgenmsg + 2 x 8
        want.extend_from_slice(&0x0101u16.to_ne_bytes()); // CTNETLINK << 8 | CT_GET
        want.extend_from_slice(&0x0301u16.to_ne_bytes()); // REQUEST | DUMP
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[0, 0, 0, 0]); // AF_UNSPEC, version 0, res_id 0
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&8u16.to_ne_bytes()); // CTA_MARK
        want.extend_from_slice(&[0, 0, 0, 2]); // big-endian
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&21u16.to_ne_bytes()); // CTA_MARK_MASK
        want.extend_from_slice(&[0, 0, 0, 0xff]);
        assert_eq!(m, want);
    }

    #[test]
    fn parses_dump_entries() {
        let tuple = tuple_v4();
        let reply = dump_reply(
            2,
            &[
                (CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple),
                ((CTA_TUPLE_ORIG + 1) | NLA_F_NESTED, &tuple),
                (CTA_MARK, &0x101u32.to_be_bytes()),
                (CTA_ID, &0xdeadbeefu32.to_be_bytes()),
            ],
        );
        let e = Entry::parse(&reply).unwrap();
        assert_eq!(e.family, 2);
        assert_eq!(e.mark, 0x101);
        assert_eq!(e.tuple, &tuple[..]);
        assert_eq!(e.zone, None);
        assert_eq!(e.id, Some(&[0xde, 0xad, 0xbe, 0xef][..]));

        // no CTA_MARK: mark 0; zone kept
        let reply = dump_reply(
            10,
            &[
                (CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple),
                (CTA_ZONE, &3u16.to_be_bytes()),
            ],
        );
        let e = Entry::parse(&reply).unwrap();
        assert_eq!((e.family, e.mark, e.zone), (10, 0, Some(&[0, 3][..])));

        // no tuple, or truncated: not an entry
        assert_eq!(
            Entry::parse(&dump_reply(2, &[(CTA_MARK, &[0, 0, 0, 1])])),
            None
        );
        assert_eq!(Entry::parse(&[2, 0]), None);
    }

    #[test]
    fn delete_request_encoding() {
        let tuple = tuple_v4();
        let key = DeleteKey {
            family: 2,
            tuple: tuple.clone(),
            zone: Some(vec![0, 3]),
            id: Some(vec![1, 2, 3, 4]),
        };
        let m = key.encode(99);
        let len = u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, m.len());
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0102); // CTNETLINK << 8 | CT_DELETE
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 99);
        assert_eq!(&m[16..20], &[2, 0, 0, 0]);
        let attrs = parse_attrs(&m[20..]);
        assert_eq!(
            attrs,
            vec![
                (CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple[..]),
                (CTA_ZONE, &[0, 3, 0, 0][..2]),
                (CTA_ID, &[1, 2, 3, 4][..]),
            ]
        );
        // the zone attribute is padded to 4 bytes
        assert_eq!(m.len() % 4, 0);

        let key = DeleteKey {
            family: 10,
            tuple,
            zone: None,
            id: None,
        };
        let attrs_len = parse_attrs(&key.encode(1)[20..]).len();
        assert_eq!(attrs_len, 1);
    }

    #[test]
    fn mark_outside_mask_is_refused() {
        assert!(check_mark(0x100, 0xff).is_err());
        assert!(check_mark(0x1, 0xff).is_ok());
        assert!(check_mark(0, 0).is_ok());
    }
}
