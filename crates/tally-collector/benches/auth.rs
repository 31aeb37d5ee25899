//! What the admin token's protections cost per request, each beside its
//! baseline in the same run:
//!
//! - `compare/bytes`: the comparison before (constant time over the raw
//!   bytes, which leaks the length) against `compare/digest`: SHA-256 of the
//!   presented token, then constant time over 32 bytes ([`Keys`]);
//! - `throttle/judge`: the per-address bucket a request with a token is
//!   judged by, with 10,000 addresses tracked (the table's bound).
//!
//! `cargo bench -p tally-collector --bench auth`.

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should stop loudly

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use subtle::ConstantTimeEq;
use tally_collector::client::AddrBucket;
use tally_collector::ingest::auth::Keys;
use tally_collector::throttle::{AuthThrottle, MAX_TRACKED_CLIENTS};

const TOKEN: &str = "3f9c2a7e5b1d4c8f9a0e6b2d7c4f1a83";

fn compare(c: &mut Criterion) {
    let keys = Keys::new(["write-key".to_owned()], Some(TOKEN.to_owned()));
    let raw = TOKEN.as_bytes().to_vec();
    let wrong = "3f9c2a7e5b1d4c8f9a0e6b2d7c4f1a84";
    let mut group = c.benchmark_group("compare");
    group.bench_function("bytes", |b| {
        b.iter(|| bool::from(raw.as_slice().ct_eq(black_box(wrong).as_bytes())))
    });
    group.bench_function("digest", |b| {
        b.iter(|| keys.is_admin_token(black_box(wrong)))
    });
    group.finish();
}

fn throttle(c: &mut Criterion) {
    let t = AuthThrottle::default();
    for i in 0..MAX_TRACKED_CLIENTS {
        t.judge(Some(AddrBucket::V4((i as u32).to_be_bytes())), true);
    }
    let mut group = c.benchmark_group("throttle");
    let mut i = 0u32;
    group.bench_function("judge", |b| {
        b.iter(|| {
            i = (i + 1) % MAX_TRACKED_CLIENTS as u32;
            t.judge(Some(AddrBucket::V4(black_box(i).to_be_bytes())), true)
        })
    });
    group.finish();
}

criterion_group!(benches, compare, throttle);
criterion_main!(benches);
