//! `health()`: what the SDK knows about its own queue and sync, as a
//! serializable report (Glean counts its own errors as telemetry; this is
//! the same idea).
//!
//! Counters are kept in [`Metrics`] (atomics, and small maps for counts by
//! reason), updated by the caller, pipeline and uploader threads; the
//! report combines them with the log's statistics at the time of the call.
//!
//! Counts are for the life of the install, so a product team can act on
//! them across app launches: the log persists its own (`pending`,
//! `pending_bytes`, `oldest_pending_age_s`, `corrupt`, `rejected`, and its
//! share of `dropped`: every drop after `track()` accepted a message but
//! a purge's), and the SDK state file the rest (`accepted`, `duplicate`,
//! `refused`, the purge's share of `dropped`, `persistence_errors`,
//! `sync_attempts`, `sync_successes`), saved with each state save (every
//! flush, every answered batch, and at most 5 s after a change while
//! events flow), so a kill loses at most what changed since. `tracked`,
//! the backoff and latency figures and the clock offset describe this
//! process.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::install_state::Totals;
use crate::pipeline::privacy::Consent;
use crate::upload::policy::{LATENCY_WINDOW, OFFSET_WINDOW};

/// The health report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// This install.
    pub install_id: String,
    /// Messages in the log not yet answered by the collector.
    pub pending: u64,
    /// Their size in bytes.
    pub pending_bytes: u64,
    /// Age of the oldest of them, in seconds.
    pub oldest_pending_age_s: f64,
    /// Messages `track()` (and friends) accepted in this process.
    pub tracked: u64,
    /// Messages refused at the call, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Messages the collector accepted.
    pub accepted: u64,
    /// Messages the collector had already (as good as accepted).
    pub duplicate: u64,
    /// Messages the collector rejected, or the uploader quarantined, by
    /// reason (kept in the local quarantine; life of the log).
    pub rejected: BTreeMap<String, u64>,
    /// Messages dropped on the device by a policy, by reason (the log's
    /// counts cover the life of the log).
    pub dropped: BTreeMap<String, u64>,
    /// Records the log found corrupt and skipped.
    pub corrupt: u64,
    /// Failed log writes or state saves.
    pub persistence_errors: u64,
    /// Batches sent to the collector.
    pub sync_attempts: u64,
    /// Batches that got an answer with a result per message (the
    /// others: no answer, a 5xx or 429, an answer the SDK could not use).
    pub sync_successes: u64,
    /// `sync_successes / sync_attempts` (`None` before the first send):
    /// how well this install's link works.
    pub sync_success_rate: Option<f64>,
    /// Sends in a row that got no usable answer.
    pub consecutive_failures: u64,
    /// The wait before the next try, in ms (0 when not backing off).
    pub backoff_ms: u64,
    /// When a batch last got results (Unix ms, device clock).
    pub last_success_ms: Option<i64>,
    /// Median send latency over recent batches, in ms.
    pub sync_latency_p50_ms: Option<u64>,
    /// 99th percentile send latency over recent batches, in ms.
    pub sync_latency_p99_ms: Option<u64>,
    /// Estimated device clock offset from the collector's (positive: the
    /// device is ahead), in ms.
    pub clock_offset_ms: Option<i64>,
    /// Round trip of the sample the offset comes from, in ms.
    pub clock_offset_rtt_ms: Option<i64>,
    /// Current consent.
    pub consent: Consent,
    /// The collector refused the write key (401/403); sending is stopped
    /// until `sync_now()` or a restart.
    pub auth_failed: bool,
}

/// Counters shared by the SDK's threads.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) tracked: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) duplicate: AtomicU64,
    pub(crate) persistence_errors: AtomicU64,
    /// Persistence errors of earlier runs (the log counts its own since
    /// it opened, so the total adds both).
    earlier_persistence_errors: AtomicU64,
    pub(crate) sync_attempts: AtomicU64,
    pub(crate) sync_successes: AtomicU64,
    pub(crate) consecutive_failures: AtomicU64,
    pub(crate) backoff_ms: AtomicU64,
    pub(crate) last_success_ms: AtomicI64,
    pub(crate) auth_failed: AtomicBool,
    pub(crate) refused: Mutex<BTreeMap<String, u64>>,
    /// Drops by the pipeline (the log counts its own).
    pub(crate) dropped: Mutex<BTreeMap<String, u64>>,
    latencies: Mutex<VecDeque<u64>>,
    offsets: Mutex<VecDeque<(i64, i64)>>,
}

pub(crate) fn bump(map: &Mutex<BTreeMap<String, u64>>, reason: &str, n: u64) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    match map.get_mut(reason) {
        Some(count) => *count += n,
        None => {
            map.insert(reason.to_owned(), n);
        }
    }
}

