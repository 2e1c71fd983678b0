//! The files nftbalance keeps under /run/nftbalance, their names, and how they are written.
//! Names carry the network namespace, the family and the table, so that namespaces (which
//! share /run) and tables never share a lock, a journal or a state file.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nftbalance_spec::Spec;

/// Where locks, journals, state files and applied records live.
pub const RUN_DIR: &str = "/run/nftbalance";

/// The part of file names that is this network namespace: its inode number (namespaces
/// share /run; the cookie inside the files tells a reused inode apart).
pub fn netns_prefix() -> String {
    let netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0);
    format!("{netns}-")
}

/// This network namespace's cookie, if the kernel tells (5.14 and later).
pub fn netns_cookie() -> Option<u64> {
    nftbalance_netlink::Socket::open()
        .and_then(|s| s.netns_cookie())
        .ok()
}

/// The files of one table in one network namespace: `DIR/NETNS-FAMILY-TABLE.EXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFiles {
    dir: PathBuf,
    stem: String,
}

impl TableFiles {
    /// The files of the spec's table in this network namespace, under [`RUN_DIR`].
    pub fn of(spec: &Spec) -> TableFiles {
        TableFiles::in_dir(Path::new(RUN_DIR), &netns_prefix(), spec)
    }

    pub fn in_dir(dir: &Path, netns_prefix: &str, spec: &Spec) -> TableFiles {
        TableFiles {
            dir: dir.to_path_buf(),
            stem: format!("{netns_prefix}{}-{}", spec.family, spec.table),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.stem))
    }

    /// Serialises the nftbalance processes that change this table.
    pub fn lock(&self) -> PathBuf {
        self.file("lock")
    }

    /// An apply in progress (see [`crate::journal`]).
    pub fn journal(&self) -> PathBuf {
        self.file("journal")
    }

    /// The running watch's gateway states (see [`crate::state::WatchState`]).
    pub fn state(&self) -> PathBuf {
        self.file("state.json")
    }

    /// What the last apply committed (see [`crate::state::Applied`]).
    pub fn applied(&self) -> PathBuf {
        self.file("applied.json")
    }
}

/// The files in `dir` of this network namespace that end in `suffix`, sorted.
pub fn of_this_netns(dir: &Path, prefix: &str, suffix: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(prefix) && name.ends_with(suffix) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Writes `bytes` to `path` as a whole: into a new file beside it, then renamed over it, so a
/// reader or a crash sees the old file or the new one. The temporary name is unpredictable
/// and created exclusively without following links, so a link planted in a shared directory
/// (`--state-file /tmp/x.json`) cannot redirect the write.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{name}.{}.{}.{nanos:x}.tmp",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_data()));
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nbe-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn table_files_carry_namespace_family_and_table() {
        let spec = Spec::from_json(
            r#"{"table":"lb","family":"ip","gateways":[
                {"name":"a","interface":"eth1","mark":1,"route_table":101}]}"#,
        )
        .unwrap();
        let f = TableFiles::in_dir(Path::new("/run/x"), "4026531840-", &spec);
        assert_eq!(f.lock(), Path::new("/run/x/4026531840-ip-lb.lock"));
        assert_eq!(f.journal(), Path::new("/run/x/4026531840-ip-lb.journal"));
        assert_eq!(f.state(), Path::new("/run/x/4026531840-ip-lb.state.json"));
        assert_eq!(
            f.applied(),
            Path::new("/run/x/4026531840-ip-lb.applied.json")
        );
    }

    /// Issue 22.10: a predictable `x.tmp` beside a state file in /tmp let a planted symlink
    /// redirect the write.
    #[test]
    fn an_atomic_write_does_not_follow_a_planted_link() {
        let dir = temp_dir("symlink");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        for planted in ["x.tmp", ".x.json.tmp", "x.json.tmp"] {
            std::os::unix::fs::symlink(&victim, dir.join(planted)).unwrap();
        }
        let target = dir.join("x.json");
        write_atomically(&target, b"state").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "state");
        // Over an existing file, twice: the rename replaces it.
        write_atomically(&target, b"state 2").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "state 2");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".x.json.tmp", "victim", "x.json", "x.json.tmp", "x.tmp"],
            "no temporary file is left behind"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
