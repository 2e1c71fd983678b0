//! The spec parser, compiler and renderers on arbitrary bytes: no panics, and every spec it
//! accepts compiles and renders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nftbalance_spec::Spec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = Spec::from_json(text) {
        let rs = nftbalance_ruleset::compile(&spec);
        let _ = nftbalance_ruleset::nft::render(&rs);
        let _ = nftbalance_ruleset::json::render(&rs);
        let _ = nftbalance_legacy::render(&spec);
    }
});
