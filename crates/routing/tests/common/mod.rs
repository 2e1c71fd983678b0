//! The routing tests' namespaces and topology. Every test works in namespaces it creates itself
//! (`nftbalance_testns::Netns`, deleted on drop, also when the test panics). Tests fail loudly
//! when they cannot create a namespace (they need root); they never skip. The root
//! namespace's rules and routes are never touched: every `ip` runs inside the namespace, and every
//! netlink socket is opened on a thread that has entered the test's namespace.
#![allow(dead_code)]

use std::process::Command;

use nftbalance_routing::{
    apply, flush, install, read_owned, restore, ApplyReport, Error, Links, OwnedState, RoutingPlan,
    Socket,
};
use nftbalance_spec::Spec;

use nftbalance_testns::Netns;

/// A namespace for a routing test: the shared guard, without duplicate address detection, so
/// that addresses and their routes exist at once and the routing listings compared by the
/// tests do not change under them.
pub fn netns(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.sysctl(&[
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
    ]);
    ns
}

/// The routing tests' topology and the crate's calls, run in a test namespace.
pub trait RoutingNs {
    /// `ip -n NS [-6] -batch FILE` of the given text.
    fn ip_batch(&self, v6: bool, text: &str);
    /// An interface `name` (a veth whose peer `name`p stays in the namespace too), up, with
    /// its addresses.
    fn iface(&self, name: &str, addrs: &[&str]);
    /// Interfaces for every gateway of a spec: its addresses (host routes) and a link route to
    /// its next hops, so that `via` is reachable.
    fn gateway_ifaces(&self, spec: &Spec);
    /// Every rule and route of the namespace, as `ip` lists them (both families, all tables).
    fn routing(&self) -> String;
    /// The owned part, as `ip` lists it: rules in the owned priority range, routes of proto 110.
    fn owned(&self) -> String;
    /// The crate's calls, each on a thread that has entered the namespace.
    fn install(&self, plan: &RoutingPlan) -> Result<ApplyReport, Error>;
    fn apply(&self, plan: &RoutingPlan) -> Result<ApplyReport, Error>;
    fn links(&self) -> Links;
    fn read_owned(&self) -> OwnedState;
    fn restore(&self, snapshot: &OwnedState) -> Result<Vec<String>, Error>;
    fn flush(&self) -> Result<(usize, usize), Error>;
}

impl RoutingNs for Netns {
    fn ip_batch(&self, v6: bool, text: &str) {
        let path = std::env::temp_dir().join(format!("{}-{}.ip", self.name(), v6 as u8));
        std::fs::write(&path, text).unwrap();
        let mut args = vec!["-n", self.name()];
        if v6 {
            args.push("-6");
        }
        args.extend(["-batch", path.to_str().unwrap()]);
        let out = Command::new("ip").args(&args).output().unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "ip {args:?} failed: {}\n--- input ---\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn iface(&self, name: &str, addrs: &[&str]) {
        let peer = format!("{name}p");
        self.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        self.ip(&["link", "set", &peer, "up"]);
        self.ip(&["link", "set", name, "up"]);
        for a in addrs {
            if a.contains(':') {
                self.ip(&["-6", "addr", "add", a, "dev", name, "nodad"]);
            } else {
                self.ip(&["addr", "add", a, "dev", name]);
            }
        }
    }

    fn gateway_ifaces(&self, spec: &Spec) {
        for g in &spec.gateways {
            let mut addrs = Vec::new();
            if let Some(a) = g.address {
                addrs.push(format!("{a}/32"));
            }
            if let Some(a) = g.address6 {
                addrs.push(format!("{a}/128"));
            }
            let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
            self.iface(&g.interface, &refs);
            if let Some(via) = g.via {
                self.ip(&["route", "add", &format!("{via}/32"), "dev", &g.interface]);
            }
            if let Some(via) = g.via6 {
                if !via.is_unicast_link_local() {
                    self.ip(&[
                        "-6",
                        "route",
                        "add",
                        &format!("{via}/128"),
                        "dev",
                        &g.interface,
                    ]);
                }
            }
        }
    }

    fn routing(&self) -> String {
        [
            self.ip(&["-4", "rule", "show"]),
            self.ip(&["-6", "rule", "show"]),
            self.ip(&["-4", "route", "show", "table", "all"]),
            self.ip(&["-6", "route", "show", "table", "all"]),
        ]
        .join("--\n")
    }

    fn owned(&self) -> String {
        let rules = |v6: bool| {
            let mut args = vec!["rule", "show"];
            if v6 {
                args.insert(0, "-6");
            }
            self.ip(&args)
                .lines()
                .filter(|l| {
                    let prio: u32 = l.split(':').next().unwrap().parse().unwrap();
                    (1000..=1199).contains(&prio)
                })
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        };
        [
            rules(false),
            rules(true),
            self.ip(&["-4", "route", "show", "table", "all", "proto", "110"]),
            self.ip(&["-6", "route", "show", "table", "all", "proto", "110"]),
        ]
        .join("--\n")
    }

    fn install(&self, plan: &RoutingPlan) -> Result<ApplyReport, Error> {
        self.run(|| {
            let sock = Socket::open()?;
            let links = Links::read(&sock)?;
            install(&sock, plan, &links)
        })
    }

    fn apply(&self, plan: &RoutingPlan) -> Result<ApplyReport, Error> {
        self.run(|| {
            let sock = Socket::open()?;
            let links = Links::read(&sock)?;
            apply(&sock, plan, &links)
        })
    }

    fn links(&self) -> Links {
        self.run(|| Links::read(&Socket::open().unwrap()).unwrap())
    }

    fn read_owned(&self) -> OwnedState {
        self.run(|| read_owned(&Socket::open().unwrap()).unwrap())
    }

    fn restore(&self, snapshot: &OwnedState) -> Result<Vec<String>, Error> {
        self.run(|| restore(&Socket::open()?, snapshot))
    }

    fn flush(&self) -> Result<(usize, usize), Error> {
        self.run(|| flush(&Socket::open()?))
    }
}

pub fn spec(json: &str) -> Spec {
    Spec::from_json(json).unwrap_or_else(|e| panic!("bad test spec: {e}"))
}
