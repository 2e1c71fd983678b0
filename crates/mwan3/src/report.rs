//! What became of every UCI section and option: part of the spec, part of it with a
//! difference, or not imported and why. Same layout as translate's report (place, input text,
//! what became of it), kept separate because its unit is a UCI value, not a script line.

use std::collections::BTreeMap;
use std::fmt;

use crate::uci::{show, Config, Loc, Section};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Became this part of the spec, with the same meaning.
    Spec(String),
    /// Became this part of the spec, meaning something slightly different (says what).
    Approx(String),
    /// Not imported; nftbalance routes every connection as mwan3 does without it.
    Ignored(String),
    /// Not imported, and mwan3 would route some connections differently: the import is
    /// partial (exit 2 unless `--partial`).
    Dropped(String),
}

/// One section header or option value and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub loc: Loc,
    pub text: String,
    pub what: Vec<What>,
}

/// The import report (printed on standard error by the CLI).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    raw: BTreeMap<(usize, String), Vec<What>>,
    file: String,
    pub entries: Vec<Entry>,
    /// Values nftbalance needs that an mwan3 file does not hold (`--define`).
    pub needs: Vec<String>,
    pub notes: Vec<String>,
}

/// The report's text for a section header.
pub fn section_text(s: &Section) -> String {
    match &s.name {
        Some(n) => format!("config {} {}", s.kind, show(n)),
        None => format!("config {} (anonymous)", s.kind),
    }
}

/// The report's text for one value of an option.
pub fn value_text(s: &Section, option: &str, list: bool, value: &str) -> String {
    let cmd = if list { "list" } else { "option" };
    let owner = match &s.name {
        Some(n) => format!("{} {}", s.kind, show(n)),
        None => format!("{} (anonymous, line {})", s.kind, s.line),
    };
    format!("{owner}: {cmd} {option} {}", show(value))
}

impl Report {
    pub fn new(file: &str) -> Report {
        Report {
            file: file.into(),
            ..Report::default()
        }
    }

    pub fn add(&mut self, line: usize, text: String, what: What) {
        let v = self.raw.entry((line, text)).or_default();
        if !v.contains(&what) {
            v.push(what);
        }
    }

    pub fn need(&mut self, s: String) {
        if !self.needs.contains(&s) {
            self.needs.push(s);
        }
    }

    pub fn note(&mut self, s: String) {
        if !self.notes.contains(&s) {
            self.notes.push(s);
        }
    }

    /// Orders the entries by line. Every section and value of `config` that no step
    /// reported is reported here as not read, so nothing is left out silently.
    pub fn finish(&mut self, config: &Config) {
        for s in &config.sections {
            self.raw
                .entry((s.line, section_text(s)))
                .or_insert_with(|| vec![What::Ignored("section not read by the importer".into())]);
            for o in &s.options {
                for v in &o.values {
                    self.raw
                        .entry((v.line, value_text(s, &o.name, o.list, &v.text)))
                        .or_insert_with(|| {
                            vec![What::Ignored(format!(
                                "{} is not an option mwan3 reads in a {} section",
                                o.name, s.kind
                            ))]
                        });
                }
            }
            for (name, line, value) in &s.replaced {
                self.add(
                    *line,
                    value_text(s, name, false, value),
                    What::Ignored(
                        "replaced by a later option of the same name (as uci does)".into(),
                    ),
                );
            }
        }
        for ((line, text), what) in std::mem::take(&mut self.raw) {
            self.entries.push(Entry {
                loc: Loc {
                    file: self.file.clone(),
                    line,
                },
                text,
                what,
            });
        }
    }

    /// Entries whose loss changes routing: the import is partial when there is one.
    pub fn dropped(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| e.what.iter().any(|w| matches!(w, What::Dropped(_))))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        type Pick = fn(&What) -> Option<&String>;
        let sections: [(&str, Pick); 4] = [
            ("became the spec", |w| match w {
                What::Spec(s) => Some(s),
                _ => None,
            }),
            ("became the spec with a difference", |w| match w {
                What::Approx(s) => Some(s),
                _ => None,
            }),
            ("not imported, routing unchanged", |w| match w {
                What::Ignored(s) => Some(s),
                _ => None,
            }),
            ("NOT IMPORTED, routing differs from mwan3's", |w| match w {
                What::Dropped(s) => Some(s),
                _ => None,
            }),
        ];
        for (title, pick) in sections {
            let lines: Vec<String> = (self.entries.iter())
                .flat_map(|e| {
                    e.what
                        .iter()
                        .filter_map(pick)
                        .map(move |s| format!("  {}: {}\n      {s}\n", e.loc, e.text))
                })
                .collect();
            writeln!(f, "{title} ({}):", lines.len())?;
            for l in lines {
                f.write_str(&l)?;
            }
        }
        if !self.needs.is_empty() {
            writeln!(f, "needs your input ({}):", self.needs.len())?;
            for n in &self.needs {
                writeln!(f, "  {n}")?;
            }
        }
        if !self.notes.is_empty() {
            writeln!(f, "notes:")?;
            for n in &self.notes {
                writeln!(f, "  {n}")?;
            }
        }
        Ok(())
    }
}
