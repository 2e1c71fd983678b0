//! One nftables transaction: read the ruleset generation, build the batch, send it carrying
//! that generation, and rebuild and retry when another program committed in between.
//! Kernel refusals are explained in words, naming the object they hit.

use std::fmt;
use std::io;

use nftbalance_nftnl::{Batch, BatchError, BuildError, Commit, ObjectError, Socket};

/// Attempts before giving up when other programs keep committing.
pub const MAX_ATTEMPTS: usize = 5;

/// Why a transaction did not go through. In every case nothing was committed, except for
/// `Io` after the batch was sent, where the outcome is unknown.
#[derive(Debug)]
pub enum TransactionError {
    /// The process may not change nftables, or another program owns the table.
    Permission,
    /// The batch could not be encoded (an invalid value reached the encoder).
    Build(BuildError),
    /// Another program committed during every attempt.
    Busy { attempts: usize },
    /// The kernel refused objects of the batch.
    Rejected(Vec<ObjectError>),
    /// Talking to the kernel failed.
    Io(io::Error),
}

impl fmt::Display for TransactionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransactionError::Permission => f.write_str(
                "the kernel refused the transaction with EPERM: changing nftables needs \
                 CAP_NET_ADMIN (run as root), and a table another program owns (table flag \
                 owner, as firewalld sets) cannot be replaced; nothing was changed",
            ),
            TransactionError::Build(e) => write!(f, "cannot encode the ruleset: {e}"),
            TransactionError::Busy { attempts } => write!(
                f,
                "another program changed the ruleset during each of {attempts} attempts; \
                 nothing was changed, try again"
            ),
            TransactionError::Rejected(errors) => {
                write!(
                    f,
                    "the kernel refused the transaction; nothing was changed:"
                )?;
                for e in errors {
                    write!(f, "\n  {}", explain(e))?;
                }
                Ok(())
            }
            TransactionError::Io(e) => write!(f, "talking to the kernel failed: {e}"),
        }
    }
}

impl std::error::Error for TransactionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransactionError::Build(e) => Some(e),
            TransactionError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs `build` and sends its batch as one transaction. `build` is called again for every
/// retry, so it must build from scratch. Returns the number of attempts used.
pub fn run(
    socket: &Socket,
    commit: Commit,
    build: impl Fn() -> Result<Batch, BuildError>,
) -> Result<usize, TransactionError> {
    run_at(socket, commit, build).map(|sent| sent.attempts)
}

/// A transaction that went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub attempts: usize,
    /// The generation the committed batch was built against (and checked by the kernel).
    pub built_on: u32,
}

impl Sent {
    /// The ruleset generation right after this commit: the kernel moves it by one per
    /// commit, skipping 0. While the generation reads this, nothing else was committed.
    pub fn committed(&self) -> u32 {
        match self.built_on.wrapping_add(1) {
            0 => 1,
            g => g,
        }
    }
}

/// [`run`], telling the generation the batch was built against.
pub fn run_at(
    socket: &Socket,
    commit: Commit,
    build: impl Fn() -> Result<Batch, BuildError>,
) -> Result<Sent, TransactionError> {
    for attempt in 1..=MAX_ATTEMPTS {
        let genid = socket.generation().map_err(TransactionError::Io)?;
        let batch = build().map_err(TransactionError::Build)?;
        match batch.send(socket, commit, Some(genid)) {
            Ok(()) => {
                return Ok(Sent {
                    attempts: attempt,
                    built_on: genid,
                })
            }
            Err(e) if e.is_generation_mismatch() => {
                log::info!("ruleset generation {genid} changed during attempt {attempt}; retrying");
            }
            Err(BatchError::Io(e)) => return Err(TransactionError::Io(e)),
            Err(BatchError::Rejected(errors)) => {
                if errors
                    .iter()
                    .any(|e| e.errno == libc::EPERM || e.errno == libc::EACCES)
                {
                    return Err(TransactionError::Permission);
                }
                return Err(TransactionError::Rejected(errors));
            }
        }
    }
    Err(TransactionError::Busy {
        attempts: MAX_ATTEMPTS,
    })
}

/// `label: reason (kernel's message): what it usually means`.
pub fn explain(e: &ObjectError) -> String {
    let mut s = e.to_string();
    let meaning = match e.errno {
        libc::ENOENT => {
            let modules = modules_named_by(&e.label);
            if modules.is_empty() {
                "it refers to a table, chain, set or expression type the kernel does not have"
                    .to_string()
            } else {
                // A table deleted under a batch (a flush meanwhile) is the common cause;
                // missing modules the rarer one, so both are named.
                format!(
                    "it refers to a table, chain or set that does not exist (removed \
                     meanwhile?), or to an expression type the kernel does not have (this \
                     rule needs the kernel modules {})",
                    modules.join(", ")
                )
            }
        }
        libc::EOPNOTSUPP => {
            "this kernel does not support it (too old, or built without the feature)".into()
        }
        libc::EINVAL => "the kernel considers it malformed".into(),
        libc::EEXIST => "an object of that name already exists".into(),
        libc::EBUSY => "it is in use by another object".into(),
        libc::EMLINK | libc::ELOOP => "chains jump in a loop or are nested too deep".into(),
        libc::ENOSPC => "a set or map is full".into(),
        libc::ENOMEM => "the kernel ran out of memory".into(),
        libc::ERANGE | libc::E2BIG => "a value is out of the range the kernel accepts".into(),
        _ => String::new(),
    };
    if !meaning.is_empty() {
        s.push_str(": ");
        s.push_str(&meaning);
    }
    s
}

/// Expression modules a rule needs, read from the rule text in its label.
fn modules_named_by(label: &str) -> Vec<&'static str> {
    let Some((_, rule)) = label.split_once(": ") else {
        return Vec::new();
    };
    [
        ("numgen ", "nft_numgen"),
        ("jhash ", "nft_hash"),
        ("ct ", "nft_ct"),
        ("snat ", "nft_nat"),
        ("masquerade", "nft_masq"),
    ]
    .into_iter()
    .filter(|(word, _)| rule.contains(word))
    .map(|(_, module)| module)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(label: &str, errno: i32) -> ObjectError {
        ObjectError {
            label: label.into(),
            index: Some(3),
            errno,
            message: None,
            attr_offset: None,
        }
    }

    #[test]
    fn missing_expression_modules_are_named() {
        let e = error(
            "chain balance, rule 3: ct mark set numgen inc mod 2 map { 0 : 0x00000001 }",
            libc::ENOENT,
        );
        let text = explain(&e);
        assert!(text.contains("nft_numgen"), "{text}");
        assert!(text.contains("nft_ct"), "{text}");
        // Issue 22.10: a table flushed meanwhile is the common cause, named first.
        assert!(
            text.contains("does not exist (removed meanwhile?)"),
            "{text}"
        );
        assert!(text.starts_with("chain balance, rule 3: "), "{text}");
    }

    #[test]
    fn unsupported_is_explained() {
        let text = explain(&error("set sticky_v4_isp1", libc::EOPNOTSUPP));
        assert!(text.contains("does not support"), "{text}");
        assert!(!text.contains("nft_"), "{text}");
    }
}
