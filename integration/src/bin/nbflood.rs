//! nbflood: new UDP flows as fast as one thread can send them, for the data-path benchmark.
//! Every datagram goes to a new (source address, destination port) pair, so every packet is
//! a new connection for the router. Runs inside the benchmark's namespaces only; bounded in
//! time.
//!
//! nbflood ADDR --seconds S --from A,B,..  -> prints the number of datagrams sent

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
            _ => usage(),
        }
    }
    if from.is_empty() || seconds > 60 {
        usage();
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
            match sendmmsg(
                sock.as_raw_fd(),
                &mut headers,
                &slices,
                &addrs,
                [],
                MsgFlags::empty(),
            ) {
                Ok(results) => sent += results.count() as u64,
                Err(nix::errno::Errno::ENOBUFS | nix::errno::Errno::EAGAIN) => {}
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
