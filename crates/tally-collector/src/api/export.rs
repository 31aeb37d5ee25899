//! The data teams' path (admin token, checked by
//! [`super::auth::admin_gate`]): `GET /v1/export?format=ndjson[&from&to&source]`,
//! every stored event of the window (of one source, if given) streamed as
//! NDJSON in pages (the format and the paging are
//! [`crate::governance::export`]'s). The answer's `Tally-Export-Events`
//! header counts the events it streams, as they were when the export
//! started.
//!
//! `GET /v1/people/{person_id}/export` (admin token) streams one person's
//! events the same way, for an access request.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::params::{blocking, query_params, timestamp_param};
use super::AppState;
use crate::clock;
use crate::error::ApiError;
use crate::governance::export::{Pages, EVENTS_HEADER};
use crate::store::PersonKind;

#[derive(Deserialize)]
struct ExportQuery {
    format: Option<String>,
    from: Option<String>,
    to: Option<String>,
    source: Option<String>,
}

/// `GET /v1/export`.
pub(super) async fn export(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: ExportQuery = query_params(query.as_deref(), "malformed query string")?;
    match q.format.as_deref() {
        None | Some("ndjson") => {}
        Some(_) => {
            return Err(ApiError::BadRequest(
                "format must be ndjson (tally export writes Parquet from it)",
            ))
        }
    }
    let from = timestamp_param(q.from, "from is not an RFC 3339 date-time")?.unwrap_or(i64::MIN);
    let to =
        timestamp_param(q.to, "to is not an RFC 3339 date-time")?.unwrap_or_else(clock::now_ms);
    if from > to {
        return Err(ApiError::BadRequest("from is after to"));
    }
    let source = q.source.filter(|s| !s.is_empty());
    let counted = source.clone();
    let total = blocking(&state, move |s| {
        s.count_stored(from, to, counted.as_deref())
    })
    .await?;
    tracing::info!(events = total, "export started");

    let mut response = ndjson(Pages::new(state.store.clone(), from, to, source));
    response
        .headers_mut()
        .insert(EVENTS_HEADER, HeaderValue::from(total));
    Ok(response)
}

/// The streamed NDJSON answer of `pages`, never cached.
fn ndjson(pages: Pages) -> Response {
    let mut response = Body::from_stream(pages.into_stream()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
struct PersonQuery {
    kind: Option<String>,
    source: Option<String>,
}

/// `GET /v1/people/{person_id}/export[?kind=userId|anonymousId|installId][&source=wk_…]`
/// (admin token): every stored event of one person, for an access
/// request, as NDJSON lines like `GET /v1/export`'s, in corrected-time
/// order. A user id (the default kind) gives what a deletion of it would
/// remove; an anonymous id or install id the events carrying it without
/// a user id; with `source`, only the events that source (write key id)
/// sent, reached as a deletion within that source would reach them. A
/// person with no events is an empty body.
pub(super) async fn person(
    State(state): State<AppState>,
    Path(person_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: PersonQuery = query_params(query.as_deref(), "malformed query string")?;
    let kind = match q.kind.as_deref() {
        None | Some("userId") => PersonKind::User,
        Some("anonymousId") => PersonKind::Anonymous,
        Some("installId") => PersonKind::Install,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "kind must be userId, anonymousId or installId",
            ))
        }
    };
    if person_id.is_empty() {
        return Err(ApiError::BadRequest("the person id is empty"));
    }
    let source = q.source.filter(|s| !s.is_empty());
    Ok(ndjson(Pages::person(
        state.store.clone(),
        kind,
        person_id,
        source,
    )))
}
