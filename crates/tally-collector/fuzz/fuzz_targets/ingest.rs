//! The collector's ingest path after authentication on arbitrary requests:
//! headers, body, decompression, digest, decoding, validation, clock
//! correction, and building the events and dead letters the store would
//! write (see `cases/ingest.rs` for the rules checked).
//!
//! `cargo +nightly fuzz run ingest` from `crates/tally-collector/fuzz`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../cases/ingest.rs"]
mod case;

fuzz_target!(|data: &[u8]| case::run(data));
