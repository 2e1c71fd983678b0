//! A plain-Rust stand-in for the fuzz target that runs in `make test`: fixture lines,
//! mutated (cut, duplicated, bytes flipped, joined, quoted), never make the parser, the
//! recogniser or the translator panic; each either translates or returns an error.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use nftbalance_translate::{to_nft, to_spec, Input};

/// xorshift: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "!",
    "-j",
    "-m",
    "--mark",
    "0x",
    "/",
    "'",
    "\"",
    "\\",
    "$",
    "${",
    "$(",
    "`",
    "|",
    ";",
    "&&",
    "[0:0]",
    "*mangle",
    ":X - [0:0]",
    "COMMIT",
    "-A",
    "-I",
    "-N",
    "--every",
    "0",
    "--packet",
    "999999999999",
    "-1",
    ":",
    ",",
    "--set-xmark",
    "--probability",
    "nan",
    "HMARK",
    "--hmark-mod",
    "statistic",
    "multiport",
    "--dports",
    "CONNMARK",
    "--save-mark",
    "while",
    "done",
    "#",
];

#[test]
fn mutated_fixture_lines_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let mut lines: Vec<String> = Vec::new();
    for dir in ["legacy", "legacy/corpus", "dump"] {
        for e in fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension()
                .is_some_and(|x| x == "save" || x == "rules" || x == "sh")
            {
                lines.extend(fs::read_to_string(&p).unwrap().lines().map(String::from));
            }
        }
    }
    let mut rng = Rng(0x6e66_7462_7472);
    let d = BTreeMap::new();
    for round in 0..3000 {
        // A document of a few fixture lines, some mutated.
        let n = 1 + rng.below(30);
        let mut doc = String::new();
        for _ in 0..n {
            let mut l = lines[rng.below(lines.len())].clone();
            match rng.below(6) {
                0 => {
                    let cut = rng.below(l.len() + 1);
                    l.truncate(l.floor_char_boundary(cut));
                }
                1 => {
                    let at = l.floor_char_boundary(rng.below(l.len() + 1));
                    l.insert_str(at, TOKENS[rng.below(TOKENS.len())]);
                }
                2 => {
                    let mut b = l.into_bytes();
                    if !b.is_empty() {
                        let i = rng.below(b.len());
                        b[i] = (rng.next() & 0x7f) as u8;
                    }
                    l = String::from_utf8_lossy(&b).into_owned();
                }
                3 => l.push_str(" \\"),
                _ => {}
            }
            doc.push_str(&l);
            doc.push('\n');
        }
        let input = [Input {
            name: "fuzz",
            text: &doc,
        }];
        let r = std::panic::catch_unwind(|| {
            let _ = to_spec(&input, &d);
            let _ = to_nft(&input, &d, false);
            let _ = to_nft(&input, &d, true);
        });
        assert!(r.is_ok(), "round {round} panicked on:\n{doc}");
    }
}
