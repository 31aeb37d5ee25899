//! The `ingest` fuzz case on its committed corpus and mutations of it, for
//! a time budget (see `tally-proto/fuzz/smoke.rs`).

#![allow(clippy::unwrap_used)]

#[path = "../../tally-proto/fuzz/smoke.rs"]
mod smoke;

#[path = "../fuzz/cases/ingest.rs"]
mod case;

#[test]
fn ingest_smoke() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ingest");
    let ran = smoke::run(&corpus, &[], case::run);
    assert!(ran > 0);
}
