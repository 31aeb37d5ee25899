//! `TrackOptions::event_version` as the bindings pass it reaches the
//! collector in `context.tally.event_version` exactly, through a real
//! upload to a collector stand-in on 127.0.0.1 (the SDK's own, which keeps
//! every message as sent).

#![allow(clippy::unwrap_used)]

#[path = "../../tally-sdk/tests/support/collector.rs"]
mod collector;
mod support;

use std::collections::HashMap;

use collector::Collector;
use serde_json::Value;
use tally_ffi::{Priority, PropValue, TallyConfig, TallyTracker, TrackOptions};

fn config(endpoint: &str, dir: &std::path::Path) -> TallyConfig {
    TallyConfig {
        critical_events: vec!["Order Completed".into()],
        ..support::config(endpoint, dir)
    }
}

fn version(v: Option<u32>) -> Option<TrackOptions> {
    Some(TrackOptions {
        event_version: v,
        ..TrackOptions::default()
    })
}

#[test]
fn the_event_version_reaches_context_tally_exactly() {
    let (collector, url) = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let t = TallyTracker::new(config(&url, dir.path()), None).unwrap();
    let props = HashMap::from([("sku".to_owned(), PropValue::Text { value: "a".into() })]);
    let seqs = [
        t.track("Item Added".into(), Some(props), version(Some(2)))
            .unwrap(),
        // With the other options: each keeps its place.
        t.track_json(
            "Order Completed".into(),
            r#"{"total":1}"#.into(),
            Some(TrackOptions {
                priority: Some(Priority::Normal),
                dedup_key: Some("order-1".into()),
                event_version: Some(7),
            }),
        )
        .unwrap(),
        // No version: the member is absent (the collector judges by the
        // plan's latest), with options or without.
        t.track("No Version".into(), None, version(None)).unwrap(),
        t.track("No Options".into(), None, None).unwrap(),
        // 0 and the largest u32 are sent as they are, as by the Rust SDK:
        // the collector counts a version its plan lacks (`unknown_version`).
        t.track("Zero".into(), None, version(Some(0))).unwrap(),
        t.track("Largest".into(), None, version(Some(u32::MAX)))
            .unwrap(),
    ];
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert!(t.wait_until_synced(30_000).unwrap(), "{:?}", t.health());

    let mut sent: Vec<(u64, String, Value, Value, Value)> = collector
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            let tally = &m["context"]["tally"];
            (
                tally["seq"].as_u64().unwrap(),
                m["event"].as_str().unwrap().to_owned(),
                tally.get("event_version").cloned().unwrap_or(Value::Null),
                tally.get("priority").cloned().unwrap_or(Value::Null),
                tally.get("dedup_key").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    sent.sort_by_key(|m| m.0);
    let row = |seq: u64, event: &str, v: Value, priority: Value, dedup: Value| {
        (seq, event.to_owned(), v, priority, dedup)
    };
    assert_eq!(
        sent,
        [
            row(1, "Item Added", Value::from(2), Value::Null, Value::Null),
            // An explicit `Normal` overrides the configured critical.
            row(
                2,
                "Order Completed",
                Value::from(7),
                Value::Null,
                Value::from("order-1")
            ),
            row(3, "No Version", Value::Null, Value::Null, Value::Null),
            row(4, "No Options", Value::Null, Value::Null, Value::Null),
            row(5, "Zero", Value::from(0), Value::Null, Value::Null),
            row(
                6,
                "Largest",
                Value::from(u32::MAX),
                Value::Null,
                Value::Null
            ),
        ]
    );
    let h = t.health().unwrap();
    assert_eq!((h.tracked, h.accepted, h.pending), (6, 6, 0));
    assert!(h.refused.is_empty(), "{:?}", h.refused);
    t.shutdown(5_000).unwrap();
}
