//! Known errors, in the manner of Vector's disk buffer tests: damage the
//! files in one precise way, reopen, and assert exactly what recovery keeps
//! and what it counts.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

use std::path::{Path, PathBuf};

use tally_proto::Priority;
use tally_sdk::log::{Entry, Log, LogConfig, OpenError, REASON_CORRUPT};

/// Small segments so a few dozen records span several files.
const SEGMENT_BYTES: u64 = 1024;
const RECORDS: u64 = 40;

fn config(dir: &Path) -> LogConfig {
    LogConfig::new(dir).segment_bytes(SEGMENT_BYTES)
}

/// Writes RECORDS records and closes the log.
fn populated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(config(dir.path())).unwrap();
    for seq in 1..=RECORDS {
        log.append(Entry {
            seq,
            priority: Priority::Normal,
            payload: format!(r#"{{"event":"known","n":{seq}}}"#).into_bytes(),
        })
        .unwrap();
    }
    log.close().unwrap();
    dir
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    s.sort();
    s
}

/// (offset, length) of every frame in a segment file.
fn frames(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 32;
    while pos + 8 <= bytes.len() {
        let len = 8 + u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        out.push((pos, len));
        pos += len;
    }
    out
}

fn seqs_in(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    frames(path)
        .iter()
        .map(|&(off, _)| u64::from_le_bytes(bytes[off + 36..off + 44].try_into().unwrap()))
        .collect()
}

