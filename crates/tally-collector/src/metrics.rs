//! Prometheus metrics of the collector (`GET /metrics`, text format).
//!
//! | metric | type | what |
//! |---|---|---|
//! | `tally_build_info{version,commit}` | gauge | always 1: the build that runs |
//! | `tally_http_requests_total{route,status}` | counter | answers by route template (`/v1/installs/{install_id}`; `unmatched` for a path no route has) and HTTP status |
//! | `tally_http_request_duration_seconds{route,status_class}` | histogram | request to response head, by route and `2xx`..`5xx` |
//! | `tally_events_total{outcome}` | counter | messages by outcome: accepted, duplicate, rejected |
//! | `tally_dedup_total` | counter | duplicates suppressed (by `messageId` or `dedup_key`) |
//! | `tally_batch_duration_seconds` | histogram | one ingest request, body read to answer |
//! | `tally_store_commit_duration_seconds` | histogram | one `write_batch` transaction |
//! | `tally_ingest_in_flight` | gauge | ingest requests holding a slot now |
//! | `tally_connections_open` | gauge | connections open now |
//! | `tally_connections_shed_total{reason}` | counter | connections the collector closed: `idle_timeout`, `over_limit` (the longest idle, to admit a new one), `accept_failed` (to free a descriptor) |
//! | `tally_connections_refused_total` | counter | connections closed on arrival: the limit was reached and none was idle |
//! | `tally_accept_errors_total` | counter | failed `accept` calls (out of descriptors, say) |
//! | `tally_auth_failures_total` | counter | requests to admin paths with a wrong token (or a write key) |
//! | `tally_auth_throttled_total` | counter | requests to admin paths refused by the per-client throttle |
//! | `tally_ingest_key_limited_total{source}` | counter | ingest requests refused because their write key used up its rate (`--key-rate`; `source` is the key's id, not the key) |
//! | `tally_plan_findings_total`, `tally_plan_reloads_total` | counter | the tracking plan's findings and reloads ([`crate::plan::metrics`]) |
//!
//! Pipeline health, refreshed from the store by the health task every
//! `[alerts] interval_s` (never by a scrape), store-wide (every collector
//! sharing the store shows the same values: aggregate them with `max`):
//!
//! | metric | type | what |
//! |---|---|---|
//! | `tally_pipeline_batches_total{outcome}` | counter | ingest requests ever: `succeeded` (200), `failed` (the store's totals: a restored store may go back) |
//! | `tally_pipeline_batch_success_ratio` | gauge | requests answered 200 / requests, over the rate window |
//! | `tally_pipeline_dedup_ratio` | gauge | duplicates / (accepted + duplicates), over the rate window |
//! | `tally_pipeline_rejection_ratio` | gauge | rejected / received, over the rate window |
//! | `tally_pipeline_rejections{reason}` | gauge | rejected messages by reason, in the hours of the rate window |
//! | `tally_pipeline_ingest_lag_seconds{quantile}` | gauge | ingest lag p50, p90, p99, in the hours of the rate window |
//! | `tally_pipeline_sync_latency_seconds{quantile}` | gauge | beacons' sync latency p50, p99, same hours |
//! | `tally_completeness_installs`, `_installs_with_gaps`, `_missing_events` | gauge | completeness now |
//! | `tally_fleet_installs_reporting`, `_pending_events`, `_oldest_pending_age_seconds`, `_installs_with_persistence_errors`, `_installs_in_backoff`, `_installs_oldest_pending_over_24h`, `_stale_queue_ratio` | gauge | client queues from the latest beacons |
//! | `tally_alert_state{rule}` | gauge | 0 ok, 1 pending, 2 firing |
//! | `tally_alert_webhook_deliveries_total`, `_failures_total`, `_dropped_total` | counter | webhook state changes delivered, failed attempts, changes given up |
//! | `tally_health_refresh_errors_total` | counter | refreshes that could not read the store |
//! | `tally_retention_expired_events_total` | counter | stored events deleted by retention |
//! | `tally_retention_expired_dead_letters_total` | counter | dead letters deleted by retention |
//! | `tally_retention_chunk_duration_seconds` | histogram | one retention chunk (one transaction) |
//!
//! The process, on Linux (from `/proc/self`; absent elsewhere), under the
//! names every Prometheus client library uses:
//!
//! | metric | type | what |
//! |---|---|---|
//! | `process_cpu_seconds_total` | counter | user and system CPU time |
//! | `process_resident_memory_bytes`, `process_virtual_memory_bytes` | gauge | memory |
//! | `process_open_fds`, `process_max_fds` | gauge | file descriptors open, and the limit |
//! | `process_threads` | gauge | threads |
//! | `process_start_time_seconds` | gauge | start, Unix time |

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::store::PipelineFigures;

