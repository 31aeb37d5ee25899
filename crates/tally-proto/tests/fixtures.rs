//! Payloads that must stay decodable by every later version: Tally's own
//! version-1 batches, and the Segment Spec's documented examples.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;

use tally_proto::{
    decode_json, validate, DecodeLimits, Message, MessageType, Priority, RejectReason,
};

fn fixture(path: &str) -> Vec<u8> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn v1_batch_decodes_validates_and_reencodes_byte_for_byte() {
    let bytes = fixture("v1/batch_all_types.json");
    let body = decode_json(&bytes, &DecodeLimits::default()).unwrap();
    assert_eq!(body.sent_at.as_deref(), Some("2024-05-01T12:00:06.000Z"));
    let kinds: Vec<_> = body
        .messages
        .iter()
        .map(|m| {
            let msg = m.parsed.as_ref().unwrap();
            validate(msg, m.raw).unwrap();
            // Every member is known or kept: writing it back gives the same bytes.
            assert_eq!(msg.to_json(), m.raw);
            msg.kind.clone().unwrap()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            MessageType::Identify,
            MessageType::Track,
            MessageType::Screen,
            MessageType::Page,
            MessageType::Group,
            MessageType::Alias,
        ]
    );

    let order = body.messages[1].parsed.as_ref().unwrap();
    let tally = order.tally().unwrap();
    assert_eq!(tally.install_id.as_deref(), Some("inst-5b1c"));
    assert_eq!(tally.seq, Some(2));
    assert_eq!(tally.session_index, Some(1));
    assert_eq!(tally.schema, Some(1));
    assert_eq!(tally.priority, Some(Priority::Critical));
    assert_eq!(tally.dedup_key.as_deref(), Some("order-o-1001"));
    assert_eq!(
        order.properties.as_ref().unwrap().get(),
        r#"{"order_id":"o-1001","total":42.5,"currency":"EUR","items":[{"sku":"A1","qty":2}]}"#
    );
    let seqs: Vec<_> = body
        .messages
        .iter()
        .map(|m| m.parsed.as_ref().unwrap().tally().unwrap().seq.unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn segment_spec_examples_decode_validate_and_keep_unknown_members() {
    let cases = [
        ("track", MessageType::Track, Some("Course Clicked")),
        ("identify", MessageType::Identify, None),
        ("page", MessageType::Page, Some("Home")),
        ("screen", MessageType::Screen, Some("Home")),
        ("group", MessageType::Group, None),
        ("alias", MessageType::Alias, None),
    ];
    for (name, kind, event_name) in cases {
        let bytes = fixture(&format!("segment/{name}.json"));
        let body = decode_json(&bytes, &DecodeLimits::default()).unwrap();
        assert!(body.single, "{name}");
        let m = &body.messages[0];
        let msg = m.parsed.as_ref().unwrap();
        let checked = validate(msg, m.raw).unwrap_or_else(|r| panic!("{name}: {r}"));
        assert_eq!(checked.kind, kind, "{name}");
        assert_eq!(msg.event_name(), event_name, "{name}");
        assert!(checked.timestamp.is_some(), "{name}");
        assert!(
            msg.extra.get("receivedAt").is_some(),
            "{name}: receivedAt kept"
        );
        // A Tally round trip loses nothing: re-encoding and re-decoding
        // gives the same message.
        let again: Message = serde_json::from_str(&msg.to_json()).unwrap();
        assert_eq!(&again, msg, "{name}");
        let original: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let written: serde_json::Value = serde_json::from_str(&msg.to_json()).unwrap();
        assert_eq!(original, written, "{name}: same JSON document");
    }
}

#[test]
fn segment_screen_context_is_typed_where_known() {
    let bytes = fixture("segment/screen.json");
    let msg: Message = serde_json::from_slice(&bytes).unwrap();
    let ctx = msg.context.unwrap();
    assert_eq!(ctx.app.unwrap().build.as_deref(), Some("3.0.1.545"));
    let device = ctx.device.unwrap();
    assert_eq!(device.model.as_deref(), Some("iPhone7,2"));
    assert_eq!(device.device_type.as_deref(), Some("ios"));
    assert!(device.extra.get("advertisingId").is_some());
    assert_eq!(ctx.os.unwrap().version.as_deref(), Some("8.1.3"));
    assert_eq!(ctx.locale.as_deref(), Some("nl-NL"));
    assert_eq!(ctx.timezone.as_deref(), Some("Europe/Amsterdam"));
    assert_eq!(ctx.library.unwrap().name.as_deref(), Some("analytics-ios"));
    assert!(ctx.tally.is_none());
}

#[test]
fn segment_batch_example_decodes_every_message() {
    let bytes = fixture("segment/batch.json");
    let body = decode_json(&bytes, &DecodeLimits::default()).unwrap();
    assert!(!body.single);
    assert_eq!(body.messages.len(), 3);
    for m in &body.messages {
        validate(m.parsed.as_ref().unwrap(), m.raw).unwrap();
    }
}

#[test]
fn a_message_without_message_id_is_rejected_with_its_reason() {
    let body = decode_json(
        br#"{"batch":[{"type":"track","userId":"u","event":"E"}]}"#,
        &DecodeLimits::default(),
    )
    .unwrap();
    let m = &body.messages[0];
    assert_eq!(
        validate(m.parsed.as_ref().unwrap(), m.raw)
            .unwrap_err()
            .reason,
        RejectReason::MissingMessageId
    );
}
