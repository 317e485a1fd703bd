#![no_main]
//! Fuzz target: see `checks::ottl` for the invariant.

// each target uses one of the shared checks
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::ottl(data));
