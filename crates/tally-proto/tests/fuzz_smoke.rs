//! The `batch_decode` fuzz case on its committed corpus and mutations of
//! it, for a time budget (see `fuzz/smoke.rs`).

#![allow(clippy::unwrap_used)]

#[path = "../fuzz/smoke.rs"]
mod smoke;

#[path = "../fuzz/cases/batch_decode.rs"]
mod case;

#[test]
fn batch_decode_smoke() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/batch_decode");
    let ran = smoke::run(&corpus, &[], case::run);
    assert!(ran > 0);
}
