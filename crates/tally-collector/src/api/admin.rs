//! The operators' paths (admin token, checked by
//! [`super::auth::admin_gate`]): totals, event counts, completeness and
//! events of one install, installs whose queues are not draining, dead
//! letters (filtered, paged), user deletion and the list of
//! deletions, pipeline health and the alert rules.
//!
//! Each handler runs its store call on the blocking pool (store calls
//! block).

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::params::{blocking, query_params, timestamp_param};
use super::AppState;
use crate::audit::AuditNote;
use crate::clock;
use crate::error::ApiError;
use crate::health::{PipelineReport, DEFAULT_WINDOW_MS};
use crate::ingest::auth::Role;
use crate::ingest::body;
use crate::store::health::STALE_QUEUE_AGE_S;
use crate::store::{DeadLetterQuery, PersonKind};
use tally_proto::RejectReason;

/// Largest body of an admin request (`{"userId": ...}`): an id is at most
/// 255 bytes, so 4 KiB leaves room for whitespace and unknown members.
const MAX_ADMIN_BODY_BYTES: usize = 4 * 1024;

/// `GET /v1/me` → `{"role": "read" | "admin"}`: what the presented token
/// may do (the dashboard shows the admin views only to an admin token).
pub(super) async fn me(Extension(role): Extension<Role>) -> Response {
    Json(serde_json::json!({ "role": role.as_str() })).into_response()
}

/// `GET /v1/stats` → `{"accepted", "duplicate", "rejected", "events"}`.
pub(super) async fn stats(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (stats, dead_letters) =
        blocking(&state, |s| Ok((s.stats()?, s.dead_letter_totals()?))).await?;
    let mut body = serde_json::to_value(stats).map_err(|_| ApiError::Internal)?;
    body["dead_letters"] = serde_json::to_value(dead_letters).map_err(|_| ApiError::Internal)?;
    Ok(Json(body).into_response())
}

/// Most dead letters one request lists.
const MAX_DEAD_LETTERS: usize = 1_000;

#[derive(Deserialize)]
struct DeadLetterParams {
    limit: Option<usize>,
    reason: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before_id: Option<i64>,
}

/// `GET /v1/dead-letters[?limit=N&reason=CODE&since=T&until=T&before_id=ID]` →
/// `{"dead_letters": [...], "next_before_id": ID | null, "totals": {"kept", "bytes",
/// "not_kept", "truncated"}}`: rejected messages newest first, with their
/// row id and reason (default 100, at most 1,000 a page), filtered by
/// reason code and by receipt time (`since` inclusive, `until` exclusive,
/// RFC 3339); `next_before_id` is the `before_id` of the following page,
/// `null` on the last (as `GET /v1/audit` pages). `totals` is what the store holds and did not keep, unfiltered.
pub(super) async fn dead_letters(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: DeadLetterParams = query_params(
        query.as_deref(),
        "limit and before_id must be non-negative integers",
    )?;
    let reason = match q.reason.filter(|r| !r.is_empty()) {
        None => None,
        Some(r) => Some(
            r.parse::<RejectReason>()
                .map_err(|_| ApiError::BadRequest("reason is not a rejection reason code"))?
                .as_str()
                .to_owned(),
        ),
    };
    let query = DeadLetterQuery {
        reason,
        since: timestamp_param(q.since, "since is not an RFC 3339 date-time")?,
        until: timestamp_param(q.until, "until is not an RFC 3339 date-time")?,
        before: q.before_id,
        limit: q.limit.unwrap_or(100).min(MAX_DEAD_LETTERS),
    };
    let limit = query.limit;
    let (rows, totals) = blocking(&state, move |s| {
        Ok((s.dead_letters(&query)?, s.dead_letter_totals()?))
    })
    .await?;
    let next = match rows.last() {
        Some(last) if rows.len() == limit => Some(last.id),
        _ => None,
    };
    Ok(
        Json(serde_json::json!({ "dead_letters": rows, "next_before_id": next, "totals": totals }))
            .into_response(),
    )
}

#[derive(Deserialize)]
struct CountQuery {
    event: Option<String>,
    from: Option<String>,
    to: Option<String>,
    source: Option<String>,
}

