//! The batch envelope `{"batch": [...], "sentAt": ...}`: building and
//! encoding on the SDK side, decoding with per-message isolation on the
//! collector side.
//!
//! Decoding is two-step: the envelope is parsed with each message kept as a
//! borrowed raw slice, then each message is parsed on its own. A message
//! with a wrong member type is rejected alone (`malformed_message`); it
//! never fails its neighbours. Only a body that is not JSON at all, or not
//! an object, fails as a whole.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::digest::content_digest;
use crate::encoding::{decode, encode, ContentEncoding, EncodingError};
use crate::json::{json_object, Key};
use crate::limits::DecodeLimits;
use crate::message::Message;
use crate::reason::RejectReason;
use crate::reason::Rejection;
use crate::timestamp::parse_timestamp;

json_object! {
    /// A batch as the SDK builds it.
    pub struct Batch {
        /// The messages.
        messages: Vec<Message> = "batch",
        /// Device clock at send (RFC 3339).
        sent_at: String = "sentAt",
        /// Write key in the body, as Segment's libraries add.
        write_key: String = "writeKey",
    }
}

/// A batch body ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// The body bytes, compressed.
    pub body: Vec<u8>,
    /// The `Content-Encoding` of `body`.
    pub encoding: ContentEncoding,
    /// The `Content-Digest` header over `body`.
    pub digest: String,
    /// Size of the JSON before compression.
    pub json_len: usize,
}

impl Batch {
    /// A batch of `messages`, stamped `sent_at`.
    pub fn new(messages: Vec<Message>, sent_at: impl Into<String>) -> Self {
        Self {
            messages: Some(messages),
            sent_at: Some(sent_at.into()),
            ..Self::default()
        }
    }

    /// The envelope as compact JSON.
    pub fn to_json(&self) -> String {
        // See `Message::to_json`: serializing these types cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Serializes, compresses and digests the batch.
    pub fn encode(&self, encoding: ContentEncoding) -> EncodedBatch {
        encode_json(self.to_json().as_bytes(), encoding)
    }
}

/// Compresses and digests an already serialized batch envelope (the SDK
/// builds envelopes from stored message JSON without re-parsing them).
pub fn encode_json(json: &[u8], encoding: ContentEncoding) -> EncodedBatch {
    let body = encode(json, encoding);
    EncodedBatch {
        digest: content_digest(&body),
        encoding,
        json_len: json.len(),
        body,
    }
}

/// Why a whole body was refused (HTTP 400, or 413 for the size errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body could not be decompressed, or is too large.
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    /// Not UTF-8 (checked over the whole body first, so no member, even
    /// an ignored one, can smuggle invalid text through).
    #[error("body is not UTF-8")]
    InvalidUtf8,
    /// Not JSON, or nested past serde_json's recursion limit (128).
    #[error("body is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// Valid JSON, but not an object (nor `batch` an array of values).
    #[error("body is not a batch envelope or a message object")]
    NotAnObject,
    /// More messages than [`DecodeLimits::max_batch_messages`].
    #[error("batch of {count} messages is over the limit of {limit}")]
    TooManyMessages {
        /// Messages in the batch.
        count: usize,
        /// The limit in force.
        limit: usize,
    },
}

impl BodyError {
    /// Whether the error is a size limit (HTTP 413).
    pub fn is_too_large(&self) -> bool {
        match self {
            Self::Encoding(e) => e.is_too_large(),
            Self::TooManyMessages { .. } => true,
            Self::InvalidUtf8 | Self::NotJson(_) | Self::NotAnObject => false,
        }
    }
}

/// One message of a decoded body.
#[derive(Debug)]
pub struct DecodedMessage<'a> {
    /// The message's JSON text as received.
    pub raw: &'a str,
    /// The parsed message, or why it could not be parsed.
    pub parsed: Result<Message, Rejection>,
    /// The `messageId`, when it could be read even from a malformed message.
    pub message_id: Option<String>,
}

