//! Fuzz target `git_bundle`: the body is `ark_commander::fuzzing::git_bundle`, which the stable replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| ark_commander::fuzzing::git_bundle(bytes));
