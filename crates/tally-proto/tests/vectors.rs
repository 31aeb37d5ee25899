//! The shared test vectors in `vectors/` at the repository root, which the
//! web SDK's tests read too: the verdict on each message, and the
//! `Content-Digest` of known bodies. A vector that this crate and the web
//! SDK read differently fails here or there.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;

use serde_json::Value;
use tally_proto::{content_digest, decode_json, validate, verify_digest, DecodeLimits};

fn vector(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Expands the vectors' two shorthands: `{"$repeat": [c, n]}` (a string of
/// `n` times `c`) and `{"$nest": n}` (`n` arrays nested around 0).
fn expand(value: &Value) -> Value {
    match value {
        Value::Object(map) if map.len() == 1 && map.contains_key("$repeat") => {
            let args = map["$repeat"].as_array().unwrap();
            let unit = args[0].as_str().unwrap();
            Value::from(unit.repeat(args[1].as_u64().unwrap() as usize))
        }
        Value::Object(map) if map.len() == 1 && map.contains_key("$nest") => {
            let mut nested = Value::from(0);
            for _ in 0..map["$nest"].as_u64().unwrap() {
                nested = Value::Array(vec![nested]);
            }
            nested
        }
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), expand(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(expand).collect()),
        other => other.clone(),
    }
}

#[test]
fn every_message_vector_gets_its_verdict() {
    let vectors = vector("messages.json");
    let cases = vectors["cases"].as_array().unwrap();
    assert!(cases.len() >= 30, "the vectors lost cases");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let raw = expand(&case["message"]).to_string();
        let envelope = format!("{{\"batch\":[{raw}]}}");
        let body = decode_json(envelope.as_bytes(), &DecodeLimits::default()).unwrap();
        let message = &body.messages[0];
        let verdict = match &message.parsed {
            Err(rejection) => rejection.reason.as_str(),
            Ok(parsed) => match validate(parsed, message.raw) {
                Ok(_) => "ok",
                Err(rejection) => rejection.reason.as_str(),
            },
        };
        assert_eq!(verdict, case["expect"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn content_digests_of_known_bodies() {
    let vectors = vector("digest.json");
    for case in vectors["cases"].as_array().unwrap() {
        let body = case["body"].as_str().unwrap().as_bytes();
        let digest = case["content_digest"].as_str().unwrap();
        assert_eq!(content_digest(body), digest);
        verify_digest(digest, body).unwrap();
    }
}
