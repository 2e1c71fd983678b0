//! Every name that reaches nft or iptables-restore text: which characters each kind accepts,
//! and the one place such text is quoted. Checks are pure; they never rewrite a name.
//!
//! The kernel accepts more than this (an interface name may hold quotes or ';'), but nft's
//! quoted strings have no escape for '"' and expand '$' in log prefixes, and iptables-restore
//! splits on quotes and backslashes. A name outside these sets is refused, never half-escaped.

use std::borrow::Cow;

use crate::nft_keywords::NFT_KEYWORDS;

/// Interface names: the kernel's IFNAMSIZ (16) less the terminating NUL.
pub const IFNAME_MAX: usize = 15;
/// iptables chain names: XT_EXTENSION_MAXNAMELEN (29) less the NUL.
pub const IPTABLES_CHAIN_MAX: usize = 28;
/// nft rule comments: NFTNL_UDATA_COMMENT_MAXLEN.
pub const NFT_COMMENT_MAX: usize = 128;
/// iptables `-m comment`: XT_MAX_COMMENT_LEN (256) less the NUL.
pub const IPTABLES_COMMENT_MAX: usize = 255;
/// iptables `-j LOG --log-prefix`: 30 bytes with the NUL (nft allows 127; iptables is less).
pub const LOG_PREFIX_MAX: usize = 29;

/// Why a name was refused. Displayed after the name itself: "NAME is not ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "is not a valid name: use 1 to {max} characters, a letter first, \
         then letters, digits, '_' or '-'"
    )]
    Identifier { max: usize },
    #[error("is not a valid name: it is an nft keyword, which nft cannot read as a name")]
    Keyword,
    #[error("is not an interface name: use 1 to {IFNAME_MAX} bytes")]
    InterfaceLength,
    #[error(
        "is not an interface name: {0:?} is not allowed \
         (use letters, digits, '.', '_', '-' and '@')"
    )]
    InterfaceChar(char),
    #[error("is too long: use at most {max} bytes")]
    TextLength { max: usize },
    #[error(
        "cannot be written safely: {0:?} is not allowed \
         (no double quotes, backslashes, '$' or control characters)"
    )]
    TextChar(char),
    #[error(
        "is not a usable path: name it from / with 1 to {PATH_MAX} bytes of letters, digits \
         and '/', '.', '_', '-', '+', '@' (keepalived splits its commands on spaces)"
    )]
    Path,
}

/// Longest file path written into a generated configuration (PATH_MAX less the NUL).
pub const PATH_MAX: usize = 4095;

/// An absolute file path written into keepalived or conntrackd configuration: plain
/// characters only, so it needs no quoting in either file and keepalived's command
/// splitting on spaces keeps it one word.
pub fn path(s: &str) -> Result<(), NameError> {
    let ok = s.starts_with('/')
        && s.len() <= PATH_MAX
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | '@'));
    ok.then_some(()).ok_or(NameError::Path)
}

/// A name used inside nft identifiers (gateway names, chain and set name parts): a letter,
/// then letters, digits, '_' or '-'. These never need quoting, in nft or iptables-restore.
pub fn identifier(s: &str, max: usize) -> Result<(), NameError> {
    let ok = s.len() <= max
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    ok.then_some(()).ok_or(NameError::Identifier { max })
}

/// A name written bare where nft expects a table, chain or set: an [`identifier`] that nft's
/// scanner does not read as a keyword (`mark`, `counter`, ... cannot be quoted there).
pub fn nft_identifier(s: &str, max: usize) -> Result<(), NameError> {
    identifier(s, max)?;
    match NFT_KEYWORDS.binary_search(&s) {
        Ok(_) => Err(NameError::Keyword),
        Err(_) => Ok(()),
    }
}

/// An iptables chain that translate also writes as an nft chain.
pub fn chain(s: &str) -> Result<(), NameError> {
    nft_identifier(s, IPTABLES_CHAIN_MAX)
}

/// An interface name: 1 to 15 bytes of letters, digits, '.', '_', '-' and '@'. The kernel
/// refuses '/', ':' and whitespace; quotes, '*', '+' and the rest cannot be written plainly.
pub fn interface(s: &str) -> Result<(), NameError> {
    if s.is_empty() || s.len() > IFNAME_MAX {
        return Err(NameError::InterfaceLength);
    }
    let bad = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')));
    match bad {
        Some(c) => Err(NameError::InterfaceChar(c)),
        None => Ok(()),
    }
}

