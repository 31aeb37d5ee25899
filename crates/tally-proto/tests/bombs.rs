//! Decompression bombs: a 1 GiB gzip and zstd body fails fast, in bounded
//! memory. Its own test process, so the peak-RSS figure is this test's.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::{Duration, Instant};

use tally_proto::encoding::encode;
use tally_proto::{decompress, BodyError, ContentEncoding, DecodeLimits, EncodingError};

const GIB: usize = 1 << 30;
const MIB: usize = 1 << 20;

/// A body that decodes to 1 GiB of zeros: one compressed 1 MiB member (or
/// frame) repeated 1024 times. Both gzip (multi-member) and zstd
/// (multi-frame) decoders read such concatenations as one stream.
fn bomb(encoding: ContentEncoding) -> Vec<u8> {
    let member = encode(&vec![0u8; MIB], encoding);
    member.repeat(GIB / MIB)
}

fn peak_rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn assert_bomb_fails_fast(encoding: ContentEncoding) {
    let body = bomb(encoding);
    assert!(
        body.len() < 4 * MIB,
        "bomb is small on the wire: {}",
        body.len()
    );
    let started = Instant::now();
    let err = decompress(&body, encoding, &DecodeLimits::default()).unwrap_err();
    let took = started.elapsed();
    assert!(err.is_too_large(), "{encoding:?}: {err}");
    assert!(
        matches!(
            err,
            BodyError::Encoding(
                EncodingError::DecodedTooLarge { .. } | EncodingError::RatioTooHigh { .. }
            )
        ),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(1),
        "{encoding:?} bomb took {took:?}"
    );
}

#[test]
fn gib_bombs_fail_fast_in_bounded_memory() {
    // Sequential in one test so the peak-RSS figure covers both codecs.
    let before = peak_rss_bytes();
    assert_bomb_fails_fast(ContentEncoding::Gzip);
    assert_bomb_fails_fast(ContentEncoding::Zstd);
    let grown = peak_rss_bytes().saturating_sub(before);
    // Decoded output is capped at 16 MiB (+ one read chunk, + Vec growth
    // slack); the bombs themselves are ~1 MiB each. 64 MiB is a generous
    // ceiling that a decoder buffering the whole 1 GiB would blow through.
    assert!(grown < 64 * MIB, "peak RSS grew by {} MiB", grown / MIB);
}
