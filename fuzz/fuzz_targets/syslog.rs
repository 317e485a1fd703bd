#![no_main]
//! Fuzz target: see `checks::syslog` for the invariant.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::syslog(data));
