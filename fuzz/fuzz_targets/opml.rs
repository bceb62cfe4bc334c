//! Fuzz target `opml`: the body is `ark_commander::fuzzing::opml`, which the stable replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| ark_commander::fuzzing::opml(bytes));
