//! Probes that leave through the uplink they test.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, SocketAddrV6, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::icmp::{self, Expect, Verdict, COOKIE_LEN};
use crate::{dns, http};

/// One health probe of one gateway: every target is tried through the gateway's uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The uplink's interface: every socket is bound to it (`SO_BINDTODEVICE`), so the probe
    /// can neither leave nor be answered through another interface. Empty: not bound.
    pub interface: String,
    /// The gateway's mark (`SO_MARK`), so that the policy routing rule of the gateway
    /// (`fwmark → its table`) routes the probe like the gateway's balanced traffic. 0: not set.
    pub mark: u32,
    /// The gateway's source address. Used for the targets of its address family; targets of
    /// the other family get the address the kernel chooses for the route.
    pub source: Option<IpAddr>,
    /// What to probe, all at once.
    pub targets: Vec<Target>,
    /// How many targets must answer for the probe to succeed (0 is taken as 1; more than
    /// there are targets never succeeds).
    pub reliability: u32,
    /// Budget for the whole probe (all targets are probed at once within it).
    pub timeout: Duration,
}

/// A probe target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// ICMP echo (ICMPv6 echo for an IPv6 address); answered by a matching echo reply.
    Icmp(IpAddr),
    /// TCP connect; answered when the handshake completes (the connection is then reset).
    Tcp(SocketAddr),
    /// A UDP DNS query for `name` (type A, recursion desired, a random id); answered by a
    /// response with our id and question and rcode NOERROR or NXDOMAIN (see [`crate::dns`]'s
    /// `classify` for why those two).
    Dns { server: SocketAddr, name: String },
    /// `GET path HTTP/1.1` over TCP; answered by a status line `HTTP/1.x 2xx` or `3xx`.
    Http { addr: SocketAddr, path: String },
}

impl Target {
    /// The address the target is probed at.
    pub fn addr(&self) -> IpAddr {
        match self {
            Target::Icmp(a) => *a,
            Target::Tcp(s) | Target::Dns { server: s, .. } | Target::Http { addr: s, .. } => s.ip(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Icmp(a) => write!(f, "icmp {a}"),
            Target::Tcp(a) => write!(f, "tcp {a}"),
            Target::Dns { server, name } => write!(f, "dns {server} {name}"),
            Target::Http { addr, path } => write!(f, "http {addr}{path}"),
        }
    }
}

/// Which kind of socket sends ICMP echo requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IcmpSocket {
    /// A raw socket; if that is not permitted (no CAP_NET_RAW), a ping socket.
    #[default]
    Auto,
    /// A raw socket (`SOCK_RAW`, needs CAP_NET_RAW): our identifier, replies matched by
    /// identifier, sequence number, cookie and source; ICMP errors quoting the request end the
    /// target early.
    Raw,
    /// A ping socket (`SOCK_DGRAM` + `IPPROTO_ICMP`/`ICMPV6`, allowed when the group is in
    /// `net.ipv4.ping_group_range`): the kernel picks the identifier and delivers only replies
    /// to it; matched by sequence number, cookie and source. ICMP errors are not seen, so an
    /// unreachable target takes the whole timeout.
    Datagram,
}

/// The result for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetResult {
    /// It answered after this round-trip time.
    Answered(Duration),
    /// It did not answer: the reason (a socket error, an ICMP error, or no answer in time).
    Failed(String),
    /// Still outstanding when enough other targets had answered (the probe returns then).
    NotAwaited,
}

/// One target's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetOutcome {
    /// the target
    pub target: Target,
    /// what happened
    pub result: TargetResult,
}

/// The outcome of [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// At least [`Probe::reliability`] targets answered within the timeout.
    pub ok: bool,
    /// Time from the start until enough targets had answered, or until too many had failed
    /// for that, or the timeout.
    pub elapsed: Duration,
    /// The round-trip time of the round: when it succeeded, the `reliability`-th fastest
    /// answer (the time the round took to succeed); `None` when it failed.
    pub rtt: Option<Duration>,
    /// Per target, in the order of [`Probe::targets`].
    pub targets: Vec<TargetOutcome>,
}

