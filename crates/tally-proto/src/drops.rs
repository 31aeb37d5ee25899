//! The SDK's report of events it dropped by policy: a track named
//! [`DROPPED_EVENT`] whose properties are
//! `{"reason": "queue_full", "ranges": [[from, to], ...]}`.
//!
//! The report travels like any event (durable, acknowledged, deduplicated)
//! and the collector turns its ranges into per-install drop ranges, so a
//! gap the device explained is told apart from a gap in transit.
//!
//! A write key is public, so a report is believed only as far as its shape
//! allows: it must come from an install (`context.tally.install_id` and
//! `seq`), and every range must lie below the report's own seq, since a
//! device reports only seqs it assigned before it made the report. The
//! collector further counts a report only for the install of the source
//! (write key) that sent it.

use serde::Deserialize;

use crate::message::{Message, MessageType};
use crate::reason::RejectReason;
use crate::reason::Rejection;

/// The namespace of the SDKs' own events (`tally.dropped`, `tally.health`):
/// they describe an install, not a person, a tracking plan cannot name
/// them, and the collector never counts them as unplanned.
pub const INTERNAL_EVENT_PREFIX: &str = "tally.";

/// Whether `name` is one of the SDKs' own events ([`INTERNAL_EVENT_PREFIX`]).
pub fn is_internal_event(name: &str) -> bool {
    name.starts_with(INTERNAL_EVENT_PREFIX)
}

/// The event name of a drop report.
pub const DROPPED_EVENT: &str = "tally.dropped";

/// Longest drop reason code, in bytes: the codes are short snake_case words
/// (`queue_full`, `deleted_user`), or `invalid:` and a reject reason's code
/// for an event that failed validation after `track()` accepted it; 64
/// leaves room for new ones.
pub const MAX_DROP_REASON_BYTES: usize = 64;

/// A drop report, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropReport {
    /// The drop reason code (`queue_full`, `too_old`, ...).
    pub reason: String,
    /// Inclusive seq ranges, each with `1 <= from <= to < ` the report's seq.
    pub ranges: Vec<(u64, u64)>,
}

#[derive(Deserialize)]
struct Shape {
    reason: String,
    ranges: Vec<(u64, u64)>,
}

impl DropReport {
    /// The report `msg` carries: `Ok(None)` when `msg` is not a drop report,
    /// an [`RejectReason::InvalidDropReport`] rejection when it is one that
    /// breaks a rule of the module doc.
    pub fn of(msg: &Message) -> Result<Option<DropReport>, Rejection> {
        if msg.kind != Some(MessageType::Track) || msg.event.as_deref() != Some(DROPPED_EVENT) {
            return Ok(None);
        }
        let invalid = |detail| Rejection {
            reason: RejectReason::InvalidDropReport,
            detail,
        };
        let tally = msg.tally();
        let (Some(_), Some(seq)) = (
            tally.and_then(|t| t.install_id.as_deref()),
            tally.and_then(|t| t.seq),
        ) else {
            return Err(invalid("drop report without install_id and seq"));
        };
        let shape: Shape = msg
            .properties
            .as_ref()
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .ok_or(invalid("drop report properties are not {reason, ranges}"))?;
        let code_ok = !shape.reason.is_empty()
            && shape.reason.len() <= MAX_DROP_REASON_BYTES
            && shape
                .reason
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b':');
        if !code_ok {
            return Err(invalid("drop reason is not a snake_case code"));
        }
        if shape
            .ranges
            .iter()
            .any(|&(from, to)| from == 0 || from > to || to >= seq)
        {
            return Err(invalid(
                "a dropped range is empty, starts at 0 or reaches the report's own seq",
            ));
        }
        Ok(Some(DropReport {
            reason: shape.reason,
            ranges: shape.ranges,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(props: &str, tally: &str) -> Result<Option<DropReport>, RejectReason> {
        let raw = format!(
            r#"{{"type":"track","messageId":"m","anonymousId":"a","event":"tally.dropped","properties":{props},"context":{{"tally":{tally}}}}}"#
        );
        let msg: Message = serde_json::from_str(&raw).unwrap();
        DropReport::of(&msg).map_err(|r| r.reason)
    }

    const INSTALL: &str = r#"{"install_id":"i1","seq":10}"#;

    #[test]
    fn a_report_below_its_own_seq_is_read() {
        assert_eq!(
            report(r#"{"reason":"queue_full","ranges":[[1,3],[5,9]]}"#, INSTALL),
            Ok(Some(DropReport {
                reason: "queue_full".into(),
                ranges: vec![(1, 3), (5, 9)],
            }))
        );
    }

    /// Both SDKs drop an event that fails validation after `track()`
    /// accepted it (enrichment made it too large, say) as
    /// `invalid:<reject reason>`: its report must count, or its seqs would
    /// read as missing.
    #[test]
    fn a_report_of_events_that_failed_validation_is_read() {
        for reason in [
            "invalid:message_too_large",
            crate::DropReason::Invalid(RejectReason::PropertiesTooLarge).as_str(),
        ] {
            let props = format!(r#"{{"reason":"{reason}","ranges":[[4,4]]}}"#);
            assert_eq!(
                report(&props, INSTALL),
                Ok(Some(DropReport {
                    reason: reason.to_owned(),
                    ranges: vec![(4, 4)],
                })),
                "{reason}"
            );
        }
    }

    #[test]
    fn other_events_are_not_reports() {
        let msg: Message = serde_json::from_str(
            r#"{"type":"track","messageId":"m","anonymousId":"a","event":"Buy"}"#,
        )
        .unwrap();
        assert_eq!(DropReport::of(&msg), Ok(None));
    }

    #[test]
    fn forged_or_malformed_reports_are_refused() {
        let bad = Err(RejectReason::InvalidDropReport);
        // A range reaching the report's own seq, or beyond it.
        assert_eq!(
            report(r#"{"reason":"queue_full","ranges":[[1,10]]}"#, INSTALL),
            bad
        );
        assert_eq!(
            report(r#"{"reason":"queue_full","ranges":[[20,30]]}"#, INSTALL),
            bad
        );
        // Empty, reversed, or from 0.
        assert_eq!(
            report(r#"{"reason":"queue_full","ranges":[[0,2]]}"#, INSTALL),
            bad
        );
        assert_eq!(
            report(r#"{"reason":"queue_full","ranges":[[4,3]]}"#, INSTALL),
            bad
        );
        // No install, or no seq.
        assert_eq!(
            report(r#"{"reason":"queue_full","ranges":[[1,2]]}"#, "{}"),
            bad
        );
        assert_eq!(
            report(
                r#"{"reason":"queue_full","ranges":[[1,2]]}"#,
                r#"{"install_id":"i1"}"#
            ),
            bad
        );
        // Not the expected shape, or a reason that is not a code.
        assert_eq!(report(r#"{"ranges":[[1,2]]}"#, INSTALL), bad);
        assert_eq!(report(r#"{"reason":"x","ranges":"1-2"}"#, INSTALL), bad);
        assert_eq!(
            report(r#"{"reason":"Queue Full","ranges":[[1,2]]}"#, INSTALL),
            bad
        );
        let long = "a".repeat(MAX_DROP_REASON_BYTES + 1);
        assert_eq!(
            report(
                &format!(r#"{{"reason":"{long}","ranges":[[1,2]]}}"#),
                INSTALL
            ),
            bad
        );
        assert_eq!(report("null", INSTALL), bad);
    }
}
