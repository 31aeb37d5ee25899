//! The tracking plan in force (`GET /v1/plan`, read token) and an
//! immediate reload (`POST /v1/plan/reload`, admin token); see
//! [`crate::plan`].

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::clock;
use crate::error::ApiError;
use crate::plan::Plans;

/// What is in force: the file, its digest, when it was loaded, its events
/// and version, and the modes.
fn describe(plans: &Plans) -> Value {
    let current = plans.current();
    let plan = current.compiled.plan();
    json!({
        "file": plans.file().display().to_string(),
        "digest": current.digest,
        "loaded_at": tally_proto::format_timestamp(current.loaded_at),
        "events": plan.events.len(),
        "mode": plans.default_mode().as_str(),
        "sources": plans
            .source_modes()
            .iter()
            .map(|(source, mode)| (source.clone(), json!(mode.as_str())))
            .collect::<serde_json::Map<_, _>>(),
    })
}

/// `GET /v1/plan` → the plan in force, or `{"plan": null}` without one.
pub(super) async fn show(State(state): State<AppState>) -> Response {
    match &state.plans {
        None => Json(json!({ "plan": null })).into_response(),
        Some(plans) => Json(json!({ "plan": describe(plans) })).into_response(),
    }
}

/// `POST /v1/plan/reload` → reads the plan file now: `{"changed", "plan"}`;
/// a plan that does not load is a 400 with its first error (the previous
/// plan stays in force), and no configured plan a 404.
pub(super) async fn reload(State(state): State<AppState>) -> Result<Response, ApiError> {
    let plans = state
        .plans
        .clone()
        .ok_or(ApiError::NotFound("no tracking plan is configured"))?;
    let metrics = state.metrics.clone();
    let worker = plans.clone();
    let result = tokio::task::spawn_blocking(move || worker.reload_now(clock::now_ms()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "plan reload task failed");
            ApiError::Internal
        })?;
    match result {
        Ok(changed) => {
            if changed {
                metrics.plan.reload("ok");
                tracing::info!("the tracking plan changed and is in force");
            }
            Ok(Json(json!({ "changed": changed, "plan": describe(&plans) })).into_response())
        }
        Err(e) => {
            metrics.plan.reload("failed");
            tracing::warn!(error = %e, "the tracking plan does not load; the previous one stays in force");
            Err(ApiError::Invalid(e.to_string()))
        }
    }
}
