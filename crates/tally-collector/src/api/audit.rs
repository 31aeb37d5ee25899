//! The audit layer on every read and admin route, and `GET /v1/audit`
//! (admin). What is recorded, and when, is [`crate::audit`].

use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tally_proto::{format_timestamp, parse_timestamp};

use super::params::{blocking, query_params};
use super::AppState;
use crate::audit::{self, AuditNote};
use crate::client::ClientAddr;
use crate::clock;
use crate::error::ApiError;
use crate::ingest::auth::Principal;
use crate::store::audit::{AuditFilter, AuditOutcome, AuditRecord};

/// Records the request (see [`crate::audit`]): outside the route's gate,
/// so it sees refusals too, and the [`Principal`] the gate found (in the
/// response's extensions).
pub(super) async fn record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let at = clock::now_ms();
    let template = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let action = format!("{} {template}", request.method());
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let client = ClientAddr::of(request.extensions());
    let response = next.run(request).await;
    let status = response.status();
    let Some(principal) = response.extensions().get::<Principal>().cloned() else {
        // Refused before the handler: counted, written in windows.
        state
            .audit_denied
            .count(client.map(ClientAddr::bucket), &action, status.as_u16());
        return response;
    };
    let record = AuditRecord {
        at,
        key_id: Some(principal.key_id.to_string()),
        role: Some(principal.role.as_str().to_owned()),
        action,
        params: audit::params(
            &template,
            &path,
            query.as_deref(),
            response.extensions().get::<AuditNote>(),
            &state.keys.ring(),
        ),
        client: client.map_or_else(|| "local".to_owned(), |c| c.0.ip().to_string()),
        status: status.as_u16(),
        outcome: if status.is_success() {
            AuditOutcome::Ok
        } else {
            AuditOutcome::Failed
        },
        count: 1,
    };
    if let Err(e) = blocking(&state, move |s| s.append_audit(&[record])).await {
        tracing::error!(error = %e, "an audit row could not be written");
    }
    response
}

/// Rows one page holds unless `limit` says otherwise.
const DEFAULT_AUDIT_PAGE: usize = 100;

/// The largest page.
const MAX_AUDIT_PAGE: usize = 1_000;

#[derive(Deserialize)]
struct AuditQuery {
    from: Option<String>,
    to: Option<String>,
    key_id: Option<String>,
    outcome: Option<AuditOutcome>,
    action: Option<String>,
    before_id: Option<i64>,
    limit: Option<usize>,
}

/// `GET /v1/audit[?from&to&key_id&outcome&action&before_id&limit]` →
/// `{"entries": [{"id", "at", "key_id", "role", "action", "params",
/// "client", "status", "outcome", "count"}], "next_before_id"}`, newest
/// first; `next_before_id` (the last id, when the page is full) reads the
/// next page. This collector's counted refusals are written first, so the
/// page includes every request it answered before this one.
pub(super) async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: AuditQuery = query_params(
        query.as_deref(),
        "malformed query string: from, to (RFC 3339), key_id, outcome (ok, failed, denied), \
         action, before_id, limit",
    )?;
    let time = |t: Option<String>, what: &'static str| -> Result<Option<i64>, ApiError> {
        t.filter(|t| !t.is_empty())
            .map(|t| parse_timestamp(&t).ok_or(ApiError::BadRequest(what)))
            .transpose()
    };
    let limit = q.limit.unwrap_or(DEFAULT_AUDIT_PAGE);
    if limit == 0 || limit > MAX_AUDIT_PAGE {
        return Err(ApiError::BadRequest("limit must be between 1 and 1000"));
    }
    let filter = AuditFilter {
        from: time(q.from, "from is not an RFC 3339 date-time")?,
        to: time(q.to, "to is not an RFC 3339 date-time")?,
        key_id: q.key_id.filter(|k| !k.is_empty()),
        outcome: q.outcome,
        action: q.action.filter(|a| !a.is_empty()),
        before_id: q.before_id,
    };
    let denied = state.audit_denied.clone();
    let rows = blocking(&state, move |s| {
        if let Err(e) = denied.flush(s, clock::now_ms()) {
            tracing::warn!(error = %e, "refused authentications not written to the audit log yet");
        }
        s.audit_page(&filter, limit)
    })
    .await?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "at": format_timestamp(r.record.at),
                "key_id": r.record.key_id,
                "role": r.record.role,
                "action": r.record.action,
                "params": serde_json::from_str::<Value>(&r.record.params).unwrap_or(Value::Null),
                "client": r.record.client,
                "status": r.record.status,
                "outcome": r.record.outcome,
                "count": r.record.count,
            })
        })
        .collect();
    Ok(Json(json!({ "entries": entries, "next_before_id": next })).into_response())
}