/// `GET /v1/events/count?event=NAME[&from=RFC3339&to=RFC3339&source=KEY_ID]`
/// → `{"count", "users"}`; `from` inclusive, `to` exclusive, on the
/// corrected timestamp; `source` (absent or empty: every source) as the
/// product queries take it.
pub(super) async fn count_events(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: CountQuery = query_params(query.as_deref(), "malformed query string")?;
    let event = q
        .event
        .filter(|e| !e.is_empty())
        .ok_or(ApiError::BadRequest("the event parameter is required"))?;
    let from = timestamp_param(q.from, "from is not an RFC 3339 date-time")?;
    let to = timestamp_param(q.to, "to is not an RFC 3339 date-time")?;
    let source = q.source.filter(|s| !s.is_empty());
    let count = blocking(&state, move |s| {
        s.count_events(&event, from, to, source.as_deref())
    })
    .await?;
    Ok(Json(count).into_response())
}

#[derive(Deserialize)]
struct InstallsParams {
    stalled: Option<f64>,
    limit: Option<usize>,
}

/// Most installs one request lists.
const MAX_INSTALLS: usize = 1_000;

/// `GET /v1/installs[?stalled=SECONDS&limit=N]` → `{"stalled_s", "installs":
/// [beacon...]}`: the installs whose latest `tally.health` beacon shows an
/// event pending longer than `stalled` seconds (default: a day, the age at
/// which the pipeline health counts a queue as stale), the oldest queue
/// first (default 100, at most 1,000), each with its beacon's queue
/// figures and when it was captured and received.
pub(super) async fn stalled_installs(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: InstallsParams = query_params(
        query.as_deref(),
        "stalled must be a number of seconds and limit a non-negative integer",
    )?;
    let stalled = q.stalled.unwrap_or(STALE_QUEUE_AGE_S);
    if !(stalled.is_finite() && stalled >= 0.0) {
        return Err(ApiError::BadRequest(
            "stalled must be a non-negative number of seconds",
        ));
    }
    let limit = q.limit.unwrap_or(100).min(MAX_INSTALLS);
    let installs = blocking(&state, move |s| s.stalled_installs(stalled, limit)).await?;
    Ok(Json(serde_json::json!({ "stalled_s": stalled, "installs": installs })).into_response())
}

