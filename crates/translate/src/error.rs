//! Every way a translation stops, each with the file and line it concerns.

/// Where an input line came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    /// Shared by every line of the file (one allocation, not one a line).
    pub file: std::sync::Arc<str>,
    pub line: usize,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Why `translate` gave up. Nothing is dropped silently: what cannot be read or translated
/// exactly is one of these, and the command exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A shell variable with no value in the script and no `--define`.
    #[error("{loc}: ${name} is not set in the script; give its value with --define {name}=VALUE")]
    Unresolved { loc: Loc, name: String },
    /// A shell construct that cannot be evaluated without running the script.
    #[error(
        "{loc}: {what} cannot be evaluated without running the script; replace it with its value"
    )]
    Unevaluable { loc: Loc, what: String },
    /// An option (or match, target, command) that cannot be translated exactly.
    #[error("{loc}: {option}: {message}")]
    Option {
        loc: Loc,
        option: String,
        message: String,
    },
    /// A line that is not well formed.
    #[error("{loc}: {message}")]
    Syntax { loc: Loc, message: String },
    /// Input past one of translate's bounds on memory.
    #[error("{loc}: {what} would be longer than {limit} bytes, translate's limit")]
    Limit {
        loc: Loc,
        what: &'static str,
        limit: usize,
    },
    /// The inputs together have more than [`crate::MAX_LINES`] lines.
    #[error("{loc}: the input has more than {limit} lines, translate's limit")]
    LineLimit { loc: Loc, limit: usize },
    /// The inputs together are longer than [`crate::MAX_INPUT`].
    #[error("the input is longer than {limit} bytes, translate's limit")]
    InputLimit { limit: usize },
    /// `--to spec` found no balancer in the input.
    #[error("no balancer recognised: {0}")]
    NoBalancer(String),
    /// The recognised balancer is not a valid spec (a contradiction in the input).
    #[error("the recognised balancer is not a valid spec:\n{0}")]
    InvalidSpec(String),
    /// A bad `--define`.
    #[error("--define {0}: expected NAME=VALUE")]
    Define(String),
}
