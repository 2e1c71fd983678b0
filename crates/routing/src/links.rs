//! The interfaces present at apply time, by name. Plain data: [`Links::read`] fills it from the
//! kernel, tests and callers may build one by hand.

use std::collections::BTreeMap;

/// One interface: its index and whether it is administratively up (`IFF_UP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub up: bool,
}

/// Interfaces by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    by_name: BTreeMap<String, Link>,
}

impl Links {
    pub fn insert(&mut self, name: impl Into<String>, link: Link) {
        self.by_name.insert(name.into(), link);
    }

    pub fn get(&self, name: &str) -> Option<&Link> {
        self.by_name.get(name)
    }

    /// The name of the interface with this index.
    pub fn name_of(&self, index: u32) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(_, l)| l.index == index)
            .map(|(n, _)| n.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Link)> {
        self.by_name.iter().map(|(n, l)| (n.as_str(), l))
    }
}
