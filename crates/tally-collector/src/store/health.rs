//! Pipeline-health figures both stores keep, and the pure part of keeping
//! them: what one batch adds, how a `tally.health` beacon is read, and the
//! SQL both stores share.
//!
//! # What is kept, where
//!
//! | table | key | holds | written |
//! |---|---|---|---|
//! | `counters` (+ `batches`, `batches_ok`) | shard | ingest requests ever, and those answered 200 | in the batch's write transaction |
//! | `health_hours` | hour, shard | requests, requests answered 200, accepted, duplicate, rejected | same |
//! | `health_rejections` | hour, shard, reason | rejected messages by reason | same |
//! | `health_histograms` | metric, hour, shard, le | counts per histogram bucket: ingest lag of accepted events, beacons' sync latencies | same |
//! | `install_health` | install | the latest `tally.health` beacon of the install | same (upsert, the later beacon wins) |
//!
//! Hours are those of the collector's clock at receipt (`received_at`), so
//! "the last hour" holds what arrived in it, including events captured
//! days ago on a device that was offline. Rows are per counter shard (one
//! on SQLite, [`super::postgres::COUNTER_SHARDS`] on PostgreSQL): a batch
//! only touches rows of the shard whose counter row it already holds, so
//! health adds no lock contention between collectors.
//!
//! Requests that never reach a write transaction (refused before the
//! store, or an empty batch) are counted by the HTTP layer and added with
//! [`super::HealthStore::add_batches`] a few seconds later (see
//! `crate::health::batches`).
//!
//! # Histograms
//!
//! A value is counted in the first bucket whose upper bound `le` is at
//! least the value; the bounds run 0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50,
//! 70, ... ms (1, 1.5, 2, 3, 5, 7 per decade: within 50 % of the true value,
//! over a range from a millisecond to years, in at most 70 buckets). A
//! percentile is reported as the bound of the bucket holding its rank, so
//! it is never below the true value.

use super::{DeadLetter, NewEvent, WriteOutcome};
use std::collections::BTreeMap;

/// Width of one time bucket: one hour, in ms.
pub const HOUR_MS: i64 = 3_600_000;

/// The SDK's periodic health beacon.
pub const BEACON_EVENT: &str = "tally.health";

/// Beacons older than this (by corrected capture time) are left out of
/// the fleet figures: an install silent for a week is no longer part of
/// the active fleet.
pub const FLEET_MAX_AGE_MS: i64 = 7 * 24 * HOUR_MS;

/// How long health figures are kept: long enough to compare a quarter
/// with the previous one; older hours are deleted by the health task.
pub const HEALTH_RETENTION_MS: i64 = 90 * 24 * HOUR_MS;

/// Queue age past which an install counts as having a stale queue.
pub const STALE_QUEUE_AGE_S: f64 = 24.0 * 3600.0;

/// Histogram of `received_at − ts_corrected` of accepted events.
pub const INGEST_LAG: &str = "ingest_lag";
/// Histogram of the beacons' `sync_latency_p50_ms`.
pub const SYNC_P50: &str = "sync_p50";
/// Histogram of the beacons' `sync_latency_p99_ms`.
pub const SYNC_P99: &str = "sync_p99";

/// Mantissas of the bucket bounds in each decade, in tenths.
const BOUND_MANTISSAS: [i64; 6] = [10, 15, 20, 30, 50, 70];

/// Largest bound: 7 × 10^10 ms, about two years; larger values count there.
const LAST_DECADE: u32 = 10;

/// The start (Unix ms) of the hour holding `ms`.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The upper bound (ms) of the histogram bucket counting `value_ms`.
pub fn bucket_bound(value_ms: f64) -> i64 {
    if value_ms.is_nan() || value_ms <= 0.0 {
        return 0;
    }
    let mut last = 0;
    for decade in 0..=LAST_DECADE {
        let scale = 10_i64.pow(decade);
        for m in BOUND_MANTISSAS {
            // 1.5 ms is not a whole number of ms: the first decade skips it.
            if decade == 0 && m % 10 != 0 {
                continue;
            }
            let bound = m * scale / 10;
            last = bound;
            if value_ms <= bound as f64 {
                return bound;
            }
        }
    }
    last
}

