//! UCI text (`/etc/config/*`) -> sections and options, with the line of every value.
//! Follows libuci's parser: `config`/`option`/`list`/`package` and their one-letter forms,
//! single quotes (literal), double quotes and bare words (a backslash keeps the next character
//! or joins the next line), `#` comments, `;` between commands, quoted values spanning lines,
//! names of letters, digits and `_`. Pure: reads only the text it is given.

use std::collections::HashMap;
use std::fmt;

/// Most bytes read; real mwan3 files are a few KiB.
pub const MAX_INPUT: usize = 4 * 1024 * 1024;

/// A place in the input.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Text that is not UCI, with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{loc}: {message}")]
pub struct UciError {
    pub loc: Loc,
    pub message: String,
}

/// One `config TYPE ['NAME']` section, merged with later sections of the same name as uci
/// merges them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub kind: String,
    /// `None` for an anonymous section.
    pub name: Option<String>,
    pub line: usize,
    pub options: Vec<UciOption>,
    /// Values that a later `option` of the same name replaced: (name, line, value).
    pub replaced: Vec<(String, usize, String)>,
}

impl Section {
    pub fn option(&self, name: &str) -> Option<&UciOption> {
        self.options.iter().find(|o| o.name == name)
    }
}

/// An `option` (one value) or a `list` (one or more values, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UciOption {
    pub name: String,
    pub list: bool,
    pub values: Vec<Value>,
}

impl UciOption {
    /// The value of an `option` (the last one of a list).
    pub fn value(&self) -> &Value {
        self.values.last().expect("an option has a value")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub text: String,
    pub line: usize,
}

/// A parsed file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub sections: Vec<Section>,
    /// `package NAME` lines: (line, name).
    pub packages: Vec<(usize, String)>,
}

/// Parses a whole file; the first malformed command stops it, as it stops uci.
pub fn parse(file: &str, text: &str) -> Result<Config, UciError> {
    if text.len() > MAX_INPUT {
        return Err(UciError {
            loc: Loc {
                file: file.into(),
                line: 1,
            },
            message: format!(
                "the file is longer than {MAX_INPUT} bytes; mwan3 configurations are a few KiB"
            ),
        });
    }
    let mut p = Parser {
        file,
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
        config: Config::default(),
        current: None,
        sections: HashMap::new(),
        options: HashMap::new(),
    };
    while p.pos < p.chars.len() {
        let words = p.command()?;
        if !words.is_empty() {
            p.apply(words)?;
        }
    }
    Ok(p.config)
}

struct Parser<'a> {
    file: &'a str,
    chars: Vec<char>,
    pos: usize,
    line: usize,
    config: Config,
    /// Index of the section that options go to.
    current: Option<usize>,
    /// Section index by name, and option index by (section, name): lookups stay constant
    /// time however many sections and options a hostile file has.
    sections: HashMap<String, usize>,
    options: HashMap<(usize, String), usize>,
}

/// One word of a command and the line it started on.
struct Word {
    text: String,
    line: usize,
}

