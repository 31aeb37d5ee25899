//! The per-message time correction.
//!
//! `received_at` is stamped once per request from the collector's clock
//! ([`crate::clock`]).
//! A message's own `sentAt` wins over the batch's (RudderStack's browser
//! SDK stamps each event), and the batch's `sentAt` falls back to the
//! `SentAt` header that library also sends. A message with no capture time
//! at all is placed at `received_at`: time alone never drops an event.

use axum::http::HeaderMap;
use tally_proto::limits::FUTURE_TOLERANCE_MS;
use tally_proto::{correct, parse_timestamp, Checked, Correction, DecodedBody};

/// The `SentAt` header of RudderStack's browser SDK.
const SENT_AT_HEADER: &str = "sentat";

/// The batch's `sentAt`: the envelope's, else the `SentAt` header.
pub fn batch_sent_at(body: &DecodedBody<'_>, headers: &HeaderMap) -> Option<i64> {
    body.sent_at_ms().or_else(|| {
        headers
            .get(SENT_AT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_timestamp)
    })
}

/// The times stored for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageTimes {
    /// The `sentAt` used: the message's, else the batch's.
    pub sent_at: Option<i64>,
    /// The corrected capture time and whether it was clamped.
    pub correction: Correction,
}

/// Corrects one validated message's capture time.
pub fn message_times(
    checked: &Checked,
    batch_sent_at: Option<i64>,
    received_at: i64,
) -> MessageTimes {
    let sent_at = checked.sent_at.or(batch_sent_at);
    let correction = match checked.timestamp {
        Some(ts) => correct(ts, sent_at, received_at, FUTURE_TOLERANCE_MS),
        None => Correction {
            ts_corrected: received_at,
            offset: 0,
            clamped: false,
        },
    };
    MessageTimes {
        sent_at,
        correction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_proto::MessageType;

    fn checked(timestamp: Option<i64>, sent_at: Option<i64>) -> Checked {
        Checked {
            kind: MessageType::Track,
            timestamp,
            sent_at,
        }
    }

    #[test]
    fn message_sent_at_wins_over_the_batch() {
        // Device 1 h behind; the message's own sentAt says so exactly.
        let t = message_times(&checked(Some(1_000), Some(2_000)), Some(9_000), 3_602_000);
        assert_eq!(t.sent_at, Some(2_000));
        assert_eq!(t.correction.ts_corrected, 3_601_000);
        let t = message_times(&checked(Some(1_000), None), Some(2_000), 3_602_000);
        assert_eq!(t.correction.ts_corrected, 3_601_000);
    }

    #[test]
    fn no_capture_time_means_received_at_and_far_future_is_clamped() {
        let t = message_times(&checked(None, None), None, 5_000);
        assert_eq!(t.correction.ts_corrected, 5_000);
        assert!(!t.correction.clamped);
        let t = message_times(&checked(Some(10 * FUTURE_TOLERANCE_MS), None), None, 0);
        assert!(t.correction.clamped);
        assert_eq!(t.correction.ts_corrected, 0);
    }

    #[test]
    fn sent_at_header_is_the_last_resort() {
        let body = tally_proto::decode_json(br#"{"batch":[]}"#, &Default::default()).unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(batch_sent_at(&body, &h), None);
        h.insert("SentAt", "2024-01-01T00:00:00Z".parse().unwrap());
        assert_eq!(batch_sent_at(&body, &h), Some(1_704_067_200_000));
        let body = tally_proto::decode_json(
            br#"{"batch":[],"sentAt":"2024-01-01T00:00:01Z"}"#,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(batch_sent_at(&body, &h), Some(1_704_067_201_000));
    }
}