/// `GET /v1/installs/{install_id}` → `{"max_seq", "missing", "dropped",
/// "dropped_by_reason", "dropped_ranges"}`;
/// 404 for an install the store never saw.
pub(super) async fn install(
    State(state): State<AppState>,
    Path(install_id): Path<String>,
) -> Result<Response, ApiError> {
    let report = blocking(&state, move |s| s.install(&install_id)).await?;
    report
        .map(|r| Json(r).into_response())
        .ok_or(ApiError::NotFound("no events from this install"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeletionRequest {
    #[serde(rename = "userId")]
    user_id: Option<String>,
    #[serde(rename = "anonymousId")]
    anonymous_id: Option<String>,
    #[serde(rename = "installId")]
    install_id: Option<String>,
    /// A write key id: only that source's data, and only its late events
    /// refused.
    source: Option<String>,
}

/// `POST /v1/deletions` with one of `{"userId"}`, `{"anonymousId"}`,
/// `{"installId"}`, and optionally `"source"` → 202 `{"deleted_events",
/// "deleted_dead_letters", "aliased_user_ids"[, "linked_user_ids"][,
/// "source"]}`. A user id takes the user's events and those stitched to
/// them; an anonymous id or install id (a person who never identified) the
/// events carrying it without a user id. Each leaves a tombstone refusing
/// that person's late events. With a source (a write key id), only that
/// source's events and dead letters go, and only its late events are
/// refused.
pub(super) async fn delete_user(
    State(state): State<AppState>,
    request_body: Body,
) -> Result<Response, ApiError> {
    let bytes = body::read_bounded(
        request_body,
        None,
        MAX_ADMIN_BODY_BYTES,
        body::BODY_READ_TIMEOUT,
    )
    .await?;
    let expected = "expected one of {\"userId\"}, {\"anonymousId\"}, {\"installId\"}, \
                    and optionally \"source\"";
    let request: DeletionRequest =
        serde_json::from_slice(&bytes).map_err(|_| ApiError::BadRequest(expected))?;
    let (kind, id) = match (request.user_id, request.anonymous_id, request.install_id) {
        (Some(id), None, None) => (PersonKind::User, id),
        (None, Some(id), None) => (PersonKind::Anonymous, id),
        (None, None, Some(id)) => (PersonKind::Install, id),
        _ => return Err(ApiError::BadRequest(expected)),
    };
    if id.is_empty() {
        return Err(ApiError::BadRequest("the id to delete is empty"));
    }
    // An empty source would silently widen the deletion to every source.
    if request.source.as_deref() == Some("") {
        return Err(ApiError::BadRequest("source is empty"));
    }
    let source = request.source;
    let requested_at = clock::now_ms();
    let mut note = AuditNote::of(kind.as_str(), id.as_str());
    if let Some(source) = &source {
        note = note.with("source", source.as_str());
    }
    let scope = source.clone();
    let report = blocking(&state, move |s| {
        s.delete_person(kind, &id, scope.as_deref(), requested_at)
    })
    .await?;
    tracing::info!(
        kind = kind.as_str(),
        source = source.as_deref().unwrap_or(""),
        deleted_events = report.deleted_events,
        deleted_dead_letters = report.deleted_dead_letters,
        aliased = report.aliased_user_ids.len(),
        linked = report.linked_user_ids.len(),
        "person deleted"
    );
    let mut response = (StatusCode::ACCEPTED, Json(report)).into_response();
    response.extensions_mut().insert(note);
    Ok(response)
}

/// Deletions listed at most, newest first, unless `limit` says otherwise.
const DEFAULT_DELETIONS_LIMIT: usize = 1_000;

/// The largest `limit` of `GET /v1/deletions`.
const MAX_DELETIONS_LIMIT: usize = 100_000;

#[derive(Deserialize)]
struct DeletionsQuery {
    limit: Option<usize>,
}

/// `GET /v1/deletions[?limit=N]` → `{"deletions": [{"kind", "userId" |
/// "anonymousId" | "installId", "requested_at", "status",
/// "deleted_events", "source"}]}`, newest first; `source` is `null` for a
/// deletion of every source.
pub(super) async fn list_deletions(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: DeletionsQuery = query_params(query.as_deref(), "limit must be a positive integer")?;
    let limit = q.limit.unwrap_or(DEFAULT_DELETIONS_LIMIT);
    if limit == 0 || limit > MAX_DELETIONS_LIMIT {
        return Err(ApiError::BadRequest("limit must be between 1 and 100000"));
    }
    let records = blocking(&state, move |s| s.deletions(limit)).await?;
    let deletions: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let mut row = serde_json::json!({
                "kind": r.kind,
                "requested_at": tally_proto::format_timestamp(r.requested_at),
                "status": r.status,
                "deleted_events": r.deleted_events,
                "source": r.source,
            });
            row[r.kind.as_str()] = serde_json::Value::String(r.user_id.clone());
            row
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
pub(super) async fn install_events(
    State(state): State<AppState>,
    Path(install_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: InstallEventsQuery = query_params(query.as_deref(), "malformed query string")?;
    let limit = q.limit.unwrap_or(DEFAULT_INSTALL_EVENTS);
    if limit == 0 || limit > MAX_INSTALL_EVENTS {
        return Err(ApiError::BadRequest("limit must be between 1 and 10000"));
    }
    let after = q.after_seq.unwrap_or(0);
    let events = blocking(&state, move |s| s.install_events(&install_id, after, limit)).await?;
    Ok(Json(events).into_response())
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
    let to = timestamp_param(q.to, "to is not an RFC 3339 date-time")?.unwrap_or(now);
    let from = timestamp_param(q.from, "from is not an RFC 3339 date-time")?
        .unwrap_or(to.saturating_sub(DEFAULT_WINDOW_MS));
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to"));
    }
    Ok((from, to))
}

/// `GET /v1/health/pipeline?[from&to]`.
pub(super) async fn pipeline(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
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

/// `GET /v1/alerts`: every rule with its state and value, and the
/// webhook's counters.
pub(super) async fn alerts(State(state): State<AppState>) -> Response {
    Json(state.health.alerts.view()).into_response()
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
