//! Admin endpoints (Bearer admin token): totals, event counts,
//! completeness of one install, user deletion and the list of deletions.
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

/// Authorizes an admin request, then reads its query string into `T`; a
/// string that does not fit is a 400 saying `malformed`.
pub(crate) fn admin_params<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    malformed: &'static str,
) -> Result<T, ApiError> {
    authorize(state, headers)?;
    serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|_| ApiError::BadRequest(malformed))
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
    let (stats, dead_letters) =
        blocking(&state, |s| Ok((s.stats()?, s.dead_letter_totals()?))).await?;
    let mut body = serde_json::to_value(stats).map_err(|_| ApiError::Internal)?;
    body["dead_letters"] = serde_json::to_value(dead_letters).map_err(|_| ApiError::Internal)?;
    Ok(Json(body).into_response())
}

/// Most dead letters one request lists.
const MAX_DEAD_LETTERS: usize = 1_000;

#[derive(Deserialize)]
struct DeadLetterQuery {
    limit: Option<usize>,
}

/// `GET /v1/dead-letters[?limit=N]` → `{"dead_letters": [...], "totals":
/// {"kept", "bytes", "not_kept", "truncated"}}`: the most recent rejected
/// messages, newest first, with their reason (default 100, at most 1,000),
/// and what the store holds and did not keep of them.
pub async fn dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: DeadLetterQuery = admin_params(
        &state,
        &headers,
        query.as_deref(),
        "limit must be a non-negative integer",
    )?;
    let limit = q.limit.unwrap_or(100).min(MAX_DEAD_LETTERS);
    let (rows, totals) = blocking(&state, move |s| {
        Ok((s.dead_letters(limit)?, s.dead_letter_totals()?))
    })
    .await?;
    Ok(Json(serde_json::json!({ "dead_letters": rows, "totals": totals })).into_response())
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
    let q: CountQuery = admin_params(&state, &headers, query.as_deref(), "malformed query string")?;
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

/// `POST /v1/deletions` with `{"userId"}` → 202 `{"deleted_events",
/// "deleted_dead_letters", "aliased_user_ids"}`.
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
    tracing::info!(
        deleted_events = report.deleted_events,
        deleted_dead_letters = report.deleted_dead_letters,
        aliased = report.aliased_user_ids.len(),
        "user deleted"
    );
    Ok((StatusCode::ACCEPTED, Json(report)).into_response())
}

/// Deletions listed at most, newest first, unless `limit` says otherwise.
const DEFAULT_DELETIONS_LIMIT: usize = 1_000;

/// The largest `limit` of `GET /v1/deletions`.
const MAX_DELETIONS_LIMIT: usize = 100_000;

#[derive(Deserialize)]
struct DeletionsQuery {
    limit: Option<usize>,
}

/// `GET /v1/deletions[?limit=N]` → `{"deletions": [{"userId", "requested_at",
/// "status", "deleted_events"}]}`, newest first.
pub async fn list_deletions(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: DeletionsQuery = admin_params(
        &state,
        &headers,
        query.as_deref(),
        "limit must be a positive integer",
    )?;
    let limit = q.limit.unwrap_or(DEFAULT_DELETIONS_LIMIT);
    if limit == 0 || limit > MAX_DELETIONS_LIMIT {
        return Err(ApiError::BadRequest("limit must be between 1 and 100000"));
    }
    let records = blocking(&state, move |s| s.deletions(limit)).await?;
    let deletions: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "userId": r.user_id,
                "requested_at": tally_proto::format_timestamp(r.requested_at),
                "status": r.status,
                "deleted_events": r.deleted_events,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "deletions": deletions })).into_response())
}

/// Events per page of `/v1/installs/{id}/events` unless `limit` says.
const DEFAULT_INSTALL_EVENTS: usize = 1_000;

/// Largest page of `/v1/installs/{id}/events`: a few megabytes of JSON.
const MAX_INSTALL_EVENTS: usize = 10_000;

#[derive(Deserialize)]
struct InstallEventsQuery {
    after_seq: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/installs/{install_id}/events[?after_seq=N&limit=M]` →
/// `[{"seq", "type", "event", "person"}]`: the install's stored events with
/// a seq above `after_seq` (default 0), in seq order, at most `limit`
/// (default 1,000, at most 10,000); `person` is who the event counts for
/// after stitching (the user, else the install). An install the store never
/// saw has no events. A page shorter than `limit` is the last.
pub async fn install_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(install_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: InstallEventsQuery =
        admin_params(&state, &headers, query.as_deref(), "malformed query string")?;
    let limit = q.limit.unwrap_or(DEFAULT_INSTALL_EVENTS);
    if limit == 0 || limit > MAX_INSTALL_EVENTS {
        return Err(ApiError::BadRequest("limit must be between 1 and 10000"));
    }
    let after = q.after_seq.unwrap_or(0);
    let events = blocking(&state, move |s| s.install_events(&install_id, after, limit)).await?;
    Ok(Json(events).into_response())
}