/// Bucket counts by upper bound (ms).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Histogram(pub BTreeMap<i64, u64>);

impl Histogram {
    /// Values counted.
    pub fn count(&self) -> u64 {
        self.0.values().sum()
    }

    /// The `q` quantile (0 < q ≤ 1) by nearest rank, as the bound of the
    /// bucket holding it; `None` when the histogram is empty.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (&le, &n) in &self.0 {
            seen += n;
            if seen >= rank {
                return Some(le);
            }
        }
        self.0.keys().next_back().copied()
    }
}

/// The latest health report of one install, from a `tally.health` beacon.
/// Every member the beacon lacks, or has with another type, reads as 0.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Beacon {
    /// The install.
    pub install_id: String,
    /// Corrected capture time of the beacon, Unix ms.
    pub at: i64,
    /// Collector clock at receipt, Unix ms.
    pub received_at: i64,
    /// Events in the device's queue.
    pub pending: i64,
    /// Bytes in the device's queue.
    pub pending_bytes: i64,
    /// Age of the oldest queued event, seconds.
    pub oldest_pending_age_s: f64,
    /// Failed sends in a row.
    pub consecutive_failures: i64,
    /// Current backoff, ms.
    pub backoff_ms: i64,
    /// Failed writes of the device's durable log.
    pub persistence_errors: i64,
    /// Median send round trip, when the beacon has it.
    pub sync_latency_p50_ms: Option<f64>,
    /// 99th percentile send round trip, when the beacon has it.
    pub sync_latency_p99_ms: Option<f64>,
    /// Device clock minus server clock, ms.
    pub clock_offset_ms: i64,
}

impl Beacon {
    /// The beacon an accepted event carries, if it is a `tally.health`
    /// track from an install. Only these few events are parsed again.
    pub fn of(event: &NewEvent) -> Option<Beacon> {
        if event.event.as_deref() != Some(BEACON_EVENT) {
            return None;
        }
        let install_id = event.install_id.clone()?;
        let message: serde_json::Value = serde_json::from_str(&event.raw).ok()?;
        let props = message.get("properties");
        let number = |key: &str| -> Option<f64> {
            match props?.get(key)? {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .filter(|v| v.is_finite())
        };
        // Counts and durations are never negative; a device that says so
        // is read as 0.
        let count = |key: &str| number(key).map_or(0, |v| v.max(0.0).min(i64::MAX as f64) as i64);
        let latency = |key: &str| number(key).map(|v| v.max(0.0));
        Some(Beacon {
            install_id,
            at: event.ts_corrected,
            received_at: event.received_at,
            pending: count("pending"),
            pending_bytes: count("pending_bytes"),
            oldest_pending_age_s: number("oldest_pending_age_s").map_or(0.0, |v| v.max(0.0)),
            consecutive_failures: count("consecutive_failures"),
            backoff_ms: count("backoff_ms"),
            persistence_errors: count("persistence_errors"),
            sync_latency_p50_ms: latency("sync_latency_p50_ms"),
            sync_latency_p99_ms: latency("sync_latency_p99_ms"),
            clock_offset_ms: number("clock_offset_ms")
                .map_or(0, |v| v.clamp(i64::MIN as f64, i64::MAX as f64) as i64),
        })
    }
}

/// What one successful ingest request adds to the health tables.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct BatchHealth {
    /// Start of the hour of receipt.
    pub hour: i64,
    pub accepted: i64,
    pub duplicate: i64,
    pub rejected: i64,
    /// Rejected messages by reason code, sorted.
    pub rejections: BTreeMap<&'static str, i64>,
    /// (metric, bucket bound) → count, sorted.
    pub histograms: BTreeMap<(&'static str, i64), i64>,
    /// The latest beacon of each install in the batch, sorted by install
    /// (the lock order on PostgreSQL).
    pub beacons: BTreeMap<String, Beacon>,
}

impl BatchHealth {
    /// The figures of one request's events (with their outcomes) and dead
    /// letters. A beacon counts only if `own_install` says its install
    /// belongs to the source that sent it, so no source can rewrite the
    /// queue figures of another's devices.
    pub fn of(
        events: &[NewEvent],
        outcomes: &[WriteOutcome],
        dead_letters: &[DeadLetter],
        own_install: impl Fn(&NewEvent) -> bool,
    ) -> BatchHealth {
        let received_at = events
            .first()
            .map(|e| e.received_at)
            .or_else(|| dead_letters.first().map(|d| d.received_at))
            .unwrap_or_else(now_ms);
        let mut h = BatchHealth {
            hour: hour_of(received_at),
            ..BatchHealth::default()
        };
        for (e, outcome) in events.iter().zip(outcomes) {
            match outcome {
                WriteOutcome::Accepted => {
                    h.accepted += 1;
                    let lag = e.received_at.saturating_sub(e.ts_corrected);
                    *h.histograms
                        .entry((INGEST_LAG, bucket_bound(lag as f64)))
                        .or_default() += 1;
                    if let Some(b) = Beacon::of(e).filter(|_| own_install(e)) {
                        h.add_beacon(b);
                    }
                }
                WriteOutcome::Duplicate => h.duplicate += 1,
                WriteOutcome::Rejected(reason) => {
                    h.rejected += 1;
                    *h.rejections.entry(reason.as_str()).or_default() += 1;
                }
            }
        }
        for d in dead_letters {
            h.rejected += 1;
            *h.rejections.entry(d.reason.as_str()).or_default() += 1;
        }
        h
    }

