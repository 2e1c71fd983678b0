//! ICMP / ICMPv6 echo messages: building requests, recognising the replies and errors that
//! belong to them (pure byte handling, unit-tested here).

/// Length of the random cookie carried in (and required back from) every echo request.
pub(crate) const COOKIE_LEN: usize = 16;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP6_DEST_UNREACH: u8 = 1;
const ICMP6_PACKET_TOO_BIG: u8 = 2;
const ICMP6_TIME_EXCEEDED: u8 = 3;
const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// The RFC 1071 internet checksum of `data`.
pub(crate) fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request: type, code 0, checksum, identifier, sequence number (network order), then
/// the cookie. The checksum is filled for ICMPv4; for ICMPv6 it is left 0 because the kernel
/// computes it (the pseudo-header needs the source address it chooses) on raw `IPPROTO_ICMPV6`
/// and ping sockets.
pub(crate) fn echo_request(v6: bool, id: u16, seq: u16, cookie: &[u8; COOKIE_LEN]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + COOKIE_LEN);
    m.push(if v6 {
        ICMP6_ECHO_REQUEST
    } else {
        ICMP_ECHO_REQUEST
    });
    m.push(0);
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(cookie);
    if !v6 {
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

/// What a received ICMP message means for the outstanding echo request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Our echo reply.
    Reply,
    /// An ICMP error about our echo request (e.g. "destination unreachable (code 1)").
    Error(String),
}

/// The expectation a received message is matched against.
#[derive(Debug, Clone)]
pub(crate) struct Expect<'a> {
    pub(crate) v6: bool,
    /// `None` for ping (datagram) sockets: the kernel rewrites the identifier and only delivers
    /// replies to our identifier to the socket.
    pub(crate) id: Option<u16>,
    pub(crate) seq: u16,
    pub(crate) cookie: &'a [u8; COOKIE_LEN],
}

/// For IPv4 raw sockets the datagram starts with the IP header: returns the ICMP message
/// behind it (`None` if it is not a complete ICMP packet).
pub(crate) fn strip_ipv4_header(datagram: &[u8]) -> Option<&[u8]> {
    let first = *datagram.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || *datagram.get(9)? != IPPROTO_ICMP {
        return None;
    }
    datagram.get(ihl..)
}

fn echo_matches(icmp: &[u8], ty: u8, e: &Expect<'_>, check_cookie: bool) -> bool {
    if icmp.len() < 8 || icmp[0] != ty || icmp[1] != 0 {
        return false;
    }
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    if seq != e.seq || e.id.is_some_and(|want| want != id) {
        return false;
    }
    !check_cookie || icmp.get(8..8 + COOKIE_LEN) == Some(&e.cookie[..])
}

