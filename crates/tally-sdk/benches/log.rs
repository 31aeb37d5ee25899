//! Criterion benchmarks of the durable log on the real filesystem (real
//! fdatasync): 200-byte events appended and made durable through group
//! commit, and the cost of one `append` call.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tally_proto::Priority;
use tally_sdk::log::{Durability, Entry, Log, LogConfig};

/// The event size the performance targets are stated for.
const EVENT_BYTES: usize = 200;
/// Events per measured batch: large enough that group commit, not the
/// final fdatasync, dominates.
const BATCH: u64 = 100_000;

fn payload(seq: u64) -> Vec<u8> {
    let mut p = format!(r#"{{"type":"track","event":"Button Clicked","seq":{seq},"properties":{{"screen":"home","pad":""#).into_bytes();
    p.resize(EVENT_BYTES - 3, b'x');
    p.extend_from_slice(b"\"}}");
    p
}

fn open(dir: &std::path::Path, durability: Durability) -> Log {
    Log::open(LogConfig::new(dir).durability(durability).bounds(
        u64::MAX,
        u64::MAX,
        Duration::from_secs(3600),
    ))
    .expect("open the log")
}

fn append_and_flush(c: &mut Criterion) {
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    for (name, durability) in [
        (
            "append_200B_x100k_then_flush/buffered",
            Durability::Buffered {
                max_delay: Duration::from_millis(200),
            },
        ),
        ("append_200B_x100k_then_flush/synced", Durability::Synced),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let log = open(dir.path(), durability);
                    let payloads: Vec<Vec<u8>> = (0..BATCH).map(payload).collect();
                    let start = Instant::now();
                    for (seq, payload) in payloads.into_iter().enumerate() {
                        log.append(Entry {
                            seq: seq as u64,
                            priority: Priority::Normal,
                            payload,
                        })
                        .expect("append");
                    }
                    log.flush().expect("flush");
                    total += start.elapsed();
                    drop(log);
                }
                total
            });
        });
    }
    group.finish();
}

fn append_call(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        Durability::Buffered {
            max_delay: Duration::from_millis(200),
        },
    );
    let mut seq = 0u64;
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_call_200B", |b| {
        b.iter_batched(
            || {
                seq += 1;
                Entry {
                    seq,
                    priority: Priority::Normal,
                    payload: payload(seq),
                }
            },
            |entry| log.append(entry).expect("append"),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, append_and_flush, append_call);
criterion_main!(benches);