/// Latency buckets from 0.5 ms doubling to about 8 s: a 500-message batch
/// commits in a few ms on SQLite, and anything past seconds is an outage.
const LATENCY_START_SECONDS: f64 = 0.0005;
const LATENCY_FACTOR: f64 = 2.0;
const LATENCY_BUCKETS: u16 = 15;

/// The `route` of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatusLabel {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteClassLabel {
    route: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
    commit: &'static str,
}

/// The commit the binary was built from, when the build said
/// (`TALLY_BUILD_COMMIT=$(git rev-parse --short HEAD) cargo build`).
const BUILD_COMMIT: &str = match option_env!("TALLY_BUILD_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// `2xx` for 200..=299, and so on.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        LATENCY_START_SECONDS,
        LATENCY_FACTOR,
        LATENCY_BUCKETS,
    ))
}

/// A counter whose value is a total kept elsewhere (the store's), set
/// rather than incremented: monotonic, so exposed as a counter.
#[derive(Debug, Default)]
struct TotalCounter(AtomicU64);

impl TotalCounter {
    fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

impl TypedMetric for TotalCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for TotalCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.0.load(Ordering::Relaxed), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuantileLabel {
    quantile: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Rates over the rate window, computed by the health task from sampled
/// store totals (`None`: nothing to divide by).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowRates {
    /// Requests answered 200 / requests.
    pub batch_success: Option<f64>,
    /// Duplicates / (accepted + duplicates).
    pub dedup: Option<f64>,
    /// Rejected / received.
    pub rejection: Option<f64>,
}

/// Connection and authentication counts of the server (see the module
/// doc).
#[derive(Debug, Default)]
struct ServerCounts {
    open: Gauge,
    shed: Family<ShedLabel, Counter>,
    refused: Counter,
    accept_errors: Counter,
    auth_failures: Counter,
    auth_throttled: Counter,
    key_limited: Family<SourceLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

impl ServerCounts {
    fn register(&self, r: &mut Registry) {
        r.register("connections_open", "Connections open", self.open.clone());
        r.register(
            "connections_shed",
            "Connections closed by the collector, by reason",
            self.shed.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed on arrival: at the limit, none idle",
            self.refused.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accept calls",
            self.accept_errors.clone(),
        );
        r.register(
            "auth_failures",
            "Requests to admin paths with a wrong token",
            self.auth_failures.clone(),
        );
        r.register(
            "auth_throttled",
            "Requests to admin paths refused by the failed-auth throttle",
            self.auth_throttled.clone(),
        );
        r.register(
            "ingest_key_limited",
            "Ingest requests refused by their write key's rate, by source",
            self.key_limited.clone(),
        );
        for reason in ["idle_timeout", "over_limit", "accept_failed"] {
            let _ = self.shed.get_or_create(&ShedLabel { reason });
        }
    }
}

/// The pipeline-health gauges (see the module doc).
#[derive(Debug, Default)]
struct HealthGauges {
    batches: Family<OutcomeLabel, TotalCounter>,
    batch_success_ratio: FloatGauge,
    dedup_ratio: FloatGauge,
    rejection_ratio: FloatGauge,
    rejections: Family<ReasonLabel, Gauge>,
    ingest_lag: Family<QuantileLabel, FloatGauge>,
    sync_latency: Family<QuantileLabel, FloatGauge>,
    installs: Gauge,
    installs_with_gaps: Gauge,
    missing_events: Gauge,
    installs_reporting: Gauge,
    pending_events: Gauge,
    oldest_pending_age: FloatGauge,
    installs_with_persistence_errors: Gauge,
    installs_in_backoff: Gauge,
    installs_oldest_pending_over_24h: Gauge,
    stale_queue_ratio: FloatGauge,
    alert_state: Family<RuleLabel, Gauge>,
    webhook_deliveries: Counter,
    webhook_failures: Counter,
    webhook_dropped: Counter,
    refresh_errors: Counter,
}

impl HealthGauges {
    fn register(&self, r: &mut Registry) {
        r.register(
            "pipeline_batches",
            "Ingest requests ever, by outcome (store-wide)",
            self.batches.clone(),
        );
        r.register(
            "pipeline_batch_success_ratio",
            "Ingest requests answered 200 / requests, over the rate window",
            self.batch_success_ratio.clone(),
        );
        r.register(
            "pipeline_dedup_ratio",
            "Duplicates / (accepted + duplicates), over the rate window",
            self.dedup_ratio.clone(),
        );
        r.register(
            "pipeline_rejection_ratio",
            "Rejected / received messages, over the rate window",
            self.rejection_ratio.clone(),
        );
        r.register(
            "pipeline_rejections",
            "Rejected messages by reason, in the hours of the rate window",
            self.rejections.clone(),
        );
        r.register(
            "pipeline_ingest_lag_seconds",
            "Ingest lag (received - corrected capture time) quantiles",
            self.ingest_lag.clone(),
        );
        r.register(
            "pipeline_sync_latency_seconds",
            "Sync latency quantiles from SDK health beacons",
            self.sync_latency.clone(),
        );
        r.register(
            "completeness_installs",
            "Installs seen",
            self.installs.clone(),
        );
        r.register(
            "completeness_installs_with_gaps",
            "Installs with missing seqs",
            self.installs_with_gaps.clone(),
        );
        r.register(
            "completeness_missing_events",
            "Missing seqs over all installs",
            self.missing_events.clone(),
        );
        r.register(
            "fleet_installs_reporting",
            "Installs with a health beacon in the last 7 days",
            self.installs_reporting.clone(),
        );
        r.register(
            "fleet_pending_events",
            "Events queued on reporting devices",
            self.pending_events.clone(),
        );
        r.register(
            "fleet_oldest_pending_age_seconds",
            "Oldest queued event's age over the fleet",
            self.oldest_pending_age.clone(),
        );
        r.register(
            "fleet_installs_with_persistence_errors",
            "Installs reporting persistence errors",
            self.installs_with_persistence_errors.clone(),
        );
        r.register(
            "fleet_installs_in_backoff",
            "Installs backing off",
            self.installs_in_backoff.clone(),
        );
        r.register(
            "fleet_installs_oldest_pending_over_24h",
            "Installs whose oldest queued event is over 24 h old",
            self.installs_oldest_pending_over_24h.clone(),
        );
        r.register(
            "fleet_stale_queue_ratio",
            "Share of reporting installs whose oldest queued event is over 24 h old",
            self.stale_queue_ratio.clone(),
        );
        r.register(
            "alert_state",
            "Alert rule state: 0 ok, 1 pending, 2 firing",
            self.alert_state.clone(),
        );
        r.register(
            "alert_webhook_deliveries",
            "Alert state changes delivered to the webhook",
            self.webhook_deliveries.clone(),
        );
        r.register(
            "alert_webhook_failures",
            "Failed alert webhook attempts",
            self.webhook_failures.clone(),
        );
        r.register(
            "alert_webhook_dropped",
            "Alert state changes given up (queue full or every attempt failed)",
            self.webhook_dropped.clone(),
        );
        r.register(
            "health_refresh_errors",
            "Health refreshes that could not read the store",
            self.refresh_errors.clone(),
        );
        for outcome in ["succeeded", "failed"] {
            let _ = self.batches.get_or_create(&OutcomeLabel { outcome });
        }
    }
}

/// The collector's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatusLabel, Counter>,
    request_latency: Family<RouteClassLabel, Histogram, fn() -> Histogram>,
    events: Family<OutcomeLabel, Counter>,
    dedup: Counter,
    batch_latency: Histogram,
    commit_latency: Histogram,
    in_flight: Gauge,
    connections: ServerCounts,
    health: HealthGauges,
    retention_expired: Counter,
    retention_dead_letters: Counter,
    retention_chunk_latency: Histogram,
    /// The tracking plan's counters.
    pub plan: crate::plan::metrics::PlanMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every collector metric at zero, and the process's.
    pub fn new() -> Self {
        let mut root = Registry::default();
        crate::process_metrics::register(&mut root);
        let registry = root.sub_registry_with_prefix("tally");
        let build = Family::<BuildLabel, Gauge>::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
                commit: BUILD_COMMIT,
            })
            .set(1);
        registry.register("build_info", "The build that runs (always 1)", build);
        let requests = Family::<RouteStatusLabel, Counter>::default();
        let request_latency =
            Family::<RouteClassLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let events = Family::<OutcomeLabel, Counter>::default();
        let dedup = Counter::default();
        let buckets = latency_histogram;
        let batch_latency = buckets();
        let commit_latency = buckets();
        let in_flight = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP answers by route template and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Request to response head, by route template and status class",
            request_latency.clone(),
        );
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
        let retention_dead_letters = Counter::default();
        let retention_chunk_latency = buckets();
        registry.register(
            "retention_expired_events",
            "Stored events deleted by retention",
            retention_expired.clone(),
        );
        registry.register(
            "retention_expired_dead_letters",
            "Dead letters deleted by retention",
            retention_dead_letters.clone(),
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
        let health = HealthGauges::default();
        health.register(registry);
        let connections = ServerCounts::default();
        connections.register(registry);
        let plan = crate::plan::metrics::PlanMetrics::default();
        plan.register(registry);
        Self {
            registry: root,
            requests,
            request_latency,
            events,
            dedup,
            batch_latency,
            commit_latency,
            in_flight,
            connections,
            health,
            retention_expired,
            retention_dead_letters,
            plan,
            retention_chunk_latency,
        }
    }

    /// Counts one answer with `status` to a request of `route` (the
    /// route's template, or [`UNMATCHED_ROUTE`]) and records its latency.
    pub fn request(&self, route: &str, status: u16, latency: Duration) {
        self.requests
            .get_or_create(&RouteStatusLabel {
                route: route.to_owned(),
                status,
            })
            .inc();
        self.request_latency
            .get_or_create(&RouteClassLabel {
                route: route.to_owned(),
                status_class: status_class(status),
            })
            .observe(latency.as_secs_f64());
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

    /// Sets the number of open connections.
    pub fn set_connections(&self, open: usize) {
        self.connections
            .open
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// Counts a connection the server closed for `reason`.
    pub fn connection_shed(&self, reason: &'static str) {
        self.connections
            .shed
            .get_or_create(&ShedLabel { reason })
            .inc();
    }

    /// Counts a connection closed on arrival.
    pub fn connection_refused(&self) {
        self.connections.refused.inc();
    }

    /// Counts a failed `accept`.
    pub fn accept_error(&self) {
        self.connections.accept_errors.inc();
    }

    /// Counts a wrong token on an admin path.
    pub fn auth_failure(&self) {
        self.connections.auth_failures.inc();
    }

    /// Counts a request refused by the failed-auth throttle.
    pub fn auth_throttled(&self) {
        self.connections.auth_throttled.inc();
    }

    /// Counts an ingest request of `source` refused by its key's rate.
    pub fn key_limited(&self, source: &str) {
        self.connections
            .key_limited
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc();
    }

    /// The in-flight gauge: incremented while an ingest request holds a slot.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// Sets the pipeline-health gauges from a refresh.
    pub fn set_pipeline(&self, f: &PipelineFigures, rates: &WindowRates) {
        let h = &self.health;
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let t = &f.totals;
        h.batches
            .get_or_create(&OutcomeLabel {
                outcome: "succeeded",
            })
            .set(t.batches_ok);
        h.batches
            .get_or_create(&OutcomeLabel { outcome: "failed" })
            .set(t.batches.saturating_sub(t.batches_ok));
        let nan = f64::NAN;
        h.batch_success_ratio
            .set(rates.batch_success.unwrap_or(nan));
        h.dedup_ratio.set(rates.dedup.unwrap_or(nan));
        h.rejection_ratio.set(rates.rejection.unwrap_or(nan));
        h.rejections.clear();
        for (reason, n) in &f.window.rejections {
            h.rejections
                .get_or_create(&ReasonLabel {
                    reason: reason.clone(),
                })
                .set(int(*n));
        }
        let seconds = |ms: Option<i64>| ms.map_or(nan, |ms| ms as f64 / 1000.0);
        for (quantile, q) in [("0.5", 0.5), ("0.9", 0.9), ("0.99", 0.99)] {
            h.ingest_lag
                .get_or_create(&QuantileLabel { quantile })
                .set(seconds(f.window.ingest_lag.quantile(q)));
        }
        h.sync_latency
            .get_or_create(&QuantileLabel { quantile: "0.5" })
            .set(seconds(f.window.sync_p50.quantile(0.5)));
        h.sync_latency
            .get_or_create(&QuantileLabel { quantile: "0.99" })
            .set(seconds(f.window.sync_p99.quantile(0.99)));
        let c = &f.completeness;
        h.installs.set(int(c.installs));
        h.installs_with_gaps.set(int(c.installs_with_gaps));
        h.missing_events.set(int(c.missing));
        let fl = &f.fleet;
        h.installs_reporting.set(int(fl.installs_reporting));
        h.pending_events.set(int(fl.pending_events));
        h.oldest_pending_age.set(fl.oldest_pending_age_s);
        h.installs_with_persistence_errors
            .set(int(fl.installs_with_persistence_errors));
        h.installs_in_backoff.set(int(fl.installs_in_backoff));
        h.installs_oldest_pending_over_24h
            .set(int(fl.installs_oldest_pending_over_24h));
        h.stale_queue_ratio.set(
            crate::health::ratio(fl.installs_oldest_pending_over_24h, fl.installs_reporting)
                .unwrap_or(nan),
        );
    }

    /// Sets a rule's state gauge (0 ok, 1 pending, 2 firing).
    pub fn alert_state(&self, rule: &'static str, level: i64) {
        self.health
            .alert_state
            .get_or_create(&RuleLabel { rule })
            .set(level);
    }

    /// Counts a state change delivered to the webhook.
    pub fn webhook_delivered(&self) {
        self.health.webhook_deliveries.inc();
    }

    /// Counts a failed webhook attempt.
    pub fn webhook_failed(&self) {
        self.health.webhook_failures.inc();
    }

    /// Counts a state change given up.
    pub fn webhook_dropped(&self) {
        self.health.webhook_dropped.inc();
    }

    /// Counts a refresh that could not read the store.
    pub fn health_refresh_failed(&self) {
        self.health.refresh_errors.inc();
    }

    /// Records one retention chunk: `expired` events deleted in `d`.
    pub fn retention_chunk(&self, expired: u64, d: Duration) {
        self.retention_expired.inc_by(expired);
        self.retention_chunk_latency.observe(d.as_secs_f64());
    }

    /// Records one retention chunk of dead letters: `expired` deleted in `d`.
    pub fn retention_dead_letters_chunk(&self, expired: u64, d: Duration) {
        self.retention_dead_letters.inc_by(expired);
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
        m.request("/v1/batch", 200, Duration::from_millis(2));
        m.request("/v1/batch", 200, Duration::from_millis(3));
        m.request("/v1/batch", 413, Duration::from_millis(1));
        m.request(UNMATCHED_ROUTE, 404, Duration::from_millis(1));
        m.outcomes(3, 2, 1);
        m.batch_latency(Duration::from_millis(3));
        m.commit_latency(Duration::from_millis(1));
        m.in_flight().inc();
        m.retention_chunk(5_000, Duration::from_millis(20));
        m.retention_dead_letters_chunk(7, Duration::from_millis(2));
        let text = m.encode();
        for line in [
            "tally_http_requests_total{route=\"/v1/batch\",status=\"200\"} 2",
            "tally_http_requests_total{route=\"/v1/batch\",status=\"413\"} 1",
            "tally_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
            "tally_http_request_duration_seconds_count{route=\"/v1/batch\",status_class=\"2xx\"} 2",
            "tally_http_request_duration_seconds_count{route=\"/v1/batch\",status_class=\"4xx\"} 1",
            "tally_http_request_duration_seconds_sum{route=\"/v1/batch\",status_class=\"2xx\"} 0.005",
            "tally_build_info{version=\"0.1.0\",commit=\"unknown\"} 1",
            "tally_pipeline_batches_total{outcome=\"succeeded\"} 0",
            "tally_events_total{outcome=\"accepted\"} 3",
            "tally_events_total{outcome=\"duplicate\"} 2",
            "tally_events_total{outcome=\"rejected\"} 1",
            "tally_dedup_total 2",
            "tally_batch_duration_seconds_count 1",
            "tally_store_commit_duration_seconds_count 1",
            "tally_ingest_in_flight 1",
            "tally_retention_expired_events_total 5000",
            "tally_retention_expired_dead_letters_total 7",
            "tally_retention_chunk_duration_seconds_count 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn monotonic_figures_are_counters() {
        let m = Metrics::new();
        // A family shows once it has a member.
        m.request("/healthz", 200, Duration::from_millis(1));
        let text = m.encode();
        for family in [
            "tally_http_requests",
            "tally_events",
            "tally_dedup",
            "tally_pipeline_batches",
            "tally_connections_shed",
            "tally_connections_refused",
            "tally_accept_errors",
            "tally_auth_failures",
            "tally_auth_throttled",
            "tally_alert_webhook_deliveries",
            "tally_alert_webhook_failures",
            "tally_alert_webhook_dropped",
            "tally_health_refresh_errors",
            "tally_retention_expired_events",
            "tally_retention_expired_dead_letters",
        ] {
            let line = format!("# TYPE {family} counter");
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // And nothing called a total is a gauge.
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            if line.ends_with(" gauge") {
                assert!(!line.contains("_total"), "{line}");
            }
        }
    }
}
