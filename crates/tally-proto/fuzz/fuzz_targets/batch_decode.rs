//! The collector's whole decode path on arbitrary bytes (see
//! `cases/batch_decode.rs` for what is checked).
//!
//! `cargo +nightly fuzz run batch_decode` from `crates/tally-proto/fuzz`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../cases/batch_decode.rs"]
mod case;

fuzz_target!(|data: &[u8]| case::run(data));
