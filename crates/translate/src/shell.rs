//! Lines as a shell reads them: backslash continuations, quotes, comments, `$VAR`, operators.
//! Nothing is executed: words keep their variable references until the caller expands them.

use std::collections::BTreeMap;

use crate::error::{Loc, TranslateError};

/// One logical line: physical lines joined at trailing backslashes, numbered by the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine<'a> {
    pub line: usize,
    /// Borrowed from the input unless continuations joined several lines.
    pub text: std::borrow::Cow<'a, str>,
    /// Set on the lines of a here-document (`cat <<EOF ... EOF`, terminator included): the
    /// program of the line that opened it. They are that program's data, not commands.
    pub heredoc: Option<String>,
}

/// Joins backslash continuations (an odd number of trailing backslashes continues the line)
/// and marks here-document bodies, which are read verbatim up to their delimiter.
pub fn logical_lines(text: &str) -> Vec<LogicalLine<'_>> {
    let mut out = Vec::new();
    let mut current: Option<LogicalLine<'_>> = None;
    // Here-documents still to read, in order: (delimiter, strip leading tabs, program).
    let mut pending: std::collections::VecDeque<(String, bool, String)> = Default::default();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some((delim, strip, program)) = pending.front() {
            let body = if *strip {
                raw.trim_start_matches('\t')
            } else {
                raw
            };
            out.push(LogicalLine {
                line: i + 1,
                text: raw.into(),
                heredoc: Some(program.clone()),
            });
            if body == delim {
                pending.pop_front();
            }
            continue;
        }
        let trailing = raw.len() - raw.trim_end_matches('\\').len();
        let (body, continues) = if trailing % 2 == 1 {
            (&raw[..raw.len() - 1], true)
        } else {
            (raw, false)
        };
        let done = match current.take() {
            None if !continues => LogicalLine {
                line: i + 1,
                text: body.into(),
                heredoc: None,
            },
            None => {
                current = Some(LogicalLine {
                    line: i + 1,
                    text: body.to_string().into(),
                    heredoc: None,
                });
                continue;
            }
            Some(mut cur) => {
                cur.text.to_mut().push_str(body);
                if continues {
                    current = Some(cur);
                    continue;
                }
                cur
            }
        };
        // A quote left open goes on on the next line, newline included, as in the shell
        // (read as closed at the line's end, `'a` + `'` would become the word `a`).
        if quote_open(&done.text) {
            let mut cur = done;
            cur.text.to_mut().push('\n');
            current = Some(cur);
            continue;
        }
        // Only a line with `<<` can open a here-document (the common case reads no further).
        if done.text.contains("<<") {
            let found = heredocs(&done.text);
            if !found.is_empty() {
                let program = program_name(&done.text);
                pending.extend(
                    found
                        .into_iter()
                        .map(|(d, strip)| (d, strip, program.clone())),
                );
            }
        }
        out.push(done);
    }
    out.extend(current);
    out
}

/// Whether `text` ends inside a single or double quote (outside comments).
fn quote_open(text: &str) -> bool {
    if !text.contains(['\'', '"']) {
        return false;
    }
    let mut quote: Option<char> = None;
    let mut word_start = true;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                chars.next();
            }
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if word_start => return false,
            (None, _) => {}
        }
        word_start = quote.is_none() && matches!(c, ' ' | '\t' | ';' | '|' | '&');
    }
    quote.is_some()
}

/// The first word of a line, without its directory (`/sbin/iptables` is `iptables`).
fn program_name(text: &str) -> String {
    let first = tokenize(text, true).into_iter().find_map(|t| match t {
        Token::Word(w) => w.literal(),
        _ => None,
    });
    let first = first.unwrap_or_default();
    first.rsplit('/').next().unwrap_or_default().to_string()
}