impl Parser<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> UciError {
        UciError {
            loc: Loc {
                file: self.file.into(),
                line,
            },
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// A backslash-newline (or backslash-CRLF) joins lines: true if one was skipped.
    fn continuation(&mut self) -> bool {
        let next = self.chars.get(self.pos + 1).copied();
        let after = self.chars.get(self.pos + 2).copied();
        match (next, after) {
            (Some('\n'), _) => {
                self.pos += 1;
                self.bump();
                true
            }
            (Some('\r'), Some('\n')) => {
                self.pos += 2;
                self.bump();
                true
            }
            (None, _) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    /// The words of one command: up to an unquoted newline, `;`, `#` comment or the end.
    fn command(&mut self) -> Result<Vec<Word>, UciError> {
        let mut words = Vec::new();
        loop {
            while self.peek().is_some_and(|c| c != '\n' && c.is_whitespace()) {
                self.bump();
            }
            match self.peek() {
                None => return Ok(words),
                Some('\n') | Some(';') => {
                    self.bump();
                    return Ok(words);
                }
                Some('#') => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                    continue;
                }
                Some('\\') if self.continuation() => continue,
                Some(_) => words.push(self.word()?),
            }
        }
    }

    /// One word: bare, quoted and escaped parts until whitespace, `;` or `#`.
    fn word(&mut self) -> Result<Word, UciError> {
        let line = self.line;
        let mut text = String::new();
        while let Some(c) = self.peek() {
            match c {
                '\'' => self.single_quoted(&mut text)?,
                '"' => self.double_quoted(&mut text)?,
                '\\' => {
                    if !self.continuation() {
                        self.pos += 1;
                        if let Some(c) = self.bump() {
                            text.push(c);
                        }
                    }
                }
                ';' | '#' => break,
                c if c.is_whitespace() => break,
                c => {
                    self.bump();
                    text.push(c);
                }
            }
        }
        Ok(Word { text, line })
    }

    fn single_quoted(&mut self, text: &mut String) -> Result<(), UciError> {
        let line = self.line;
        self.bump();
        loop {
            match self.bump() {
                None => return Err(self.err(line, "end of file inside a '...' string")),
                Some('\'') => return Ok(()),
                Some(c) => text.push(c),
            }
        }
    }

    fn double_quoted(&mut self, text: &mut String) -> Result<(), UciError> {
        let line = self.line;
        self.bump();
        loop {
            match self.peek() {
                None => return Err(self.err(line, "end of file inside a \"...\" string")),
                Some('"') => {
                    self.bump();
                    return Ok(());
                }
                Some('\\') => {
                    if !self.continuation() {
                        self.pos += 1;
                        match self.bump() {
                            Some(c) => text.push(c),
                            None => {
                                return Err(self.err(line, "end of file inside a \"...\" string"))
                            }
                        }
                    }
                }
                Some(_) => {
                    if let Some(c) = self.bump() {
                        text.push(c);
                    }
                }
            }
        }
    }

    fn apply(&mut self, words: Vec<Word>) -> Result<(), UciError> {
        let line = words[0].line;
        let mut args = words.into_iter();
        let keyword = args.next().map(|w| w.text).unwrap_or_default();
        let args: Vec<Word> = args.collect();
        match keyword.as_str() {
            "config" | "c" => self.config_cmd(line, args),
            "option" | "o" => self.option_cmd(line, args, false),
            "list" | "l" => self.option_cmd(line, args, true),
            "package" | "p" => {
                let [name] = self.args::<1>(line, args, "package NAME")?;
                if !valid_name(&name.text, true) {
                    return Err(self.err(line, bad_name("package name", &name.text)));
                }
                self.config.packages.push((line, name.text));
                Ok(())
            }
            other => Err(self.err(
                line,
                format!(
                    "{} is not a UCI command; expected config, option, list or package",
                    show(other)
                ),
            )),
        }
    }

    /// Exactly `N` arguments, or up to `N` when `optional` lets the last be absent.
    fn args<const N: usize>(
        &self,
        line: usize,
        args: Vec<Word>,
        usage: &str,
    ) -> Result<[Word; N], UciError> {
        let n = args.len();
        args.try_into().map_err(|_| {
            let what = if n < N {
                "missing arguments"
            } else {
                "too many arguments"
            };
            self.err(line, format!("{what}: expected `{usage}`"))
        })
    }

    fn config_cmd(&mut self, line: usize, mut args: Vec<Word>) -> Result<(), UciError> {
        if args.len() == 1 {
            args.push(Word {
                text: String::new(),
                line,
            });
        }
        let [kind, name] = self.args::<2>(line, args, "config TYPE ['NAME']")?;
        if kind.text.is_empty() || !kind.text.chars().all(|c| c.is_ascii_graphic()) {
            return Err(self.err(line, bad_name("section type", &kind.text)));
        }
        if name.text.is_empty() {
            self.config.sections.push(Section {
                kind: kind.text,
                name: None,
                line,
                options: Vec::new(),
                replaced: Vec::new(),
            });
            self.current = Some(self.config.sections.len() - 1);
            return Ok(());
        }
        if !valid_name(&name.text, false) {
            return Err(self.err(line, bad_name("section name", &name.text)));
        }
        let same = self.sections.get(&name.text).copied();
        match same {
            Some(i) if self.config.sections[i].kind != kind.text => Err(self.err(
                line,
                format!(
                    "section {} is already a {} (line {}); uci refuses a section of another type \
                     with the same name",
                    show(&name.text),
                    self.config.sections[i].kind,
                    self.config.sections[i].line
                ),
            )),
            Some(i) => {
                self.current = Some(i);
                Ok(())
            }
            None => {
                let index = self.config.sections.len();
                self.sections.insert(name.text.clone(), index);
                self.config.sections.push(Section {
                    kind: kind.text,
                    name: Some(name.text),
                    line,
                    options: Vec::new(),
                    replaced: Vec::new(),
                });
                self.current = Some(self.config.sections.len() - 1);
                Ok(())
            }
        }
    }

    fn option_cmd(&mut self, line: usize, mut args: Vec<Word>, list: bool) -> Result<(), UciError> {
        let usage = if list {
            "list NAME 'VALUE'"
        } else {
            "option NAME 'VALUE'"
        };
        let Some(index) = self.current else {
            return Err(self.err(line, "option or list before the first config section"));
        };
        if args.len() == 1 {
            args.push(Word {
                text: String::new(),
                line,
            });
        }
        let [name, value] = self.args::<2>(line, args, usage)?;
        if !valid_name(&name.text, false) {
            return Err(self.err(line, bad_name("option name", &name.text)));
        }
        let value = Value {
            text: value.text,
            line,
        };
        let section = &mut self.config.sections[index];
        let key = (index, name.text.clone());
        let at = self.options.get(&key).copied();
        if at.is_none() {
            self.options.insert(key, section.options.len());
        }
        match at {
            // A list item appends; an option's old value becomes the list's first item.
            Some(i) if list => {
                section.options[i].list = true;
                section.options[i].values.push(value);
            }
            Some(i) => {
                let old = std::mem::replace(
                    &mut section.options[i],
                    UciOption {
                        name: name.text,
                        list: false,
                        values: vec![value],
                    },
                );
                for v in old.values {
                    section.replaced.push((old.name.clone(), v.line, v.text));
                }
            }
            None => section.options.push(UciOption {
                name: name.text,
                list,
                values: vec![value],
            }),
        }
        Ok(())
    }
}

/// uci's names: letters, digits and `_` (`-` too in package names).
fn valid_name(s: &str, package: bool) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || (package && c == '-'))
}

