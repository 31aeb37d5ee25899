//! Admin endpoints (Bearer admin token): totals, event counts,
//! completeness of one install, and user deletion.
//!
//! Each handler authenticates, then runs its store call on the blocking
//! pool (store calls block).

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tally_proto::parse_timestamp;

use crate::app::AppState;
use crate::error::ApiError;
use crate::ingest::{auth, body, clock};
use crate::store::Store;

/// Largest body of an admin request (`{"userId": ...}`): an id is at most
/// 255 bytes, so 4 KiB leaves room for whitespace and unknown members.
const MAX_ADMIN_BODY_BYTES: usize = 4 * 1024;

pub(crate) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    state
        .keys
        .authorize_admin(auth::credential(headers)?.as_ref())
}

pub(crate) async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "query task failed");
            ApiError::Internal
        })?
        .map_err(ApiError::from)
}

/// `GET /v1/stats` → `{"accepted", "duplicate", "rejected", "events"}`.
pub async fn stats(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let stats = blocking(&state, |s| s.stats()).await?;
    Ok(Json(stats).into_response())
}

#[derive(Deserialize)]
struct CountQuery {
    event: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// `GET /v1/events/count?event=NAME[&from=RFC3339&to=RFC3339]` →
/// `{"count", "users"}`; `from` inclusive, `to` exclusive, on the
/// corrected timestamp.
pub async fn count_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let q: CountQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
        .map_err(|_| ApiError::BadRequest("malformed query string"))?;
    let event = q
        .event
        .filter(|e| !e.is_empty())
        .ok_or(ApiError::BadRequest("the event parameter is required"))?;
    let bound = |t: Option<String>, what: &'static str| -> Result<Option<i64>, ApiError> {
        match t.filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(t) => parse_timestamp(&t)
                .map(Some)
                .ok_or(ApiError::BadRequest(what)),
        }
    };
    let from = bound(q.from, "from is not an RFC 3339 date-time")?;
    let to = bound(q.to, "to is not an RFC 3339 date-time")?;
    let count = blocking(&state, move |s| s.count_events(&event, from, to)).await?;
    Ok(Json(count).into_response())
}

/// `GET /v1/installs/{install_id}` → `{"max_seq", "missing", "dropped"}`;
/// 404 for an install the store never saw.
pub async fn install(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(install_id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let report = blocking(&state, move |s| s.install(&install_id)).await?;
    report
        .map(|r| Json(r).into_response())
        .ok_or(ApiError::NotFound("no events from this install"))
}

#[derive(Deserialize)]
struct DeletionRequest {
    #[serde(rename = "userId")]
    user_id: String,
}

/// `POST /v1/deletions` with `{"userId"}` → 202 `{"deleted_events"}`.
pub async fn delete_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    request_body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let bytes = body::read_bounded(
        request_body,
        None,
        MAX_ADMIN_BODY_BYTES,
        body::BODY_READ_TIMEOUT,
    )
    .await?;
    let request: DeletionRequest = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::BadRequest("expected {\"userId\": \"...\"}"))?;
    if request.user_id.is_empty() {
        return Err(ApiError::BadRequest("userId is empty"));
    }
    let requested_at = clock::now_ms();
    let report = blocking(&state, move |s| {
        s.delete_user(&request.user_id, requested_at)
    })
    .await?;
    tracing::info!(deleted_events = report.deleted_events, "user deleted");
    Ok((StatusCode::ACCEPTED, Json(report)).into_response())
}