/// The here-document operators of one line (`<<EOF`, `<<-EOF`, `<< 'EOF'`, `<<"E"OF`):
/// each delimiter with its quotes removed, and whether `<<-` strips leading tabs.
/// `<<<` (a here-string) opens none.
pub fn heredocs(text: &str) -> Vec<(String, bool)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some('"'), '\\') => i += 1,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '\\') => i += 1,
            (None, '#') if i == 0 || chars[i - 1].is_whitespace() => break,
            (None, '<') if chars.get(i + 1) == Some(&'<') => {
                if chars.get(i + 2) == Some(&'<') {
                    i += 3;
                    continue;
                }
                i += 2;
                let strip = chars.get(i) == Some(&'-');
                if strip {
                    i += 1;
                }
                let (delim, next) = delimiter(&chars, i);
                if !delim.is_empty() {
                    out.push((delim, strip));
                }
                i = next;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The delimiter word starting at (or after blanks from) `i`, unquoted; and where it ends.
fn delimiter(chars: &[char], mut i: usize) -> (String, usize) {
    while matches!(chars.get(i), Some(' ' | '\t')) {
        i += 1;
    }
    let mut word = String::new();
    let mut quote: Option<char> = None;
    while let Some(&c) = chars.get(i) {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => word.push(c),
            (None, '\'' | '"') => quote = Some(c),
            (None, '\\') => {
                if let Some(&n) = chars.get(i + 1) {
                    word.push(n);
                    i += 1;
                }
            }
            (None, c) if c.is_whitespace() || ";|&<>()".contains(c) => break,
            (None, c) => word.push(c),
        }
        i += 1;
    }
    (word, i)
}

/// Longest word a line may expand to. Script values are addresses, names and paths; a
/// doubling assignment (`A=$A$A`) hits this after a few lines instead of exhausting memory.
pub const MAX_WORD: usize = 64 * 1024;
/// Most bytes all of a script's variables may hold at once, for the same reason.
pub const MAX_VARIABLES: usize = 4 * 1024 * 1024;

/// The script's variables, with the bytes they hold kept under [`MAX_VARIABLES`].
#[derive(Debug, Clone, Default)]
pub struct Vars {
    map: BTreeMap<String, String>,
    bytes: usize,
}

impl Vars {
    pub fn new(defines: &BTreeMap<String, String>) -> Vars {
        let mut v = Vars::default();
        for (name, value) in defines {
            v.bytes += name.len() + value.len();
            v.map.insert(name.clone(), value.clone());
        }
        v
    }

    pub fn set(&mut self, name: String, value: String, loc: &Loc) -> Result<(), TranslateError> {
        let old = self.map.get(&name).map_or(0, |o| name.len() + o.len());
        let bytes = self.bytes - old + name.len() + value.len();
        if bytes > MAX_VARIABLES {
            return Err(TranslateError::Limit {
                loc: loc.clone(),
                what: "the script's variables together",
                limit: MAX_VARIABLES,
            });
        }
        self.bytes = bytes;
        self.map.insert(name, value);
        Ok(())
    }
}

impl std::ops::Deref for Vars {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

/// A piece of a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    /// `$NAME` or `${NAME}`.
    Var(String),
    /// `$(...)`, backquotes, `${NAME:-...}` and the like.
    Unevaluable(String),
}

/// A word: its parts, concatenated after expansion.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Word {
    pub parts: Vec<Part>,
}

impl Word {
    /// The word when it has no variables.
    pub fn literal(&self) -> Option<String> {
        let mut s = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                _ => return None,
            }
        }
        Some(s)
    }

    /// The names of the variables the word uses.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            _ => None,
        })
    }

    fn push_char(&mut self, c: char) {
        if let Some(Part::Lit(s)) = self.parts.last_mut() {
            s.push(c);
        } else {
            self.parts.push(Part::Lit(c.to_string()));
        }
    }

    pub fn expand(
        &self,
        vars: &BTreeMap<String, String>,
        loc: &Loc,
    ) -> Result<String, TranslateError> {
        let mut s = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::Var(v) => match vars.get(v) {
                    Some(val) if s.len() + val.len() > MAX_WORD => {
                        return Err(TranslateError::Limit {
                            loc: loc.clone(),
                            what: "a word with its variables expanded",
                            limit: MAX_WORD,
                        })
                    }
                    Some(val) => s.push_str(val),
                    None => {
                        return Err(TranslateError::Unresolved {
                            loc: loc.clone(),
                            name: v.clone(),
                        })
                    }
                },
                Part::Unevaluable(what) => {
                    return Err(TranslateError::Unevaluable {
                        loc: loc.clone(),
                        what: what.clone(),
                    })
                }
            }
        }
        Ok(s)
    }
}

