//! A proptest model of the log: random sequences of append, flush, ack,
//! crash, reopen and key rotation run against the real log on an in-memory
//! filesystem that keeps a live and a durable image (a crash keeps only what
//! a completed sync made durable, plus a torn tail), compared with a simple
//! model of what must be there.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use tally_proto::Priority;
use tally_sdk::log::fs::Faults;
use tally_sdk::log::{Disposition, Durability, Log, LogConfig, MemFs};

#[derive(Debug, Clone)]
enum Op {
    Append {
        critical: bool,
        size: usize,
        /// 0: no context; 1 or 2: one of two.
        context: u8,
    },
    Flush,
    /// Acks the pending records whose position modulo `modulo` is `pick`.
    Ack {
        modulo: usize,
        pick: usize,
    },
    /// Power cut: keeps `torn` bytes of each unsynced tail.
    Crash {
        torn: usize,
    },
    Reopen,
    RotateKey,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<bool>(), 0usize..300, 0u8..3).prop_map(|(critical, size, context)| Op::Append { critical, size, context }),
        2 => Just(Op::Flush),
        2 => (1usize..4, 0usize..4).prop_map(|(modulo, pick)| Op::Ack { modulo, pick: pick % modulo }),
        1 => (0usize..120).prop_map(|torn| Op::Crash { torn }),
        1 => Just(Op::Reopen),
        1 => Just(Op::RotateKey),
    ]
}

#[derive(Debug, Clone)]
struct Model {
    /// Appended, not acknowledged: (seq, critical).
    pending: Vec<(u64, bool)>,
    /// Seqs a successful flush (or close) made durable.
    confirmed: BTreeSet<u64>,
}

fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut p = format!(r#"{{"seq":{seq},"pad":""#).into_bytes();
    p.extend(std::iter::repeat_n(b'x', size));
    p.extend_from_slice(b"\"}");
    p
}

/// Pending seqs in the order the log must return them: critical first,
/// each lane in append order.
fn lane_order(pending: &[(u64, bool)]) -> Vec<u64> {
    let crit = pending.iter().filter(|p| p.1).map(|p| p.0);
    let norm = pending.iter().filter(|p| !p.1).map(|p| p.0);
    crit.chain(norm).collect()
}

fn open(fs: &MemFs, dir: &Path, segment_bytes: u64, synced: bool) -> Log {
    let durability = if synced {
        Durability::Synced
    } else {
        Durability::Buffered {
            max_delay: std::time::Duration::from_secs(3600),
        }
    };
    Log::open(
        LogConfig::with_fs(dir, Arc::new(fs.clone()))
            .segment_bytes(segment_bytes)
            .durability(durability),
    )
    .unwrap()
}

fn run(ops: Vec<Op>, segment_bytes: u64, synced: bool) -> Result<(), TestCaseError> {
    let dir = Path::new("/log");
    let mut fs = MemFs::new();
    let mut log = open(&fs, dir, segment_bytes, synced);
    let mut model = Model {
        pending: Vec::new(),
        confirmed: BTreeSet::new(),
    };
    let mut next_seq = 1u64;
    let mut sizes = std::collections::BTreeMap::new();
    // None, or one of two contexts (each record comes back with its own).
    let contexts: [Option<Arc<[u8]>>; 3] = [
        None,
        Some(Arc::from(&b"context-one"[..])),
        Some(Arc::from(&b"the second context, a little longer"[..])),
    ];
    let mut context_of = std::collections::BTreeMap::new();
    for op in ops {
        match op {
            Op::Append {
                critical,
                size,
                context,
            } => {
                let seq = next_seq;
                next_seq += 1;
                let priority = if critical {
                    Priority::Critical
                } else {
                    Priority::Normal
                };
                let context = contexts[usize::from(context)].as_ref();
                log.append_in(seq, priority, &payload(seq, size), context)
                    .unwrap();
                sizes.insert(seq, size);
                context_of.insert(seq, context.cloned());
                model.pending.push((seq, critical));
            }
            Op::Flush => {
                log.flush().unwrap();
                model.confirmed.extend(model.pending.iter().map(|p| p.0));
                let got: Vec<u64> = log
                    .read_pending(usize::MAX, usize::MAX)
                    .unwrap()
                    .iter()
                    .map(|r| r.seq)
                    .collect();
                prop_assert_eq!(got, lane_order(&model.pending));
            }
            Op::Ack { modulo, pick } => {
                let records = log.read_pending(usize::MAX, usize::MAX).unwrap();
                let acks: Vec<_> = records
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % modulo == pick)
                    .map(|(_, r)| (r.id, Disposition::Delivered))
                    .collect();
                let acked: BTreeSet<u64> = records
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % modulo == pick)
                    .map(|(_, r)| r.seq)
                    .collect();
                for r in &records {
                    prop_assert_eq!(&r.payload, &payload(r.seq, sizes[&r.seq]));
                    prop_assert_eq!(&r.context, &context_of[&r.seq]);
                }
                log.ack(&acks).unwrap();
                model.pending.retain(|p| !acked.contains(&p.0));
            }
            Op::Crash { torn } => {
                fs.set_faults(Faults {
                    torn_tail_bytes: torn,
                    ..Faults::default()
                });
                let after = fs.crash();
                drop(log);
                fs = after;
                log = open(&fs, dir, segment_bytes, synced);
                let got: Vec<u64> = log
                    .read_pending(usize::MAX, usize::MAX)
                    .unwrap()
                    .iter()
                    .map(|r| r.seq)
                    .collect();
                let got_set: BTreeSet<u64> = got.iter().copied().collect();
                prop_assert_eq!(
                    got_set.len(),
                    got.len(),
                    "a record came back twice: {:?}",
                    got
                );
                let allowed: BTreeSet<u64> = model.pending.iter().map(|p| p.0).collect();
                for seq in &got {
                    prop_assert!(
                        allowed.contains(seq),
                        "seq {} was acked or never appended",
                        seq
                    );
                }
                for (seq, _) in &model.pending {
                    if model.confirmed.contains(seq) {
                        prop_assert!(got_set.contains(seq), "confirmed seq {} lost", seq);
                    }
                }
                model.pending.retain(|p| got_set.contains(&p.0));
                prop_assert_eq!(&got, &lane_order(&model.pending));
                prop_assert_eq!(log.stats().corrupt, 0);
                model.confirmed = got_set;
            }
            Op::Reopen => {
                log.close().unwrap();
                log = open(&fs, dir, segment_bytes, synced);
                model.confirmed.extend(model.pending.iter().map(|p| p.0));
                let got: Vec<u64> = log
                    .read_pending(usize::MAX, usize::MAX)
                    .unwrap()
                    .iter()
                    .map(|r| r.seq)
                    .collect();
                prop_assert_eq!(got, lane_order(&model.pending));
                prop_assert_eq!(log.stats().pending_events, model.pending.len() as u64);
            }
            Op::RotateKey => {
                log.rotate_key().unwrap();
                model.confirmed.extend(model.pending.iter().map(|p| p.0));
            }
        }
    }
    log.close().unwrap();
    let log = open(&fs, dir, segment_bytes, synced);
    let got: Vec<u64> = log
        .read_pending(usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    prop_assert_eq!(got, lane_order(&model.pending));
    prop_assert_eq!(log.stats().corrupt, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn buffered_log_matches_the_model(ops in prop::collection::vec(op(), 1..60), small in any::<bool>()) {
        run(ops, if small { 1024 } else { 64 * 1024 }, false)?;
    }

    #[test]
    fn synced_log_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, 1024, true)?;
    }
}
