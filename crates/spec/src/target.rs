//! Health target text -> a typed target: `address` (ICMP), `address:port` (TCP),
//! `dns://address[:port]/name` and `http://address[:port]/path`. Pure string checks; the
//! family check and the error's JSON path are the parser's.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::model::{HealthTarget, QueryTarget};
use crate::parse::show;

/// A target of any kind, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Probe(HealthTarget),
    Query(QueryTarget),
}

impl Target {
    pub(crate) fn addr(&self) -> IpAddr {
        match self {
            Target::Probe(t) => t.addr(),
            Target::Query(q) => q.addr(),
        }
    }
}

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetError {
    /// No scheme and neither an address nor address:port: the parser keeps its message from
    /// before the URL kinds existed.
    NotAnAddress,
    /// A scheme other than dns or http.
    UnknownKind(String),
    /// A dns:// or http:// target that is malformed, with the reason.
    Malformed(String),
}

/// Longest DNS name, without its trailing dot (RFC 1035: 255 octets on the wire).
const DNS_NAME_MAX: usize = 253;
/// Longest DNS label (RFC 1035).
const DNS_LABEL_MAX: usize = 63;
/// Longest HTTP path: a probe, not a crawler; also keeps the request in one small packet.
const HTTP_PATH_MAX: usize = 1024;

pub(crate) fn parse(text: &str) -> Result<Target, TargetError> {
    if let Some((scheme, rest)) = text.split_once("://") {
        return match scheme {
            "dns" => dns(rest).map(Target::Query).map_err(TargetError::Malformed),
            "http" => http(rest)
                .map(Target::Query)
                .map_err(TargetError::Malformed),
            _ => Err(TargetError::UnknownKind(scheme.to_string())),
        };
    }
    if let Ok(a) = text.parse::<IpAddr>() {
        Ok(Target::Probe(HealthTarget::Icmp(a)))
    } else if let Ok(sa) = text.parse::<SocketAddr>() {
        Ok(Target::Probe(HealthTarget::Tcp(sa)))
    } else {
        Err(TargetError::NotAnAddress)
    }
}

fn dns(rest: &str) -> Result<QueryTarget, String> {
    let (authority, name) = rest
        .split_once('/')
        .ok_or("name the record to ask for after the address (dns://192.0.2.53/example.com)")?;
    let server = authority_addr(authority, 53)?;
    dns_name(name)?;
    Ok(QueryTarget::Dns {
        server,
        name: name.to_string(),
    })
}

fn http(rest: &str) -> Result<QueryTarget, String> {
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let addr = authority_addr(authority, 80)?;
    if path.len() > HTTP_PATH_MAX {
        return Err(format!(
            "the path is {} bytes; use at most {HTTP_PATH_MAX}",
            path.len()
        ));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the path holds {c:?}: use printable ASCII without spaces (percent-encode the rest)"
        ));
    }
    Ok(QueryTarget::Http {
        addr,
        path: path.to_string(),
    })
}

/// `address`, `address:port`, `[v6]` or `[v6]:port`: an IP literal, not a host name (a probe
/// must not depend on the resolver it may be checking).
fn authority_addr(authority: &str, default_port: u16) -> Result<SocketAddr, String> {
    let not_ip = || {
        format!(
            "{} is not an IP address (with an optional port; IPv6 in brackets, \
             e.g. [2001:db8::1]:8080): host names are not resolved",
            show(authority)
        )
    };
    let addr = if let Ok(sa) = authority.parse::<SocketAddr>() {
        sa
    } else if let Ok(a) = authority.parse::<std::net::Ipv4Addr>() {
        SocketAddr::new(IpAddr::V4(a), default_port)
    } else if let Some(v6) = authority
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
    {
        let a: Ipv6Addr = v6.parse().map_err(|_| not_ip())?;
        SocketAddr::new(IpAddr::V6(a), default_port)
    } else if authority.parse::<Ipv6Addr>().is_ok() {
        return Err(format!(
            "{authority:?}: put an IPv6 address in brackets ([{authority}])"
        ));
    } else {
        return Err(not_ip());
    };
    if addr.port() == 0 {
        return Err("port 0 is not a port (1 to 65535)".to_string());
    }
    Ok(addr)
}

