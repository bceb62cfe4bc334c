//! Fuzz target `manifest`: the body is `ark_core::fuzzing::manifest`, which the stable replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| ark_core::fuzzing::manifest(bytes));