fn modify(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

fn pending(log: &Log) -> Vec<u64> {
    log.read_pending(usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

fn all_but(skip: &[u64]) -> Vec<u64> {
    (1..=RECORDS).filter(|s| !skip.contains(s)).collect()
}

#[test]
fn the_fixture_spans_several_segments() {
    let dir = populated();
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{} segments", segs.len());
    let all: Vec<u64> = segs.iter().flat_map(|s| seqs_in(s)).collect();
    assert_eq!(all, all_but(&[]));
}

#[test]
fn a_flipped_ciphertext_bit_loses_that_record_only_and_is_counted_once() {
    let dir = populated();
    let seg = &segments(dir.path())[1];
    let victim_seq = seqs_in(seg)[2];
    let (off, _) = frames(seg)[2];
    modify(seg, |b| b[off + 60] ^= 0x10);

    let log = Log::open(config(dir.path())).unwrap();
    assert_eq!(pending(&log), all_but(&[victim_seq]));
    let stats = log.stats();
    assert_eq!(stats.corrupt, 1);
    assert_eq!(stats.dropped.get(REASON_CORRUPT), Some(&1));
    assert_eq!(stats.pending_events, RECORDS - 1);
    log.close().unwrap();

    // Counted once: the ledger remembers the stretch.
    let log = Log::open(config(dir.path())).unwrap();
    assert_eq!(log.stats().corrupt, 1);
    assert_eq!(pending(&log), all_but(&[victim_seq]));
}

#[test]
fn a_flipped_checksum_bit_loses_that_record_only() {
    let dir = populated();
    let seg = &segments(dir.path())[0];
    let victim_seq = seqs_in(seg)[0];
    let (off, _) = frames(seg)[0];
    modify(seg, |b| b[off + 5] ^= 0x01);
    let log = Log::open(config(dir.path())).unwrap();
    assert_eq!(pending(&log), all_but(&[victim_seq]));
    assert_eq!(log.stats().corrupt, 1);
}

#[test]
fn a_flipped_seq_bit_fails_the_checksum_and_the_record_is_counted() {
    let dir = populated();
    let seg = &segments(dir.path())[0];
    let victim_seq = seqs_in(seg)[1];
    let (off, _) = frames(seg)[1];
    modify(seg, |b| b[off + 36] ^= 0x80);
    let log = Log::open(config(dir.path())).unwrap();
    assert_eq!(pending(&log), all_but(&[victim_seq]));
    assert_eq!(log.stats().corrupt, 1);
}

#[test]
fn a_zeroed_length_prefix_resynchronises_at_the_next_record() {
    let dir = populated();
    let seg = &segments(dir.path())[1];
    let victim_seq = seqs_in(seg)[3];
    let (off, _) = frames(seg)[3];
    modify(seg, |b| b[off..off + 4].fill(0));
    let log = Log::open(config(dir.path())).unwrap();
    assert_eq!(pending(&log), all_but(&[victim_seq]));
    assert_eq!(log.stats().corrupt, 1);
}

#[test]
fn a_length_prefix_pointing_past_the_end_is_corruption_not_a_torn_tail() {
    let dir = populated();
    let seg = &segments(dir.path())[1];
    let victim_seq = seqs_in(seg)[0];
    let (off, _) = frames(seg)[0];
    modify(seg, |b| b[off + 2] = 0x01); // length += 64 KiB
    let log = Log::open(config(dir.path())).unwrap();
    assert_eq!(pending(&log), all_but(&[victim_seq]));
    assert_eq!(log.stats().corrupt, 1);
}

#[test]
fn truncating_the_last_record_at_every_byte_keeps_all_the_others_uncounted() {
    let template = populated();
    let last_seg = segments(template.path()).pop().unwrap();
    let (last_off, last_len) = *frames(&last_seg).last().unwrap();
    let last_seq = *seqs_in(&last_seg).last().unwrap();
    assert_eq!(last_seq, RECORDS);
    for cut in last_off..last_off + last_len {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let seg = dir.path().join(last_seg.file_name().unwrap());
        modify(&seg, |b| b.truncate(cut));
        let log = Log::open(config(dir.path())).unwrap();
        assert_eq!(pending(&log), all_but(&[RECORDS]), "cut at {cut}");
        assert_eq!(log.stats().corrupt, 0, "cut at {cut}");
        log.close().unwrap();
        // The torn tail was truncated to the last whole record.
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len() as usize,
            last_off,
            "cut at {cut}"
        );
    }
}

#[test]
fn zeros_after_the_last_record_are_a_torn_tail() {
    let dir = populated();
    let last_seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last_seg).unwrap().len() as usize;
    modify(&last_seg, |b| b.extend_from_slice(&[0u8; 300]));
    let log = Log::open(config(dir.path())).unwrap();
    assert_eq!(pending(&log), all_but(&[]));
    assert_eq!(log.stats().corrupt, 0);
    log.close().unwrap();
    assert_eq!(std::fs::metadata(&last_seg).unwrap().len() as usize, len);
}

#[test]
fn a_deleted_middle_segment_loses_exactly_its_records() {
    let dir = populated();
    let segs = segments(dir.path());
    let gone = seqs_in(&segs[1]);
    assert!(!gone.is_empty());
    std::fs::remove_file(&segs[1]).unwrap();
    let log = Log::open(config(dir.path())).unwrap();
    assert_eq!(pending(&log), all_but(&gone));
    assert_eq!(log.stats().corrupt, 0);
}

#[test]
fn a_wrong_key_makes_every_record_corrupt_and_none_is_returned() {
    let dir = populated();
    std::fs::write(dir.path().join("keys/key-1"), [7u8; 32]).unwrap();
    let log = Log::open(config(dir.path())).unwrap();
    assert_eq!(pending(&log), Vec::<u64>::new());
    let stats = log.stats();
    assert_eq!(stats.corrupt, RECORDS);
    assert_eq!(stats.pending_events, 0);
    assert_eq!(stats.dropped.get(REASON_CORRUPT), Some(&RECORDS));
}

#[test]
fn a_corrupt_segment_header_is_counted_and_its_records_are_still_read() {
    let dir = populated();
    let seg = &segments(dir.path())[0];
    modify(seg, |b| b[3] ^= 0xff);
    let log = Log::open(config(dir.path())).unwrap();
    assert_eq!(pending(&log), all_but(&[]));
    assert_eq!(log.stats().corrupt, 1);
}

#[test]
fn a_segment_from_a_newer_format_is_not_opened() {
    let dir = populated();
    let seg = &segments(dir.path())[0];
    modify(seg, |b| {
        b[8] = 3;
        let crc = crc32c(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
    });
    match Log::open(config(dir.path())) {
        Err(OpenError::UnsupportedVersion { version, .. }) => assert_eq!(version, 3),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn a_torn_ledger_tail_loses_only_the_torn_acks() {
    let dir = populated();
    let log = Log::open(config(dir.path())).unwrap();
    let records = log.read_pending(3, usize::MAX).unwrap();
    for r in &records {
        log.ack(&[(r.id, tally_sdk::log::Disposition::Delivered)])
            .unwrap();
    }
    log.close().unwrap();
    let ledger = dir.path().join("ledger");
    modify(&ledger, |b| {
        let n = b.len();
        b.truncate(n - 3);
    });
    let log = Log::open(config(dir.path())).unwrap();
    // The third ack was torn: that record is sent again (the collector
    // deduplicates), the first two stay acknowledged.
    assert_eq!(pending(&log), all_but(&[1, 2]));
    assert_eq!(log.stats().acknowledged, 2);
}

fn crc32c(bytes: &[u8]) -> u32 {
    // CRC-32C (Castagnoli), bitwise: enough for a test's single header.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
