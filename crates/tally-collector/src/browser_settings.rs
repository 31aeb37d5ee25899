//! Settings documents that browser libraries fetch before they send, so a
//! site already using Segment's analytics.js or RudderStack's JavaScript
//! SDK points it at Tally and is counted exactly, without changing its
//! tracking code.
//!
//! | path | library (its option) | the document says |
//! |---|---|---|
//! | `GET /v1/projects/{writeKey}/settings` | Segment's analytics-next (`cdnURL`) | send every event to this collector (the `Segment.io` integration's `apiHost` and `protocol`); no other destination, remote plugin, middleware or library telemetry |
//! | `GET /sourceConfig/` | RudderStack's JS SDK (`configUrl`), key in `Authorization: Basic` or `?writeKey=` | a source with no device-mode destination; events go to the data plane URL the page passes to `load()` |
//!
//! A document is served for a known write key only: it names nothing a
//! holder of the key does not know already. Where events go is read from
//! the request: `X-Forwarded-Host` (a proxy in front) or `Host`, and
//! `X-Forwarded-Proto`, else the scheme of the page's `Origin` (an https
//! page can only reach an https collector), else https. A page may still
//! override both in its own load options. The answer may be cached by the
//! browser only (`private`): it is built from request headers, so a shared
//! cache must not hand one client's answer to another.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::app::AppState;
use crate::error::ApiError;
use crate::ingest::auth::credential;

/// How long a browser may reuse a document: a page load or a few fetch
/// it once; five minutes bounds how long a change of host takes to reach
/// open pages.
const CACHE_CONTROL: &str = "private, max-age=300";

/// The id RudderStack's SDK requires of a source; Tally has one source per
/// write key and no other use for the id.
const SOURCE_ID: &str = "tally";

/// A header's value, if it is present and readable.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The host events go to: a host name or address and an optional port, as
/// the request named it. Anything else (a path, a user, spaces) is refused
/// rather than written into a document that builds URLs from it.
fn api_host(headers: &HeaderMap) -> Result<&str, ApiError> {
    let host = header_str(headers, "x-forwarded-host")
        .or_else(|| header_str(headers, header::HOST.as_str()))
        .filter(|h| !h.is_empty())
        .ok_or(ApiError::BadRequest("no Host header"))?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    if host.chars().all(allowed) {
        Ok(host)
    } else {
        Err(ApiError::BadRequest("the Host header is not a host"))
    }
}

/// The scheme events are sent with (see the module doc).
fn protocol(headers: &HeaderMap) -> &'static str {
    let forwarded = header_str(headers, "x-forwarded-proto");
    let origin = header_str(headers, header::ORIGIN.as_str())
        .and_then(|o| o.split_once("://").map(|(s, _)| s));
    match forwarded.or(origin) {
        Some(s) if s.eq_ignore_ascii_case("http") => "http",
        _ => "https",
    }
}

fn document(body: serde_json::Value) -> Response {
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    response
}

/// `GET /v1/projects/{writeKey}/settings`: analytics-next's settings.
pub async fn segment(
    State(state): State<AppState>,
    Path(write_key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !state.keys.is_write_key(&write_key) {
        return Err(ApiError::NotFound("no source has this write key"));
    }
    let api_host = format!("{}/v1", api_host(&headers)?);
    Ok(document(json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol(&headers),
                "unbundledIntegrations": [],
                "addBundledMetadata": false,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {"track": {"__default": {"enabled": true, "integrations": {}}}},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "edgeFunction": {},
        "remotePlugins": [],
        "legacyVideoPluginsEnabled": false,
        "metrics": {"sampleRate": 0},
    })))
}

/// `GET /sourceConfig/`: RudderStack's source configuration.
pub async fn rudderstack(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let from_query = || {
        serde_urlencoded::from_str::<Vec<(String, String)>>(query.as_deref()?)
            .ok()?
            .into_iter()
            .find_map(|(k, v)| (k == "writeKey").then_some(v))
    };
    let key = credential(&headers)?
        .map(|c| c.secret().to_owned())
        .or_else(from_query)
        .filter(|k| !k.is_empty())
        .ok_or(ApiError::Unauthorized("missing write key"))?;
    if !state.keys.is_write_key(&key) {
        return Err(ApiError::Unauthorized("unknown write key"));
    }
    Ok(document(json!({
        "isHosted": false,
        "source": {
            "id": SOURCE_ID,
            "name": "Tally",
            "writeKey": key,
            "enabled": true,
            "workspaceId": SOURCE_ID,
            "config": {"statsCollection": {"errors": {"enabled": false}, "metrics": {"enabled": false}}},
            "destinations": [],
        }
    })))
}
