//! Network-namespace lab for the probe tests. Every test builds its own namespaces
//! (`nftbalance_testns::Netns`, deleted on drop, also when the test panics); nothing is
//! changed in the root namespace. Tests fail loudly without root; they never skip.
//!
//! ```text
//!            up1 10.1.0.1 ─── dn 10.1.0.2 [p1] srv 10.3.1.1 ─── s1 10.3.1.2
//!  [router]                                                           [server] lo 10.9.9.9
//!            up2 10.2.0.1 ─── dn 10.2.0.2 [p2] srv 10.3.2.1 ─── s2 10.3.2.2      fd00:9::9
//! ```
//! IPv6 alongside: fd00:<i>::1/2 on the uplinks, fd00:3:<i>::1/2 between provider and server.
//! The router has no default route in main: `fwmark i lookup 10i`, table 10i has the default
//! route via provider i (IPv4 and IPv6). Providers forward 10.9.9.0/24 and fd00:9::/64 to the
//! server (which owns only .9 / ::9, so .10 / ::10 are silent black holes) and count what they
//! forward to 10.9.9.9 / fd00:9::9 in the named counter `inet probe to_server`. The server
//! listens on TCP 8080 (IPv4 and IPv6) and never answers there; [`Lab::dns_responder`] and
//! [`Lab::http_responder`] answer DNS on port 53 and HTTP on port 80 (IPv4 and IPv6), each in
//! threads of the test process over sockets opened inside the server namespace, stopped when
//! the [`Responder`] is dropped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nftbalance_testns::Netns;

/// The router, two providers and a server (see the module docs).
#[derive(Debug)]
pub struct Lab {
    pub router: Netns,
    pub providers: [Netns; 2],
    pub server: Netns,
    _listeners: Vec<TcpListener>,
}

pub const SERVER4: &str = "10.9.9.9";
pub const SERVER6: &str = "fd00:9::9";
/// Routed to the server, which does not own it and does not forward: a silent black hole.
pub const DEAD4: &str = "10.9.9.10";
pub const DEAD6: &str = "fd00:9::10";
pub const PORT: u16 = 8080;
pub const DNS_PORT: u16 = 53;
pub const HTTP_PORT: u16 = 80;
/// How late the responders answer `slow.test` and `/slow`.
pub const SLOW: Duration = Duration::from_millis(300);
/// How often a responder thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(20);

/// Responder threads; stopped and joined on drop (also when the test panics).
#[derive(Debug)]
pub struct Responder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// HTTP: every request received, as text.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The DNS answer the responder gives to `query`: by name, `slow.test` (NOERROR after
/// [`SLOW`]), `refused.test` (REFUSED), `nx.test` (NXDOMAIN), anything else NOERROR; no
/// records. `None` for what is not a query.
fn dns_answer(query: &[u8]) -> Option<(Vec<u8>, String)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let name = labels.join(".");
    let end = at + 4;
    let mut answer = query.get(..end)?.to_vec();
    let rcode = match name.as_str() {
        "refused.test" => 5,
        "nx.test" => 3,
        _ => 0,
    };
    answer[2] = 0x80 | (query[2] & 0x01); // QR, RD as asked
    answer[3] = 0x80 | rcode; // RA
    answer[6..12].fill(0);
    Some((answer, name))
}

fn http_answer(request: &str) -> (&'static str, bool) {
    let path = request.split(' ').nth(1).unwrap_or("");
    match path {
        "/slow" => ("200 OK", true),
        "/missing" => ("404 Not Found", false),
        "/moved" => ("302 Found", false),
        _ => ("204 No Content", false),
    }
}

fn serve_http(mut conn: TcpStream, requests: &Mutex<Vec<String>>) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let request = String::from_utf8_lossy(&head).into_owned();
    let (status, slow) = http_answer(&request);
    requests.lock().unwrap().push(request);
    if slow {
        std::thread::sleep(SLOW);
    }
    let _ = conn.write_all(
        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
}