fn bad_name(what: &str, s: &str) -> String {
    format!(
        "{} is not a valid {what}: uci allows letters, digits and '_'",
        show(s)
    )
}

/// A value from the input in a message: quoted, escaped and cut short when long, so that
/// no input can forge report lines.
pub fn show(s: &str) -> String {
    const MAX: usize = 64;
    let cut: String = s.chars().take(MAX).collect();
    let more = if cut.len() < s.len() { "..." } else { "" };
    format!("{cut:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Section {
        let c = parse("t", text).unwrap();
        assert_eq!(c.sections.len(), 1, "{c:?}");
        c.sections.into_iter().next().unwrap()
    }

    fn values(s: &Section, name: &str) -> Vec<String> {
        s.option(name)
            .map(|o| o.values.iter().map(|v| v.text.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn quoting_as_uci_does_it() {
        let s = one(concat!(
            "config interface 'wan'\n",
            "\toption a 'x y'\n",
            "\toption b \"x\\\"y\"\n",
            "\toption c x\\ y\n",
            "\toption d 'it'\\''s'\n",
            "\toption e \"two\nlines\"\n",
            "\toption f ab'c d'\"e\" # comment\n",
            "\toption g\n",
            "\to h 1; o i 2\n",
        ));
        assert_eq!(values(&s, "a"), ["x y"]);
        assert_eq!(values(&s, "b"), ["x\"y"]);
        assert_eq!(values(&s, "c"), ["x y"]);
        assert_eq!(values(&s, "d"), ["it's"]);
        assert_eq!(values(&s, "e"), ["two\nlines"]);
        assert_eq!(values(&s, "f"), ["abc de"]);
        assert_eq!(values(&s, "g"), [""]);
        assert_eq!(values(&s, "h"), ["1"]);
        assert_eq!(values(&s, "i"), ["2"]);
        // The line after a two-line value is counted.
        assert_eq!(s.option("f").unwrap().values[0].line, 8);
    }

    #[test]
    fn lists_append_and_options_replace() {
        let s = one(concat!(
            "config interface wan\n",
            "list track_ip 1.1.1.1\n",
            "list track_ip 8.8.8.8\n",
            "option up 1\n",
            "option up 2\n",
            "option x a\n",
            "list x b\n",
        ));
        assert_eq!(values(&s, "track_ip"), ["1.1.1.1", "8.8.8.8"]);
        assert_eq!(values(&s, "up"), ["2"]);
        assert_eq!(s.replaced, [("up".to_string(), 4, "1".to_string())]);
        assert_eq!(values(&s, "x"), ["a", "b"]);
    }

    #[test]
    fn sections_of_the_same_name_merge() {
        let c = parse(
            "t",
            "config member m\noption metric 1\nconfig rule\nconfig member 'm'\noption weight 2\n",
        )
        .unwrap();
        assert_eq!(c.sections.len(), 2);
        assert_eq!(values(&c.sections[0], "weight"), ["2"]);
        assert_eq!(c.sections[1].name, None);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "config a b\n\nbogus x\n",
                "t:3: \"bogus\" is not a UCI command",
            ),
            (
                "option x 1\n",
                "t:1: option or list before the first config section",
            ),
            (
                "config a 'b c'\n",
                "t:1: \"b c\" is not a valid section name",
            ),
            (
                "config a b\noption 'x-y' 1\n",
                "t:2: \"x-y\" is not a valid option name",
            ),
            ("config a b\noption x 1 2\n", "t:2: too many arguments"),
            (
                "config a b\noption x 'open\n\n",
                "t:2: end of file inside a '...' string",
            ),
            ("config\n", "t:1: missing arguments"),
            (
                "config a b\nconfig c b\n",
                "t:2: section \"b\" is already a a (line 1)",
            ),
        ];
        for (text, want) in cases {
            let e = parse("t", text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn comments_and_blank_lines_count_lines() {
        let c = parse(
            "t",
            "# head\n\n  # x\nconfig globals g # c\n\toption a 'b' # c\n",
        )
        .unwrap();
        assert_eq!(c.sections[0].line, 4);
        assert_eq!(c.sections[0].options[0].values[0].line, 5);
    }
}