    fn add_beacon(&mut self, b: Beacon) {
        for (metric, value) in [
            (SYNC_P50, b.sync_latency_p50_ms),
            (SYNC_P99, b.sync_latency_p99_ms),
        ] {
            if let Some(v) = value {
                *self
                    .histograms
                    .entry((metric, bucket_bound(v)))
                    .or_default() += 1;
            }
        }
        match self.beacons.get(&b.install_id) {
            Some(old) if old.at > b.at => {}
            _ => {
                self.beacons.insert(b.install_id.clone(), b);
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Cumulative totals of the whole store (every collector, every restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthTotals {
    /// Ingest requests.
    pub batches: u64,
    /// Ingest requests answered 200.
    pub batches_ok: u64,
    /// Messages accepted.
    pub accepted: u64,
    /// Duplicates suppressed.
    pub duplicate: u64,
    /// Messages rejected.
    pub rejected: u64,
    /// Track events that broke their version's schema in the tracking
    /// plan, accepted and flagged (`warn`) or rejected (`enforce`); see
    /// [`super::quality`].
    pub plan_violations: u64,
}

/// The figures of the hours `from..to` (hour starts, Unix ms).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HealthWindow {
    /// Start of the first hour.
    pub from: i64,
    /// End of the last hour (exclusive).
    pub to: i64,
    /// Ingest requests.
    pub batches: u64,
    /// Ingest requests answered 200.
    pub batches_ok: u64,
    /// Messages accepted.
    pub accepted: u64,
    /// Duplicates suppressed.
    pub duplicate: u64,
    /// Messages rejected.
    pub rejected: u64,
    /// Rejected messages by reason code.
    pub rejections: BTreeMap<String, u64>,
    /// Ingest lag of the accepted events.
    pub ingest_lag: Histogram,
    /// The beacons' median sync latencies.
    pub sync_p50: Histogram,
    /// The beacons' 99th percentile sync latencies.
    pub sync_p99: Histogram,
}

/// Completeness over every install (`1..=max_seq` minus seen minus
/// dropped, as in [`super::InstallReport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Completeness {
    /// Installs the store has seen.
    pub installs: u64,
    /// Installs with at least one missing seq.
    pub installs_with_gaps: u64,
    /// Missing seqs over all installs.
    pub missing: u64,
}

/// The fleet's client queues, from the latest beacon of each install of
/// the last [`FLEET_MAX_AGE_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Fleet {
    /// Installs with a recent beacon.
    pub installs_reporting: u64,
    /// Events queued on those devices.
    pub pending_events: u64,
    /// The oldest queued event's age over the fleet, seconds.
    pub oldest_pending_age_s: f64,
    /// Installs reporting persistence errors.
    pub installs_with_persistence_errors: u64,
    /// Installs backing off (a backoff or failed sends in a row).
    pub installs_in_backoff: u64,
    /// Installs whose oldest queued event is older than
    /// [`STALE_QUEUE_AGE_S`].
    pub installs_oldest_pending_over_24h: u64,
}

/// Everything [`super::HealthStore::pipeline_health`] reads, from one snapshot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PipelineFigures {
    /// Cumulative totals.
    pub totals: HealthTotals,
    /// The window's figures.
    pub window: HealthWindow,
    /// Completeness now.
    pub completeness: Completeness,
    /// Client queues now.
    pub fleet: Fleet,
}

/// The hours a window `from..to` (Unix ms) touches: `from` rounded down
/// and `to` rounded up to whole hours.
pub fn window_hours(from: i64, to: i64) -> (i64, i64) {
    let start = hour_of(from);
    let end = hour_of(to.saturating_sub(1)).saturating_add(HOUR_MS);
    (start, end.max(start))
}

// Shared SQL. Placeholders are PostgreSQL's `$n`; the SQLite store turns
// them into `?n` (see `sqlite_sql`).

pub(crate) const TOTALS_SQL: &str = "SELECT CAST(coalesce(sum(batches), 0) AS BIGINT), \
    CAST(coalesce(sum(batches_ok), 0) AS BIGINT), CAST(coalesce(sum(accepted), 0) AS BIGINT), \
    CAST(coalesce(sum(duplicate), 0) AS BIGINT), CAST(coalesce(sum(rejected), 0) AS BIGINT), \
    CAST(coalesce(sum(plan_violations), 0) AS BIGINT) FROM counters";

pub(crate) const WINDOW_SQL: &str = "SELECT CAST(coalesce(sum(batches), 0) AS BIGINT), \
    CAST(coalesce(sum(batches_ok), 0) AS BIGINT), CAST(coalesce(sum(accepted), 0) AS BIGINT), \
    CAST(coalesce(sum(duplicate), 0) AS BIGINT), CAST(coalesce(sum(rejected), 0) AS BIGINT) \
    FROM health_hours WHERE hour >= $1 AND hour < $2";

pub(crate) const REJECTIONS_SQL: &str = "SELECT reason, CAST(sum(n) AS BIGINT) \
    FROM health_rejections WHERE hour >= $1 AND hour < $2 GROUP BY reason";

pub(crate) const HISTOGRAMS_SQL: &str = "SELECT metric, le, CAST(sum(n) AS BIGINT) \
    FROM health_histograms WHERE hour >= $1 AND hour < $2 GROUP BY metric, le";

/// Seen and dropped ranges of each install merged where they overlap
/// (gaps and islands), their lengths summed, and compared with `max_seq`:
/// `x` holds each install's `missing` count.
macro_rules! missing_per_install {
    () => {
        "WITH r AS ( \
          SELECT install_id, from_seq AS f, to_seq AS t FROM install_seen \
          UNION ALL SELECT install_id, from_seq, to_seq FROM install_drops), \
        o AS (SELECT install_id, f, t, max(t) OVER (PARTITION BY install_id ORDER BY f, t \
          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev FROM r), \
        g AS (SELECT install_id, f, t, sum(CASE WHEN prev IS NULL OR f > prev THEN 1 ELSE 0 END) \
          OVER (PARTITION BY install_id ORDER BY f, t ROWS UNBOUNDED PRECEDING) AS island FROM o), \
        m AS (SELECT install_id, max(t) - min(f) + 1 AS len FROM g GROUP BY install_id, island), \
        c AS (SELECT install_id, sum(len) AS covered FROM m GROUP BY install_id), \
        x AS (SELECT i.install_id, i.max_seq - coalesce(c.covered, 0) AS missing FROM installs i \
          LEFT JOIN c ON c.install_id = i.install_id) "
    };
}

/// Installs, installs with a gap, and seqs missing over all of them.
pub(crate) const COMPLETENESS_SQL: &str = concat!(
    missing_per_install!(),
    "SELECT CAST(count(*) AS BIGINT), \
      CAST(coalesce(sum(CASE WHEN missing > 0 THEN 1 ELSE 0 END), 0) AS BIGINT), \
      CAST(coalesce(sum(CASE WHEN missing > 0 THEN missing ELSE 0 END), 0) AS BIGINT) FROM x"
);

/// The installs with a seq neither stored nor reported dropped.
pub(crate) const GAPS_SQL: &str = concat!(
    missing_per_install!(),
    "SELECT install_id FROM x WHERE missing > 0"
);

pub(crate) const FLEET_SQL: &str = "SELECT CAST(count(*) AS BIGINT), \
    CAST(coalesce(sum(pending), 0) AS BIGINT), \
    CAST(coalesce(max(oldest_pending_age_s), 0) AS DOUBLE PRECISION), \
    CAST(coalesce(sum(CASE WHEN persistence_errors > 0 THEN 1 ELSE 0 END), 0) AS BIGINT), \
    CAST(coalesce(sum(CASE WHEN backoff_ms > 0 OR consecutive_failures > 0 THEN 1 ELSE 0 END), 0) AS BIGINT), \
    CAST(coalesce(sum(CASE WHEN oldest_pending_age_s > $2 THEN 1 ELSE 0 END), 0) AS BIGINT) \
    FROM install_health WHERE at >= $1";

/// The latest beacons that show an event pending longer than `$1` seconds,
/// the oldest queue first, at most `$2` (see
/// [`super::HealthStore::stalled_installs`]); columns in the order
/// [`Beacon`] lists its members.
pub(crate) const STALLED_SQL: &str = "SELECT install_id, at, received_at, pending, \
    pending_bytes, oldest_pending_age_s, consecutive_failures, backoff_ms, persistence_errors, \
    sync_p50_ms, sync_p99_ms, clock_offset_ms FROM install_health \
    WHERE pending > 0 AND oldest_pending_age_s > $1 \
    ORDER BY oldest_pending_age_s DESC, install_id LIMIT $2";

/// Statements of [`super::HealthStore::prune_health`], each with `$1` = before:
/// the health figures, and the data-quality counts and examples
/// ([`super::quality`]), kept as long.
pub(crate) const PRUNE_SQL: [&str; 6] = [
    "DELETE FROM health_hours WHERE hour < $1",
    "DELETE FROM health_rejections WHERE hour < $1",
    "DELETE FROM health_histograms WHERE hour < $1",
    "DELETE FROM install_health WHERE at < $1",
    "DELETE FROM quality_counts WHERE hour < $1",
    "DELETE FROM quality_examples WHERE received_at < $1",
];

/// `sql` with SQLite's placeholders (`?n` for `$n`).
pub(crate) fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Adds a metric's rows to the window.
pub(crate) fn add_histogram_row(window: &mut HealthWindow, metric: &str, le: i64, n: i64) {
    let histogram = match metric {
        INGEST_LAG => &mut window.ingest_lag,
        SYNC_P50 => &mut window.sync_p50,
        SYNC_P99 => &mut window.sync_p99,
        _ => return,
    };
    *histogram.0.entry(le).or_default() += n.max(0) as u64;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bounds_run_one_to_seven_per_decade() {
        let bounds: Vec<i64> = [
            0.0, 0.5, 1.0, 1.2, 2.0, 2.5, 4.0, 6.0, 7.5, 11.0, 16.0, 900.0,
        ]
        .iter()
        .map(|v| bucket_bound(*v))
        .collect();
        assert_eq!(bounds, [0, 1, 1, 2, 2, 3, 5, 7, 10, 15, 20, 1000]);
        assert_eq!(bucket_bound(-5.0), 0);
        assert_eq!(bucket_bound(3_600_000.0), 5_000_000);
        assert_eq!(bucket_bound(1e15), 70_000_000_000);
    }

    #[test]
    fn quantile_by_nearest_rank() {
        let h = Histogram(
            [(10, 50), (100, 40), (1000, 9), (5000, 1)]
                .into_iter()
                .collect(),
        );
        assert_eq!(h.quantile(0.5), Some(10));
        assert_eq!(h.quantile(0.9), Some(100));
        assert_eq!(h.quantile(0.99), Some(1000));
        assert_eq!(h.quantile(1.0), Some(5000));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn window_rounds_out_to_hours() {
        assert_eq!(
            window_hours(HOUR_MS + 5, 3 * HOUR_MS + 1),
            (HOUR_MS, 4 * HOUR_MS)
        );
        assert_eq!(window_hours(HOUR_MS, 2 * HOUR_MS), (HOUR_MS, 2 * HOUR_MS));
    }
}
