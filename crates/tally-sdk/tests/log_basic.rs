//! The log's round trip on the real filesystem: append, flush, read, ack,
//! reopen, lanes, bounds, rotation, purge.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

use std::sync::Arc;
use std::time::Duration;

use tally_proto::Priority;
use tally_sdk::log::{
    inspect, Disposition, Durability, Entry, FullPolicy, Log, LogConfig, StdFs, REASON_LOG_FULL,
};

fn entry(seq: u64, priority: Priority) -> Entry {
    Entry {
        seq,
        priority,
        payload: format!(r#"{{"event":"e{seq}"}}"#).into_bytes(),
    }
}

fn seqs(log: &Log) -> Vec<u64> {
    log.read_pending(usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[test]
fn appended_entries_survive_reopen_and_acked_ones_do_not_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    for seq in 1..=10 {
        log.append(entry(seq, Priority::Normal)).unwrap();
    }
    log.flush().unwrap();
    let records = log.read_pending(100, usize::MAX).unwrap();
    assert_eq!(records.len(), 10);
    assert_eq!(records[3].payload, br#"{"event":"e4"}"#);
    // Acks out of order, with every disposition.
    log.ack(&[
        (records[7].id, Disposition::Delivered),
        (
            records[1].id,
            Disposition::Rejected("invalid_timestamp".into()),
        ),
        (records[4].id, Disposition::Dropped("quarantined".into())),
    ])
    .unwrap();
    log.close().unwrap();

    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    assert_eq!(seqs(&log), vec![1, 3, 4, 6, 7, 9, 10]);
    let stats = log.stats();
    assert_eq!(stats.pending_events, 7);
    assert_eq!(stats.acknowledged, 1);
    assert_eq!(stats.rejected.get("invalid_timestamp"), Some(&1));
    assert_eq!(stats.dropped.get("quarantined"), Some(&1));
    assert_eq!(stats.corrupt, 0);
    assert!(!stats.poisoned);
    let ledger = log.drop_ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!((ledger[0].first_seq, ledger[0].last_seq), (5, 5));
}

#[test]
fn critical_lane_is_read_first_and_fully_acked_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path()).durability(Durability::Synced)).unwrap();
    for seq in 1..=6 {
        let p = if seq % 3 == 0 {
            Priority::Critical
        } else {
            Priority::Normal
        };
        log.append(entry(seq, p)).unwrap();
    }
    log.flush().unwrap();
    assert_eq!(seqs(&log), vec![3, 6, 1, 2, 4, 5]);
    let limited = log.read_pending(3, usize::MAX).unwrap();
    assert_eq!(
        limited.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3, 6, 1]
    );
    let all = log.read_pending(100, usize::MAX).unwrap();
    let acks: Vec<_> = all.iter().map(|r| (r.id, Disposition::Delivered)).collect();
    log.ack(&acks).unwrap();
    assert!(seqs(&log).is_empty());
    log.close().unwrap();
    // The segments of the previous run were sealed at reopen and are gone.
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    log.close().unwrap();
    let seg_files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count();
    assert_eq!(seg_files, 0);
    let report = inspect(dir.path(), Arc::new(StdFs)).unwrap();
    assert_eq!(report.pending, 0);
    assert_eq!(report.acknowledged, 6);
}

#[test]
fn drop_oldest_drops_normal_before_critical_and_ledgers_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::new(dir.path())
        .bounds(u64::MAX, 5, Duration::from_secs(3600))
        .full_policy(FullPolicy::DropOldest);
    let log = Log::open(config).unwrap();
    log.append(entry(1, Priority::Critical)).unwrap();
    for seq in 2..=8 {
        log.append(entry(seq, Priority::Normal)).unwrap();
        log.flush().unwrap();
    }
    assert_eq!(seqs(&log), vec![1, 5, 6, 7, 8]);
    let stats = log.stats();
    assert_eq!(stats.dropped.get(REASON_LOG_FULL), Some(&3));
    let ledger = log.drop_ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!((ledger[0].first_seq, ledger[0].last_seq), (2, 4));
    assert_eq!(ledger[0].reason, REASON_LOG_FULL);
}

#[test]
fn reject_new_refuses_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::new(dir.path())
        .bounds(u64::MAX, 3, Duration::from_secs(3600))
        .full_policy(FullPolicy::RejectNew);
    let log = Log::open(config).unwrap();
    for seq in 1..=3 {
        log.append(entry(seq, Priority::Normal)).unwrap();
    }
    assert_eq!(
        log.append(entry(4, Priority::Normal)),
        Err(tally_sdk::log::AppendError::Full)
    );
    log.flush().unwrap();
    assert_eq!(seqs(&log), vec![1, 2, 3]);
    assert_eq!(log.stats().dropped.get(REASON_LOG_FULL), Some(&1));
    assert_eq!(log.drop_ledger()[0].first_seq, 4);
}