/// A token of a line: a word or a control operator (`;`, `|`, `||`, `&&`, `&`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Word(Word),
    Op(&'static str),
    /// A redirection and its target (`2>/dev/null`, `>> /etc/iproute2/rt_tables`).
    Redirect(Word),
}

/// Splits a logical line into tokens. With `shell` false (iptables-restore input) `$`, `;`,
/// `|`, `&`, `>` and `<` are ordinary characters, as iptables-restore reads them.
pub fn tokenize(text: &str, shell: bool) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut word: Option<Word> = None;
    let mut redirect_next = false;
    let mut i = 0;
    let finish = |word: &mut Option<Word>, tokens: &mut Vec<Token>, redirect: &mut bool| {
        if let Some(w) = word.take() {
            if *redirect {
                tokens.push(Token::Redirect(w));
                *redirect = false;
            } else {
                tokens.push(Token::Word(w));
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => {
                finish(&mut word, &mut tokens, &mut redirect_next);
                i += 1;
            }
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(Word::default);
                if w.parts.is_empty() {
                    w.parts.push(Part::Lit(String::new()));
                }
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    w.push_char(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                let w = word.get_or_insert_with(Word::default);
                if w.parts.is_empty() {
                    w.parts.push(Part::Lit(String::new()));
                }
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        let n = chars[i + 1];
                        if matches!(n, '"' | '\\' | '$' | '`') {
                            w.push_char(n);
                            i += 2;
                            continue;
                        }
                    }
                    if shell && (chars[i] == '$' || chars[i] == '`') {
                        i = dollar(&chars, i, w);
                        continue;
                    }
                    w.push_char(chars[i]);
                    i += 1;
                }
                i += 1;
            }
            '\\' if i + 1 < chars.len() => {
                word.get_or_insert_with(Word::default)
                    .push_char(chars[i + 1]);
                i += 2;
            }
            '$' | '`' if shell => {
                let w = word.get_or_insert_with(Word::default);
                i = dollar(&chars, i, w);
            }
            ';' | '|' | '&' if shell => {
                finish(&mut word, &mut tokens, &mut redirect_next);
                let two = chars.get(i + 1) == Some(&c) && c != ';';
                let op = match (c, two) {
                    (';', _) => ";",
                    ('|', true) => "||",
                    ('|', false) => "|",
                    ('&', true) => "&&",
                    _ => "&",
                };
                tokens.push(Token::Op(op));
                i += if two { 2 } else { 1 };
            }
            '>' | '<' if shell => {
                // A file descriptor number right before belongs to the operator.
                if let Some(w) = &word {
                    if w.literal()
                        .is_some_and(|l| l.chars().all(|d| d.is_ascii_digit()))
                    {
                        word = None;
                    } else {
                        finish(&mut word, &mut tokens, &mut redirect_next);
                    }
                }
                i += 1;
                while i < chars.len() && matches!(chars[i], '>' | '<') {
                    i += 1;
                }
                if chars.get(i) == Some(&'&') {
                    // 2>&1: the target is a descriptor.
                    i += 1;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                    continue;
                }
                redirect_next = true;
            }
            _ => {
                word.get_or_insert_with(Word::default).push_char(c);
                i += 1;
            }
        }
    }
    finish(&mut word, &mut tokens, &mut redirect_next);
    tokens
}

/// Reads a `$...` or backquote reference at `i` into `w`; returns the index after it.
fn dollar(chars: &[char], i: usize, w: &mut Word) -> usize {
    if chars[i] == '`' {
        let end = chars[i + 1..]
            .iter()
            .position(|&c| c == '`')
            .map_or(chars.len(), |p| i + 1 + p + 1);
        w.parts
            .push(Part::Unevaluable("command substitution `...`".to_string()));
        return end;
    }
    let next = chars.get(i + 1).copied();
    match next {
        Some('{') => {
            let end = chars[i + 2..]
                .iter()
                .position(|&c| c == '}')
                .map_or(chars.len(), |p| i + 2 + p);
            let inner: String = chars[i + 2..end].iter().collect();
            if !inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                w.parts.push(Part::Var(inner));
            } else {
                w.parts.push(Part::Unevaluable(format!("${{{inner}}}")));
            }
            (end + 1).min(chars.len())
        }
        Some('(') => {
            let mut depth = 0usize;
            let mut j = i + 1;
            while j < chars.len() {
                match chars[j] {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            w.parts
                .push(Part::Unevaluable("command substitution $(...)".to_string()));
            (j + 1).min(chars.len())
        }
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            w.parts.push(Part::Var(chars[i + 1..j].iter().collect()));
            j
        }
        Some(c) if c.is_ascii_digit() || matches!(c, '@' | '*' | '#' | '?' | '$' | '!' | '-') => {
            w.parts.push(Part::Unevaluable(format!("${c}")));
            i + 2
        }
        _ => {
            w.push_char('$');
            i + 1
        }
    }
}

