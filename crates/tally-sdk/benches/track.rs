//! Criterion benchmark of `track()` on the caller's thread, with 3 string
//! properties built outside the measured call (as the Glean anchor builds
//! its extras). Percentiles, RSS and bytes on the wire are measured by
//! `examples/track_latency.rs`, which times every call.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tally_sdk::{Consent, Props, Tracker, WhenFull};

fn track(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // Blocking when full keeps every measured call an accepted one; the
    // pipeline keeps up with criterion's pace between samples.
    let tracker = Tracker::builder("bench", "http://127.0.0.1:9", dir.path())
        .consent(Consent::Granted)
        .when_full(WhenFull::Block(10_000))
        .build()
        .unwrap();
    let mut i = 0u64;
    c.bench_function("track_3_string_props", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                i += 1;
                let props = Props::new()
                    .with("screen", if i % 2 == 0 { "home" } else { "cart" })
                    .with("button", "buy")
                    .with("variant", if i % 3 == 0 { "a" } else { "b" });
                let t = Instant::now();
                let r = tracker.track("bench.track", props);
                total += t.elapsed();
                std::hint::black_box(r).unwrap();
            }
            total
        })
    });
    tracker.shutdown(Duration::from_secs(30)).unwrap();
}

criterion_group!(benches, track);
criterion_main!(benches);
