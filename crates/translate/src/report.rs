//! What became of every input line: part of the spec, redundant, or outside the model.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::Loc;
use crate::script::{LineKind, Script};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Became this part of the spec.
    Spec(String),
    /// Says again what the spec already says.
    Redundant(String),
    /// Does not fit the model (kept as is: rule by rule in `--to nft`).
    Outside(String),
    /// Writes marks the spec does not reproduce: the spec would be a smaller balancer
    /// (`translate` exits 2 unless `--partial`).
    Marks(String),
}

/// One input line and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub loc: Loc,
    pub text: std::sync::Arc<str>,
    pub what: Vec<What>,
}

/// The translation report (printed on standard error by the CLI).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    raw: BTreeMap<Loc, Vec<What>>,
    pub entries: Vec<Entry>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn add(&mut self, loc: &Loc, what: What) {
        let v = self.raw.entry(loc.clone()).or_default();
        if !v.contains(&what) {
            v.push(what);
        }
    }

    pub fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// Orders the entries by input line; every rule line without a role is outside the model.
    pub fn finish(&mut self, script: &Script) {
        self.entries.reserve(script.lines.len());
        for l in &script.lines {
            let mut what = self.raw.remove(&l.loc).unwrap_or_default();
            match &l.kind {
                LineKind::Rule if what.is_empty() => {
                    what.push(What::Outside("rule outside the model".into()))
                }
                LineKind::Outside(why) if what.is_empty() => what.push(What::Outside(why.clone())),
                LineKind::Untranslatable(u) if what.is_empty() => {
                    what.push(What::Outside(format!("{}: {}", u.option, u.message)))
                }
                LineKind::RtTables if what.is_empty() => {
                    what.push(What::Spec("routing table names (for the ip lines)".into()))
                }
                _ => {}
            }
            if !what.is_empty() {
                // Most lines have one entry: no room kept for more (100,000 of them).
                what.shrink_to_fit();
                self.entries.push(Entry {
                    loc: l.loc.clone(),
                    text: l.text.clone(),
                    what,
                });
            }
        }
        for (loc, note) in &script.notes {
            self.note(format!("{loc}: {note}"));
        }
    }

    /// The lines that mark connections the spec does not: `translate` exits 2 on any.
    pub fn marking(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| e.what.iter().any(|w| matches!(w, What::Marks(_))))
    }

    /// The lines outside the model.
    pub fn outside(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| {
            e.what
                .iter()
                .any(|w| matches!(w, What::Outside(_) | What::Marks(_)))
        })
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
            ("redundant", |w| match w {
                What::Redundant(s) => Some(s),
                _ => None,
            }),
            ("outside the model", |w| match w {
                What::Outside(s) => Some(s),
                _ => None,
            }),
            ("marking outside the spec", |w| match w {
                What::Marks(s) => Some(s),
                _ => None,
            }),
        ];
        // Counted, then written entry by entry: 100,000 report lines are never held as text.
        for (title, pick) in sections {
            let picked = || {
                (self.entries.iter())
                    .flat_map(move |e| e.what.iter().filter_map(pick).map(move |s| (e, s)))
            };
            writeln!(f, "{title} ({} lines):", picked().count())?;
            for (e, s) in picked() {
                write!(f, "  {}: {s}\n      {}\n", e.loc, e.text)?;
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
