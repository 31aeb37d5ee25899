//! Batches: the envelope built from stored message JSON, and the adaptive
//! size budget.
//!
//! Contract: [`envelope`] concatenates the messages' JSON exactly as the
//! log stored it (no re-parsing) into `{"batch":[...],"sentAt":"..."}`,
//! with `sentAt` stamped at send time; [`encode`] compresses it with zstd
//! and computes the `Content-Digest`. [`Budget`] is the most message bytes
//! the next batch may carry: it doubles after a fast success and halves
//! after a 413, a timeout or a slow send, always within
//! [`policy::MIN_BATCH_BYTES`] and [`tally_proto::limits::MAX_BATCH_BYTES`]
//! (the size a collector always accepts).

use tally_proto::limits::MAX_BATCH_BYTES;
use tally_proto::{encode_json, ContentEncoding, EncodedBatch};

use super::policy::{self, FAST_SEND_MS, SLOW_SEND_MS};

/// Room for the envelope around the messages (`{"batch":[` … `],"sentAt":"2024-01-01T00:00:00.000Z"}`).
const ENVELOPE_BYTES: usize = 64;

/// The adaptive batch budget, in bytes of message JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            bytes: policy::INITIAL_BATCH_BYTES,
        }
    }
}

impl Budget {
    /// The largest budget: the proto's always-accepted batch, less the
    /// envelope.
    pub const MAX: usize = MAX_BATCH_BYTES - ENVELOPE_BYTES;

    /// Bytes of message JSON the next batch may carry.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adapts to a successful send that took `ms`.
    pub fn after_success(&mut self, ms: u64) {
        if ms <= FAST_SEND_MS {
            self.bytes = (self.bytes * 2).min(Self::MAX);
        } else if ms >= SLOW_SEND_MS {
            self.shrink();
        }
    }

    /// Halves the budget (413, timeout, slow link).
    pub fn shrink(&mut self) {
        self.bytes = (self.bytes / 2).max(policy::MIN_BATCH_BYTES);
    }
}

/// The batch envelope around `payloads`, stamped `sent_at`.
pub fn envelope<'a>(payloads: impl IntoIterator<Item = &'a [u8]>, sent_at: &str) -> Vec<u8> {
    let payloads: Vec<&[u8]> = payloads.into_iter().collect();
    let len: usize = payloads.iter().map(|p| p.len() + 1).sum();
    let mut json = Vec::with_capacity(len + ENVELOPE_BYTES);
    json.extend_from_slice(b"{\"batch\":[");
    for (i, p) in payloads.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(p);
    }
    json.extend_from_slice(b"],\"sentAt\":\"");
    json.extend_from_slice(sent_at.as_bytes());
    json.extend_from_slice(b"\"}");
    json
}

/// Compresses the envelope with zstd and digests it.
pub fn encode(json: &[u8]) -> EncodedBatch {
    encode_json(json, ContentEncoding::Zstd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_proto::{decode_json, decompress, verify_digest, DecodeLimits};

    #[test]
    fn envelope_decodes_with_each_message_intact() {
        let a = br#"{"type":"track","messageId":"a","event":"E","anonymousId":"x"}"#;
        let b = br#"{"type":"identify","messageId":"b","userId":"u"}"#;
        let json = envelope([&a[..], &b[..]], "2024-01-01T00:00:00.000Z");
        let sent = encode(&json);
        verify_digest(&sent.digest, &sent.body).unwrap();
        let plain = decompress(&sent.body, sent.encoding, &DecodeLimits::default()).unwrap();
        let body = decode_json(&plain, &DecodeLimits::default()).unwrap();
        assert_eq!(body.messages.len(), 2);
        assert_eq!(body.messages[0].raw.as_bytes(), &a[..]);
        assert_eq!(body.messages[1].raw.as_bytes(), &b[..]);
        assert_eq!(body.sent_at_ms(), Some(1_704_067_200_000));
        let empty = envelope(std::iter::empty(), "2024-01-01T00:00:00.000Z");
        assert_eq!(
            empty,
            br#"{"batch":[],"sentAt":"2024-01-01T00:00:00.000Z"}"#
        );
    }

    #[test]
    fn budget_grows_on_fast_success_and_shrinks_within_bounds() {
        let mut b = Budget::default();
        for _ in 0..20 {
            b.after_success(10);
        }
        assert_eq!(b.bytes(), Budget::MAX);
        b.after_success(5_000);
        assert_eq!(b.bytes(), Budget::MAX, "a middling send keeps the budget");
        b.after_success(SLOW_SEND_MS);
        assert_eq!(b.bytes(), Budget::MAX / 2);
        for _ in 0..20 {
            b.shrink();
        }
        assert_eq!(b.bytes(), policy::MIN_BATCH_BYTES);
    }
}