impl Lab {
    pub fn new() -> Lab {
        let router = Netns::new("rtr");
        let providers = [Netns::new("isp1"), Netns::new("isp2")];
        let server = Netns::new("srv");
        for ns in [&router, &providers[0], &providers[1], &server] {
            // no duplicate address detection: otherwise the link-local addresses stay
            // tentative for ~2 s and neighbour discovery from addresses not on the link
            // (the server's loopback address) stalls until then; static IPv6 addresses survive
            // a link going down (by default the kernel flushes them, and nobody here re-adds
            // them as a network manager would)
            ns.sysctl(&[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.keep_addr_on_down=1",
                "net.ipv6.conf.default.keep_addr_on_down=1",
            ]);
        }
        router.sysctl(&[
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ]);
        server.cmd("ip addr add 10.9.9.9/32 dev lo");
        server.cmd("ip addr add fd00:9::9/128 dev lo nodad");
        for (k, p) in providers.iter().enumerate() {
            let i = k + 1;
            router.cmd(&format!(
                "ip link add up{i} type veth peer name dn netns {}",
                p.name()
            ));
            p.cmd(&format!(
                "ip link add srv type veth peer name s{i} netns {}",
                server.name()
            ));
            router.cmd(&format!("ip addr add 10.{i}.0.1/24 dev up{i}"));
            router.cmd(&format!("ip addr add fd00:{i}::1/64 dev up{i} nodad"));
            p.cmd(&format!("ip addr add 10.{i}.0.2/24 dev dn"));
            p.cmd(&format!("ip addr add fd00:{i}::2/64 dev dn nodad"));
            p.cmd(&format!("ip addr add 10.3.{i}.1/24 dev srv"));
            p.cmd(&format!("ip addr add fd00:3:{i}::1/64 dev srv nodad"));
            server.cmd(&format!("ip addr add 10.3.{i}.2/24 dev s{i}"));
            server.cmd(&format!("ip addr add fd00:3:{i}::2/64 dev s{i} nodad"));
            router.cmd(&format!("ip link set up{i} up"));
            p.cmd("ip link set dn up");
            p.cmd("ip link set srv up");
            server.cmd(&format!("ip link set s{i} up"));
            p.sysctl(&["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
            p.cmd(&format!("ip route add 10.9.9.0/24 via 10.3.{i}.2"));
            p.cmd(&format!("ip -6 route add fd00:9::/64 via fd00:3:{i}::2"));
            server.cmd(&format!("ip route add 10.{i}.0.0/24 via 10.3.{i}.1"));
            server.cmd(&format!("ip -6 route add fd00:{i}::/64 via fd00:3:{i}::1"));
            let table = 100 + i;
            router.cmd(&format!(
                "ip route add default via 10.{i}.0.2 dev up{i} table {table}"
            ));
            router.cmd(&format!(
                "ip -6 route add default via fd00:{i}::2 dev up{i} table {table}"
            ));
            router.cmd(&format!("ip rule add fwmark {i} lookup {table}"));
            router.cmd(&format!("ip -6 rule add fwmark {i} lookup {table}"));
            p.load_nft(
                "table inet probe {\n\
                 \tcounter to_server { }\n\
                 \tchain tally {\n\
                 \t\ttype filter hook forward priority 0; policy accept;\n\
                 \t\tip daddr 10.9.9.9 counter name \"to_server\"\n\
                 \t\tip6 daddr fd00:9::9 counter name \"to_server\"\n\
                 \t}\n\
                 \tchain cut {\n\
                 \t\ttype filter hook forward priority 10; policy accept;\n\
                 \t}\n\
                 }\n",
            );
        }
        let listeners = server.run(|| {
            vec![
                TcpListener::bind((SERVER4, PORT)).expect("listen 10.9.9.9:8080"),
                TcpListener::bind((SERVER6, PORT)).expect("listen [fd00:9::9]:8080"),
            ]
        });
        Lab {
            router,
            providers,
            server,
            _listeners: listeners,
        }
    }

    /// DNS on port 53 of the server's addresses (see [`dns_answer`]).
    pub fn dns_responder(&self) -> Responder {
        let sockets = self.server.run(|| {
            [SERVER4, SERVER6].map(|a| {
                UdpSocket::bind((a, DNS_PORT)).unwrap_or_else(|e| panic!("bind {a}:53: {e}"))
            })
        });
        let stop = Arc::new(AtomicBool::new(false));
        let threads = sockets
            .into_iter()
            .map(|sock| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    sock.set_read_timeout(Some(POLL)).unwrap();
                    let mut buf = [0u8; 512];
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((n, from)) = sock.recv_from(&mut buf) else {
                            continue;
                        };
                        let Some((answer, name)) = dns_answer(&buf[..n]) else {
                            continue;
                        };
                        if name == "slow.test" {
                            std::thread::sleep(SLOW);
                        }
                        let _ = sock.send_to(&answer, from);
                    }
                })
            })
            .collect();
        Responder {
            stop,
            threads,
            requests: Arc::default(),
        }
    }

    /// HTTP on port 80 of the server's addresses: `/slow` 200 after [`SLOW`], `/missing` 404,
    /// `/moved` 302, anything else 204. One request at a time.
    pub fn http_responder(&self) -> Responder {
        let listeners = self.server.run(|| {
            [SERVER4, SERVER6].map(|a| {
                let l = TcpListener::bind((a, HTTP_PORT))
                    .unwrap_or_else(|e| panic!("listen {a}:80: {e}"));
                l.set_nonblocking(true).unwrap();
                l
            })
        });
        let stop = Arc::new(AtomicBool::new(false));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let threads = listeners
            .into_iter()
            .map(|l| {
                let (stop, requests) = (stop.clone(), requests.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match l.accept() {
                            Ok((conn, _)) => serve_http(conn, &requests),
                            Err(_) => std::thread::sleep(POLL),
                        }
                    }
                })
            })
            .collect();
        Responder {
            stop,
            threads,
            requests,
        }
    }

    /// Provider `i` drops `tenths` in 10 of the packets it would forward to the server's IPv4
    /// address, at random (`numgen random`), after counting them.
    pub fn provider_drops_share(&self, i: usize, tenths: u32) {
        let n = tenths.to_string();
        self.providers[i - 1].nft(&[
            "add", "rule", "inet", "probe", "cut", "ip", "daddr", SERVER4, "numgen", "random",
            "mod", "10", "<", &n, "drop",
        ]);
    }

    /// Packets provider `i` (1 or 2) forwarded to the server address so far.
    pub fn forwarded(&self, i: usize) -> u64 {
        let text = self.providers[i - 1].nft(&["list", "counter", "inet", "probe", "to_server"]);
        let after = text
            .split("packets ")
            .nth(1)
            .unwrap_or_else(|| panic!("no packet count in {text}"));
        after
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad packet count in {text}"))
    }

    /// Provider `i` drops everything it would forward (after counting it); its links stay up.
    pub fn provider_drops_all(&self, i: usize) {
        self.providers[i - 1].nft(&["add", "rule", "inet", "probe", "cut", "drop"]);
    }

    /// Provider `i` forwards again.
    pub fn provider_forwards(&self, i: usize) {
        self.providers[i - 1].nft(&["flush", "chain", "inet", "probe", "cut"]);
    }
}