impl ProbeOutcome {
    /// Why the probe failed (every target's reason, `"; "`-separated), `None` if it succeeded.
    pub fn reason(&self) -> Option<String> {
        if self.ok {
            return None;
        }
        if self.targets.is_empty() {
            return Some("no probe targets".into());
        }
        let parts: Vec<String> = self
            .targets
            .iter()
            .map(|t| match &t.result {
                TargetResult::Failed(r) => format!("{}: {r}", t.target),
                TargetResult::Answered(_) => format!("{}: answered", t.target),
                TargetResult::NotAwaited => format!("{}: not awaited", t.target),
            })
            .collect();
        Some(parts.join("; "))
    }

    /// The first target (in [`Probe::targets`] order) that answered, with its round-trip time.
    pub fn answered_by(&self) -> Option<(&Target, Duration)> {
        self.answered().next()
    }

    /// Every target that answered, with its round-trip time.
    pub fn answered(&self) -> impl Iterator<Item = (&Target, Duration)> {
        self.targets.iter().filter_map(|t| match t.result {
            TargetResult::Answered(rtt) => Some((&t.target, rtt)),
            _ => None,
        })
    }
}

/// Probes all targets of `p` concurrently through the uplink (see [`Probe`]) and returns as soon
/// as `p.reliability` of them have answered, or when so many have failed that the rest cannot
/// make up the number, or when `p.timeout` has passed, whichever comes first. Never blocks longer than the timeout (plus scheduling slack); never fails:
/// errors (no such interface, no route, permission) are failed targets with a reason.
/// ICMP uses [`IcmpSocket::Auto`].
pub fn probe(p: &Probe) -> ProbeOutcome {
    probe_with(p, IcmpSocket::Auto)
}

/// [`probe`] with a chosen kind of ICMP socket.
pub fn probe_with(p: &Probe, icmp_socket: IcmpSocket) -> ProbeOutcome {
    let start = Instant::now();
    let deadline = start + p.timeout;
    let needed = p.reliability.max(1) as usize;
    let mut results: Vec<Option<TargetResult>> = vec![None; p.targets.len()];
    let mut pending: Vec<(usize, Active)> = Vec::new();
    for (i, t) in p.targets.iter().enumerate() {
        let started = match t {
            Target::Icmp(dst) => start_icmp(p, *dst, icmp_socket),
            Target::Tcp(dst) => start_tcp(p, *dst, start),
            Target::Dns { server, name } => start_dns(p, *server, name),
            Target::Http { addr, path } => start_http(p, *addr, path),
        };
        match started {
            Ok(Started::Done(r)) => results[i] = Some(r),
            Ok(Started::Pending(a)) => pending.push((i, a)),
            Err(reason) => results[i] = Some(TargetResult::Failed(reason)),
        }
    }
    let answers = |results: &[Option<TargetResult>]| {
        results
            .iter()
            .filter(|r| matches!(r, Some(TargetResult::Answered(_))))
            .count()
    };
    let mut ok = answers(&results) >= needed;

    // Wait while enough answers are still possible.
    while !ok && answers(&results) + pending.len() >= needed && !pending.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let remaining = deadline - now;
        // round up so that we never wake (and spin) just before the deadline
        let ms = remaining.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let revents: Vec<PollFlags> = {
            let mut fds: Vec<PollFd<'_>> = pending
                .iter()
                .map(|(_, a)| PollFd::new(a.fd(), a.events()))
                .collect();
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    for (i, _) in pending.drain(..) {
                        results[i] = Some(TargetResult::Failed(format!("poll: {e}")));
                    }
                    break;
                }
            }
            fds.iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect()
        };
        let mut still = Vec::with_capacity(pending.len());
        for ((i, mut a), ev) in pending.into_iter().zip(revents) {
            if ev.is_empty() {
                still.push((i, a));
                continue;
            }
            match a.ready(start) {
                Some(r) => results[i] = Some(r),
                None => still.push((i, a)),
            }
        }
        pending = still;
        ok = answers(&results) >= needed;
    }
    let elapsed = start.elapsed();
    let rtt = ok
        .then(|| {
            let mut rtts: Vec<Duration> = results
                .iter()
                .filter_map(|r| match r {
                    Some(TargetResult::Answered(d)) => Some(*d),
                    _ => None,
                })
                .collect();
            rtts.sort_unstable();
            rtts.get(needed - 1).copied()
        })
        .flatten();
    let timed_out = Instant::now() >= deadline;
    for (i, _) in pending {
        results[i] = Some(if ok || !timed_out {
            TargetResult::NotAwaited
        } else {
            TargetResult::Failed(format!("no answer within {:?}", p.timeout))
        });
    }
    ProbeOutcome {
        ok,
        elapsed,
        rtt,
        targets: p
            .targets
            .iter()
            .zip(results)
            .map(|(t, r)| TargetOutcome {
                target: t.clone(),
                result: r.unwrap_or(TargetResult::NotAwaited),
            })
            .collect(),
    }
}

