//! Prefix lists from files: an `exclude`, `saddr` or `daddr` entry `"@/path/to/list"` stands
//! for the prefixes in that file, one a line (blank lines and `#` comments allowed). This
//! module reads a list line by line with bounded memory; the file itself is opened by the
//! caller's [`ListSource`], so the spec crate does no I/O of its own.

use std::io::{self, BufRead, Read};

/// Opens the lists a spec names. The command line opens files; tests hand in text.
pub trait ListSource {
    /// Opens the list an `@` entry names (the text after the `@`).
    fn open(&mut self, name: &str) -> io::Result<Box<dyn BufRead + '_>>;
}

/// The longest line read, comment included: a list of prefixes has no business with longer
/// ones, and a file without line breaks must not be read whole into memory.
pub const MAX_LINE_BYTES: usize = 4096;

/// Prefixes at most in one list (ten times a full country list of today).
pub const MAX_LIST_PREFIXES: usize = 4_000_000;

/// Why a list could not be read to its end.
#[derive(Debug)]
pub enum ListError {
    Io(io::Error),
    /// The line (counted from 1) is longer than [`MAX_LINE_BYTES`].
    LineTooLong(usize),
    /// The line is not UTF-8.
    NotText(usize),
    TooMany,
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListError::Io(e) => write!(f, "{e}"),
            ListError::LineTooLong(n) => {
                write!(f, "line {n} is longer than {MAX_LINE_BYTES} bytes")
            }
            ListError::NotText(n) => write!(f, "line {n} is not UTF-8 text"),
            ListError::TooMany => write!(f, "more than {MAX_LIST_PREFIXES} prefixes"),
        }
    }
}

/// Calls `each(line_number, entry)` for every line that holds an entry (its text without
/// the comment and surrounding blanks). Holds one line in memory at a time.
pub fn each_entry(
    reader: &mut dyn BufRead,
    mut each: impl FnMut(usize, &str),
) -> Result<(), ListError> {
    let mut buf = Vec::new();
    let (mut line, mut entries) = (0usize, 0usize);
    loop {
        buf.clear();
        let n = reader
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(ListError::Io)?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE_BYTES {
            return Err(ListError::LineTooLong(line));
        }
        let text = std::str::from_utf8(&buf).map_err(|_| ListError::NotText(line))?;
        let entry = text.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        entries += 1;
        if entries > MAX_LIST_PREFIXES {
            return Err(ListError::TooMany);
        }
        each(line, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &[u8]) -> Result<Vec<(usize, String)>, ListError> {
        let mut out = Vec::new();
        each_entry(&mut &text[..], |n, e| out.push((n, e.to_string())))?;
        Ok(out)
    }

    #[test]
    fn blank_lines_and_comments_are_skipped_and_lines_counted() {
        let got =
            entries(b"# countries\n10.0.0.0/8\n\n  192.168.0.0/16  # home\r\n#\n::1").unwrap();
        assert_eq!(
            got,
            [
                (2, "10.0.0.0/8".to_string()),
                (4, "192.168.0.0/16".to_string()),
                (6, "::1".to_string())
            ]
        );
    }

    #[test]
    fn an_endless_line_is_refused_without_reading_it_whole() {
        let mut endless = io::repeat(b'1').take(u64::MAX);
        let mut reader = io::BufReader::new(&mut endless);
        let e = each_entry(&mut reader, |_, _| {}).unwrap_err();
        assert!(matches!(e, ListError::LineTooLong(1)), "{e}");
    }

    #[test]
    fn binary_is_not_text() {
        let e = entries(b"10.0.0.0/8\n\xff\xfe\n").unwrap_err();
        assert!(matches!(e, ListError::NotText(2)), "{e}");
    }
}
