//! Fuzz target `fetch_response`: the body is `ark_agent::fetch::fuzzing::response`, which the stable replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| ark_agent::fetch::fuzzing::response(bytes));
