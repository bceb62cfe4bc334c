//! Fuzz target `proto`: the body is `ark_commander::fuzzing::proto`, which the stable replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| ark_commander::fuzzing::proto(bytes));
