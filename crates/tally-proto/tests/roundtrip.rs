//! Property tests: any message and any batch survive encode → decode
//! unchanged, under every content encoding.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::Value;
use tally_proto::{
    decode_json, decompress, verify_digest, App, Batch, ContentEncoding, Context, DecodeLimits,
    Device, Extra, Library, Message, MessageType, Os, Priority, RawJson, TallyContext,
};

fn text() -> impl Strategy<Value = String> {
    // Printable ASCII, quotes and backslashes, and some non-ASCII.
    "[a-zA-Z0-9 _\\-\"\\\\/é€😀]{0,24}"
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e12f64..1.0e12).prop_map(Value::from),
        text().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map("[a-z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = RawJson> {
    btree_map("[a-z_]{1,10}", json_value(), 0..6).prop_map(|m| {
        let v = Value::Object(m.into_iter().collect());
        RawJson::from_value(&v).unwrap()
    })
}

/// Unknown members: keys that no wire struct knows (they start with `x_`).
fn extra() -> impl Strategy<Value = Extra> {
    btree_map("x_[a-z]{1,6}", json_value(), 0..3).prop_map(|m| {
        Extra(
            m.into_iter()
                .map(|(k, v)| (k, RawJson::from_value(&v).unwrap()))
                .collect(),
        )
    })
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    option::of(text())
}

fn tally_context() -> impl Strategy<Value = TallyContext> {
    (
        opt_text(),
        option::of(any::<u64>()),
        opt_text(),
        option::of(any::<u64>()),
        option::of(any::<u32>()),
        option::of(prop_oneof![
            Just(Priority::Normal),
            Just(Priority::Critical)
        ]),
        opt_text(),
        option::of(any::<u32>()),
        extra(),
    )
        .prop_map(
            |(
                install_id,
                seq,
                session_id,
                session_index,
                schema,
                priority,
                dedup_key,
                event_version,
                extra,
            )| {
                TallyContext {
                    install_id,
                    seq,
                    session_id,
                    session_index,
                    schema,
                    priority,
                    dedup_key,
                    event_version,
                    extra,
                }
            },
        )
}

fn context() -> impl Strategy<Value = Context> {
    (
        option::of(
            (opt_text(), opt_text(), opt_text(), opt_text(), extra()).prop_map(
                |(name, version, build, namespace, extra)| App {
                    name,
                    version,
                    build,
                    namespace,
                    extra,
                },
            ),
        ),
        option::of((opt_text(), opt_text(), opt_text(), extra()).prop_map(
            |(manufacturer, model, device_type, extra)| Device {
                manufacturer,
                model,
                device_type,
                extra,
            },
        )),
        option::of(
            (opt_text(), opt_text(), extra()).prop_map(|(name, version, extra)| Os {
                name,
                version,
                extra,
            }),
        ),
        option::of(
            (opt_text(), opt_text(), extra()).prop_map(|(name, version, extra)| Library {
                name,
                version,
                extra,
            }),
        ),
        opt_text(),
        opt_text(),
        option::of(tally_context()),
        extra(),
    )
        .prop_map(
            |(app, device, os, library, locale, timezone, tally, extra)| Context {
                app,
                device,
                os,
                library,
                locale,
                timezone,
                tally,
                extra,
            },
        )
}

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        proptest::sample::select(MessageType::KNOWN.to_vec()),
        "[a-z]{1,8}".prop_map(|s| MessageType::from_wire(&s)),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        (
            option::of(message_type()),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
        ),
        (opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        (
            option::of(json_object()),
            option::of(json_object()),
            option::of(context()),
        ),
        (option::of(json_object()), opt_text(), extra()),
    )
        .prop_map(
            |(
                (kind, message_id, timestamp, original_timestamp, sent_at, user_id),
                (anonymous_id, event, name, group_id, previous_id),
                (properties, traits, context),
                (integrations, write_key, extra),
            )| Message {
                kind,
                message_id,
                timestamp,
                original_timestamp,
                sent_at,
                user_id,
                anonymous_id,
                event,
                name,
                group_id,
                previous_id,
                properties,
                traits,
                context,
                integrations,
                write_key,
                extra,
            },
        )
}

fn encoding() -> impl Strategy<Value = ContentEncoding> {
    prop_oneof![
        Just(ContentEncoding::Identity),
        Just(ContentEncoding::Gzip),
        Just(ContentEncoding::Zstd),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn message_json_round_trip(msg in message()) {
        let json = msg.to_json();
        let back: Message = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &msg);
        // Stable: writing it again gives the same bytes.
        prop_assert_eq!(back.to_json(), json);
    }

    #[test]
    fn batch_round_trip_under_every_encoding(
        messages in vec(message(), 0..12),
        sent_at in text(),
        enc in encoding(),
    ) {
        let batch = Batch::new(messages.clone(), sent_at.clone());
        let sent = batch.encode(enc);
        prop_assert_eq!(sent.encoding, enc);
        verify_digest(&sent.digest, &sent.body).unwrap();
        let limits = DecodeLimits::default();
        let json = decompress(&sent.body, enc, &limits).unwrap();
        prop_assert_eq!(json.len(), sent.json_len);
        let body = decode_json(&json, &limits).unwrap();
        prop_assert!(!body.single);
        prop_assert_eq!(body.sent_at, Some(sent_at).filter(|s| !s.is_empty()));
        prop_assert_eq!(body.messages.len(), messages.len());
        for (decoded, original) in body.messages.iter().zip(&messages) {
            prop_assert_eq!(decoded.parsed.as_ref().unwrap(), original);
            prop_assert_eq!(decoded.raw, original.to_json());
            prop_assert_eq!(&decoded.message_id, &original.message_id);
        }
    }

    #[test]
    fn batch_struct_round_trip(messages in vec(message(), 0..6), extra in extra()) {
        let batch = Batch { extra, ..Batch::new(messages, "2024-01-01T00:00:00Z") };
        let back: Batch = serde_json::from_str(&batch.to_json()).unwrap();
        prop_assert_eq!(back, batch);
    }
}
