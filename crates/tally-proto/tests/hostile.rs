//! Hostile bodies: decompression bombs, truncation, wrong digests, invalid
//! UTF-8, absurd nesting. Each fails fast with its own error, in bounded
//! memory, and never panics.
//! Decompression bombs are in `bombs.rs`, a process of their own so its
//! peak-RSS check measures nothing else.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use tally_proto::encoding::{decode, encode};
use tally_proto::{
    content_digest, decode_json, decompress, validate, verify_digest, BodyError, ContentEncoding,
    DecodeLimits, DigestError, EncodingError, RejectReason,
};

#[test]
fn whitespace_padded_json_is_too_large_even_uncompressed() {
    let limits = DecodeLimits::default();
    let mut padded = b"{\"batch\":[]".to_vec();
    padded.resize(limits.max_decoded_bytes + 1, b' ');
    padded.push(b'}');
    let err = decompress(&padded, ContentEncoding::Identity, &limits).unwrap_err();
    assert!(matches!(
        err,
        BodyError::Encoding(EncodingError::DecodedTooLarge { limit }) if limit == limits.max_decoded_bytes
    ));
    // The same compressed: refused the same way.
    let gz = encode(&padded, ContentEncoding::Gzip);
    assert!(decompress(&gz, ContentEncoding::Gzip, &limits)
        .unwrap_err()
        .is_too_large());
}

#[test]
fn a_batch_of_500_kb_is_always_accepted() {
    let message = r#"{"type":"track","messageId":"m","userId":"u","event":"E","properties":{"k":"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"}}"#;
    let mut json = String::from("{\"batch\":[");
    while json.len() + message.len() + 2 < tally_proto::limits::MAX_BATCH_BYTES {
        json.push_str(message);
        json.push(',');
    }
    json.pop();
    json.push_str("]}");
    for enc in [
        ContentEncoding::Identity,
        ContentEncoding::Gzip,
        ContentEncoding::Zstd,
    ] {
        let body = encode(json.as_bytes(), enc);
        let decoded = decompress(&body, enc, &DecodeLimits::default()).unwrap();
        let batch = decode_json(&decoded, &DecodeLimits::default()).unwrap();
        assert!(batch.messages.len() > 3000);
        assert!(batch.messages.iter().all(|m| m.parsed.is_ok()));
    }
}

#[test]
fn truncated_bodies_fail_as_corrupt_or_not_json() {
    let json = br#"{"batch":[{"type":"track","messageId":"m","userId":"u","event":"E"}],"sentAt":"2024-01-01T00:00:00Z"}"#;
    let limits = DecodeLimits::default();
    for cut in [1, json.len() / 2, json.len() - 1] {
        let err = decode_json(&json[..cut], &limits).unwrap_err();
        assert!(matches!(err, BodyError::NotJson(_)), "cut {cut}: {err}");
    }
    for enc in [ContentEncoding::Gzip, ContentEncoding::Zstd] {
        let body = encode(json, enc);
        for cut in [0, 1, body.len() / 2, body.len() - 1] {
            match decode(&body[..cut], enc, &limits) {
                Err(EncodingError::Corrupt { .. }) => {}
                // An empty body is an empty stream for some codecs; it must
                // then fail as JSON.
                Ok(out) => assert!(decode_json(&out, &limits).is_err(), "{enc:?} cut {cut}"),
                Err(other) => panic!("{enc:?} cut {cut}: {other}"),
            }
        }
    }
}

#[test]
fn wrong_digest_and_digest_of_the_decoded_body_are_mismatches() {
    let json = br#"{"batch":[]}"#;
    let sent = encode(json, ContentEncoding::Gzip);
    assert_eq!(verify_digest(&content_digest(&sent), &sent), Ok(()));
    // A client that digested the JSON before compressing it.
    assert_eq!(
        verify_digest(&content_digest(json), &sent),
        Err(DigestError::Mismatch)
    );
    // One flipped bit.
    let mut flipped = sent.clone();
    flipped[sent.len() / 2] ^= 1;
    assert_eq!(
        verify_digest(&content_digest(&sent), &flipped),
        Err(DigestError::Mismatch)
    );
}

#[test]
fn invalid_utf8_is_refused_wherever_it_hides() {
    let limits = DecodeLimits::default();
    for body in [
        &b"\xff\xfe"[..],
        b"{\"batch\":[{\"type\":\"track\",\"event\":\"\xc3\x28\"}]}",
        b"{\"ignored\":\"\xed\xa0\x80\",\"batch\":[]}",
    ] {
        assert!(matches!(
            decode_json(body, &limits),
            Err(BodyError::InvalidUtf8)
        ));
    }
}

#[test]
fn absurd_nesting_fails_the_body_without_overflowing_the_stack() {
    let limits = DecodeLimits::default();
    let deep = format!("{{\"batch\":[{}]}}", "[".repeat(1_000_000));
    assert!(matches!(
        decode_json(deep.as_bytes(), &limits),
        Err(BodyError::NotJson(_))
    ));
    let deep_object = "{\"a\":".repeat(100_000);
    assert!(matches!(
        decode_json(deep_object.as_bytes(), &limits),
        Err(BodyError::NotJson(_))
    ));
}

#[test]
fn moderate_nesting_rejects_only_that_message() {
    let nested = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let json = format!(
        r#"{{"batch":[{{"type":"track","messageId":"a","userId":"u","event":"E","properties":{{"deep":{nested}}}}},{{"type":"track","messageId":"b","userId":"u","event":"E"}}]}}"#
    );
    let body = decode_json(json.as_bytes(), &DecodeLimits::default()).unwrap();
    let reasons: Vec<_> = body
        .messages
        .iter()
        .map(|m| {
            validate(m.parsed.as_ref().unwrap(), m.raw)
                .err()
                .map(|r| r.reason)
        })
        .collect();
    assert_eq!(reasons, [Some(RejectReason::NestingTooDeep), None]);
}
