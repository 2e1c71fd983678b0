//! nbtraffic: the traffic helper of the integration tests. Runs inside the test's network
//! namespaces only; every loop is bounded in count and time.
//!
//! serve  ADDR:PORT [--udp]          answer each connection (datagram) with the source address
//!                                   it came from, then echo (TCP) until the peer closes.
//! connect ADDR:PORT --count N [--from A,B,..] [--udp]
//!                                   N sequential connections; prints one JSON line each.
//! stream ADDR:PORT --count N --seconds S [--from A,B,..]
//!                                   N parallel echo streams for S seconds; one JSON line each.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Default connect/read timeout; `--timeout-ms` changes it.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// A serve process lives at most this long, even if nobody kills it.
const SERVE_LIFETIME: Duration = Duration::from_secs(600);
const CHUNK: usize = 16 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("connect") => connect(&args[1..]),
        Some("stream") => stream(&args[1..]),
        _ => Err("usage: nbtraffic serve|connect|stream ADDR:PORT [options]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nbtraffic: {e}");
            ExitCode::from(2)
        }
    }
}

struct Opts {
    target: SocketAddr,
    count: usize,
    seconds: u64,
    from: Vec<IpAddr>,
    udp: bool,
    timeout: Duration,
}

fn opts(args: &[String]) -> Result<Opts, String> {
    let target = args
        .first()
        .ok_or("missing ADDR:PORT")?
        .parse::<SocketAddr>()
        .map_err(|e| format!("ADDR:PORT: {e}"))?;
    let mut o = Opts {
        target,
        count: 1,
        seconds: 5,
        from: Vec::new(),
        udp: false,
        timeout: IO_TIMEOUT,
    };
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--count" => o.count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--seconds" => o.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--from" => {
                o.from = value()?
                    .split(',')
                    .map(|s| s.parse::<IpAddr>().map_err(|e| format!("--from {s}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--udp" => o.udp = true,
            "--timeout-ms" => {
                let ms: u64 = value()?.parse().map_err(|e| format!("--timeout-ms: {e}"))?;
                o.timeout = Duration::from_millis(ms.clamp(10, 60_000));
            }
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.count > 100_000 || o.seconds > 600 {
        return Err("--count at most 100000, --seconds at most 600".into());
    }
    Ok(o)
}

fn serve(args: &[String]) -> Result<(), String> {
    let o = opts(args)?;
    let deadline = Instant::now() + SERVE_LIFETIME;
    if o.udp {
        let sock = UdpSocket::bind(o.target).map_err(|e| format!("bind {}: {e}", o.target))?;
        sock.set_read_timeout(Some(Duration::from_millis(200))).ok();
        println!("ready");
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(peer.ip().to_string().as_bytes(), peer);
            }
        }
        return Ok(());
    }
    let listener = TcpListener::bind(o.target).map_err(|e| format!("bind {}: {e}", o.target))?;
    println!("ready");
    std::io::stdout().flush().ok();
    for conn in listener.incoming() {
        if Instant::now() > deadline {
            break;
        }
        let Ok(mut s) = conn else { continue };
        thread::spawn(move || {
            let Ok(peer) = s.peer_addr() else { return };
            s.set_read_timeout(Some(Duration::from_secs(30))).ok();
            if s.write_all(format!("{}\n", peer.ip()).as_bytes()).is_err() {
                return;
            }
            let mut buf = vec![0u8; CHUNK];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

fn tcp_connect(
    from: Option<IpAddr>,
    to: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(src) = from {
        sock.bind(&SocketAddr::new(src, 0).into())?;
    }
    sock.connect_timeout(&to.into(), timeout)?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// Opens a connection and reads the address the server saw.
fn handshake(
    from: Option<IpAddr>,
    to: SocketAddr,
    timeout: Duration,
) -> Result<(TcpStream, String), String> {
    let s = tcp_connect(from, to, timeout).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s.try_clone().map_err(|e| e.to_string())?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok((s, line.trim().to_string()))
}

fn json_str(s: &str) -> String {
    format!("{s:?}")
}

fn connect(args: &[String]) -> Result<(), String> {
    let o = opts(args)?;
    for i in 0..o.count {
        let from = (!o.from.is_empty()).then(|| o.from[i % o.from.len()]);
        let shown_from = from.map(|a| a.to_string()).unwrap_or_default();
        let result = if o.udp {
            udp_ask(from, o.target, o.timeout)
        } else {
            handshake(from, o.target, o.timeout).map(|(_, seen)| seen)
        };
        match result {
            Ok(seen) => println!(
                "{{\"i\":{i},\"from\":{},\"seen\":{},\"ok\":true}}",
                json_str(&shown_from),
                json_str(&seen)
            ),
            Err(e) => println!(
                "{{\"i\":{i},\"from\":{},\"ok\":false,\"error\":{}}}",
                json_str(&shown_from),
                json_str(&e)
            ),
        }
    }
    Ok(())
}

fn udp_ask(from: Option<IpAddr>, to: SocketAddr, timeout: Duration) -> Result<String, String> {
    let local = match (from, to) {
        (Some(a), _) => SocketAddr::new(a, 0),
        (None, SocketAddr::V4(_)) => "0.0.0.0:0".parse().unwrap(),
        (None, SocketAddr::V6(_)) => "[::]:0".parse().unwrap(),
    };
    let sock = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    sock.send_to(b"?", to).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 256];
    let (n, _) = sock.recv_from(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).to_string())
}

fn stream(args: &[String]) -> Result<(), String> {
    let o = opts(args)?;
    let duration = Duration::from_secs(o.seconds);
    let handles: Vec<_> = (0..o.count)
        .map(|i| {
            let from = (!o.from.is_empty()).then(|| o.from[i % o.from.len()]);
            let (to, timeout) = (o.target, o.timeout);
            thread::spawn(move || one_stream(i, from, to, duration, timeout))
        })
        .collect();
    for h in handles {
        println!(
            "{}",
            h.join()
                .unwrap_or_else(|_| "{\"ok\":false,\"error\":\"panic\"}".into())
        );
    }
    Ok(())
}

/// Echo round trips for `duration`; any error or a round trip slower than the timeout ends
/// the stream and is reported.
fn one_stream(
    i: usize,
    from: Option<IpAddr>,
    to: SocketAddr,
    duration: Duration,
    timeout: Duration,
) -> String {
    let (mut s, seen) = match handshake(from, to, timeout) {
        Ok(x) => x,
        Err(e) => return format!("{{\"i\":{i},\"ok\":false,\"error\":{}}}", json_str(&e)),
    };
    let start = Instant::now();
    let payload = vec![0x5au8; CHUNK];
    let mut back = vec![0u8; CHUNK];
    let mut bytes: u64 = 0;
    let mut slowest = Duration::ZERO;
    while start.elapsed() < duration {
        let t = Instant::now();
        if let Err(e) = s.write_all(&payload).and_then(|()| s.read_exact(&mut back)) {
            return format!(
                "{{\"i\":{i},\"seen\":{},\"ok\":false,\"bytes\":{bytes},\"error\":{}}}",
                json_str(&seen),
                json_str(&e.to_string())
            );
        }
        slowest = slowest.max(t.elapsed());
        bytes += CHUNK as u64;
        thread::sleep(Duration::from_millis(10));
    }
    format!(
        "{{\"i\":{i},\"seen\":{},\"ok\":true,\"bytes\":{bytes},\"slowest_ms\":{}}}",
        json_str(&seen),
        slowest.as_millis()
    )
}
