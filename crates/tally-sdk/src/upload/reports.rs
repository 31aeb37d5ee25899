//! The uploader's reports about the device: `tally.dropped`, which
//! reports the seqs dropped on the device, and the periodic `tally.health`
//! beacon.
//!
//! Both are events like any other: the uploader hands them to the
//! pipeline through the narrow [`Emitter`] interface (the capture path
//! implements it), so they take a `seq`, travel the hand-off queue in
//! order and become durable before they are sent. The uploader never
//! reaches into capture or the tracker otherwise.
//!
//! ## Invariants
//!
//! - A range is reported once the collector answered for the report that
//!   carries it; until then it is in flight, and it is reported again if
//!   the report's own record is lost on the device first.
//! - A report carries one reason, at most [`MAX_RANGES_PER_REPORT`]
//!   ranges, no user id (it describes the install), and is critical.
//! - A beacon carries exactly the members docs/query-api.md lists, and
//!   nothing that identifies a person.

use std::collections::BTreeMap;
use std::fmt;

use tally_proto::Priority;

use crate::error::FlushError;
use crate::health::Health;
use crate::install_state::SentReport;
use crate::props::Props;

use super::Uploader;

/// The event that reports device-side drops to the collector.
pub use tally_proto::DROPPED_EVENT;

/// The periodic health beacon event.
pub const HEALTH_EVENT: &str = "tally.health";

/// Most ranges in one `tally.dropped` event: keeps its properties far under
/// the 24 KiB limit (a range is at most about 45 bytes of JSON).
const MAX_RANGES_PER_REPORT: usize = 400;

/// How the uploader hands the SDK's own events to the pipeline.
pub(crate) trait Emitter: Send + Sync + fmt::Debug {
    /// Hands a `track` of `event` with `props` to the pipeline as a call
    /// of the app's would be: it takes the next `seq` and travels the
    /// hand-off queue in order. Returns the `seq`, or `None` when it was
    /// refused (and counted as refused).
    fn emit(&self, event: &str, props: &Props, priority: Priority) -> Option<u64>;
    /// Waits until everything handed off so far is durable.
    fn flush(&self) -> Result<(), FlushError>;
    /// The collector deleted `users`: the pipeline forgets the current
    /// user if it is one of them, in order with the messages.
    fn forget(&self, users: Vec<String>);
}

impl Uploader {
    /// Reports device-side drops (the pipeline's, and new ranges of the
    /// log's drop ledger) as `tally.dropped` events. Once a report is
    /// durable its ranges are in flight: not reported again while it is
    /// pending, reported for good when the collector answers for it (see
    /// [`Uploader::ack`]), and reported again if its record is lost on the
    /// device first (dropped by a bound or a purge).
    pub(super) fn report_drops(&self) {
        let ledger = self.shared.log.drop_ledger();
        let (own, from_ledger) = {
            let mut state = self.shared.lock_state();
            let own_dropped = |seq: u64| {
                state
                    .unreported_drops
                    .iter()
                    .any(|d| (d.from..=d.to).contains(&seq))
            };
            let lost: Vec<u64> = state
                .reports_in_flight
                .iter()
                .map(|r| r.seq)
                .filter(|&seq| {
                    ledger
                        .iter()
                        .any(|r| (r.first_seq..=r.last_seq).contains(&seq))
                        || own_dropped(seq)
                })
                .collect();
            if !lost.is_empty() {
                state.requeue_lost_reports(|seq| lost.contains(&seq));
                self.shared.save_state(&state);
            }
            let from_ledger: Vec<(String, [u64; 2])> = ledger
                .iter()
                .flat_map(|r| {
                    state
                        .unreported_ledger(&r.reason, r.first_seq, r.last_seq)
                        .into_iter()
                        .map(|range| (r.reason.clone(), range))
                })
                .collect();
            (state.unreported_drops.clone(), from_ledger)
        };
        if own.is_empty() && from_ledger.is_empty() {
            return;
        }
        // Per reason, each range with where it comes from (own: true).
        let mut by_reason: BTreeMap<&str, Vec<([u64; 2], bool)>> = BTreeMap::new();
        for d in &own {
            by_reason
                .entry(&d.reason)
                .or_default()
                .push(([d.from, d.to], true));
        }
        for (reason, range) in &from_ledger {
            by_reason.entry(reason).or_default().push((*range, false));
        }
        let mut sent = Vec::new();
        'reasons: for (reason, ranges) in by_reason {
            for chunk in ranges.chunks(MAX_RANGES_PER_REPORT) {
                let plain: Vec<[u64; 2]> = chunk.iter().map(|(r, _)| *r).collect();
                let props = Props::new().with("reason", reason).with("ranges", &plain);
                let Some(seq) = self.emitter.emit(DROPPED_EVENT, &props, Priority::Critical) else {
                    break 'reasons;
                };
                let pick = |own: bool| -> Vec<[u64; 2]> {
                    chunk
                        .iter()
                        .filter(|(_, o)| *o == own)
                        .map(|(r, _)| *r)
                        .collect()
                };
                sent.push(SentReport {
                    seq,
                    reason: reason.to_owned(),
                    own: pick(true),
                    ledger: pick(false),
                });
            }
        }
        // Reports not made durable stay unreported; if they reach the
        // collector anyway, the repeat is merged there.
        if sent.is_empty() || self.emitter.flush().is_err() {
            return;
        }
        let mut state = self.shared.lock_state();
        for report in sent {
            state.report_sent(report);
        }
        self.shared.save_state(&state);
    }

    pub(super) fn beacon(&mut self, now: u64) {
        let Some(every) = self.shared.config.health_beacon_ms else {
            return;
        };
        if now.saturating_sub(self.last_beacon_ms) < every {
            return;
        }
        self.last_beacon_ms = now;
        let props = beacon_props(&self.shared.health());
        let _ = self.emitter.emit(HEALTH_EVENT, &props, Priority::Normal);
    }
}

