//! Replays the `fetch_response` fuzz corpus and regressions kept in `fuzz/`
//! through the body the fuzz target runs, on stable and in seconds.

use std::path::Path;

#[test]
fn fuzz_corpus_fetch_response() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let ran =
        ark_core::fuzzing::replay(&fuzz, "fetch_response", ark_agent::fetch::fuzzing::response)
            .expect("reading the corpus");
    assert!(ran > 0, "no inputs for fuzz target fetch_response");
}
