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

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tally_proto::{format_timestamp, parse_timestamp};

use crate::alerts::{AlertBoard, AlertConfig};
use crate::app::AppState;
use crate::error::ApiError;
use crate::ingest::clock;
use crate::query::{authorize, blocking};
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LagPercentiles {
    /// Median.
    pub p50: Option<i64>,
    /// 90th percentile.
    pub p90: Option<i64>,
    /// 99th percentile.
    pub p99: Option<i64>,
}

/// `sync_latency_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncPercentiles {
    /// Median of the beacons' medians.
    pub p50: Option<i64>,
    /// 99th percentile of the beacons' 99th percentiles.
    pub p99: Option<i64>,
}

/// `batches`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Batches {
    /// Ingest requests.
    pub total: u64,
    /// Answered 200.
    pub succeeded: u64,
    /// `succeeded / total`.
    pub success_rate: Option<f64>,
}

/// `dedup`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dedup {
    /// Messages accepted.
    pub accepted: u64,
    /// Duplicates suppressed.
    pub duplicates: u64,
    /// `duplicates / (accepted + duplicates)`.
    pub rate: Option<f64>,
}

/// `rejections`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejections {
    /// Messages rejected.
    pub total: u64,
    /// `total / (accepted + duplicates + total)`.
    pub rate: Option<f64>,
    /// By reason code.
    pub by_reason: BTreeMap<String, u64>,
}

/// `window`: the hours the figures cover.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// Start of the first hour, RFC 3339.
    pub from: String,
    /// End of the last hour (exclusive), RFC 3339.
    pub to: String,
}

/// The body of `GET /v1/health/pipeline`.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

#[derive(Deserialize)]
struct WindowQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `from` and `to` of a query string (RFC 3339; `to` defaults to now,
/// `from` to `to` − 30 days).
fn window(query: Option<&str>, now: i64) -> Result<(i64, i64), ApiError> {
    let q: WindowQuery = serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|_| ApiError::BadRequest("malformed query string"))?;
    let parse = |t: Option<String>, what: &'static str| match t.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => parse_timestamp(&t)
            .map(Some)
            .ok_or(ApiError::BadRequest(what)),
    };
    let to = parse(q.to, "to is not an RFC 3339 date-time")?.unwrap_or(now);
    let from = parse(q.from, "from is not an RFC 3339 date-time")?
        .unwrap_or(to.saturating_sub(DEFAULT_WINDOW_MS));
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to"));
    }
    Ok((from, to))
}

/// `GET /v1/health/pipeline?[from&to]`.
pub async fn pipeline(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let now = clock::now_ms();
    let (from, to) = window(query.as_deref(), now)?;
    let health = state.health.clone();
    let figures = blocking(&state, move |s| {
        // This collector's own uncounted requests first, so its answer
        // includes every request it answered before this one.
        if let Err(e) = health.batches.flush(s) {
            tracing::warn!(error = %e, "cannot add request counts to the store yet");
        }
        s.pipeline_health(from, to, now)
    })
    .await?;
    Ok(Json(PipelineReport::from_figures(&figures)).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn window_defaults_and_refusals() {
        let now = 100 * DEFAULT_WINDOW_MS;
        assert_eq!(window(None, now).unwrap(), (now - DEFAULT_WINDOW_MS, now));
        assert_eq!(
            window(
                Some("from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00%2B01:00"),
                now
            )
            .unwrap(),
            (1_793_491_200_000, 1_793_574_000_000)
        );
        assert!(window(Some("from=yesterday"), now).is_err());
        assert!(window(
            Some("from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z"),
            now
        )
        .is_err());
    }
}
