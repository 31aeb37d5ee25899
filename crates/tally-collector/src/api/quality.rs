//! Data quality (`GET /v1/quality`, read token): what the tracking plan
//! found in the events the store took, counted by the store for the
//! whole fleet (see [`crate::store::quality`]).

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::params::{blocking, query_params, timestamp_param};
use super::AppState;
use crate::error::ApiError;
use crate::store::quality::QualityQuery;

#[derive(Deserialize)]
struct QualityParams {
    from: Option<String>,
    to: Option<String>,
    source: Option<String>,
    event: Option<String>,
}

/// `GET /v1/quality[?from=RFC3339&to=RFC3339&source=KEY_ID&event=NAME]` →
/// `{"findings": [...], "unplanned": [...]}`: per event, version, finding,
/// rule and path, the events flagged (accepted) and rejected with it,
/// first and last seen (Unix ms) and the newest examples; unplanned
/// events, by the name they were sent with, apart. Counts are kept by the
/// hour: `from` and `to` (receipt time) are rounded out to whole hours
/// for them; examples are those received in the window itself.
pub(super) async fn quality(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: QualityParams = query_params(query.as_deref(), "malformed query string")?;
    let query = QualityQuery {
        from: timestamp_param(q.from, "from is not an RFC 3339 date-time")?,
        to: timestamp_param(q.to, "to is not an RFC 3339 date-time")?,
        source: q.source.filter(|s| !s.is_empty()),
        event: q.event.filter(|e| !e.is_empty()),
    };
    let rows = blocking(&state, move |s| s.quality(&query)).await?;
    let (unplanned, findings): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|r| r.finding == "unplanned");
    Ok(Json(serde_json::json!({ "findings": findings, "unplanned": unplanned })).into_response())
}