/// Classifies one ICMP message (without IP header): our reply, an error about our request, or
/// `None` (someone else's traffic, which raw sockets see too).
pub(crate) fn classify(icmp: &[u8], e: &Expect<'_>) -> Option<Verdict> {
    let (reply, request) = if e.v6 {
        (ICMP6_ECHO_REPLY, ICMP6_ECHO_REQUEST)
    } else {
        (ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST)
    };
    if echo_matches(icmp, reply, e, true) {
        return Some(Verdict::Reply);
    }
    let (ty, code) = (*icmp.first()?, *icmp.get(1)?);
    let what = match (e.v6, ty) {
        (false, ICMP_DEST_UNREACH) | (true, ICMP6_DEST_UNREACH) => "destination unreachable",
        (false, ICMP_TIME_EXCEEDED) | (true, ICMP6_TIME_EXCEEDED) => "time exceeded",
        (true, ICMP6_PACKET_TOO_BIG) => "packet too big",
        _ => return None,
    };
    // the offending packet: its IP header, then (at least) the first 8 bytes of our request
    let inner = icmp.get(8..)?;
    let original = if e.v6 {
        // fixed 40-byte header; echo requests carry no extension headers
        if inner.first()? >> 4 != 6 || *inner.get(6)? != IPPROTO_ICMPV6 {
            return None;
        }
        inner.get(40..)?
    } else {
        strip_ipv4_header(inner)?
    };
    // the cookie may be cut off in the quoted packet: identifier and sequence must do
    echo_matches(original, request, e, false)
        .then(|| Verdict::Error(format!("ICMP {what} (code {code})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: [u8; COOKIE_LEN] = *b"0123456789abcdef";

    fn expect(v6: bool, id: Option<u16>) -> Expect<'static> {
        Expect {
            v6,
            id,
            seq: 7,
            cookie: &COOKIE,
        }
    }

    #[test]
    fn checksum_rfc1071_examples() {
        // RFC 1071 section 3 example: sum 0xddf2, checksum its complement
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // odd length pads with a zero byte
        assert_eq!(checksum(&[0xff]), !0xff00);
        // a message with its checksum filled in sums to 0
        let m = echo_request(false, 0x1234, 7, &COOKIE);
        assert_eq!(checksum(&m), 0);
    }

    #[test]
    fn echo_request_layout() {
        let m = echo_request(false, 0xabcd, 0x0102, &COOKIE);
        assert_eq!(&m[..2], &[8, 0]);
        assert_eq!(&m[4..8], &[0xab, 0xcd, 0x01, 0x02]);
        assert_eq!(&m[8..], &COOKIE);
        let m = echo_request(true, 0xabcd, 0x0102, &COOKIE);
        assert_eq!(
            &m[..4],
            &[128, 0, 0, 0],
            "ICMPv6 checksum is left to the kernel"
        );
        assert_eq!(m.len(), 8 + COOKIE_LEN);
    }

    fn reply_of(request: &[u8], ty: u8) -> Vec<u8> {
        let mut r = request.to_vec();
        r[0] = ty;
        r
    }

    fn ipv4_header(proto: u8, payload_len: usize) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        let total = (20 + payload_len) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[10, 9, 9, 9, 10, 2, 0, 1]);
        h
    }

    #[test]
    fn matches_v4_reply_by_id_seq_and_cookie() {
        let req = echo_request(false, 0x1234, 7, &COOKIE);
        let rep = reply_of(&req, 0);
        let mut dgram = ipv4_header(1, rep.len());
        dgram.extend_from_slice(&rep);
        let icmp = strip_ipv4_header(&dgram).unwrap();
        assert_eq!(
            classify(icmp, &expect(false, Some(0x1234))),
            Some(Verdict::Reply)
        );
        assert_eq!(classify(icmp, &expect(false, Some(0x1235))), None);
        // datagram sockets: any identifier (the kernel filtered it)
        assert_eq!(classify(icmp, &expect(false, None)), Some(Verdict::Reply));
        // wrong sequence number, wrong cookie, our own request looped back
        let mut other = rep.clone();
        other[7] = 8;
        assert_eq!(classify(&other, &expect(false, Some(0x1234))), None);
        let mut other = rep.clone();
        other[10] ^= 1;
        assert_eq!(classify(&other, &expect(false, Some(0x1234))), None);
        assert_eq!(classify(&req, &expect(false, Some(0x1234))), None);
        // an ICMPv6 reply type is not an ICMPv4 reply
        assert_eq!(
            classify(&reply_of(&req, 129), &expect(false, Some(0x1234))),
            None
        );
    }

    #[test]
    fn non_icmp_or_truncated_ipv4_is_ignored() {
        assert_eq!(strip_ipv4_header(&ipv4_header(6, 0)), None);
        assert_eq!(strip_ipv4_header(&[0x45, 0, 0]), None);
        assert_eq!(strip_ipv4_header(&[0x60; 40]), None);
        assert_eq!(classify(&[0, 0, 0], &expect(false, Some(1))), None);
    }

    #[test]
    fn v6_reply_and_unrelated_messages() {
        let req = echo_request(true, 0x4321, 7, &COOKIE);
        let e = expect(true, Some(0x4321));
        assert_eq!(classify(&reply_of(&req, 129), &e), Some(Verdict::Reply));
        // neighbour advertisement, router advertisement: not ours
        assert_eq!(classify(&[136, 0, 0, 0, 0, 0, 0, 0], &e), None);
        assert_eq!(classify(&[134, 0, 0, 0, 0, 0, 0, 7], &e), None);
    }

    #[test]
    fn errors_quoting_our_request_fail_fast() {
        // v4: destination unreachable, code 1 (host unreachable) quoting IP header + request
        let req = echo_request(false, 0x1234, 7, &COOKIE);
        let mut err = vec![3, 1, 0, 0, 0, 0, 0, 0];
        err.extend(ipv4_header(1, req.len()));
        err.extend_from_slice(&req[..8]);
        assert_eq!(
            classify(&err, &expect(false, Some(0x1234))),
            Some(Verdict::Error(
                "ICMP destination unreachable (code 1)".into()
            ))
        );
        assert_eq!(classify(&err, &expect(false, Some(0x9999))), None);

        // v6: time exceeded quoting a 40-byte IPv6 header + request
        let req = echo_request(true, 0x4321, 7, &COOKIE);
        let mut err = vec![3, 0, 0, 0, 0, 0, 0, 0];
        let mut ip6 = vec![0u8; 40];
        ip6[0] = 0x60;
        ip6[6] = 58;
        err.extend(ip6);
        err.extend_from_slice(&req);
        assert_eq!(
            classify(&err, &expect(true, Some(0x4321))),
            Some(Verdict::Error("ICMP time exceeded (code 0)".into()))
        );
        // an error about someone else's TCP segment
        let mut tcp_err = vec![1, 4, 0, 0, 0, 0, 0, 0];
        let mut ip6 = vec![0u8; 40];
        ip6[0] = 0x60;
        ip6[6] = 6;
        tcp_err.extend(ip6);
        tcp_err.extend_from_slice(&[0; 8]);
        assert_eq!(classify(&tcp_err, &expect(true, Some(0x4321))), None);
    }
}
