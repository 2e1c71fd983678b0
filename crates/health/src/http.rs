//! The HTTP request a health probe sends and how it reads the status line (pure).

/// Longest response head we read looking for the status line: a probe, not a client.
pub(crate) const STATUS_LINE_MAX: usize = 1024;

/// `GET path HTTP/1.1` with the headers a probe needs: `Host` (HTTP/1.1 requires it; the
/// target is an address, so is the host), `Connection: close` (the server closes after its
/// answer) and our `User-Agent`.
pub(crate) fn request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: nftbalance\r\n\r\n"
    )
    .into_bytes()
}

/// The `Host` value for a server at `addr`: the address, IPv6 in brackets, and the port
/// unless it is 80.
pub(crate) fn host(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("[{a}]"),
    };
    if addr.port() == 80 {
        ip
    } else {
        format!("{ip}:{}", addr.port())
    }
}

/// What the bytes received so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// No complete status line yet.
    Incomplete,
    /// `HTTP/1.x 2xx` or `3xx`.
    Good(u16),
    /// Another status, or not an HTTP/1.x status line.
    Bad(String),
}

/// Reads the status line at the start of `head`. `eof`: the server has closed (an incomplete
/// line is then bad).
pub(crate) fn status(head: &[u8], eof: bool) -> Status {
    let Some(end) = head.iter().position(|&b| b == b'\n') else {
        return if eof || head.len() >= STATUS_LINE_MAX {
            Status::Bad(if head.is_empty() {
                "closed without an answer".into()
            } else {
                "no HTTP status line".into()
            })
        } else {
            Status::Incomplete
        };
    };
    let line = String::from_utf8_lossy(&head[..end]);
    let line = line.trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let code: Option<u16> = (code.len() == 3).then(|| code.parse().ok()).flatten();
    match code {
        Some(c) if version.starts_with("HTTP/1.") && (200..400).contains(&c) => Status::Good(c),
        Some(c) if version.starts_with("HTTP/1.") => Status::Bad(format!("HTTP status {c}")),
        _ => Status::Bad(format!("not an HTTP/1.x status line: {:?}", short(line))),
    }
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_exactly_this() {
        assert_eq!(
            request("192.0.2.80", "/generate_204"),
            b"GET /generate_204 HTTP/1.1\r\nHost: 192.0.2.80\r\nConnection: close\r\n\
              User-Agent: nftbalance\r\n\r\n"
        );
        assert_eq!(host("192.0.2.80:80".parse().unwrap()), "192.0.2.80");
        assert_eq!(
            host("[2001:db8::80]:8080".parse().unwrap()),
            "[2001:db8::80]:8080"
        );
    }

    #[test]
    fn status_lines() {
        let cases: &[(&[u8], bool, Status)] = &[
            (b"HTTP/1.1 204 No Content\r\n", false, Status::Good(204)),
            (
                b"HTTP/1.0 302 Found\r\nLocation: /\r\n",
                false,
                Status::Good(302),
            ),
            (b"HTTP/1.1 200\r\n", false, Status::Good(200)),
            (
                b"HTTP/1.1 404 Not Found\r\n",
                false,
                Status::Bad("HTTP status 404".into()),
            ),
            (
                b"HTTP/1.1 503 Busy\n",
                false,
                Status::Bad("HTTP status 503".into()),
            ),
            (b"HTTP/1.1 20", false, Status::Incomplete),
            (
                b"HTTP/1.1 20",
                true,
                Status::Bad("no HTTP status line".into()),
            ),
            (b"", true, Status::Bad("closed without an answer".into())),
            (
                b"SSH-2.0-OpenSSH\r\n",
                false,
                Status::Bad("not an HTTP/1.x status line: \"SSH-2.0-OpenSSH\"".into()),
            ),
            (
                b"HTTP/2 200\r\n",
                false,
                Status::Bad("not an HTTP/1.x status line: \"HTTP/2 200\"".into()),
            ),
        ];
        for (head, eof, want) in cases {
            assert_eq!(
                &status(head, *eof),
                want,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        assert_eq!(
            status(&[b'x'; STATUS_LINE_MAX], false),
            Status::Bad("no HTTP status line".into())
        );
    }
}
