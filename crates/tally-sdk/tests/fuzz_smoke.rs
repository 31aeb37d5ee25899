//! The `segment_reader` fuzz case on its committed corpus and seeds and
//! mutations of them, for a time budget (see `tally-proto/fuzz/smoke.rs`).

#![allow(clippy::unwrap_used)]

#[path = "../../tally-proto/fuzz/smoke.rs"]
mod smoke;

#[path = "../fuzz/cases/segment_reader.rs"]
mod case;

#[test]
fn segment_reader_smoke() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(root.join("seeds/segment_reader"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let ran = smoke::run(&root.join("corpus/segment_reader"), &seeds, case::run);
    assert!(ran > 0);
}
