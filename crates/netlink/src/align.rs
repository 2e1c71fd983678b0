//! Aligning two lists (a chain's expected and live rules) along a longest common subsequence,
//! in time and memory proportional to their length times the number of differences, not to
//! the product of their lengths. Pure: items are ids, equal ids are equal rules.
//!
//! The result is the walk of the textbook table (`lcs[i][j]` of the suffixes), taken from the
//! front: equal items pair up; otherwise the `have` item goes first when that loses nothing.
//! Only the cells that walk can reach are computed: a common prefix and suffix are split off,
//! and the rest is computed in a band of diagonals that is widened until it holds every
//! minimal alignment.

use std::collections::{HashMap, HashSet, VecDeque};

/// One step of an alignment, from the front of both lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The next items of both lists are equal.
    Same,
    /// The next `have` item is not in `want`.
    Extra,
    /// The next `want` item is not in `have`.
    Missing,
}

/// Table cells (one bit each: 16 MiB, well under a second) beyond which lists that far apart
/// are aligned greedily: still every difference, though not always the fewest.
const MAX_CELLS: usize = 1 << 27;

/// The narrowest band tried: this many differences beyond the length difference.
const FIRST_BAND: usize = 16;

/// The steps that turn `want` into `have`.
pub(crate) fn align(want: &[u32], have: &[u32]) -> Vec<Step> {
    align_within(want, have, MAX_CELLS).0
}

/// `align` with a cell budget; also returns the table cells computed.
fn align_within(want: &[u32], have: &[u32], max_cells: usize) -> (Vec<Step>, usize) {
    let prefix = want.iter().zip(have).take_while(|(a, b)| a == b).count();
    let (want, have) = (&want[prefix..], &have[prefix..]);
    let suffix = separable_suffix(want, have);
    let (a, b) = (&want[..want.len() - suffix], &have[..have.len() - suffix]);
    let (middle, cells) = match Band::fitting(a, b, max_cells) {
        Some(band) => (band.walk(a, b), band.cells()),
        None => (greedy(a, b), 0),
    };
    let mut steps = vec![Step::Same; prefix];
    steps.extend(middle);
    steps.extend(std::iter::repeat_n(Step::Same, suffix));
    (steps, cells)
}

/// The length of the common suffix that can be aligned on its own. The whole walk pairs it up
/// too unless it meets the suffix's first item while still inside the rest (it would pair it
/// there): so the suffix shrinks until its first item occurs nowhere before it.
fn separable_suffix(a: &[u32], b: &[u32]) -> usize {
    let mut k = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut before: HashSet<u32> = a[..a.len() - k]
        .iter()
        .chain(&b[..b.len() - k])
        .copied()
        .collect();
    while k > 0 && !before.insert(a[a.len() - k]) {
        k -= 1;
    }
    // `insert` returned true for the item that stays first: it was not before it.
    k
}

/// The table over a band of diagonals (`j - i` in `-del..=ins`): for each cell, one bit, set
/// when the walk takes the `have` item there.
struct Band {
    ins: usize,
    del: usize,
    m: usize,
    /// Index of each row's first cell in `bits`.
    offsets: Vec<usize>,
    bits: Vec<u64>,
}

impl Band {
    /// The narrowest band that holds every minimal alignment, widened by doubling; the widest
    /// within `max_cells` if none does; `None` if not even the first fits.
    fn fitting(a: &[u32], b: &[u32], max_cells: usize) -> Option<Band> {
        let mut edits = a.len().abs_diff(b.len()) + FIRST_BAND;
        let mut band = Band::new(a.len(), b.len(), edits, max_cells)?;
        loop {
            let lcs = band.fill(a, b);
            // Alignments with at most `edits` insertions and deletions never leave the band:
            // when one of them is in it, every minimal one is.
            if a.len() + b.len() - 2 * lcs <= edits {
                return Some(band);
            }
            edits *= 2;
            match Band::new(a.len(), b.len(), edits, max_cells) {
                Some(wider) => band = wider,
                None => return Some(band),
            }
        }
    }

