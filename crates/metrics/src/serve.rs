//! A small blocking HTTP/1.x server for `GET /metrics` on std's TcpListener: one thread, one
//! connection at a time, request heads of at most 8 KiB, read and write timeouts, and
//! `Connection: close`. A scrape every few seconds needs no more, and no async runtime.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::CONTENT_TYPE;

/// The largest request head read; anything longer is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client slower than this is dropped, so it cannot hold the only thread.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers requests on `listener` until the process ends: `GET /metrics` (or `HEAD`) with
/// `body()`'s text, 404 for other paths, 405 for other methods, 400/431 for bad requests.
pub fn serve(listener: TcpListener, body: impl Fn() -> Result<String, String>) {
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                if let Err(e) = answer(s, &body) {
                    log::debug!("metrics: {e}");
                }
            }
            Err(e) => {
                log::warn!("metrics: accepting a connection: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The request head, up to its blank line; None when it is too long.
fn read_head(s: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn answer(mut s: TcpStream, body: &impl Fn() -> Result<String, String>) -> std::io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some(head) = read_head(&mut s)? else {
        return respond(
            &mut s,
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n",
            true,
        );
    };
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => match body() {
            Ok(text) => respond(&mut s, "200 OK", CONTENT_TYPE, &text, method == "GET"),
            Err(e) => respond(
                &mut s,
                "503 Service Unavailable",
                "text/plain",
                &format!("{e}\n"),
                true,
            ),
        },
        ("GET" | "HEAD", "/") => respond(
            &mut s,
            "200 OK",
            "text/plain",
            "nftbalance: metrics at /metrics\n",
            method == "GET",
        ),
        ("GET" | "HEAD", _) => respond(&mut s, "404 Not Found", "text/plain", "not found\n", true),
        ("", _) => respond(
            &mut s,
            "400 Bad Request",
            "text/plain",
            "bad request\n",
            true,
        ),
        _ => respond(
            &mut s,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
            true,
        ),
    }
}

fn respond(
    s: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    if with_body {
        s.write_all(body.as_bytes())?;
    }
    s.flush()
}
