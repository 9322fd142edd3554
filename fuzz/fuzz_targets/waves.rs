#![no_main]

#[path = "../../parse/tests/props/mod.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::waves(data));
