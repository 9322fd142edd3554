#![no_main]

#[path = "../../parse/tests/props/mod.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::split_server(data, fleetmig_parse::Dialect::Mysql));
