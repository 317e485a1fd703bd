#![no_main]
//! Fuzz target: see `checks::redaction` for the invariant.

// each target uses one of the shared checks
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::redaction(data));
