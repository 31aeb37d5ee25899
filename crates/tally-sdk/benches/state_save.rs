//! What sealing the user id costs a state save, beside a save in the same
//! run that seals nothing new: each iteration appends one record, flushes
//! it and saves the state (two fsyncs, a rename).
//!
//! - `flush/track`: the user is known and unchanged, so the last sealing
//!   is reused (what a save costs an identified user: one
//!   `KeyProvider::current()` more than before);
//! - `flush/identify_new_user`: a new user each time, sealed afresh
//!   (XChaCha20-Poly1305 of the id under the log's current key).
//!
//! `cargo bench -p tally-sdk --bench state_save`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tally_sdk::{Consent, Props, Tracker};

fn flush(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::builder("bench", "http://127.0.0.1:9", dir.path())
        .consent(Consent::Granted)
        .auto_upload(false)
        .build()
        .unwrap();
    tracker.identify("bench-user-0", Props::new()).unwrap();
    tracker.flush().unwrap();
    let mut group = c.benchmark_group("flush");
    group.sample_size(30);
    group.bench_function("track", |b| {
        b.iter(|| {
            tracker.track("bench.flush", Props::new()).unwrap();
            tracker.flush().unwrap();
        })
    });
    let mut n = 0u64;
    group.bench_function("identify_new_user", |b| {
        b.iter(|| {
            n += 1;
            tracker
                .identify(&format!("bench-user-{n}"), Props::new())
                .unwrap();
            tracker.flush().unwrap();
        })
    });
    group.finish();
    tracker.shutdown(Duration::from_secs(30)).unwrap();
}

criterion_group!(benches, flush);
criterion_main!(benches);