/// One simple command of a line: its words and redirections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimpleCommand {
    pub words: Vec<Word>,
    pub redirects: Vec<Word>,
    /// The operator that ends it (`None` for the last command of the line).
    pub then: Option<&'static str>,
}

/// Splits tokens into simple commands at control operators.
pub fn commands(tokens: Vec<Token>) -> Vec<SimpleCommand> {
    let mut out = Vec::new();
    let mut cur = SimpleCommand::default();
    for t in tokens {
        match t {
            Token::Word(w) => cur.words.push(w),
            Token::Redirect(w) => cur.redirects.push(w),
            Token::Op(op) => {
                cur.then = Some(op);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.words.is_empty() || !cur.redirects.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        tokenize(text, true)
            .into_iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(
                    w.parts
                        .iter()
                        .map(|p| match p {
                            Part::Lit(l) => l.clone(),
                            Part::Var(v) => format!("<{v}>"),
                            Part::Unevaluable(u) => format!("<!{u}>"),
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn heredoc_operators_and_their_delimiters() {
        let d = |t: &str| heredocs(t);
        assert_eq!(d("cat <<EOF > f"), [("EOF".to_string(), false)]);
        assert_eq!(d("cat <<-'END'"), [("END".to_string(), true)]);
        assert_eq!(d("cat << \"E\"OF; x"), [("EOF".to_string(), false)]);
        assert_eq!(
            d("cat <<\\EOF <<B"),
            [("EOF".into(), false), ("B".into(), false)]
        );
        assert!(d("cat <<< word").is_empty());
        assert!(d("echo '<<EOF' \"<<X\" # <<Y").is_empty());
    }

    #[test]
    fn heredoc_bodies_are_marked_up_to_their_delimiter() {
        let l = logical_lines("cat <<-EOF >/x\n\tiptables -A INPUT \\\n\tEOF\niptables -N X\n");
        let marks: Vec<Option<&str>> = l.iter().map(|l| l.heredoc.as_deref()).collect();
        assert_eq!(marks, [None, Some("cat"), Some("cat"), None]);
        assert_eq!(l[3].line, 4);
    }

    #[test]
    fn an_open_quote_goes_on_on_the_next_line() {
        let lines = logical_lines("iptables -N 'a\nb' -j X\n# it's a comment\necho \"x\\\"\ny\"\n");
        let texts: Vec<(usize, &str)> = lines.iter().map(|l| (l.line, &*l.text)).collect();
        assert_eq!(
            texts,
            [
                (1, "iptables -N 'a\nb' -j X"),
                (3, "# it's a comment"),
                (4, "echo \"x\\\"\ny\""),
            ]
        );
    }

    #[test]
    fn continuation_joins_and_keeps_the_first_line_number() {
        let l = logical_lines("a \\\n  b\nc\n");
        assert_eq!(
            l[0],
            LogicalLine {
                line: 1,
                text: "a   b".into(),
                heredoc: None,
            }
        );
        assert_eq!(l[1].line, 3);
    }

    #[test]
    fn quotes_vars_comments_and_redirections() {
        assert_eq!(
            words(r#"$IPT -A x --comment "a b $X" 'c $d' ${Y}z # rest"#),
            ["<IPT>", "-A", "x", "--comment", "a b <X>", "c $d", "<Y>z"]
        );
        let t = tokenize("iptables -F 2>/dev/null || true", true);
        assert!(t.contains(&Token::Op("||")));
        assert_eq!(commands(t)[0].words.len(), 2);
        assert_eq!(
            words("echo $(date)"),
            ["echo", "<!command substitution $(...)>"]
        );
    }
}