enum Started {
    Done(TargetResult),
    Pending(Active),
}

enum Active {
    Icmp {
        // std's UdpSocket is used only as a safe fd wrapper with `recv_from(&mut [u8])` (the
        // socket is a raw or ping ICMP socket; the calls are plain recvfrom/sendto).
        sock: UdpSocket,
        v4_header: bool,
        dst: IpAddr,
        id: Option<u16>,
        seq: u16,
        cookie: [u8; COOKIE_LEN],
    },
    Tcp(Socket),
    /// A connected UDP socket (only the server's datagrams reach it) and the query sent.
    Dns {
        sock: UdpSocket,
        query: Vec<u8>,
    },
    Http(Http),
}

/// An HTTP probe, in the order of its steps.
enum Http {
    /// The TCP handshake is under way; the request waits.
    Connecting { sock: Socket, request: Vec<u8> },
    /// Connected: sending what is left of the request.
    Sending { stream: TcpStream, left: Vec<u8> },
    /// Request sent: reading until the status line is complete.
    Reading { stream: TcpStream, head: Vec<u8> },
    /// Decided (a transient step while `ready` moves between the others).
    Done,
}

/// Whether a connect on a non-blocking socket that poll reported ready has completed.
fn connected(s: &Socket) -> Result<(), String> {
    match s.take_error() {
        Ok(None) => s
            .peer_addr()
            .map(|_| ())
            .map_err(|e| format!("connect: {e}")),
        Ok(Some(e)) | Err(e) => Err(format!("connect: {e}")),
    }
}

impl Http {
    /// Moves as far as the socket allows: `Some` when the target is decided.
    fn advance(&mut self, start: Instant) -> Option<TargetResult> {
        loop {
            match std::mem::replace(self, Http::Done) {
                Http::Connecting { sock, request } => {
                    if let Err(reason) = connected(&sock) {
                        return Some(TargetResult::Failed(reason));
                    }
                    *self = Http::Sending {
                        stream: TcpStream::from(sock),
                        left: request,
                    };
                }
                Http::Sending {
                    mut stream,
                    mut left,
                } => match stream.write(&left) {
                    Ok(n) if n == left.len() => {
                        *self = Http::Reading {
                            stream,
                            head: Vec::new(),
                        }
                    }
                    Ok(n) => {
                        left.drain(..n);
                        *self = Http::Sending { stream, left };
                        return None;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        *self = Http::Sending { stream, left };
                        return None;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        *self = Http::Sending { stream, left }
                    }
                    Err(e) => return Some(TargetResult::Failed(format!("send: {e}"))),
                },
                Http::Reading {
                    mut stream,
                    mut head,
                } => {
                    let mut buf = [0u8; 512];
                    let eof = match stream.read(&mut buf) {
                        Ok(0) => true,
                        Ok(n) => {
                            head.extend_from_slice(&buf[..n]);
                            false
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            *self = Http::Reading { stream, head };
                            return None;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                            *self = Http::Reading { stream, head };
                            continue;
                        }
                        Err(e) => return Some(TargetResult::Failed(format!("receive: {e}"))),
                    };
                    match http::status(&head, eof) {
                        http::Status::Incomplete => *self = Http::Reading { stream, head },
                        http::Status::Good(_) => {
                            return Some(TargetResult::Answered(start.elapsed()))
                        }
                        http::Status::Bad(why) => return Some(TargetResult::Failed(why)),
                    }
                }
                Http::Done => return Some(TargetResult::Failed("probe already decided".into())),
            }
        }
    }
}

