//! A network namespace that exists for the life of a value, created by `Netns::new` and
//! deleted on drop, also when the test panics, and the tools run inside it. It must never run
//! anything in the root namespace.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Where root's tools live; CI's PATH may lack the sbin directories.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a unique name. Panics, loudly, when that is impossible
    /// (not root, no `ip`): a kernel test must never pass without a kernel.
    pub fn new(tag: &str) -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("nbt-{tag}-{}-{n}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .env("PATH", PATH)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns add` (is iproute2 installed?): {e}"));
        assert!(
            out.status.success(),
            "cannot create network namespace {name} (these tests need root): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let ns = Netns { name };
        ns.ok("ip", &["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a program inside the namespace, with optional standard input.
    pub fn exec(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program])
            .args(args)
            .env("PATH", PATH)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs a program that must succeed; returns its standard output.
    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args, None);
        assert!(
            out.status.success(),
            "`{program} {}` failed in {}: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command line split at white space (no quoting: for the fixed commands that build
    /// a topology) that must succeed; returns its standard output.
    pub fn cmd(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (program, args) = words.split_first().expect("an empty command line");
        self.ok(program, args)
    }

    /// `ip ARGS` in the namespace; panics on failure, returns its standard output.
    pub fn ip(&self, args: &[&str]) -> String {
        self.ok("ip", args)
    }

    /// `nft ARGS` in the namespace; panics on failure, returns its standard output.
    pub fn nft(&self, args: &[&str]) -> String {
        self.ok("nft", args)
    }

    /// `nft -f` of `text` (through a temporary file, so that nft's errors name file:line);
    /// panics on failure.
    pub fn load_nft(&self, text: &str) {
        let path = std::env::temp_dir().join(format!("{}.nft", self.name));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let out = self.exec("nft", &["-f", path.to_str().expect("UTF-8 temp dir")], None);
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "`nft -f` failed in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// `sysctl -qw SETTINGS` (each `key=value`) in the namespace; panics on failure.
    pub fn sysctl(&self, settings: &[&str]) {
        let mut args = vec!["-qw"];
        args.extend_from_slice(settings);
        self.ok("sysctl", &args);
    }

    /// `nft list ruleset` text.
    pub fn ruleset_text(&self) -> String {
        self.nft(&["list", "ruleset"])
    }

    /// `nft -j list ruleset` without the metainfo object and the handles, so that two
    /// namespaces that hold the same ruleset compare equal.
    pub fn ruleset_json(&self) -> Value {
        let text = self.nft(&["-j", "list", "ruleset"]);
        let mut doc: Value = serde_json::from_str(&text).expect("nft -j prints JSON");
        let items = doc["nftables"].as_array_mut().expect("nftables array");
        items.retain(|o| o.get("metainfo").is_none());
        items.iter_mut().for_each(strip_handles);
        doc
    }

    /// The packets of each rule's counter in `nft -j list WHAT` (a table or a chain), in
    /// listing order.
    pub fn rule_counters(&self, what: &[&str]) -> Vec<u64> {
        let mut args = vec!["-j", "list"];
        args.extend_from_slice(what);
        let doc: Value = serde_json::from_str(&self.nft(&args)).expect("nft -j prints JSON");
        doc["nftables"]
            .as_array()
            .expect("nftables array")
            .iter()
            .filter_map(|o| o.get("rule"))
            .flat_map(|r| r["expr"].as_array().expect("rule expressions"))
            .filter_map(|e| e.get("counter"))
            .map(|c| c["packets"].as_u64().expect("counter packets"))
            .collect()
    }
}

fn strip_handles(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("handle");
            map.values_mut().for_each(strip_handles);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

impl Netns {
    /// Runs `f` on a fresh thread that has entered this namespace: netlink sockets opened
    /// there stay bound to it. Panics inside `f` are propagated.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let path = format!("/var/run/netns/{}", self.name);
                let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("setns(CLONE_NEWNET)");
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .env("PATH", PATH)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: could not delete namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: could not delete namespace {}: {e}", self.name),
        }
    }
}