    fn new(n: usize, m: usize, edits: usize, max_cells: usize) -> Option<Band> {
        // Along an alignment with I insertions and D deletions, I - D = m - n and the
        // diagonal j - i stays within -D..=I.
        let ins = (edits + m).saturating_sub(n).div_ceil(2);
        let del = (edits + n).saturating_sub(m).div_ceil(2);
        let mut band = Band {
            ins,
            del,
            m,
            offsets: Vec::with_capacity(n + 2),
            bits: Vec::new(),
        };
        let mut total = 0usize;
        for i in 0..=n {
            band.offsets.push(total);
            let (lo, hi) = band.row(i);
            total += hi - lo + 1;
            if total > max_cells {
                return None;
            }
        }
        band.offsets.push(total);
        band.bits = vec![0; total.div_ceil(64)];
        Some(band)
    }

    /// The columns of row `i` inside the band.
    fn row(&self, i: usize) -> (usize, usize) {
        (i.saturating_sub(self.del), (i + self.ins).min(self.m))
    }

    fn cells(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0)
    }

    /// Computes the bits, bottom row first, keeping two rows of lengths (-1 outside the
    /// band); returns the length of the longest common subsequence found inside the band.
    fn fill(&mut self, a: &[u32], b: &[u32]) -> usize {
        let (n, m) = (a.len(), b.len());
        let (mut below, mut below_lo) = (Vec::<i32>::new(), 0usize);
        let mut row = Vec::<i32>::new();
        for i in (0..=n).rev() {
            let (lo, hi) = self.row(i);
            row.clear();
            row.resize(hi - lo + 1, 0);
            for j in (lo..=hi).rev() {
                row[j - lo] = if i == n || j == m {
                    0
                } else if a[i] == b[j] {
                    below[j + 1 - below_lo] + 1
                } else {
                    let right = if j < hi { row[j + 1 - lo] } else { -1 };
                    let down = if j >= below_lo {
                        below[j - below_lo]
                    } else {
                        -1
                    };
                    if right >= down {
                        let at = self.offsets[i] + j - lo;
                        self.bits[at / 64] |= 1 << (at % 64);
                    }
                    right.max(down)
                };
            }
            std::mem::swap(&mut row, &mut below);
            below_lo = lo;
        }
        below[0] as usize
    }

    fn takes_have(&self, i: usize, j: usize) -> bool {
        let at = self.offsets[i] + j - self.row(i).0;
        self.bits[at / 64] & (1 << (at % 64)) != 0
    }

    fn walk(&self, a: &[u32], b: &[u32]) -> Vec<Step> {
        let (n, m) = (a.len(), b.len());
        let mut steps = Vec::with_capacity(n.max(m));
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && a[i] == b[j] {
                steps.push(Step::Same);
                i += 1;
                j += 1;
            } else if j < m && (i == n || self.takes_have(i, j)) {
                steps.push(Step::Extra);
                j += 1;
            } else {
                steps.push(Step::Missing);
                i += 1;
            }
        }
        steps
    }
}

