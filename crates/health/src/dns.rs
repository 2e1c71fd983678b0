//! The DNS query a health probe sends and how it reads the answer (pure: bytes in, bytes out).
//!
//! Wire format (RFC 1035 §4.1), all integers big-endian:
//!
//! ```text
//! header, 12 bytes:  id (2) | flags (2) | qdcount (2) | ancount (2) | nscount (2) | arcount (2)
//!   flags: QR(1) OPCODE(4) AA(1) TC(1) RD(1) | RA(1) Z(3) RCODE(4)
//!   query: id random, flags 0x0100 (a standard query, recursion desired), qdcount 1, others 0
//! question:          qname | qtype (2) = 1 (A) | qclass (2) = 1 (IN)
//!   qname: each label as a length byte and its bytes, then a zero byte:
//!   "example.com" -> 07 'example' 03 'com' 00
//! ```
//!
//! For `example.com` the query is 12 + 13 + 4 = 29 bytes. An answer repeats the id and the
//! question, sets QR, and carries the outcome in RCODE.

/// Header flags of our query: a standard query (opcode 0) with recursion desired.
const FLAGS_RD: u16 = 0x0100;
const QTYPE_A: u16 = 1;
const QCLASS_IN: u16 = 1;
const HEADER_LEN: usize = 12;
/// RFC 1035 limits.
const LABEL_MAX: usize = 63;
const NAME_MAX_WIRE: usize = 255;

/// RCODE 0: the server answered the question.
const NOERROR: u8 = 0;
/// RCODE 3: the server answered that the name does not exist.
const NXDOMAIN: u8 = 3;

/// A type A, class IN query for `name` with id `id`. `name` is dot-separated labels (a
/// trailing dot is allowed); Err names what is wrong with it.
pub(crate) fn query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&FLAGS_RD.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // qdcount
    q.extend_from_slice(&[0; 6]); // ancount, nscount, arcount
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > LABEL_MAX {
                return Err(format!("DNS name {name:?}: a label is empty or too long"));
            }
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
    }
    q.push(0);
    if q.len() - HEADER_LEN > NAME_MAX_WIRE {
        return Err(format!("DNS name {name:?} is too long"));
    }
    q.extend_from_slice(&QTYPE_A.to_be_bytes());
    q.extend_from_slice(&QCLASS_IN.to_be_bytes());
    Ok(q)
}

/// What a datagram says about our query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Not an answer to our query (another id, not a response, too short): keep waiting.
    Other,
    /// The server answered: NOERROR or NXDOMAIN.
    Answered,
    /// The server answered with an error: it is reachable, but it does not answer the question.
    Refused(String),
}

/// Classifies `msg` as an answer to `query` (as built by [`query`]).
///
/// Success is NOERROR or NXDOMAIN: either way the server received our question through the
/// uplink and answered it (a resolver that says a name does not exist has done its job; the
/// probe measures the path and the server, not the name). Other rcodes fail the target, with the
/// rcode named: SERVFAIL (the resolver cannot resolve), REFUSED (it will not answer us: often a
/// provider's resolver that serves only its own addresses, i.e. a probe with a wrong source),
/// FORMERR, NOTIMP and the rest. A response must repeat the question; one that does not is
/// taken for a stray datagram.
pub(crate) fn classify(msg: &[u8], query: &[u8]) -> Answer {
    if msg.len() < HEADER_LEN || query.len() < HEADER_LEN || msg[..2] != query[..2] {
        return Answer::Other;
    }
    let (flags_hi, flags_lo) = (msg[2], msg[3]);
    let is_response = flags_hi & 0x80 != 0;
    let opcode = (flags_hi >> 3) & 0x0f;
    if !is_response || opcode != 0 {
        return Answer::Other;
    }
    let rcode = flags_lo & 0x0f;
    if rcode != NOERROR && rcode != NXDOMAIN {
        return Answer::Refused(format!("DNS {}", rcode_name(rcode)));
    }
    let question = &query[HEADER_LEN..];
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    let echoed = msg.get(HEADER_LEN..HEADER_LEN + question.len());
    match echoed {
        Some(q) if qdcount == 1 && q.eq_ignore_ascii_case(question) => Answer::Answered,
        _ => Answer::Other,
    }
}

fn rcode_name(rcode: u8) -> String {
    match rcode {
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("rcode {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_the_rfc_1035_wire_format() {
        let q = query(0xbeef, "example.com").unwrap();
        let mut want = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        assert_eq!(q, want);
        assert_eq!(q.len(), 29);
        assert_eq!(query(0xbeef, "example.com.").unwrap(), want);
        // the root: just the terminating zero
        assert_eq!(query(1, "").unwrap().len(), HEADER_LEN + 5);
    }

    #[test]
    fn bad_names_are_errors() {
        assert!(query(1, "a..b").is_err());
        assert!(query(1, &"x".repeat(64)).is_err());
        let long = vec!["x".repeat(63); 5].join(".");
        assert!(query(1, &long).is_err());
    }

    fn answer(query: &[u8], flags: [u8; 2]) -> Vec<u8> {
        let mut a = query.to_vec();
        a[2..4].copy_from_slice(&flags);
        a
    }

    #[test]
    fn answers_are_classified_by_id_question_and_rcode() {
        let q = query(0x1234, "example.com").unwrap();
        // QR | RD, RA | rcode
        assert_eq!(classify(&answer(&q, [0x81, 0x80]), &q), Answer::Answered);
        assert_eq!(classify(&answer(&q, [0x81, 0x83]), &q), Answer::Answered);
        assert_eq!(
            classify(&answer(&q, [0x81, 0x82]), &q),
            Answer::Refused("DNS SERVFAIL".into())
        );
        assert_eq!(
            classify(&answer(&q, [0x81, 0x85]), &q),
            Answer::Refused("DNS REFUSED".into())
        );
        // our own query reflected, another id, a truncated datagram, another question
        assert_eq!(classify(&q, &q), Answer::Other);
        let mut other = answer(&q, [0x81, 0x80]);
        other[1] ^= 1;
        assert_eq!(classify(&other, &q), Answer::Other);
        assert_eq!(classify(&q[..11], &q), Answer::Other);
        let q2 = query(0x1234, "example.org").unwrap();
        assert_eq!(classify(&answer(&q2, [0x81, 0x80]), &q), Answer::Other);
        // the question in another case (0x20 randomisation) is still ours
        let upper = answer(&query(0x1234, "EXAMPLE.com").unwrap(), [0x81, 0x80]);
        assert_eq!(classify(&upper, &q), Answer::Answered);
    }
}