/// The properties of a `tally.health` beacon: exactly the members
/// docs/query-api.md lists ("The SDK's tally.health beacon"), which the
/// collector's fleet view reads; nothing that identifies a person. A figure
/// not known yet (no send has succeeded, so no latency or clock offset) is
/// left out rather than sent as 0, which would read as a measurement.
pub(crate) fn beacon_props(h: &Health) -> Props {
    let mut props = Props::new()
        .with("pending", h.pending)
        .with("pending_bytes", h.pending_bytes)
        .with("oldest_pending_age_s", h.oldest_pending_age_s)
        .with("consecutive_failures", h.consecutive_failures)
        .with("backoff_ms", h.backoff_ms)
        .with("persistence_errors", h.persistence_errors);
    let known: [(&str, Option<i64>); 3] = [
        (
            "sync_latency_p50_ms",
            h.sync_latency_p50_ms.and_then(|v| i64::try_from(v).ok()),
        ),
        (
            "sync_latency_p99_ms",
            h.sync_latency_p99_ms.and_then(|v| i64::try_from(v).ok()),
        ),
        ("clock_offset_ms", h.clock_offset_ms),
    ];
    for (key, value) in known {
        if let Some(v) = value {
            props = props.with(key, v);
        }
    }
    props
        .with("consent", h.consent)
        .with("dropped", &h.dropped)
        .with("rejected", &h.rejected)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::health::{LogFigures, Metrics};
    use crate::pipeline::privacy::Consent;

    fn keys(props: &Props) -> Vec<String> {
        let value: serde_json::Value =
            serde_json::from_str(props.as_json()).unwrap_or(serde_json::Value::Null);
        let mut keys: Vec<String> = value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn the_health_beacon_carries_exactly_the_documented_members() {
        let metrics = Metrics::default();
        let before = metrics.report(LogFigures::default(), "i".into(), Consent::Pending);
        // Before any send: no latency and no clock offset to report.
        let mut expected = vec![
            "backoff_ms",
            "consecutive_failures",
            "consent",
            "dropped",
            "oldest_pending_age_s",
            "pending",
            "pending_bytes",
            "persistence_errors",
            "rejected",
        ];
        expected.sort_unstable();
        assert_eq!(keys(&beacon_props(&before)), expected);

        metrics.record_latency(12);
        metrics.record_latency(40);
        metrics.record_offset(-250, 8);
        metrics.backoff_ms.store(1_500, Ordering::Relaxed);
        let figures = LogFigures {
            pending: 3,
            persistence_errors: 2,
            dropped: BTreeMap::from([("log_full".to_owned(), 4)]),
            ..LogFigures::default()
        };
        let h = metrics.report(figures, "i".into(), Consent::Granted);
        let props = beacon_props(&h);
        expected.extend([
            "sync_latency_p50_ms",
            "sync_latency_p99_ms",
            "clock_offset_ms",
        ]);
        expected.sort_unstable();
        assert_eq!(keys(&props), expected);
        let v: serde_json::Value = serde_json::from_str(props.as_json()).unwrap_or_default();
        assert_eq!(v["backoff_ms"], 1_500);
        assert_eq!(v["persistence_errors"], 2);
        assert_eq!(v["sync_latency_p50_ms"], 12);
        assert_eq!(v["sync_latency_p99_ms"], 40);
        assert_eq!(v["clock_offset_ms"], -250);
        assert_eq!(v["consent"], "granted");
        assert_eq!(v["dropped"]["log_full"], 4);
        assert_eq!(v["pending"], 3);
    }
}