/// Lists too far apart for the table: each `want` item pairs with its next occurrence in
/// `have`, skipping what lies between.
fn greedy(a: &[u32], b: &[u32]) -> Vec<Step> {
    let mut at: HashMap<u32, VecDeque<usize>> = HashMap::new();
    for (j, x) in b.iter().enumerate() {
        at.entry(*x).or_default().push_back(j);
    }
    let mut steps = Vec::with_capacity(a.len() + b.len());
    let mut j = 0;
    for x in a {
        let next = at.get_mut(x).and_then(|q| {
            while q.front().is_some_and(|&p| p < j) {
                q.pop_front();
            }
            q.pop_front()
        });
        match next {
            Some(p) => {
                steps.extend(std::iter::repeat_n(Step::Extra, p - j));
                steps.push(Step::Same);
                j = p + 1;
            }
            None => steps.push(Step::Missing),
        }
    }
    steps.extend(std::iter::repeat_n(Step::Extra, b.len() - j));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full table and its walk: what `diff` reported before the band.
    fn full_table(want: &[u32], have: &[u32]) -> Vec<Step> {
        let (n, m) = (want.len(), have.len());
        let mut lcs = vec![vec![0usize; m + 1]; n + 1];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i][j] = if want[i] == have[j] {
                    lcs[i + 1][j + 1] + 1
                } else {
                    lcs[i + 1][j].max(lcs[i][j + 1])
                };
            }
        }
        let (mut i, mut j, mut steps) = (0, 0, Vec::new());
        while i < n || j < m {
            if i < n && j < m && want[i] == have[j] {
                steps.push(Step::Same);
                (i, j) = (i + 1, j + 1);
            } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
                steps.push(Step::Extra);
                j += 1;
            } else {
                steps.push(Step::Missing);
                i += 1;
            }
        }
        steps
    }

    /// A deterministic pseudo-random list (xorshift) over `alphabet` items.
    fn list(seed: &mut u64, len: usize, alphabet: u64) -> Vec<u32> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed % alphabet) as u32
            })
            .collect()
    }

    /// Applying the steps to `want` gives `have`: every item is consumed, pairs are equal.
    fn replays(want: &[u32], have: &[u32], steps: &[Step]) -> bool {
        let (mut i, mut j) = (0, 0);
        for s in steps {
            match s {
                Step::Same if want.get(i).is_some() && want.get(i) == have.get(j) => {
                    (i, j) = (i + 1, j + 1)
                }
                Step::Same => return false,
                Step::Extra => j += 1,
                Step::Missing => i += 1,
            }
        }
        i == want.len() && j == have.len()
    }

    #[test]
    fn same_steps_as_the_full_table_also_with_repeated_rules() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for round in 0..3000 {
            let alphabet = [2, 3, 5, 40][round % 4];
            let want = list(&mut seed, (round * 7) % 45, alphabet);
            // Mostly small edits of `want`, sometimes an unrelated list.
            let mut have = want.clone();
            if round % 5 == 0 {
                have = list(&mut seed, (round * 3) % 45, alphabet);
            } else {
                for _ in 0..round % 4 {
                    let at = list(&mut seed, 1, have.len() as u64 + 1)[0] as usize;
                    if round % 2 == 0 && at < have.len() {
                        have.remove(at);
                    } else {
                        have.insert(at, list(&mut seed, 1, alphabet)[0]);
                    }
                }
            }
            assert_eq!(
                align(&want, &have),
                full_table(&want, &have),
                "{want:?} -> {have:?}"
            );
        }
    }

    #[test]
    fn a_few_edits_in_a_long_list_cost_cells_per_edit_not_per_pair() {
        let want: Vec<u32> = (0..100_000).collect();
        let mut have = want.clone();
        have.remove(20_000);
        have[50_000] = 1_000_000;
        have.insert(70_000, 1_000_001);
        let (steps, cells) = align_within(&want, &have, MAX_CELLS);
        assert!(replays(&want, &have, &steps));
        let differences = steps.iter().filter(|s| **s != Step::Same).count();
        assert_eq!(differences, 4);
        // The full table would be 10^10 cells; the first band is ~20 per row.
        assert!(cells < 40 * want.len(), "{cells} cells");
    }

    #[test]
    fn a_chain_cut_in_half_is_split_off_without_a_table() {
        let want: Vec<u32> = (0..100_000).collect();
        let have: Vec<u32> = (0..30_000).chain(80_000..100_000).collect();
        let (steps, cells) = align_within(&want, &have, MAX_CELLS);
        assert!(replays(&want, &have, &steps));
        assert_eq!(
            steps.iter().filter(|s| **s == Step::Missing).count(),
            50_000
        );
        assert!(cells <= 50_001, "{cells} cells");
    }

    #[test]
    fn lists_too_far_apart_for_the_budget_still_get_every_difference() {
        let mut seed = 7;
        for _ in 0..200 {
            let want = list(&mut seed, 60, 6);
            let have = list(&mut seed, 30, 6);
            for budget in [0, 200, 1000] {
                let (steps, _) = align_within(&want, &have, budget);
                assert!(replays(&want, &have, &steps), "{want:?} -> {have:?}");
            }
        }
    }
}
