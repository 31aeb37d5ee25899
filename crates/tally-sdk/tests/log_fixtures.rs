//! The on-disk format is frozen: files written by each format version live
//! in `tests/fixtures/log/v<N>/` and must keep opening with exactly this
//! content (version 1: JSON payloads; version 2: the same events in two
//! contexts, stored once per segment).
//! If this test fails, the layout changed: bump the segment version and add
//! a reader for the old one instead of editing the fixtures.
//!
//! The fixtures were written by `write_fixtures` (ignored; run it with
//! `--ignored` only when adding a new version's directory).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use tally_proto::Priority;
use tally_sdk::log::{Disposition, DroppedRange, Log, LogConfig};

/// The fixture's key: fixed, so the fixture is reproducible and the fuzz
/// target can seed its corpus with these files.
const FIXTURE_KEY: [u8; 32] = [42; 32];

fn fixture_dir() -> PathBuf {
    fixture_dir_of(1)
}

fn fixture_dir_of(version: u16) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/log/v{version}"))
}

/// The context of seq's record in the version 2 fixture: the first ten in
/// one, the rest in another.
fn context(seq: u64) -> Arc<[u8]> {
    let n = if seq <= 10 { 1 } else { 2 };
    Arc::from(format!(r#"{{"context":"fixture-{n}"}}"#).into_bytes())
}

fn payload(seq: u64) -> Vec<u8> {
    format!(
        r#"{{"type":"track","event":"Fixture","messageId":"m-{seq}","properties":{{"n":{seq}}}}}"#
    )
    .into_bytes()
}

fn priority(seq: u64) -> Priority {
    if seq % 4 == 0 {
        Priority::Critical
    } else {
        Priority::Normal
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
#[ignore = "writes the fixture directory; run only when adding a format version"]
fn write_fixtures() {
    let dir = fixture_dir_of(tally_sdk::log::segment::VERSION);
    assert!(
        !dir.exists(),
        "fixtures for this version exist; never rewrite them"
    );
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(dir.join("keys/key-1"), FIXTURE_KEY).unwrap();
    let config = LogConfig::new(&dir).segment_bytes(1024).bounds(
        u64::MAX,
        u64::MAX,
        Duration::from_secs(100 * 365 * 24 * 3600),
    );
    let log = Log::open(config).unwrap();
    let contexts = [context(1), context(11)];
    for seq in 1..=20 {
        let context = &contexts[usize::from(seq > 10)];
        log.append_in(seq, priority(seq), &payload(seq), Some(context))
            .unwrap();
    }
    log.flush().unwrap();
    let records = log.read_pending(usize::MAX, usize::MAX).unwrap();
    let by_seq = |s: u64| records.iter().find(|r| r.seq == s).unwrap().id;
    log.ack(&[
        (by_seq(1), Disposition::Delivered),
        (by_seq(2), Disposition::Delivered),
        (
            by_seq(4),
            Disposition::Rejected("invalid_event_name".into()),
        ),
        (by_seq(6), Disposition::Dropped("quarantined".into())),
        (by_seq(7), Disposition::Dropped("quarantined".into())),
    ])
    .unwrap();
    log.close().unwrap();
}

#[test]
fn version_1_files_open_with_exactly_their_content() {
    files_open_with_exactly_their_content(1);
}

#[test]
fn version_2_files_open_with_exactly_their_content_and_contexts() {
    files_open_with_exactly_their_content(2);
}

fn files_open_with_exactly_their_content(version: u16) {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir_of(version), tmp.path());
    // An age bound of a century: the fixture's records must not expire.
    let config = LogConfig::new(tmp.path()).bounds(
        u64::MAX,
        u64::MAX,
        Duration::from_secs(100 * 365 * 24 * 3600),
    );
    let log = Log::open(config).unwrap();
    let records = log.read_pending(usize::MAX, usize::MAX).unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        vec![8, 12, 16, 20, 3, 5, 9, 10, 11, 13, 14, 15, 17, 18, 19]
    );
    for r in &records {
        assert_eq!(r.payload, payload(r.seq));
        assert_eq!(r.priority, priority(r.seq));
        let expected = (version >= 2).then(|| context(r.seq));
        assert_eq!(r.context, expected, "seq {}", r.seq);
    }
    let stats = log.stats();
    assert_eq!(stats.acknowledged, 2);
    assert_eq!(stats.rejected.get("invalid_event_name"), Some(&1));
    assert_eq!(stats.dropped.get("quarantined"), Some(&2));
    assert_eq!(stats.corrupt, 0);
    assert_eq!(
        log.drop_ledger(),
        vec![DroppedRange {
            first_seq: 6,
            last_seq: 7,
            reason: "quarantined".into()
        }]
    );
}

#[test]
fn version_1_segment_header_and_first_frame_have_the_documented_layout() {
    // The writer serves the critical lane first: segment 1 is critical,
    // segment 2 the first normal one.
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "0000000000000001-c.seg",
            "0000000000000002-n.seg",
            "0000000000000003-n.seg",
            "0000000000000004-n.seg"
        ]
    );
    let critical = std::fs::read(fixture_dir().join(&names[0])).unwrap();
    assert_eq!(critical[10], 1, "critical lane");
    let b = std::fs::read(fixture_dir().join(&names[1])).unwrap();
    assert_eq!(&b[0..8], b"TALLYSEG");
    assert_eq!(u16::from_le_bytes([b[8], b[9]]), 1, "version");
    assert_eq!(b[10], 0, "normal lane");
    assert_eq!(
        u64::from_le_bytes(b[12..20].try_into().unwrap()),
        2,
        "segment id"
    );
    // First frame at 32: length, crc, key id 1, nonce, seq 1, time, priority 0.
    let length = u32::from_le_bytes(b[32..36].try_into().unwrap()) as usize;
    assert_eq!(length, 4 + 24 + 8 + 8 + 1 + payload(1).len() + 16);
    assert_eq!(
        u32::from_le_bytes(b[40..44].try_into().unwrap()),
        1,
        "key id"
    );
    assert_eq!(u64::from_le_bytes(b[68..76].try_into().unwrap()), 1, "seq");
    assert_eq!(b[84], 0, "priority");
    let summary = tally_sdk::log::segment::scan_bytes(&b);
    assert!(summary.header_valid);
    assert_eq!(summary.corrupt, 0);
    assert_eq!(summary.valid_len, b.len());
}

#[test]
fn version_2_stores_each_context_once_per_segment_before_its_records() {
    let dir = fixture_dir_of(2);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    let mut frames = Vec::new();
    for name in &names {
        let b = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(u16::from_le_bytes([b[8], b[9]]), 2, "version of {name}");
        let summary = tally_sdk::log::segment::scan_bytes(&b);
        assert_eq!((summary.corrupt, summary.valid_len), (0, b.len()), "{name}");
        // The first frame of a segment is the context its first record
        // names: kind 2 at offset 32 + 52.
        assert_eq!(b[32 + 52], 2, "{name} starts with a context frame");
        frames.push((summary.records, summary.contexts));
    }
    assert_eq!(frames, FRAMES_V2);
}

/// (records, context frames) per segment of the version 2 fixture: seqs
/// 1–9 of the normal lane (the first context), the critical lane's 4–20 by
/// 4 (both), then 10–17 of the normal lane (10 in the first context, the
/// rest in the second) and 18–19.
const FRAMES_V2: [(usize, usize); 4] = [(7, 1), (5, 2), (6, 2), (2, 1)];
