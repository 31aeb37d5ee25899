//! One fuzz case of the ingest path: the first byte picks the headers (the
//! content encoding, a right, wrong or absent `Content-Digest`, and the type
//! a single-message path would give), the rest is the request body. Shared
//! by the libFuzzer target and the smoke test CI runs
//! (`tests/fuzz_smoke.rs`).
//!
//! Whatever the bytes, preparing the request must not panic, and what it
//! prepares must hold:
//!
//! - every message has one answer, in order: an event or a rejection, and
//!   each rejection one dead letter;
//! - every event has a message id, an identity, the request's source, no
//!   NUL in any id or name, a corrected time no further ahead than the
//!   tolerance, and drop ranges below its seq;
//! - its stored JSON is JSON that PostgreSQL's `jsonb` takes: no `\u0000`
//!   escape and no unpaired surrogate escape (numbers past what a double
//!   holds are JSON, and `jsonb` takes them, so they may stay).

use axum::http::{header, HeaderMap, HeaderValue};
use std::borrow::Cow;

use serde::de::IgnoredAny;
use tally_collector::ingest::answer::Slot;
use tally_collector::ingest::events::storable_escapes;
use tally_collector::ingest::prepare;
use tally_proto::limits::FUTURE_TOLERANCE_MS;
use tally_proto::{content_digest, DecodeLimits, MessageType};

/// The collector's clock in every case (2025-11-24).
const NOW: i64 = 1_764_000_000_000;

const SOURCE: &str = "wk_fuzz";

pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    let encoding = match selector % 4 {
        0 => None,
        1 => Some("gzip"),
        2 => Some("zstd"),
        _ => Some("br"),
    };
    if let Some(encoding) = encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    match (selector / 4) % 3 {
        0 => {}
        1 => {
            if let Ok(digest) = HeaderValue::from_str(&content_digest(body)) {
                headers.insert("content-digest", digest);
            }
        }
        _ => {
            headers.insert(
                "content-digest",
                HeaderValue::from_static("sha-256=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:"),
            );
        }
    }
    let implied = match (selector / 12) % 7 {
        0 => None,
        1 => Some(MessageType::Track),
        2 => Some(MessageType::Identify),
        3 => Some(MessageType::Page),
        4 => Some(MessageType::Screen),
        5 => Some(MessageType::Group),
        _ => Some(MessageType::Alias),
    };
    // Small limits so the limit paths are reached too.
    let limits = DecodeLimits {
        max_body_bytes: 1 << 20,
        max_decoded_bytes: 1 << 20,
        max_ratio: 50,
        ratio_floor_bytes: 4096,
        max_batch_messages: 64,
    };
    let Ok(prepared) = prepare(&headers, body, implied, &limits, NOW, None, |_| {
        Ok(SOURCE.to_owned())
    }) else {
        return;
    };

    let (mut events, mut rejected) = (0, 0);
    for slot in &prepared.slots {
        match slot {
            Slot::Event(i) => {
                assert_eq!(*i, events, "events are answered in order");
                events += 1;
            }
            Slot::Rejected { .. } => rejected += 1,
        }
    }
    assert_eq!(events, prepared.events.len());
    assert_eq!(rejected, prepared.dead_letters.len());
    assert!(prepared.slots.len() <= limits.max_batch_messages);

    for e in &prepared.events {
        assert_eq!(e.source, SOURCE);
        assert!(!e.message_id.is_empty());
        assert!(e.user_id.is_some() || e.anonymous_id.is_some());
        let texts = [
            Some(&e.message_id),
            e.user_id.as_ref(),
            e.anonymous_id.as_ref(),
            e.group_id.as_ref(),
            e.previous_id.as_ref(),
            e.event.as_ref(),
            e.install_id.as_ref(),
            e.session_id.as_ref(),
            e.dedup_key.as_ref(),
        ];
        assert!(texts.iter().flatten().all(|t| !t.contains('\0')));
        serde_json::from_str::<IgnoredAny>(&e.raw).expect("a stored message is JSON");
        assert!(
            matches!(storable_escapes(&e.raw), Cow::Borrowed(_)),
            "a stored message holds an escape PostgreSQL refuses"
        );
        if let Ok(stored) = serde_json::from_str::<serde_json::Value>(&e.raw) {
            assert!(!holds_nul(&stored), "a stored message holds a NUL");
        }
        assert!(e.ts_corrected <= NOW + FUTURE_TOLERANCE_MS);
        for d in &e.drops {
            let seq = e.seq.expect("a drop report has a seq");
            assert!(1 <= d.from && d.from <= d.to && d.to < seq);
        }
    }
    for d in &prepared.dead_letters {
        assert_eq!(d.source, SOURCE);
        let ids = [&d.message_id, &d.user_id, &d.anonymous_id, &d.install_id];
        assert!(ids.iter().copied().flatten().all(|t| !t.contains('\0')));
    }
}

fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(members) => members
            .iter()
            .any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}