impl Active {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Active::Icmp { sock, .. } | Active::Dns { sock, .. } => sock.as_fd(),
            Active::Tcp(s) | Active::Http(Http::Connecting { sock: s, .. }) => s.as_fd(),
            Active::Http(Http::Sending { stream, .. } | Http::Reading { stream, .. }) => {
                stream.as_fd()
            }
            Active::Http(Http::Done) => unreachable!("a decided probe is not polled"),
        }
    }

    fn events(&self) -> PollFlags {
        match self {
            Active::Icmp { .. } | Active::Dns { .. } => PollFlags::POLLIN,
            Active::Tcp(_) => PollFlags::POLLOUT,
            Active::Http(Http::Connecting { .. } | Http::Sending { .. }) => PollFlags::POLLOUT,
            Active::Http(_) => PollFlags::POLLIN,
        }
    }

    /// Handles readiness: `Some` when the target is decided.
    fn ready(&mut self, start: Instant) -> Option<TargetResult> {
        match self {
            Active::Tcp(s) => Some(match connected(s) {
                Ok(()) => TargetResult::Answered(start.elapsed()),
                Err(reason) => TargetResult::Failed(reason),
            }),
            Active::Http(h) => h.advance(start),
            Active::Dns { sock, query } => {
                let mut buf = [0u8; 1500];
                loop {
                    let n = match sock.recv(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Some(TargetResult::Failed(format!("receive: {e}"))),
                    };
                    match dns::classify(&buf[..n], query) {
                        dns::Answer::Answered => {
                            return Some(TargetResult::Answered(start.elapsed()))
                        }
                        dns::Answer::Refused(why) => return Some(TargetResult::Failed(why)),
                        dns::Answer::Other => continue,
                    }
                }
            }
            Active::Icmp {
                sock,
                v4_header,
                dst,
                id,
                seq,
                cookie,
            } => {
                let expect = Expect {
                    v6: dst.is_ipv6(),
                    id: *id,
                    seq: *seq,
                    cookie,
                };
                let mut buf = [0u8; 2048];
                loop {
                    let (n, from) = match sock.recv_from(&mut buf) {
                        Ok(x) => x,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Some(TargetResult::Failed(format!("receive: {e}"))),
                    };
                    let data = &buf[..n];
                    let msg = if *v4_header {
                        match icmp::strip_ipv4_header(data) {
                            Some(m) => m,
                            None => continue,
                        }
                    } else {
                        data
                    };
                    match icmp::classify(msg, &expect) {
                        Some(Verdict::Reply) if from.ip() == *dst => {
                            return Some(TargetResult::Answered(start.elapsed()))
                        }
                        Some(Verdict::Error(what)) => {
                            return Some(TargetResult::Failed(format!("{what} from {}", from.ip())))
                        }
                        _ => continue,
                    }
                }
            }
        }
    }
}

fn domain_of(a: IpAddr) -> Domain {
    if a.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    }
}