#[test]
fn block_waits_for_an_ack_then_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::new(dir.path())
        .bounds(u64::MAX, 1, Duration::from_secs(3600))
        .full_policy(FullPolicy::Block {
            timeout: Duration::from_secs(5),
        });
    let log = Arc::new(Log::open(config).unwrap());
    log.append(entry(1, Priority::Normal)).unwrap();
    log.flush().unwrap();
    let acker = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let r = log.read_pending(1, usize::MAX).unwrap();
            log.ack(&[(r[0].id, Disposition::Delivered)]).unwrap();
        })
    };
    log.append(entry(2, Priority::Normal)).unwrap();
    acker.join().unwrap();
    log.flush().unwrap();
    assert_eq!(seqs(&log), vec![2]);
}

#[test]
fn rotated_key_keeps_old_records_readable_until_acked_then_deletes_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    log.append(entry(1, Priority::Normal)).unwrap();
    // Written (sealed under key 1) before the rotation.
    log.flush().unwrap();
    log.rotate_key().unwrap();
    log.append(entry(2, Priority::Normal)).unwrap();
    log.flush().unwrap();
    let keys = |d: &std::path::Path| {
        let mut k: Vec<String> = std::fs::read_dir(d.join("keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(dir.path()), vec!["key-1", "key-2"]);
    let records = log.read_pending(10, usize::MAX).unwrap();
    assert_eq!(records.len(), 2);
    log.ack(&[(records[0].id, Disposition::Delivered)]).unwrap();
    assert_eq!(keys(dir.path()), vec!["key-2"]);
    log.close().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    assert_eq!(seqs(&log), vec![2]);
    assert_eq!(log.stats().corrupt, 0);
}

#[test]
fn purge_shreds_keys_and_files_and_the_log_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    for seq in 1..=5 {
        log.append(entry(seq, Priority::Normal)).unwrap();
    }
    log.flush().unwrap();
    log.purge().unwrap();
    assert!(seqs(&log).is_empty());
    assert_eq!(log.stats().pending_events, 0);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg") || n == "ledger")
        .collect();
    assert!(names.is_empty(), "{names:?}");
    log.append(entry(6, Priority::Normal)).unwrap();
    log.flush().unwrap();
    assert_eq!(seqs(&log), vec![6]);
    log.close().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    assert_eq!(seqs(&log), vec![6]);
}

#[cfg(unix)]
#[test]
fn key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    log.close().unwrap();
    let mode = std::fs::metadata(dir.path().join("keys/key-1"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
}

#[test]
fn large_groups_sealed_by_two_threads_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path()).segment_bytes(64 * 1024)).unwrap();
    // Appended faster than the writer seals them, so groups pass the
    // two-thread threshold (512 records).
    const N: u64 = 3_000;
    for seq in 1..=N {
        let p = if seq % 7 == 0 {
            Priority::Critical
        } else {
            Priority::Normal
        };
        log.append(entry(seq, p)).unwrap();
    }
    log.flush().unwrap();
    log.close().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    let records = log.read_pending(usize::MAX, usize::MAX).unwrap();
    let expected: Vec<u64> = (1..=N)
        .filter(|s| s % 7 == 0)
        .chain((1..=N).filter(|s| s % 7 != 0))
        .collect();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), expected);
    for r in &records {
        assert_eq!(
            r.payload,
            format!(r#"{{"event":"e{}"}}"#, r.seq).into_bytes()
        );
    }
    assert_eq!(log.stats().corrupt, 0);
}

#[test]
fn records_past_the_age_bound_are_dropped_at_open_and_ledgered() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    for seq in 1..=4 {
        log.append(entry(seq, Priority::Normal)).unwrap();
    }
    log.close().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let config = LogConfig::new(dir.path()).bounds(u64::MAX, u64::MAX, Duration::from_millis(10));
    let log = Log::open(config).unwrap();
    assert!(seqs(&log).is_empty());
    assert_eq!(
        log.stats().dropped.get(tally_sdk::log::REASON_EXPIRED),
        Some(&4)
    );
    let ledger = log.drop_ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!((ledger[0].first_seq, ledger[0].last_seq), (1, 4));
}

#[test]
fn records_past_the_age_bound_expire_while_the_log_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path()).bounds(
        u64::MAX,
        u64::MAX,
        Duration::from_millis(1_500),
    ))
    .unwrap();
    for seq in 1..=3 {
        log.append(entry(seq, Priority::Normal)).unwrap();
    }
    log.append(entry(4, Priority::Critical)).unwrap();
    log.flush().unwrap();
    assert_eq!(seqs(&log), vec![4, 1, 2, 3]);
    // Housekeeping runs about once a second: well within 5 s of expiry.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log.stats().dropped.get("expired") != Some(&4) {
        assert!(std::time::Instant::now() < deadline, "{:?}", log.stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(log.stats().pending_events, 0);
    assert!(seqs(&log).is_empty());
}
