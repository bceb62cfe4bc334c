//! Replays the fuzz corpora and regressions kept in `fuzz/` through the same
//! bodies the fuzz targets run (`ark_commander::fuzzing`,
//! `ark_core::fuzzing`), on stable and in seconds: an input that once
//! crashed a target must never crash again. Fuzzing itself is `fuzz/README.md`.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let ran = ark_core::fuzzing::replay(&fuzz, target, body).expect("reading the corpus");
    assert!(
        ran > 0,
        "no inputs for fuzz target {target} under {}",
        fuzz.display()
    );
}

#[test]
fn fuzz_corpus_zim() {
    replay("zim", ark_commander::fuzzing::zim);
}

#[test]
fn fuzz_corpus_feed() {
    replay("feed", ark_commander::fuzzing::feed);
}

#[test]
fn fuzz_corpus_opml() {
    replay("opml", ark_commander::fuzzing::opml);
}

#[test]
fn fuzz_corpus_git_bundle() {
    replay("git_bundle", ark_commander::fuzzing::git_bundle);
}

#[test]
fn fuzz_corpus_proto() {
    replay("proto", ark_commander::fuzzing::proto);
}

#[test]
fn fuzz_corpus_manifest() {
    replay("manifest", ark_core::fuzzing::manifest);
}

/// The error `check_bundle` gives the git_bundle regression `name`.
fn refused_regression(name: &str) -> ark_commander::git_check::GitCheckError {
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions/git_bundle")
        .join(name);
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("b.bundle");
    std::fs::copy(&input, &bundle).expect("copy");
    ark_commander::git_check::check_bundle(
        &bundle,
        &dir.path().join("no-mirror"),
        &dir.path().join("scratch"),
    )
    .expect_err("a hostile bundle was accepted")
}

/// Found by the `git_bundle` target: a pack header claiming far more
/// objects than the bundle holds made gix's indexer reserve memory for all
/// of them (an out-of-memory abort). The check now refuses the count.
#[test]
fn regression_fuzz_git_bundle_pack_object_count_oom() {
    let err = refused_regression("pack_object_count_oom");
    assert!(err.to_string().contains("claims"), "{err}");
}

/// Found by the `git_bundle` target: a pack entry whose size varint runs
/// past nine bytes overflowed gix-pack 0.64's shift (a panic in the upload
/// task with overflow checks on, a wrong size without). A panic inside the
/// pack indexer is now a refusal of the bundle as corrupt.
#[test]
fn regression_fuzz_git_bundle_pack_entry_header_shift_overflow() {
    let err = refused_regression("pack_entry_header_shift_overflow");
    assert!(err.to_string().contains("malformed"), "{err}");
}

/// Found by the `git_bundle` target (10-minute run): a thin pack (one with
/// a REF_DELTA) whose entry header declares a huge size made gix-pack 0.64
/// reserve that size before inflating (indexing with a base lookup keeps
/// each entry's bytes): an allocation failure, which aborts the process.
/// A thin pack's entries are now inflated into a small buffer and checked
/// against their declared sizes first.
#[test]
fn regression_fuzz_git_bundle_thin_pack_entry_size_preallocation() {
    let err = refused_regression("thin_pack_entry_size_preallocation");
    let text = err.to_string();
    assert!(text.contains("entry "), "{text}");
}

/// Found by the `git_bundle` target: a varint of more than ten bytes in a
/// pack made gix-features panic ("would overflow") inside the indexer; the
/// panic is a refusal of the bundle as corrupt, never a crashed upload task.
#[test]
fn regression_fuzz_git_bundle_varint_overflow_in_gix_features() {
    let err = refused_regression("varint_overflow_in_gix_features");
    assert!(
        err.to_string().contains("malformed") || err.to_string().contains("entry "),
        "{err}"
    );
}
