//! Every size and time limit of the wire format, in one place.
//!
//! Both sides read these: the SDK refuses at `track()` what the collector
//! would reject, and sizes its batches under what the collector always takes.

/// Largest single message, as serialized JSON.
///
/// Segment's HTTP Tracking API documents 32 KB per message; Tally keeps the
/// same figure so payloads that pass Segment's pipeline pass ours and the
/// reverse.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// Largest `properties` (or `traits`) object of one message, as JSON text.
///
/// 8 KiB below [`MAX_MESSAGE_BYTES`], which leaves room for `context`
/// (app, device, os, library, `context.tally`, about 600 bytes from the
/// Tally SDK) and the envelope fields, so a message whose properties pass
/// this check is not then rejected for its total size.
pub const MAX_PROPERTIES_BYTES: usize = 24 * 1024;

/// A batch of up to this many bytes (decoded JSON) is always accepted.
///
/// Segment's documented batch limit is 500 KB; the Tally SDK sizes its
/// batches under it, so it never depends on the larger ceilings below.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// Largest request body as sent (before decompression): 20 MiB.
///
/// Big enough for any client that batches by Segment's rules (even
/// uncompressed) with a wide margin; small enough that holding one body per
/// in-flight request stays bounded.
pub const MAX_BODY_BYTES: usize = 20 * 1024 * 1024;

/// Largest decoded body (after decompression): 16 MiB of JSON.
///
/// This is what bounds the memory of a decompression bomb: decoding stops
/// after this many bytes, whatever the encoding. It applies to identity
/// bodies too, so JSON padded with whitespace is refused the same way.
/// 32 times Segment's batch limit.
pub const MAX_DECODED_BYTES: usize = 16 * 1024 * 1024;

/// Largest decompression ratio accepted once the output passes
/// [`RATIO_CHECK_FLOOR_BYTES`].
///
/// Real event JSON compresses 5–40× with gzip and a little more with zstd
/// (repeated keys and context). A ratio of 200 leaves a wide margin for
/// repetitive batches while stopping a small bomb long before the size cap.
pub const MAX_DECOMPRESSION_RATIO: usize = 200;

/// Below this much output the ratio is not checked: tiny, highly repetitive
/// batches (a few identical events) legitimately exceed any ratio.
pub const RATIO_CHECK_FLOOR_BYTES: usize = 1024 * 1024;

/// Most messages in one batch. Bounds per-request store work independently
/// of how small each message is; 20× the Tally SDK's default batch of 500.
pub const MAX_BATCH_MESSAGES: usize = 10_000;

/// Longest event name (`event` of a track, `name` of a page or screen), in
/// bytes. Amplitude allows 1024; real names are under 64. 255 keeps
/// dashboards and indexes sane and matches common warehouse column limits.
pub const MAX_EVENT_NAME_BYTES: usize = 255;

/// Longest `messageId`, in bytes. UUIDs are 36; Segment's Node library sends
/// `node-next-<ms>-<uuid>` (about 60). 128 leaves room for other schemes.
pub const MAX_MESSAGE_ID_BYTES: usize = 128;

/// Longest `userId`, `anonymousId`, `groupId`, `previousId`, `install_id`,
/// `session_id` or `dedup_key`, in bytes.
pub const MAX_ID_BYTES: usize = 255;

/// Deepest nesting of objects and arrays inside one message.
///
/// serde_json already refuses 128 levels (whole body, 400); this finer limit
/// rejects one message whose properties nest absurdly deep without failing
/// its neighbours. No analytics schema needs more than a handful of levels.
pub const MAX_JSON_DEPTH: usize = 32;

/// How far past the collector's clock a corrected timestamp may be before it
/// is clamped to the receive time and flagged: 5 minutes.
///
/// After the `sentAt` correction only the transit time and clock drift
/// during one batch remain; anything further ahead is a broken clock.
pub const FUTURE_TOLERANCE_MS: i64 = 5 * 60 * 1000;

/// The schema version this crate writes in `context.tally.schema`.
///
/// Versions only ever add optional fields: a collector accepts any version
/// ≥ 1 and keeps fields it does not know verbatim.
pub const SCHEMA_VERSION: u32 = 1;

/// Bounds applied when decoding a request body. [`Default`] gives the
/// constants above; tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// See [`MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// See [`MAX_DECODED_BYTES`].
    pub max_decoded_bytes: usize,
    /// See [`MAX_DECOMPRESSION_RATIO`].
    pub max_ratio: usize,
    /// See [`RATIO_CHECK_FLOOR_BYTES`].
    pub ratio_floor_bytes: usize,
    /// See [`MAX_BATCH_MESSAGES`].
    pub max_batch_messages: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: MAX_BODY_BYTES,
            max_decoded_bytes: MAX_DECODED_BYTES,
            max_ratio: MAX_DECOMPRESSION_RATIO,
            ratio_floor_bytes: RATIO_CHECK_FLOOR_BYTES,
            max_batch_messages: MAX_BATCH_MESSAGES,
        }
    }
}
