//! Paths for the machines that watch a collector: `/healthz` for a load
//! balancer (no credential), `/metrics` for Prometheus (behind
//! [`super::auth::metrics_gate`], or open on a listener of its own).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::error::ApiError;

/// 200 when the store answers a round trip; 503 otherwise, whatever the
/// cause, so a load balancer takes this collector out of rotation.
pub(super) async fn healthz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.ping()).await {
        Ok(Ok(())) => Ok(Json(serde_json::json!({ "status": "ok" })).into_response()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: store does not answer");
            Err(ApiError::Unavailable)
        }
        Err(_) => Err(ApiError::Unavailable),
    }
}

pub(super) async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            // prometheus-client writes the OpenMetrics text format.
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
        .into_response()
}