/// Binds to the uplink, sets the mark and the source address (port 0); non-blocking.
fn setup(p: &Probe, sock: &Socket, dst: IpAddr) -> Result<(), String> {
    sock.set_nonblocking(true)
        .map_err(|e| format!("set non-blocking: {e}"))?;
    if !p.interface.is_empty() {
        sock.bind_device(Some(p.interface.as_bytes()))
            .map_err(|e| format!("bind to interface {}: {e}", p.interface))?;
    }
    if p.mark != 0 {
        sock.set_mark(p.mark)
            .map_err(|e| format!("set mark {:#x}: {e}", p.mark))?;
    }
    if let Some(src) = p.source.filter(|s| s.is_ipv6() == dst.is_ipv6()) {
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .map_err(|e| format!("bind to source {src}: {e}"))?;
    }
    Ok(())
}

/// Destination socket address; link-local IPv6 gets the uplink's interface as scope.
fn dest(p: &Probe, dst: IpAddr, port: u16) -> SocketAddr {
    match dst {
        IpAddr::V6(a) if a.is_unicast_link_local() && !p.interface.is_empty() => {
            let scope = nix::net::if_::if_nametoindex(p.interface.as_str()).unwrap_or(0);
            SocketAddr::V6(SocketAddrV6::new(a, port, 0, scope))
        }
        _ => SocketAddr::new(dst, port),
    }
}

fn start_tcp(p: &Probe, dst: SocketAddr, start: Instant) -> Result<Started, String> {
    let sock = Socket::new(domain_of(dst.ip()), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("socket: {e}"))?;
    setup(p, &sock, dst.ip())?;
    // close with a reset: a health check must not leave TIME_WAIT sockets behind every interval
    sock.set_linger(Some(Duration::ZERO))
        .map_err(|e| format!("set linger: {e}"))?;
    let to = dest(p, dst.ip(), dst.port());
    match sock.connect(&SockAddr::from(to)) {
        Ok(()) => Ok(Started::Done(TargetResult::Answered(start.elapsed()))),
        Err(e) if e.raw_os_error() == Some(Errno::EINPROGRESS as i32) => {
            Ok(Started::Pending(Active::Tcp(sock)))
        }
        Err(e) => Err(format!("connect: {e}")),
    }
}

fn open_icmp(dst: IpAddr, kind: IcmpSocket) -> Result<(Socket, bool), String> {
    let proto = if dst.is_ipv6() {
        Protocol::ICMPV6
    } else {
        Protocol::ICMPV4
    };
    let open = |ty| Socket::new(domain_of(dst), ty, Some(proto));
    match kind {
        IcmpSocket::Raw => open(Type::RAW)
            .map(|s| (s, true))
            .map_err(|e| format!("raw ICMP socket: {e}")),
        IcmpSocket::Datagram => open(Type::DGRAM)
            .map(|s| (s, false))
            .map_err(|e| format!("ping socket: {e}")),
        IcmpSocket::Auto => match open(Type::RAW) {
            Ok(s) => Ok((s, true)),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                open(Type::DGRAM).map(|s| (s, false)).map_err(|e2| {
                    format!(
                        "raw ICMP socket: {e}; ping socket: {e2} (see net.ipv4.ping_group_range)"
                    )
                })
            }
            Err(e) => Err(format!("raw ICMP socket: {e}")),
        },
    }
}

fn start_icmp(p: &Probe, dst: IpAddr, kind: IcmpSocket) -> Result<Started, String> {
    let (sock, raw) = open_icmp(dst, kind)?;
    setup(p, &sock, dst)?;
    let sock = UdpSocket::from(sock);
    let r = random();
    let id = (r & 0xffff) as u16;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut cookie = [0u8; COOKIE_LEN];
    cookie[..8].copy_from_slice(&r.to_be_bytes());
    cookie[8..].copy_from_slice(&random().to_be_bytes());
    let msg = icmp::echo_request(dst.is_ipv6(), id, seq, &cookie);
    let to = dest(p, dst, 0);
    loop {
        match sock.send_to(&msg, to) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("send: {e}")),
        }
    }
    Ok(Started::Pending(Active::Icmp {
        sock,
        v4_header: raw && dst.is_ipv4(),
        dst,
        id: raw.then_some(id),
        seq,
        cookie,
    }))
}

