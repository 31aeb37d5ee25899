//! Prometheus metrics of the collector (`GET /metrics`, text format).
//!
//! | metric | type | what |
//! |---|---|---|
//! | `tally_http_requests_total{status}` | counter | answers by HTTP status |
//! | `tally_events_total{outcome}` | counter | messages by outcome: accepted, duplicate, rejected |
//! | `tally_dedup_total` | counter | duplicates suppressed (by `messageId` or `dedup_key`) |
//! | `tally_batch_duration_seconds` | histogram | one ingest request, body read to answer |
//! | `tally_store_commit_duration_seconds` | histogram | one `write_batch` transaction |
//! | `tally_ingest_in_flight` | gauge | ingest requests holding a slot now |
//! | `tally_retention_expired_events_total` | counter | stored events deleted by retention |
//! | `tally_retention_chunk_duration_seconds` | histogram | one retention chunk (one transaction) |

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Latency buckets from 0.5 ms doubling to about 8 s: a 500-message batch
/// commits in a few ms on SQLite, and anything past seconds is an outage.
const LATENCY_START_SECONDS: f64 = 0.0005;
const LATENCY_FACTOR: f64 = 2.0;
const LATENCY_BUCKETS: u16 = 15;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The collector's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabel, Counter>,
    events: Family<OutcomeLabel, Counter>,
    dedup: Counter,
    batch_latency: Histogram,
    commit_latency: Histogram,
    in_flight: Gauge,
    retention_expired: Counter,
    retention_chunk_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every collector metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tally");
        let requests = Family::<StatusLabel, Counter>::default();
        let events = Family::<OutcomeLabel, Counter>::default();
        let dedup = Counter::default();
        let buckets =
            || exponential_buckets(LATENCY_START_SECONDS, LATENCY_FACTOR, LATENCY_BUCKETS);
        let batch_latency = Histogram::new(buckets());
        let commit_latency = Histogram::new(buckets());
        let in_flight = Gauge::default();
        registry.register("http_requests", "HTTP answers by status", requests.clone());
        registry.register("events", "Messages by outcome", events.clone());
        registry.register("dedup", "Duplicates suppressed", dedup.clone());
        registry.register(
            "batch_duration_seconds",
            "Ingest request latency, body read to answer",
            batch_latency.clone(),
        );
        registry.register(
            "store_commit_duration_seconds",
            "Store write_batch latency (one transaction)",
            commit_latency.clone(),
        );
        registry.register(
            "ingest_in_flight",
            "Ingest requests in flight",
            in_flight.clone(),
        );
        let retention_expired = Counter::default();
        let retention_chunk_latency = Histogram::new(buckets());
        registry.register(
            "retention_expired_events",
            "Stored events deleted by retention",
            retention_expired.clone(),
        );
        registry.register(
            "retention_chunk_duration_seconds",
            "One retention chunk (one transaction)",
            retention_chunk_latency.clone(),
        );
        // Outcomes exist from the start so a dashboard sees zeros, not gaps.
        for outcome in ["accepted", "duplicate", "rejected"] {
            let _ = events.get_or_create(&OutcomeLabel { outcome });
        }
        Self {
            registry,
            requests,
            events,
            dedup,
            batch_latency,
            commit_latency,
            in_flight,
            retention_expired,
            retention_chunk_latency,
        }
    }

    /// Counts one answer with `status`.
    pub fn request(&self, status: u16) {
        self.requests.get_or_create(&StatusLabel { status }).inc();
    }

    /// Counts the outcomes of one batch.
    pub fn outcomes(&self, accepted: u64, duplicate: u64, rejected: u64) {
        for (outcome, n) in [
            ("accepted", accepted),
            ("duplicate", duplicate),
            ("rejected", rejected),
        ] {
            if n > 0 {
                self.events
                    .get_or_create(&OutcomeLabel { outcome })
                    .inc_by(n);
            }
        }
        if duplicate > 0 {
            self.dedup.inc_by(duplicate);
        }
    }

    /// Records one ingest request's latency.
    pub fn batch_latency(&self, d: Duration) {
        self.batch_latency.observe(d.as_secs_f64());
    }

    /// Records one store commit's latency.
    pub fn commit_latency(&self, d: Duration) {
        self.commit_latency.observe(d.as_secs_f64());
    }

    /// The in-flight gauge: incremented while an ingest request holds a slot.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// Records one retention chunk: `expired` events deleted in `d`.
    pub fn retention_chunk(&self, expired: u64, d: Duration) {
        self.retention_expired.inc_by(expired);
        self.retention_chunk_latency.observe(d.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_every_metric_with_its_values() {
        let m = Metrics::new();
        m.request(200);
        m.request(200);
        m.request(413);
        m.outcomes(3, 2, 1);
        m.batch_latency(Duration::from_millis(3));
        m.commit_latency(Duration::from_millis(1));
        m.in_flight().inc();
        m.retention_chunk(5_000, Duration::from_millis(20));
        let text = m.encode();
        for line in [
            "tally_http_requests_total{status=\"200\"} 2",
            "tally_http_requests_total{status=\"413\"} 1",
            "tally_events_total{outcome=\"accepted\"} 3",
            "tally_events_total{outcome=\"duplicate\"} 2",
            "tally_events_total{outcome=\"rejected\"} 1",
            "tally_dedup_total 2",
            "tally_batch_duration_seconds_count 1",
            "tally_store_commit_duration_seconds_count 1",
            "tally_ingest_in_flight 1",
            "tally_retention_expired_events_total 5000",
            "tally_retention_chunk_duration_seconds_count 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