fn snapshot(map: &Mutex<BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
    map.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

impl Metrics {
    /// Counters that go on from what earlier runs saved.
    pub(crate) fn restored(totals: &Totals) -> Metrics {
        let m = Metrics::default();
        m.accepted.store(totals.accepted, Ordering::Relaxed);
        m.duplicate.store(totals.duplicate, Ordering::Relaxed);
        m.earlier_persistence_errors
            .store(totals.persistence_errors, Ordering::Relaxed);
        m.sync_attempts
            .store(totals.sync_attempts, Ordering::Relaxed);
        m.sync_successes
            .store(totals.sync_successes, Ordering::Relaxed);
        *m.refused.lock().unwrap_or_else(|p| p.into_inner()) = totals.refused.clone();
        *m.dropped.lock().unwrap_or_else(|p| p.into_inner()) = totals.dropped.clone();
        m
    }

    /// The counters to save, given the log's persistence errors since it
    /// opened.
    pub(crate) fn totals(&self, log_persistence_errors: u64) -> Totals {
        Totals {
            accepted: self.accepted.load(Ordering::Relaxed),
            duplicate: self.duplicate.load(Ordering::Relaxed),
            refused: snapshot(&self.refused),
            dropped: snapshot(&self.dropped),
            persistence_errors: self.persistence_errors(log_persistence_errors),
            sync_attempts: self.sync_attempts.load(Ordering::Relaxed),
            sync_successes: self.sync_successes.load(Ordering::Relaxed),
        }
    }

    fn persistence_errors(&self, log: u64) -> u64 {
        self.earlier_persistence_errors.load(Ordering::Relaxed)
            + self.persistence_errors.load(Ordering::Relaxed)
            + log
    }

    /// Records the latency of one send.
    pub(crate) fn record_latency(&self, ms: u64) {
        let mut window = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        if window.len() == LATENCY_WINDOW {
            window.pop_front();
        }
        window.push_back(ms);
    }

    /// Records one clock-offset sample `(offset, round_trip)`.
    pub(crate) fn record_offset(&self, offset: i64, rtt: i64) {
        let mut window = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        if window.len() == OFFSET_WINDOW {
            window.pop_front();
        }
        window.push_back((offset, rtt));
    }

    /// The offset sample with the shortest round trip.
    pub(crate) fn clock_offset(&self) -> Option<(i64, i64)> {
        let window = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        window.iter().copied().min_by_key(|&(_, rtt)| rtt)
    }

    fn latency_percentiles(&self) -> (Option<u64>, Option<u64>) {
        let mut sorted: Vec<u64> = self
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        if sorted.is_empty() {
            return (None, None);
        }
        sorted.sort_unstable();
        let at =
            |q: f64| sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1];
        (Some(at(0.5)), Some(at(0.99)))
    }

    /// The report, given what only the log and the tracker know.
    pub(crate) fn report(&self, log: LogFigures, install_id: String, consent: Consent) -> Health {
        let (p50, p99) = self.latency_percentiles();
        let mut dropped = log.dropped;
        for (reason, n) in snapshot(&self.dropped) {
            *dropped.entry(reason).or_default() += n;
        }
        let offset = self.clock_offset();
        let last = self.last_success_ms.load(Ordering::Relaxed);
        let sync_attempts = self.sync_attempts.load(Ordering::Relaxed);
        let sync_successes = self.sync_successes.load(Ordering::Relaxed);
        Health {
            install_id,
            pending: log.pending,
            pending_bytes: log.pending_bytes,
            oldest_pending_age_s: log.oldest_pending_age_s,
            tracked: self.tracked.load(Ordering::Relaxed),
            refused: snapshot(&self.refused),
            accepted: self.accepted.load(Ordering::Relaxed),
            duplicate: self.duplicate.load(Ordering::Relaxed),
            rejected: log.rejected,
            dropped,
            corrupt: log.corrupt,
            persistence_errors: self.persistence_errors(log.persistence_errors),
            sync_attempts,
            sync_successes,
            sync_success_rate: (sync_attempts > 0)
                .then(|| sync_successes as f64 / sync_attempts as f64),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            backoff_ms: self.backoff_ms.load(Ordering::Relaxed),
            last_success_ms: (last != 0).then_some(last),
            sync_latency_p50_ms: p50,
            sync_latency_p99_ms: p99,
            clock_offset_ms: offset.map(|o| o.0),
            clock_offset_rtt_ms: offset.map(|o| o.1),
            consent,
            auth_failed: self.auth_failed.load(Ordering::Relaxed),
        }
    }
}

/// The log's part of the report (its counters are persisted, so they
/// cover the life of the log, not just this process).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LogFigures {
    pub pending: u64,
    pub pending_bytes: u64,
    pub oldest_pending_age_s: f64,
    pub corrupt: u64,
    pub rejected: BTreeMap<String, u64>,
    pub dropped: BTreeMap<String, u64>,
    pub persistence_errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_serializes_with_integer_pending_and_percentiles() {
        let m = Metrics::default();
        for ms in 1..=100 {
            m.record_latency(ms);
        }
        m.record_offset(3_600_000, 80);
        m.record_offset(3_600_010, 20);
        bump(&m.dropped, "queue_full", 2);
        bump(&m.dropped, "queue_full", 1);
        let figures = LogFigures {
            pending: 7,
            pending_bytes: 900,
            oldest_pending_age_s: 1.5,
            dropped: BTreeMap::from([("log_full".to_owned(), 4), ("queue_full".to_owned(), 1)]),
            ..LogFigures::default()
        };
        let h = m.report(figures, "i".into(), Consent::Granted);
        assert_eq!(
            (h.sync_latency_p50_ms, h.sync_latency_p99_ms),
            (Some(50), Some(99))
        );
        assert_eq!(
            (h.clock_offset_ms, h.clock_offset_rtt_ms),
            (Some(3_600_010), Some(20))
        );
        assert_eq!(h.dropped.get("queue_full"), Some(&4));
        assert_eq!(h.dropped.get("log_full"), Some(&4));
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["pending"], serde_json::json!(7));
        assert!(json["pending"].is_u64());
        assert_eq!(json["consent"], "granted");
        assert_eq!(json["last_success_ms"], serde_json::Value::Null);
    }
}