/// A decoded request body: a batch envelope, or a single message.
#[derive(Debug)]
pub struct DecodedBody<'a> {
    /// The messages, in order.
    pub messages: Vec<DecodedMessage<'a>>,
    /// The envelope's `sentAt` text (per-message `sentAt` wins over it).
    pub sent_at: Option<String>,
    /// The envelope's `writeKey`.
    pub write_key: Option<String>,
    /// The body was one message, not an envelope.
    pub single: bool,
}

impl DecodedBody<'_> {
    /// The envelope's `sentAt` in Unix ms; `None` when absent or unreadable
    /// (then no clock correction is applied: time alone never drops an
    /// event).
    pub fn sent_at_ms(&self) -> Option<i64> {
        self.sent_at.as_deref().and_then(parse_timestamp)
    }
}

/// Decompresses `body` and decodes it: [`decode`] then [`decode_json`].
/// The decoded bytes are returned so that the messages can borrow them.
pub fn decompress(
    body: &[u8],
    encoding: ContentEncoding,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, BodyError> {
    Ok(decode(body, encoding, limits)?)
}

/// Decodes a JSON body: `{"batch": [...], ...}` or one message object.
pub fn decode_json<'a>(
    json: &'a [u8],
    limits: &DecodeLimits,
) -> Result<DecodedBody<'a>, BodyError> {
    let json = std::str::from_utf8(json).map_err(|_| BodyError::InvalidUtf8)?;
    let top: Top<'a> = serde_json::from_str(json).map_err(|e| {
        if e.is_data() {
            BodyError::NotAnObject
        } else {
            BodyError::NotJson(e)
        }
    })?;
    let Some(raws) = top.batch else {
        // A single message as the whole body (Segment's /v1/track etc.).
        return Ok(DecodedBody {
            messages: vec![decode_message(json.trim())],
            sent_at: None,
            write_key: None,
            single: true,
        });
    };
    if raws.len() > limits.max_batch_messages {
        return Err(BodyError::TooManyMessages {
            count: raws.len(),
            limit: limits.max_batch_messages,
        });
    }
    Ok(DecodedBody {
        messages: raws.into_iter().map(|r| decode_message(r.get())).collect(),
        sent_at: top.sent_at,
        write_key: top.write_key,
        single: false,
    })
}

fn decode_message(raw: &str) -> DecodedMessage<'_> {
    match serde_json::from_str::<Message>(raw) {
        Ok(msg) => DecodedMessage {
            raw,
            message_id: msg.message_id.clone(),
            parsed: Ok(msg),
        },
        Err(_) => DecodedMessage {
            raw,
            message_id: serde_json::from_str::<IdOnly>(raw)
                .ok()
                .and_then(|m| m.message_id),
            parsed: Err(Rejection {
                reason: RejectReason::MalformedMessage,
                detail: "not an object, or a member has the wrong JSON type",
            }),
        },
    }
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(rename = "messageId")]
    message_id: Option<String>,
}

/// The envelope's members; messages stay raw. Strings that fail to read
/// (`sentAt: 5`) are treated as absent rather than failing the body.
struct Top<'a> {
    batch: Option<Vec<&'a RawValue>>,
    sent_at: Option<String>,
    write_key: Option<String>,
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a batch envelope or a message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
                let mut top = Top {
                    batch: None,
                    sent_at: None,
                    write_key: None,
                };
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match &*key.0 {
                        "batch" => top.batch = Some(map.next_value()?),
                        "sentAt" => top.sent_at = string_or_none(map.next_value::<&RawValue>()?),
                        "writeKey" => {
                            top.write_key = string_or_none(map.next_value::<&RawValue>()?)
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(top)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Top<'de>, A::Error> {
                Err(de::Error::invalid_type(de::Unexpected::Seq, &self))
            }
        }
        d.deserialize_map(TopVisitor)
    }
}

