//! Criterion benchmark of [`CompiledPlan::validate`] on the ingest path: a
//! typical 5-property event (`Order Completed` v2 of the test fixture: a
//! UUID-formatted id, a bounded number, an enum, a bounded string, an
//! integer, closed to other properties), valid; the same from JSON text
//! (what the collector holds); an unplanned event; and a violation (whose
//! report is built). Throughput is in events, so criterion prints
//! events/s.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use tally_plan::{CompiledPlan, Verdict};

fn validate(c: &mut Criterion) {
    let plan =
        CompiledPlan::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plan.yaml"))
            .unwrap();
    let props = json!({
        "order_id": "0192f5e4-3c1a-7b2e-9a4d-5f6e7d8c9b0a",
        "amount": 42.5,
        "currency": "EUR",
        "coupon": "WINTER",
        "item_count": 3
    });
    let text = props.to_string();
    let mut bad = props.clone();
    bad["currency"] = json!("JPY");
    assert_eq!(
        plan.validate("Order Completed", Some(2), &props),
        Verdict::Ok
    );
    assert!(plan
        .validate("Order Completed", Some(2), &bad)
        .is_violation());

    let mut group = c.benchmark_group("plan_validate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("valid_5_props", |b| {
        b.iter(|| plan.validate(std::hint::black_box("Order Completed"), Some(2), &props))
    });
    group.bench_function("valid_5_props_from_json_text", |b| {
        b.iter(|| plan.validate_json(std::hint::black_box("Order Completed"), Some(2), &text))
    });
    group.bench_function("unplanned", |b| {
        b.iter(|| plan.validate(std::hint::black_box("Order Refunded"), None, &props))
    });
    group.bench_function("violation_5_props", |b| {
        b.iter(|| plan.validate(std::hint::black_box("Order Completed"), Some(2), &bad))
    });
    group.finish();
}

criterion_group!(benches, validate);
criterion_main!(benches);