fn start_dns(p: &Probe, server: SocketAddr, name: &str) -> Result<Started, String> {
    let query = dns::query((random() & 0xffff) as u16, name)?;
    let sock = Socket::new(domain_of(server.ip()), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| format!("socket: {e}"))?;
    setup(p, &sock, server.ip())?;
    // connected: the kernel delivers only the server's datagrams, and an ICMP port
    // unreachable ends the target at once (ECONNREFUSED)
    let to = dest(p, server.ip(), server.port());
    sock.connect(&SockAddr::from(to))
        .map_err(|e| format!("connect: {e}"))?;
    let sock = UdpSocket::from(sock);
    loop {
        match sock.send(&query) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("send: {e}")),
        }
    }
    Ok(Started::Pending(Active::Dns { sock, query }))
}

fn start_http(p: &Probe, addr: SocketAddr, path: &str) -> Result<Started, String> {
    let sock = Socket::new(domain_of(addr.ip()), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("socket: {e}"))?;
    setup(p, &sock, addr.ip())?;
    // as for TCP: a reset when we close, never a TIME_WAIT socket per interval
    sock.set_linger(Some(Duration::ZERO))
        .map_err(|e| format!("set linger: {e}"))?;
    let request = http::request(&http::host(addr), path);
    let to = dest(p, addr.ip(), addr.port());
    match sock.connect(&SockAddr::from(to)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(Errno::EINPROGRESS as i32) => {}
        Err(e) => return Err(format!("connect: {e}")),
    }
    Ok(Started::Pending(Active::Http(Http::Connecting {
        sock,
        request,
    })))
}

static SEQ: AtomicU16 = AtomicU16::new(1);
static NONCE: AtomicU64 = AtomicU64::new(0);

/// Unpredictable enough to keep concurrent probes (of this and other processes) apart: std's
/// randomly keyed SipHash over a counter and the time.
fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(NONCE.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_targets_fails_at_once() {
        let out = probe(&Probe {
            interface: String::new(),
            mark: 0,
            source: None,
            targets: vec![],
            reliability: 1,
            timeout: Duration::from_secs(5),
        });
        assert!(!out.ok);
        assert!(out.elapsed < Duration::from_secs(1));
        assert_eq!(out.reason().as_deref(), Some("no probe targets"));
    }

    #[test]
    fn reason_lists_every_target() {
        let out = ProbeOutcome {
            ok: false,
            elapsed: Duration::from_millis(500),
            rtt: None,
            targets: vec![
                TargetOutcome {
                    target: Target::Icmp("192.0.2.1".parse().unwrap()),
                    result: TargetResult::Failed("no answer within 500ms".into()),
                },
                TargetOutcome {
                    target: Target::Tcp("[2001:db8::1]:443".parse().unwrap()),
                    result: TargetResult::Failed("connect: Connection refused".into()),
                },
            ],
        };
        assert_eq!(
            out.reason().unwrap(),
            "icmp 192.0.2.1: no answer within 500ms; tcp [2001:db8::1]:443: connect: Connection refused"
        );
        assert_eq!(out.answered_by(), None);
    }

    #[test]
    fn unknown_interface_is_a_failure_with_reason() {
        let out = probe(&Probe {
            interface: "nbh-no-such-if".into(),
            mark: 0,
            source: None,
            targets: vec![Target::Tcp("127.0.0.1:9".parse().unwrap())],
            reliability: 1,
            timeout: Duration::from_millis(200),
        });
        assert!(!out.ok);
        let reason = out.reason().unwrap();
        assert!(
            reason.contains("bind to interface nbh-no-such-if"),
            "{reason}"
        );
    }

    #[test]
    fn random_values_differ() {
        assert_ne!(random(), random());
    }
}