fn string_or_none(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(raw.get())
        .ok()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bad_message_does_not_fail_its_neighbours() {
        let json = br#"{"batch":[{"type":"track","messageId":"a"},{"messageId":"b","userId":7},42,{"type":"identify"}],"sentAt":"2024-01-01T00:00:00Z","writeKey":"k","extra":[1]}"#;
        let body = decode_json(json, &DecodeLimits::default()).unwrap();
        assert!(!body.single);
        assert_eq!(body.messages.len(), 4);
        assert!(body.messages[0].parsed.is_ok());
        let bad = &body.messages[1];
        assert_eq!(
            bad.parsed.as_ref().unwrap_err().reason,
            RejectReason::MalformedMessage
        );
        assert_eq!(bad.message_id.as_deref(), Some("b"));
        assert_eq!(bad.raw, r#"{"messageId":"b","userId":7}"#);
        assert_eq!(body.messages[2].message_id, None);
        assert!(body.messages[2].parsed.is_err());
        assert!(body.messages[3].parsed.is_ok());
        assert_eq!(body.sent_at_ms(), Some(1_704_067_200_000));
        assert_eq!(body.write_key.as_deref(), Some("k"));
    }

    #[test]
    fn a_single_message_is_a_body() {
        let json = br#" {"type":"track","messageId":"a","event":"E","userId":"u"} "#;
        let body = decode_json(json, &DecodeLimits::default()).unwrap();
        assert!(body.single);
        assert_eq!(body.messages.len(), 1);
        assert_eq!(body.messages[0].message_id.as_deref(), Some("a"));
        assert_eq!(
            body.messages[0].raw,
            r#"{"type":"track","messageId":"a","event":"E","userId":"u"}"#
        );
    }

    #[test]
    fn whole_body_errors() {
        let l = DecodeLimits::default();
        assert!(matches!(
            decode_json(b"[1,2]", &l),
            Err(BodyError::NotAnObject)
        ));
        assert!(matches!(
            decode_json(b"\"x\"", &l),
            Err(BodyError::NotAnObject)
        ));
        assert!(matches!(
            decode_json(br#"{"batch":{}}"#, &l),
            Err(BodyError::NotAnObject)
        ));
        assert!(matches!(
            decode_json(b"{\"batch\":[", &l),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(decode_json(b"", &l), Err(BodyError::NotJson(_))));
        assert!(matches!(
            decode_json(b"{\"a\":\"\xff\"}", &l),
            Err(BodyError::InvalidUtf8)
        ));
        let small = DecodeLimits {
            max_batch_messages: 2,
            ..l
        };
        let err = decode_json(br#"{"batch":[{},{},{}]}"#, &small).unwrap_err();
        assert!(matches!(
            err,
            BodyError::TooManyMessages { count: 3, limit: 2 }
        ));
        assert!(err.is_too_large());
    }

    #[test]
    fn unreadable_envelope_strings_are_absent() {
        let body = decode_json(
            br#"{"batch":[],"sentAt":5,"writeKey":""}"#,
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(body.sent_at, None);
        assert_eq!(body.write_key, None);
        let body =
            decode_json(br#"{"batch":[],"sentAt":"soon"}"#, &DecodeLimits::default()).unwrap();
        assert_eq!(body.sent_at_ms(), None);
    }

    #[test]
    fn encode_digests_the_compressed_body() {
        let batch = Batch::new(
            vec![Message::track("m", "2024-01-01T00:00:00Z", "E")],
            "2024-01-01T00:00:01Z",
        );
        let enc = batch.encode(ContentEncoding::Zstd);
        assert_eq!(enc.digest, content_digest(&enc.body));
        assert_eq!(enc.json_len, batch.to_json().len());
        let json = decompress(&enc.body, enc.encoding, &DecodeLimits::default()).unwrap();
        assert_eq!(json, batch.to_json().as_bytes());
    }
}
