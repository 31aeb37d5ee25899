//! # tally-proto
//!
//! The contract between Tally's SDK and its collector: the event model,
//! validation rules with a typed reason for every rejection, the batch wire
//! format (encoding, bounded decompression, `Content-Digest`), the answers,
//! and clock correction. Pure functions and data: no files, sockets or
//! threads.
//!
//! The wire format is the Segment Spec (`track`, `identify`, `page`,
//! `screen`, `group`, `alias`) so existing Segment and RudderStack clients
//! talk to a Tally collector unchanged; Tally's own fields live under
//! `context.tally`.
//!
//! | module | holds |
//! |---|---|
//! | [`message`] | [`Message`] and its context, typed known fields, unknown fields kept |
//! | [`validate`](mod@validate) | [`validate()`] → [`Checked`] or a [`Rejection`] with a [`RejectReason`] |
//! | [`limits`] | every size and time limit, with where the number comes from |
//! | [`batch`] | the envelope: [`Batch::encode`], [`decompress`], [`decode_json`] |
//! | [`encoding`] | identity / gzip / zstd, bounded decompression |
//! | [`digest`] | RFC 9530 `Content-Digest` |
//! | [`drops`] | the SDK's `tally.dropped` report and the rules a collector believes it by; its reasons are [`DropReason`]s |
//! | [`answer`] | per-message results and error bodies |
//! | `openapi` | JSON Schemas of the wire types (feature `openapi`) |
//! | [`clock`] | `ts_corrected = timestamp + (received_at − sentAt)` |
//!
//! ## A batch from one end to the other
//!
//! ```
//! use tally_proto::{
//!     content_digest, decode_json, decompress, validate, verify_digest, Batch, ContentEncoding,
//!     DecodeLimits, Message,
//! };
//!
//! // The SDK side: build, encode, digest.
//! let mut msg = Message::track("0190a8c4-7b1e-7c3a-9d2e-1f2a3b4c5d6e", "2024-05-01T12:00:00.000Z", "Order Completed");
//! msg.anonymous_id = Some("anon-1".into());
//! msg.properties = Some(tally_proto::RawJson::from_text(r#"{"total":42.5}"#)?);
//! let tally = msg.tally_mut();
//! tally.install_id = Some("install-1".into());
//! tally.seq = Some(1);
//! let sent = Batch::new(vec![msg], "2024-05-01T12:00:05.000Z").encode(ContentEncoding::Zstd);
//! assert_eq!(sent.digest, content_digest(&sent.body));
//!
//! // The collector side: verify, decompress under limits, decode, validate.
//! verify_digest(&sent.digest, &sent.body)?;
//! let limits = DecodeLimits::default();
//! let json = decompress(&sent.body, sent.encoding, &limits)?;
//! let body = decode_json(&json, &limits)?;
//! let first = &body.messages[0];
//! let parsed = first.parsed.as_ref().map_err(|r| *r)?;
//! let checked = validate(parsed, first.raw)?;
//! assert_eq!(parsed.event.as_deref(), Some("Order Completed"));
//! assert_eq!(checked.timestamp, Some(1_714_564_800_000));
//! assert_eq!(body.sent_at_ms(), Some(1_714_564_805_000));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod answer;
pub mod batch;
pub mod clock;
pub mod digest;
pub mod drops;
pub mod encoding;
mod json;
pub mod limits;
pub mod message;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod reason;
pub mod timestamp;
pub mod validate;

pub use answer::{BatchResponse, ErrorBody, ErrorCode, MessageResult, Status};
pub use batch::{
    decode_json, decompress, encode_json, Batch, BodyError, DecodedBody, DecodedMessage,
    EncodedBatch,
};
pub use clock::{correct, device_offset, Correction};
pub use digest::{content_digest, verify_digest, DigestError};
pub use drops::{is_internal_event, DropReport, DROPPED_EVENT, INTERNAL_EVENT_PREFIX};
pub use encoding::{ContentEncoding, EncodingError};
pub use json::{json_depth, Extra, RawJson};
pub use limits::DecodeLimits;
pub use message::{
    App, Context, Device, Library, Message, MessageType, Os, Priority, TallyContext,
};
pub use reason::Rejection;
pub use reason::{DropReason, RejectReason, UnknownDropReason};
pub use timestamp::{format_timestamp, parse_timestamp};
pub use validate::{validate, Checked};
