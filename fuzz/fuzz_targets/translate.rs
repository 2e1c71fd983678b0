//! The translate parser, recogniser and nft translator on arbitrary text: no panics.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use nftbalance_translate::{to_nft, to_spec, Input};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let input = [Input {
        name: "fuzz",
        text: &text,
    }];
    let defines = BTreeMap::new();
    let _ = to_spec(&input, &defines);
    let _ = to_nft(&input, &defines, false);
    let _ = to_nft(&input, &defines, true);
});
