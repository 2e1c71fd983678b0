//! The lock that serialises the nftbalance processes changing one table in one network
//! namespace, so that two applies (or an apply and a failover) cannot interleave their
//! routing and ruleset steps. Released when dropped (and by the kernel when the process dies).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Say;

/// How long a command waits for another nftbalance to finish with the same table.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Why the lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process held it for the whole wait: trying again later may work.
    Busy { path: PathBuf, waited: Duration },
    /// The lock file cannot be opened or locked at all: trying again will not help.
    Unusable {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Busy { path, waited } => write!(
                f,
                "another nftbalance has been changing this table for {}s (lock {}); \
                 nothing was changed",
                waited.as_secs(),
                path.display()
            ),
            LockError::Unusable { path, error } => {
                write!(f, "cannot use the lock file {}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for LockError {}

/// A held lock.
#[derive(Debug)]
pub struct TableLock {
    _file: File,
}

impl TableLock {
    /// Takes the lock at `path`, waiting up to `wait` for its holder (and saying so once).
    pub fn acquire(
        path: &Path,
        table: &str,
        wait: Duration,
        say: &Say,
    ) -> Result<TableLock, LockError> {
        let unusable = |error| LockError::Unusable {
            path: path.to_path_buf(),
            error,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unusable)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(unusable)?;
        let deadline = Instant::now() + wait;
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(TableLock { _file: file }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    if !said {
                        said = true;
                        (say.note)(&format!(
                            "waiting for another nftbalance that is changing {table} \
                             (lock {}); this one goes after it",
                            path.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Busy {
                        path: path.to_path_buf(),
                        waited: wait,
                    })
                }
                Err(TryLockError::Error(e)) => return Err(unusable(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_busy_and_a_directory_is_unusable() {
        let dir = std::env::temp_dir().join(format!("nbe-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("adir.lock")).unwrap();
        let path = dir.join("t.lock");
        let quiet = Say::quiet();
        let held = TableLock::acquire(&path, "t", Duration::ZERO, &quiet).unwrap();
        assert!(matches!(
            TableLock::acquire(&path, "t", Duration::from_millis(50), &quiet),
            Err(LockError::Busy { .. })
        ));
        drop(held);
        assert!(TableLock::acquire(&path, "t", Duration::ZERO, &quiet).is_ok());
        assert!(matches!(
            TableLock::acquire(&dir.join("adir.lock"), "t", Duration::ZERO, &quiet),
            Err(LockError::Unusable { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
