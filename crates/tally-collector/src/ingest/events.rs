//! Building what the store writes: a [`NewEvent`] per accepted message, a
//! [`DeadLetter`] per rejected one.
//!
//! A track named [`DROPPED_EVENT`] is the SDK's report of events it dropped
//! by policy; its properties `{"reason": "...", "ranges": [[from, to], ...]}`
//! become [`DroppedRange`]s so completeness tells a gap by policy from a
//! gap in transit. The report is itself stored as an event.

use serde::Deserialize;
use tally_proto::{Checked, Message, Rejection};

use super::clock::MessageTimes;
use crate::store::{DeadLetter, DroppedRange, NewEvent};

/// The event name of the SDK's drop report.
pub const DROPPED_EVENT: &str = "tally.dropped";

#[derive(Deserialize)]
struct DropReport {
    reason: String,
    ranges: Vec<(u64, u64)>,
}

/// The store's view of one validated, clock-corrected message.
pub fn new_event(
    msg: &Message,
    checked: Checked,
    times: MessageTimes,
    received_at: i64,
    raw: &str,
) -> NewEvent {
    let tally = msg.tally();
    let event = msg.event_name().map(str::to_owned);
    let drops = if event.as_deref() == Some(DROPPED_EVENT) {
        drop_ranges(msg)
    } else {
        Vec::new()
    };
    let event = NewEvent {
        message_id: Message::non_empty(&msg.message_id)
            .unwrap_or_default()
            .to_owned(),
        kind: checked.kind,
        event,
        user_id: Message::non_empty(&msg.user_id).map(str::to_owned),
        anonymous_id: Message::non_empty(&msg.anonymous_id).map(str::to_owned),
        group_id: Message::non_empty(&msg.group_id).map(str::to_owned),
        previous_id: Message::non_empty(&msg.previous_id).map(str::to_owned),
        install_id: tally.and_then(|t| t.install_id.clone()),
        seq: tally.and_then(|t| t.seq),
        session_id: tally.and_then(|t| Message::non_empty(&t.session_id).map(str::to_owned)),
        session_index: tally.and_then(|t| t.session_index),
        dedup_key: tally.and_then(|t| Message::non_empty(&t.dedup_key).map(str::to_owned)),
        priority: tally.and_then(|t| t.priority).unwrap_or_default(),
        timestamp: checked.timestamp,
        sent_at: times.sent_at,
        received_at,
        ts_corrected: times.correction.ts_corrected,
        clamped: times.correction.clamped,
        drops,
        raw: raw.to_owned(),
    };
    #[cfg(feature = "broken-dedup-for-tests")]
    let event = broken::defeat_dedup(event);
    event
}

/// A deliberately broken collector, compiled only with the
/// `broken-dedup-for-tests` feature (which only test builds enable): with
/// `TALLY_BROKEN_DEDUP_FOR_TESTS=1` every message gets a fresh id and no
/// business key, so resent messages are counted again. It exists to prove
/// that `tally simulate` catches double counting.
#[cfg(feature = "broken-dedup-for-tests")]
mod broken {
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::store::NewEvent;

    static NEXT: AtomicU64 = AtomicU64::new(0);

    pub fn defeat_dedup(mut event: NewEvent) -> NewEvent {
        if std::env::var("TALLY_BROKEN_DEDUP_FOR_TESTS").as_deref() == Ok("1") {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            event.message_id = format!("{}#{}-{n}", event.message_id, std::process::id());
            event.dedup_key = None;
        }
        event
    }
}

/// The ranges of a drop report; a report that does not have the expected
/// shape, and ranges that are empty or start at 0, carry nothing.
fn drop_ranges(msg: &Message) -> Vec<DroppedRange> {
    let Some(report) = msg
        .properties
        .as_ref()
        .and_then(|p| serde_json::from_str::<DropReport>(p.get()).ok())
    else {
        return Vec::new();
    };
    report
        .ranges
        .into_iter()
        .filter(|&(from, to)| from >= 1 && from <= to)
        .map(|(from, to)| DroppedRange {
            from,
            to,
            reason: report.reason.clone(),
        })
        .collect()
}

/// The dead letter of a rejected message.
pub fn dead_letter(
    message_id: Option<&str>,
    rejection: Rejection,
    received_at: i64,
    raw: &str,
) -> DeadLetter {
    DeadLetter {
        message_id: message_id.filter(|id| !id.is_empty()).map(str::to_owned),
        reason: rejection.reason,
        detail: rejection.detail,
        received_at,
        raw: raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_proto::{validate, Correction, MessageType, Priority};

    fn build(raw: &str) -> NewEvent {
        let msg: Message = serde_json::from_str(raw).unwrap();
        let checked = validate(&msg, raw).unwrap();
        let times = MessageTimes {
            sent_at: Some(2),
            correction: Correction {
                ts_corrected: 3,
                offset: 1,
                clamped: false,
            },
        };
        new_event(&msg, checked, times, 4, raw)
    }

    #[test]
    fn fields_come_from_the_message_and_context_tally() {
        let raw = r#"{"type":"track","messageId":"m1","event":"Buy","userId":"","anonymousId":"a1","timestamp":"1970-01-01T00:00:00.001Z","context":{"tally":{"install_id":"i1","seq":7,"session_id":"s1","session_index":2,"dedup_key":"order-9","priority":"critical"}}}"#;
        let e = build(raw);
        assert_eq!(e.message_id, "m1");
        assert_eq!(e.kind, MessageType::Track);
        assert_eq!(e.event.as_deref(), Some("Buy"));
        assert_eq!(e.user_id, None);
        assert_eq!(e.anonymous_id.as_deref(), Some("a1"));
        assert_eq!(e.install_id.as_deref(), Some("i1"));
        assert_eq!((e.seq, e.session_index), (Some(7), Some(2)));
        assert_eq!(e.session_id.as_deref(), Some("s1"));
        assert_eq!(e.dedup_key.as_deref(), Some("order-9"));
        assert_eq!(e.priority, Priority::Critical);
        assert_eq!(
            (e.timestamp, e.sent_at, e.ts_corrected, e.received_at),
            (Some(1), Some(2), 3, 4)
        );
        assert!(e.drops.is_empty());
        assert_eq!(e.raw, raw);
    }

    #[test]
    fn a_drop_report_becomes_ranges() {
        let raw = r#"{"type":"track","messageId":"d","event":"tally.dropped","anonymousId":"a","properties":{"reason":"queue_full","ranges":[[3,5],[9,9],[0,2],[8,7]]},"context":{"tally":{"install_id":"i","seq":10}}}"#;
        let e = build(raw);
        let ranges: Vec<_> = e
            .drops
            .iter()
            .map(|d| (d.from, d.to, d.reason.as_str()))
            .collect();
        assert_eq!(ranges, [(3, 5, "queue_full"), (9, 9, "queue_full")]);
        let odd = r#"{"type":"track","messageId":"d","event":"tally.dropped","anonymousId":"a","properties":{"reason":1}}"#;
        assert!(build(odd).drops.is_empty());
    }
}
