//! The segment reader and the ledger reader on arbitrary bytes (see
//! `cases/segment_reader.rs` for what is checked).
//!
//! `cargo +nightly fuzz run segment_reader` from `crates/tally-sdk/fuzz`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../cases/segment_reader.rs"]
mod case;

fuzz_target!(|data: &[u8]| case::run(data));
