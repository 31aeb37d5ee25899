//! Pipeline health: `GET /v1/health/pipeline` (admin token) and the
//! figures behind it.
//!
//! | figure | from |
//! |---|---|
//! | ingest lag percentiles | histogram of `received_at − ts_corrected` of accepted events, kept per hour in the write transaction |
//! | sync latency percentiles | histograms of the beacons' `sync_latency_p50_ms` / `sync_latency_p99_ms` |
//! | batches | ingest requests per hour: counted in the write transaction, or by [`batches`] when none ran |
//! | dedup, rejections | messages per hour and outcome, rejections by reason |
//! | completeness | every install's `1..=max_seq` minus seen minus dropped, now |
//! | fleet | the latest `tally.health` beacon of each install of the last 7 days, now |
//!
//! The store keeps all of it (see [`crate::store::health`]), so the figures
//! are exact across restarts and across collectors sharing a PostgreSQL
//! store. The window (`from`, `to`) selects hours of **receipt**, rounded
//! out to whole hours: "the last hour" holds what arrived in it, including
//! events captured long ago on a device that was offline.
//!
//! Percentiles are nearest-rank over the histogram and reported as the
//! upper bound of the bucket holding the rank (never below the true value,
//! at most 50 % above). A percentile or rate with nothing to count is
//! `null`.

pub mod batches;
pub mod monitor;

use serde::Serialize;
use std::collections::BTreeMap;
use tally_proto::format_timestamp;

use crate::alerts::{AlertBoard, AlertConfig};
use crate::store::PipelineFigures;

pub use batches::BatchCounter;

/// Default window: the 30 days before `to`, as for every query endpoint.
pub const DEFAULT_WINDOW_MS: i64 = 30 * 24 * 3_600_000;

/// Health state shared by the HTTP layer and the health task.
#[derive(Debug)]
pub struct HealthState {
    /// Requests that reached no write transaction, not yet in the store.
    pub batches: BatchCounter,
    /// The alerting settings.
    pub config: AlertConfig,
    /// The alert rules and the webhook's counters.
    pub alerts: AlertBoard,
}

impl HealthState {
    /// Nothing counted yet, every rule ok.
    pub fn new(config: AlertConfig) -> HealthState {
        HealthState {
            batches: BatchCounter::default(),
            alerts: AlertBoard::new(&config),
            config,
        }
    }
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new(AlertConfig::default())
    }
}

/// `ingest_lag_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LagPercentiles {
    /// Median.
    pub p50: Option<i64>,
    /// 90th percentile.
    pub p90: Option<i64>,
    /// 99th percentile.
    pub p99: Option<i64>,
}

/// `sync_latency_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SyncPercentiles {
    /// Median of the beacons' medians.
    pub p50: Option<i64>,
    /// 99th percentile of the beacons' 99th percentiles.
    pub p99: Option<i64>,
}

/// `batches`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Batches {
    /// Ingest requests.
    pub total: u64,
    /// Answered 200.
    pub succeeded: u64,
    /// `succeeded / total`.
    pub success_rate: Option<f64>,
}

/// `dedup`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Dedup {
    /// Messages accepted.
    pub accepted: u64,
    /// Duplicates suppressed.
    pub duplicates: u64,
    /// `duplicates / (accepted + duplicates)`.
    pub rate: Option<f64>,
}

/// `rejections`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rejections {
    /// Messages rejected.
    pub total: u64,
    /// `total / (accepted + duplicates + total)`.
    pub rate: Option<f64>,
    /// By reason code.
    pub by_reason: BTreeMap<String, u64>,
}

/// `window`: the hours the figures cover.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Window {
    /// Start of the first hour, RFC 3339.
    pub from: String,
    /// End of the last hour (exclusive), RFC 3339.
    pub to: String,
}

/// The body of `GET /v1/health/pipeline`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PipelineReport {
    /// The hours covered.
    pub window: Window,
    /// Ingest lag percentiles, ms.
    pub ingest_lag_ms: LagPercentiles,
    /// Sync latency percentiles from the beacons, ms.
    pub sync_latency_ms: SyncPercentiles,
    /// Ingest requests.
    pub batches: Batches,
    /// Dedup.
    pub dedup: Dedup,
    /// Rejections.
    pub rejections: Rejections,
    /// Completeness now.
    pub completeness: crate::store::Completeness,
    /// Client queues now.
    pub fleet: crate::store::Fleet,
}

/// `part / whole`, or `None` when `whole` is 0.
pub fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

impl PipelineReport {
    /// The report of figures read from the store.
    pub fn from_figures(f: &PipelineFigures) -> PipelineReport {
        let w = &f.window;
        let received = w.accepted + w.duplicate + w.rejected;
        PipelineReport {
            window: Window {
                from: format_timestamp(w.from),
                to: format_timestamp(w.to),
            },
            ingest_lag_ms: LagPercentiles {
                p50: w.ingest_lag.quantile(0.5),
                p90: w.ingest_lag.quantile(0.9),
                p99: w.ingest_lag.quantile(0.99),
            },
            sync_latency_ms: SyncPercentiles {
                p50: w.sync_p50.quantile(0.5),
                p99: w.sync_p99.quantile(0.99),
            },
            batches: Batches {
                total: w.batches,
                succeeded: w.batches_ok,
                success_rate: ratio(w.batches_ok, w.batches),
            },
            dedup: Dedup {
                accepted: w.accepted,
                duplicates: w.duplicate,
                rate: ratio(w.duplicate, w.accepted + w.duplicate),
            },
            rejections: Rejections {
                total: w.rejected,
                rate: ratio(w.rejected, received),
                by_reason: w.rejections.clone(),
            },
            completeness: f.completeness,
            fleet: f.fleet,
        }
    }
}
