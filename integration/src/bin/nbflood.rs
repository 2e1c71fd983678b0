//! nbflood: new UDP flows as fast as one thread can send them, for the data-path benchmark.
//! Every datagram goes to a new (source address, destination port) pair, so every packet is
//! a new connection for the router. Runs inside the benchmark's namespaces only; bounded in
//! time.
//!
//! With `--established N --port P`, N long-lived flows instead (sockets connected to ADDR:P,
//! spread over the --from addresses): each sends one datagram and waits for the answer (so
//! the router's connection is established), then all send continuously.
//!
//! nbflood ADDR --seconds S --from A,B,.. [--established N --port P]  -> datagrams sent

use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrIn};

const BATCH: usize = 64;
const FIRST_PORT: u16 = 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: nbflood ADDR --seconds S --from A,B,..");
        std::process::exit(2)
    };
    let target: Ipv4Addr = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage());
    let mut seconds = 2u64;
    let mut from: Vec<Ipv4Addr> = Vec::new();
    let (mut flows, mut port_to) = (0usize, 0u16);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--seconds", Some(v)) => seconds = v.parse().unwrap_or_else(|_| usage()),
            ("--from", Some(v)) => {
                from = v
                    .split(',')
                    .map(|s| s.parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            ("--established", Some(v)) => flows = v.parse().unwrap_or_else(|_| usage()),
            ("--port", Some(v)) => port_to = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if from.is_empty() || seconds > 60 || flows > 1024 || (flows > 0 && port_to == 0) {
        usage();
    }
    if flows > 0 {
        let target = SocketAddrV4::new(target, port_to);
        println!("{}", established(target, &from, flows, seconds));
        return;
    }
    let sockets: Vec<UdpSocket> = from
        .iter()
        .map(|a| UdpSocket::bind(SocketAddrV4::new(*a, 0)).expect("bind"))
        .collect();
    let payload = [0u8; 16];
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut port = FIRST_PORT;
    let mut sent: u64 = 0;
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    'outer: while Instant::now() < deadline {
        for sock in &sockets {
            let addrs: Vec<Option<SockaddrIn>> = (0..BATCH)
                .map(|i| {
                    let p = FIRST_PORT
                        + ((port - FIRST_PORT) as usize + i) as u16 % (u16::MAX - FIRST_PORT);
                    Some(SockaddrIn::from(SocketAddrV4::new(target, p)))
                })
                .collect();
            let slices: Vec<[IoSlice<'_>; 1]> =
                (0..BATCH).map(|_| [IoSlice::new(&payload)]).collect();
            match send_batch(sock, &mut headers, &slices, &addrs) {
                Ok(n) => sent += n,
                Err(e) => {
                    eprintln!("nbflood: sendmmsg: {e}");
                    break 'outer;
                }
            }
        }
        port = FIRST_PORT + ((port - FIRST_PORT) as usize + BATCH) as u16 % (u16::MAX - FIRST_PORT);
    }
    println!("{sent}");
}

/// `flows` connected sockets: one datagram each way, then all send for `seconds`.
fn established(target: SocketAddrV4, from: &[Ipv4Addr], flows: usize, seconds: u64) -> u64 {
    let sockets: Vec<UdpSocket> = (0..flows)
        .map(|i| {
            let s = UdpSocket::bind(SocketAddrV4::new(from[i % from.len()], 0)).expect("bind");
            s.connect(target).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .collect();
    let mut buf = [0u8; 64];
    for s in &sockets {
        let answered = (0..25).any(|_| s.send(b"hello").is_ok() && s.recv(&mut buf).is_ok());
        assert!(answered, "nbflood: no answer from {target}");
    }
    let payload = [0u8; 16];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let none: Vec<Option<SockaddrIn>> = vec![None; BATCH];
    let slices: Vec<[IoSlice<'_>; 1]> = (0..BATCH).map(|_| [IoSlice::new(&payload)]).collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        for s in &sockets {
            sent += send_batch(s, &mut headers, &slices, &none)
                .unwrap_or_else(|e| panic!("nbflood: sendmmsg: {e}"));
        }
    }
    sent
}

/// One `sendmmsg` of the batch: datagrams sent, 0 when the queue is full (ENOBUFS, EAGAIN).
fn send_batch(
    sock: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrIn>,
    slices: &[[IoSlice<'_>; 1]],
    addrs: &[Option<SockaddrIn>],
) -> nix::Result<u64> {
    match sendmmsg(
        sock.as_raw_fd(),
        headers,
        slices,
        addrs,
        [],
        MsgFlags::empty(),
    ) {
        Ok(results) => Ok(results.count() as u64),
        Err(nix::errno::Errno::ENOBUFS | nix::errno::Errno::EAGAIN) => Ok(0),
        Err(e) => Err(e),
    }
}