/// A name a resolver is asked for: dot-separated labels of letters, digits, '-' and '_'
/// (service labels such as `_dmarc`), no label empty, starting or ending with '-', at most
/// 63 bytes each and 253 in all; one trailing dot allowed.
fn dns_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err("the name to ask for is empty (dns://192.0.2.53/example.com)".to_string());
    }
    if bare.len() > DNS_NAME_MAX {
        return Err(format!(
            "the name is {} bytes; a DNS name has at most {DNS_NAME_MAX}",
            bare.len()
        ));
    }
    for label in bare.split('.') {
        let ok = !label.is_empty()
            && label.len() <= DNS_LABEL_MAX
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(format!(
                "{} is not a DNS label: use 1 to {DNS_LABEL_MAX} letters, digits, \
                 '-' or '_', not starting or ending with '-'",
                show(label)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(text: &str) -> QueryTarget {
        match parse(text) {
            Ok(Target::Query(q)) => q,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn malformed(text: &str) -> String {
        match parse(text) {
            Err(TargetError::Malformed(m)) => m,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn addresses_keep_their_kinds() {
        assert_eq!(
            parse("198.51.100.1"),
            Ok(Target::Probe(HealthTarget::Icmp(
                "198.51.100.1".parse().unwrap()
            )))
        );
        assert_eq!(
            parse("[2001:db8::1]:443"),
            Ok(Target::Probe(HealthTarget::Tcp(
                "[2001:db8::1]:443".parse().unwrap()
            )))
        );
        for bad in ["example.com", "192.0.2.1:http", "", "://"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("example.com"), Err(TargetError::NotAnAddress));
    }

    #[test]
    fn dns_targets() {
        assert_eq!(
            query("dns://192.0.2.53/example.com"),
            QueryTarget::Dns {
                server: "192.0.2.53:53".parse().unwrap(),
                name: "example.com".into()
            }
        );
        assert_eq!(
            query("dns://[2001:db8::53]:5353/_dmarc.example.org."),
            QueryTarget::Dns {
                server: "[2001:db8::53]:5353".parse().unwrap(),
                name: "_dmarc.example.org.".into()
            }
        );
        assert!(malformed("dns://192.0.2.53").contains("name the record"));
        assert!(malformed("dns://192.0.2.53/").contains("empty"));
        assert!(malformed("dns://192.0.2.53/a..b").contains("\"\" is not a DNS label"));
        assert!(malformed("dns://192.0.2.53/-a.b").contains("not a DNS label"));
        assert!(malformed("dns://192.0.2.53/a b").contains("not a DNS label"));
        assert!(malformed(&format!("dns://192.0.2.53/{}", "a".repeat(64))).contains("label"));
        let long = vec!["a".repeat(60); 5].join(".");
        assert!(malformed(&format!("dns://192.0.2.53/{long}")).contains("at most 253"));
        assert!(malformed("dns://resolver.example/x.org").contains("host names"));
        assert!(malformed("dns://2001:db8::53/x.org").contains("in brackets"));
        assert!(malformed("dns://192.0.2.53:0/x.org").contains("port 0"));
    }

    #[test]
    fn http_targets() {
        assert_eq!(
            query("http://192.0.2.80/generate_204"),
            QueryTarget::Http {
                addr: "192.0.2.80:80".parse().unwrap(),
                path: "/generate_204".into()
            }
        );
        assert_eq!(
            query("http://[2001:db8::80]:8080"),
            QueryTarget::Http {
                addr: "[2001:db8::80]:8080".parse().unwrap(),
                path: "/".into()
            }
        );
        assert!(malformed("http://192.0.2.80/a b").contains("' '"));
        assert!(malformed("http://192.0.2.80/a\r\nHost: x").contains("'\\r'"));
        assert!(malformed("http://192.0.2.80/é").contains("printable ASCII"));
        assert!(malformed(&format!("http://192.0.2.80/{}", "a".repeat(2000))).contains("1024"));
        assert!(malformed("http://example.com/").contains("host names"));
    }

    #[test]
    fn unknown_kinds_are_named() {
        assert_eq!(
            parse("https://192.0.2.1/"),
            Err(TargetError::UnknownKind("https".into()))
        );
        assert_eq!(
            parse("icmp://192.0.2.1"),
            Err(TargetError::UnknownKind("icmp".into()))
        );
    }

    #[test]
    fn query_targets_display_as_written() {
        for text in [
            "dns://192.0.2.53/example.com",
            "dns://[2001:db8::53]:5353/example.com",
            "http://192.0.2.80/generate_204",
            "http://[2001:db8::80]:8080/",
        ] {
            assert_eq!(query(text).to_string(), text);
        }
    }
}
