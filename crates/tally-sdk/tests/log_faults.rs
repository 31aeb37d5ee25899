//! Injected filesystem faults: a failed fsync poisons the log, ENOSPC is
//! reported and recovered from, short writes are completed; and no
//! plaintext reaches the disk.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

use std::path::Path;
use std::sync::Arc;

use tally_proto::Priority;
use tally_sdk::log::fs::Faults;
use tally_sdk::log::{
    AppendError, Disposition, DroppedRange, Durability, Entry, FullPolicy, Log, LogConfig,
    LogError, MemFs,
};

fn entry(seq: u64) -> Entry {
    Entry {
        seq,
        priority: Priority::Normal,
        payload: format!(r#"{{"event":"fault","seq":{seq}}}"#).into_bytes(),
    }
}

fn open(fs: &MemFs) -> Log {
    Log::open(LogConfig::with_fs("/log", Arc::new(fs.clone())).durability(Durability::Synced))
        .unwrap()
}

/// A synced log on `fs` refusing appends past `max_events`.
fn reject_new(fs: &MemFs, max_events: u64) -> LogConfig {
    LogConfig::with_fs("/log", Arc::new(fs.clone()))
        .durability(Durability::Synced)
        .full_policy(FullPolicy::RejectNew)
        .bounds(u64::MAX, max_events, std::time::Duration::from_secs(3600))
}

fn pending(log: &Log) -> Vec<u64> {
    log.read_pending(usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[test]
fn a_failed_fsync_poisons_the_log_and_what_was_flushed_before_survives() {
    let fs = MemFs::new();
    let log = open(&fs);
    for seq in 1..=3 {
        log.append(entry(seq)).unwrap();
    }
    log.flush().unwrap();
    fs.set_faults(Faults {
        fail_sync: true,
        ..Faults::default()
    });
    log.append(entry(4)).unwrap();
    assert_eq!(log.flush(), Err(LogError::Poisoned));
    let stats = log.stats();
    assert!(stats.poisoned);
    assert!(stats.persistence_errors >= 1);
    assert!(stats.last_error.is_some());
    assert_eq!(log.append(entry(5)), Err(AppendError::Poisoned));
    assert_eq!(log.flush(), Err(LogError::Poisoned));
    // The power goes: only what was synced is left.
    let after = fs.crash();
    drop(log);
    let log = open(&after);
    assert_eq!(pending(&log), vec![1, 2, 3]);
    assert!(!log.stats().poisoned);
}

#[test]
fn enospc_is_reported_and_the_writer_recovers_when_space_returns() {
    let fs = MemFs::new();
    let log = open(&fs);
    log.append(entry(1)).unwrap();
    log.flush().unwrap();
    let used = used_bytes(&fs);
    fs.set_faults(Faults {
        space_limit: Some(used + 100),
        ..Faults::default()
    });
    for seq in 2..=20 {
        log.append(entry(seq)).unwrap();
    }
    assert_eq!(log.flush(), Err(LogError::NoSpace));
    let stats = log.stats();
    assert!(!stats.poisoned);
    assert!(stats.persistence_errors >= 1);
    assert_eq!(stats.pending_events, 20);
    // Space returns: the retained group is written, once, in order.
    fs.set_faults(Faults::default());
    log.flush().unwrap();
    assert_eq!(pending(&log), (1..=20).collect::<Vec<_>>());
    let after = fs.crash();
    drop(log);
    let log = open(&after);
    assert_eq!(pending(&log), (1..=20).collect::<Vec<_>>());
    assert_eq!(log.stats().corrupt, 0);
}

#[test]
fn drops_counted_while_the_disk_is_full_are_persisted_when_space_returns() {
    let config = |fs: &MemFs| reject_new(fs, 5);
    let fs = MemFs::new();
    let log = Log::open(config(&fs)).unwrap();
    for seq in 1..=5 {
        log.append(entry(seq)).unwrap();
    }
    log.flush().unwrap();
    // Not one byte more fits: neither a record nor a ledger entry.
    fs.set_faults(Faults {
        space_limit: Some(used_bytes(&fs)),
        ..Faults::default()
    });
    for seq in 6..=8 {
        assert_eq!(log.append(entry(seq)), Err(AppendError::Full));
    }
    assert_eq!(log.flush(), Err(LogError::NoSpace));
    let stats = log.stats();
    assert_eq!(stats.dropped.get("log_full"), Some(&3));
    assert!(stats.persistence_errors >= 1);
    // Space returns: the count is written before anything else.
    fs.set_faults(Faults::default());
    log.flush().unwrap();
    let after = fs.crash();
    drop(log);
    let log = Log::open(config(&after)).unwrap();
    assert_eq!(log.stats().dropped.get("log_full"), Some(&3));
    assert_eq!(
        log.drop_ledger(),
        vec![DroppedRange {
            first_seq: 6,
            last_seq: 8,
            reason: "log_full".into(),
        }],
        "three refusals, one ledger range"
    );
    assert_eq!(pending(&log), (1..=5).collect::<Vec<_>>());
}

/// A refused seq is in the ledger before any later record is on disk: a
/// kill between the two would otherwise leave a gap nothing explains
/// (the later record raises the next seq past the refused one). Room is
/// left for the later record but not for it and the refusal's entry: the
/// refusal takes the room and the record waits for space.
#[test]
fn a_refusal_reaches_the_ledger_before_any_later_record() {
    let config = |fs: &MemFs| reject_new(fs, 2);
    let fs = MemFs::new();
    let log = Log::open(config(&fs)).unwrap();
    log.append(entry(1)).unwrap();
    log.flush().unwrap();
    let record = flushed_size(&fs, &log, entry(2));
    assert_eq!(log.append(entry(3)), Err(AppendError::Full));
    let acks: Vec<_> = log
        .read_pending(usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| (r.id, Disposition::Delivered))
        .collect();
    log.ack(&acks).unwrap();
    leave_room(&fs, record + 4);
    log.append(entry(4)).unwrap();
    // Whether the writer took the refusal alone before 4 came (then both
    // fit) or both in one cycle (then 4 waits for space), 4 is never on
    // disk without 3's drop.
    let _ = log.flush();

    let after = fs.crash();
    drop(log);
    let log = Log::open(config(&after)).unwrap();
    let three = vec![DroppedRange {
        first_seq: 3,
        last_seq: 3,
        reason: "log_full".into(),
    }];
    assert_eq!(log.drop_ledger(), three);
    assert!(pending(&log).iter().all(|&s| s == 4));
}

/// The two priority lanes go to disk in seq order: room is left for one
/// more record, and the lower seq (normal) takes it, not the critical one
/// above it, so no record is durable above one that is lost.
#[test]
fn lanes_reach_the_disk_in_seq_order() {
    let fs = MemFs::new();
    let log = open(&fs);
    let critical = |seq: u64| Entry {
        priority: Priority::Critical,
        ..entry(seq)
    };
    log.append(entry(1)).unwrap();
    log.append(critical(2)).unwrap();
    log.flush().unwrap();
    let record = flushed_size(&fs, &log, entry(3));
    leave_room(&fs, record + 4);
    log.append(entry(4)).unwrap();
    log.append(critical(5)).unwrap();
    assert_eq!(log.flush(), Err(LogError::NoSpace));

    let after = fs.crash();
    drop(log);
    let log = open(&after);
    assert_eq!(log.pending_seqs().iter().max(), Some(&4));
    let mut seqs = pending(&log);
    seqs.sort_unstable();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
}

/// The seqs a log on `fs` accounts for after a restart: pending records
/// and drops in the ledger, sorted.
fn accounted(fs: &MemFs, durability: Durability) -> Vec<u64> {
    let log =
        Log::open(LogConfig::with_fs("/log", Arc::new(fs.clone())).durability(durability)).unwrap();
    let mut seqs = pending(&log);
    for range in log.drop_ledger() {
        seqs.extend(range.first_seq..=range.last_seq);
    }
    seqs.sort_unstable();
    seqs
}

/// A power cut between any two syncs, with the lanes interleaved and a
/// drop recorded between records: what survives is a prefix of the seqs
/// (records and counted drops), never a record or drop above one lost.
#[test]
fn a_power_cut_between_any_two_syncs_keeps_a_prefix_of_the_seqs() {
    let critical = |seq: u64| Entry {
        priority: Priority::Critical,
        ..entry(seq)
    };
    for durability in [
        Durability::Synced,
        Durability::Buffered {
            max_delay: std::time::Duration::from_secs(3600),
        },
    ] {
        let mut seen = Vec::new();
        for cut in 0..12 {
            let fs = MemFs::new();
            let log =
                Log::open(LogConfig::with_fs("/log", Arc::new(fs.clone())).durability(durability))
                    .unwrap();
            // Both lanes' segments exist before the cut.
            log.append(entry(1)).unwrap();
            log.append(critical(2)).unwrap();
            log.flush().unwrap();
            fs.set_faults(Faults {
                power_cut_after_syncs: Some(cut),
                ..Faults::default()
            });
            log.append(entry(3)).unwrap();
            log.append(critical(4)).unwrap();
            log.append(entry(5)).unwrap();
            log.record_drop(6, "invalid:message_too_large");
            log.append(critical(7)).unwrap();
            log.append(entry(8)).unwrap();
            log.flush().unwrap();
            let after = fs.crash();
            drop(log);
            let seqs = accounted(&after, durability);
            let prefix: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, prefix, "{durability:?}, power cut after {cut} syncs");
            seen.push(seqs.len());
        }
        // Every cut point was reached, and the last one kept everything.
        assert_eq!(seen.last(), Some(&8), "{durability:?}: {seen:?}");
        assert!(seen.contains(&2), "{durability:?}: {seen:?}");
    }
}

#[test]
fn short_writes_are_completed() {
    let fs = MemFs::new();
    fs.set_faults(Faults {
        max_write: Some(7),
        ..Faults::default()
    });
    let log = open(&fs);
    for seq in 1..=50 {
        log.append(entry(seq)).unwrap();
    }
    log.flush().unwrap();
    let after = fs.crash();
    drop(log);
    let log = open(&after);
    assert_eq!(pending(&log), (1..=50).collect::<Vec<_>>());
}

#[test]
fn no_plaintext_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let marker = "property-value-7f3a9c";
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    for seq in 1..=100 {
        log.append(Entry {
            seq,
            priority: if seq % 2 == 0 {
                Priority::Critical
            } else {
                Priority::Normal
            },
            payload: format!(
                r#"{{"event":"Order Completed","properties":{{"coupon":"{marker}"}}}}"#
            )
            .into_bytes(),
        })
        .unwrap();
    }
    log.flush().unwrap();
    // The payload really is there, and readable through the log.
    let records = log.read_pending(1, usize::MAX).unwrap();
    assert!(String::from_utf8_lossy(&records[0].payload).contains(marker));
    log.close().unwrap();
    let mut scanned = 0;
    for file in walk(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        scanned += bytes.len();
        for needle in [marker.as_bytes(), b"Order Completed", b"coupon"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext {:?}",
                file.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(scanned > 100 * 60, "only {scanned} bytes on disk");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// Appends and flushes `e`; returns the bytes it took on disk.
fn flushed_size(fs: &MemFs, log: &Log, e: Entry) -> u64 {
    let before = used_bytes(fs);
    log.append(e).unwrap();
    log.flush().unwrap();
    used_bytes(fs) - before
}

/// From now on, `bytes` more fit on `fs`.
fn leave_room(fs: &MemFs, bytes: u64) {
    fs.set_faults(Faults {
        space_limit: Some(used_bytes(fs) + bytes),
        ..Faults::default()
    });
}

fn used_bytes(fs: &MemFs) -> u64 {
    ["/log/ledger"]
        .iter()
        .filter_map(|p| fs.file(Path::new(p)))
        .map(|b| b.len() as u64)
        .sum::<u64>()
        + (0..16u64)
            .flat_map(|id| ["c", "n"].map(move |l| format!("/log/{id:016x}-{l}.seg")))
            .filter_map(|p| fs.file(Path::new(&p)))
            .map(|b| b.len() as u64)
            .sum::<u64>()
        + fs.file(Path::new("/log/keys/key-1"))
            .map_or(0, |b| b.len() as u64)
}
