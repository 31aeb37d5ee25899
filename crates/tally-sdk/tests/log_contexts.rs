//! Contexts (format 2): bytes many records share, stored once per segment
//! and returned with each record, through reopen, segment changes, key
//! rotation and corruption of the context itself.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

use std::path::Path;
use std::sync::Arc;

use tally_proto::Priority;
use tally_sdk::log::segment::{scan_bytes, HEADER_BYTES};
use tally_sdk::log::{Disposition, Log, LogConfig, Record};

fn ctx(name: &str) -> Arc<[u8]> {
    Arc::from(format!(r#"{{"app":"{name}","device":"test-phone"}}"#).into_bytes())
}

fn payload(seq: u64) -> Vec<u8> {
    format!("event-{seq}").into_bytes()
}

fn segments(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut segs: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    segs.sort();
    segs
}

/// (records, context frames) of each segment file.
fn frames(dir: &Path) -> Vec<(usize, usize)> {
    segments(dir)
        .iter()
        .map(|(_, b)| {
            let s = scan_bytes(b);
            (s.records, s.contexts)
        })
        .collect()
}

fn check(records: &[Record], context_of: impl Fn(u64) -> Option<Arc<[u8]>>) {
    for r in records {
        assert_eq!(r.payload, payload(r.seq), "seq {}", r.seq);
        assert_eq!(r.context, context_of(r.seq), "seq {}", r.seq);
    }
}

#[test]
fn each_context_is_stored_once_per_segment_and_comes_back_with_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (ctx("a"), ctx("b"));
    let context_of = |seq: u64| match seq {
        1..=100 => Some(ctx("a")),
        101..=150 => Some(ctx("b")),
        151..=155 => None,
        _ => Some(ctx("a")),
    };
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    for seq in 1..=160 {
        let context = match seq {
            1..=100 => Some(&a),
            101..=150 => Some(&b),
            151..=155 => None,
            // Equal bytes in a new `Arc` are the same context again, but
            // a generation after `b`: stored once more.
            _ => Some(&a),
        };
        let priority = if seq % 50 == 0 {
            Priority::Critical
        } else {
            Priority::Normal
        };
        log.append_in(seq, priority, &payload(seq), context)
            .unwrap();
    }
    log.flush().unwrap();
    let records = log.read_pending(usize::MAX, usize::MAX).unwrap();
    assert_eq!(records.len(), 160);
    check(&records, context_of);
    log.close().unwrap();
    // Segment 1 (normal, seq 1 came first): a, b, a again. Segment 2
    // (critical): 50 and 100 in a, 150 in b.
    assert_eq!(frames(dir.path()), [(157, 3), (3, 2)]);

    // From the disk alone, after a restart.
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    let records = log.read_pending(usize::MAX, usize::MAX).unwrap();
    assert_eq!(records.len(), 160);
    check(&records, context_of);
    assert_eq!(log.stats().corrupt, 0);
}

#[test]
fn every_new_segment_starts_with_the_context_its_records_name() {
    let dir = tempfile::tempdir().unwrap();
    let a = ctx("a");
    let config = || LogConfig::new(dir.path()).segment_bytes(1024);
    let log = Log::open(config()).unwrap();
    for seq in 1..=40 {
        log.append_in(seq, Priority::Normal, &payload(seq), Some(&a))
            .unwrap();
        if seq % 10 == 0 {
            log.flush().unwrap();
        }
    }
    log.close().unwrap();
    let per_segment = frames(dir.path());
    assert!(per_segment.len() >= 3, "{per_segment:?}");
    assert_eq!(per_segment.iter().map(|f| f.0).sum::<usize>(), 40);
    assert!(
        per_segment.iter().all(|&(_, contexts)| contexts == 1),
        "{per_segment:?}"
    );
    for (name, bytes) in segments(dir.path()) {
        assert_eq!(
            bytes[HEADER_BYTES + 52],
            2,
            "{name} starts with its context"
        );
    }
    let log = Log::open(config()).unwrap();
    check(&log.read_pending(usize::MAX, usize::MAX).unwrap(), |_| {
        Some(ctx("a"))
    });
}

#[test]
fn a_record_whose_context_is_lost_is_counted_corrupt_never_given_another() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (ctx("a"), ctx("b"));
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    for seq in 1..=10 {
        let context = if seq <= 5 { &a } else { &b };
        log.append_in(seq, Priority::Normal, &payload(seq), Some(context))
            .unwrap();
    }
    log.close().unwrap();
    // Flip a bit in the ciphertext of the first context frame (a), and
    // recompute nothing: its checksum fails, the scan skips it.
    let (name, mut bytes) = segments(dir.path()).remove(0);
    bytes[HEADER_BYTES + 60] ^= 1;
    std::fs::write(dir.path().join(&name), &bytes).unwrap();

    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    let records = log.read_pending(usize::MAX, usize::MAX).unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [6, 7, 8, 9, 10]);
    check(&records, |_| Some(ctx("b")));
    let stats = log.stats();
    // The stretch the context frame was, and the five records in it.
    assert_eq!(stats.corrupt, 6);
    assert_eq!(stats.dropped.get("corrupt"), Some(&6));
    assert_eq!(stats.pending_events, 5);
}

#[test]
fn after_a_key_rotation_the_context_is_stored_again_and_the_old_key_goes() {
    let dir = tempfile::tempdir().unwrap();
    let a = ctx("a");
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    for seq in 1..=3 {
        log.append_in(seq, Priority::Normal, &payload(seq), Some(&a))
            .unwrap();
    }
    log.flush().unwrap();
    let first: Vec<_> = log
        .read_pending(3, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| (r.id, Disposition::Delivered))
        .collect();
    log.rotate_key().unwrap();
    // Acknowledged after the rotation: the records sealed under key 1 are
    // gone, and the segment is still the writer's.
    log.ack(&first).unwrap();
    for seq in 4..=6 {
        log.append_in(seq, Priority::Normal, &payload(seq), Some(&a))
            .unwrap();
    }
    log.close().unwrap();
    // The context again under key 2, in the same segment as 4..=6.
    assert_eq!(frames(dir.path()), [(6, 2)]);
    assert!(!dir.path().join("keys/key-1").exists(), "key 1 deleted");

    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    let records = log.read_pending(usize::MAX, usize::MAX).unwrap();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 5, 6]);
    check(&records, |_| Some(ctx("a")));
    assert_eq!(log.stats().corrupt, 0);
}