/// An iptables interface match: a name, or a prefix with iptables' trailing '+' wildcard
/// (`ppp+`; a lone `+` matches every interface).
pub fn interface_pattern(s: &str) -> Result<(), NameError> {
    match s.strip_suffix('+') {
        Some("") => Ok(()),
        Some(prefix) if prefix.len() < IFNAME_MAX => interface(prefix),
        Some(_) => Err(NameError::InterfaceLength),
        None => interface(s),
    }
}

/// Free text (comments, log prefixes) of at most `max` bytes: no '"', '\\', '$' or control
/// characters, so one pair of double quotes holds it in nft and in iptables-restore alike.
pub fn text(s: &str, max: usize) -> Result<(), NameError> {
    if s.len() > max {
        return Err(NameError::TextLength { max });
    }
    match s.chars().find(|c| !text_char(*c)) {
        Some(c) => Err(NameError::TextChar(c)),
        None => Ok(()),
    }
}

fn text_char(c: char) -> bool {
    !(c.is_control() || matches!(c, '"' | '\\' | '$'))
}

/// A checked string as an nft quoted string. Anything [`text`] or [`interface_pattern`]
/// refuses is replaced by '_' here, so a caller that skipped the check cannot break out.
pub fn nft_quoted(s: &str) -> String {
    let inner: String = s
        .chars()
        .map(|c| if text_char(c) { c } else { '_' })
        .collect();
    format!("\"{inner}\"")
}

/// An iptables interface pattern (`ppp+`) as nft's quoted wildcard (`"ppp*"`).
pub fn nft_interface(s: &str) -> String {
    match s.strip_suffix('+') {
        Some(prefix) => nft_quoted(&format!("{prefix}*")),
        None => nft_quoted(s),
    }
}

/// A checked string as one iptables-restore word: bare when it holds only plain characters
/// (as iptables-save writes it), else in double quotes (same replacement as [`nft_quoted`]).
pub fn restore_word(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+' | '/'));
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(nft_quoted(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_sorted_for_binary_search() {
        assert!(NFT_KEYWORDS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(nft_identifier("mark", 64), Err(NameError::Keyword));
        assert_eq!(nft_identifier("balance1", 64), Ok(()));
    }

    #[test]
    fn interfaces_follow_ifnamsiz_and_refuse_syntax() {
        assert!(interface("eth0.100").is_ok());
        assert!(interface("a23456789012345").is_ok());
        assert_eq!(
            interface("a234567890123456"),
            Err(NameError::InterfaceLength)
        );
        for bad in ["x\"", "a;b", "a b", "a/b", "a:b", "a*", "é"] {
            assert!(interface(bad).is_err(), "{bad}");
        }
        assert!(interface_pattern("ppp+").is_ok());
        assert!(interface_pattern("+").is_ok());
        assert!(interface_pattern("a\"+").is_err());
    }

    #[test]
    fn text_refuses_what_quotes_cannot_hold() {
        assert!(text("keep # this; {and} that 'é'", 255).is_ok());
        for bad in ["a\"b", "a\\b", "$x", "a\nb", "a\rb"] {
            assert!(text(bad, 255).is_err(), "{bad:?}");
        }
        assert_eq!(text("abc", 2), Err(NameError::TextLength { max: 2 }));
    }

    #[test]
    fn paths_are_absolute_and_plain() {
        assert!(path("/usr/sbin/nftbalance").is_ok());
        assert!(path("/etc/nftbalance/spec-1.json").is_ok());
        for bad in ["spec.json", "/a b", "/a\"b", "/a;b", "/a$x", "/a\nb", ""] {
            assert_eq!(path(bad), Err(NameError::Path), "{bad:?}");
        }
    }

    #[test]
    fn quoting_cannot_be_escaped_even_unchecked() {
        assert_eq!(nft_quoted("x\" accept; flush"), "\"x_ accept; flush\"");
        assert_eq!(nft_interface("ppp+"), "\"ppp*\"");
        assert_eq!(restore_word("eth0"), "eth0");
        assert_eq!(restore_word("a b"), "\"a b\"");
    }
}
