#![no_main]
//! Fuzz target: see `checks::json` for the invariant.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::json(data));
