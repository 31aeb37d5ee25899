//! The paths apps and their SDKs call: ingest (write key), the clock, the
//! client telemetry browsers' Segment library posts, and the settings
//! documents browser libraries fetch before they send.
//!
//! Ingest requests reach [`handle`] through the ingest gate, which checked
//! a key sent in a header or the query before a slot or a byte of the body
//! was spent ([`super::auth::ingest_gate`]); everything between the body
//! and the store is [`crate::ingest::prepare`].
//!
//! # Settings documents
//!
//! Browser libraries fetch a settings document before they send, so a
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

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tally_proto::{format_timestamp, BatchResponse, MessageType};

use super::auth::IngestKey;
use super::AppState;
use crate::client::ClientAddr;
use crate::clock;
use crate::error::ApiError;
use crate::ingest::answer;
use crate::ingest::auth::credential;
use crate::ingest::{body, prepare, slots, BodyKeys, Prepared};

/// Handles one ingest request, which the ingest gate
/// ([`super::auth::ingest_gate`]) let through. `implied` is the type a
/// single-message path (`/v1/track`, `/v1/t`, ...) gives a message that
/// has no `type`.
///
/// A request that fails is counted for pipeline health here (one the gate
/// refused is counted there, one that wrote in its write transaction, an
/// empty one in [`process`]).
pub(super) async fn handle(
    state: AppState,
    implied: Option<MessageType>,
    request: Request,
) -> Result<Response, ApiError> {
    let result = handle_request(&state, implied, request).await;
    if result.is_err() {
        state.health.batches.record(clock::now_ms(), false);
    }
    result
}

async fn handle_request(
    state: &AppState,
    implied: Option<MessageType>,
    request: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    // The gate always leaves its verdict; a route outside it is a bug.
    let IngestKey {
        keyed,
        header_source,
        query_key,
    } = parts
        .extensions
        .get::<IngestKey>()
        .cloned()
        .ok_or(ApiError::Internal)?;
    // A key in a header is known before the body: its rate is taken before
    // a slot or a body byte is spent.
    if let Some(source) = &header_source {
        take_rate(state, source)?;
    }
    let slot = if keyed {
        state
            .ingest_slots
            .clone()
            .try_acquire_owned()
            .ok()
            .map(slots::IngestSlot::Keyed)
    } else {
        let client = ClientAddr::of(&parts.extensions).map(ClientAddr::bucket);
        state.body_key_slots.try_acquire(client)
    }
    .ok_or(ApiError::RateLimited)?;
    let in_flight = state.metrics.in_flight().clone();
    in_flight.inc();
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (limit, cap) = slots::body_bounds(keyed, state.limits.max_body_bytes);
    let read = body::read_bounded(body, content_length, limit, cap).await;
    let result = match read {
        Ok(bytes) => {
            let worker = state.clone();
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                process(
                    &worker,
                    &parts.headers,
                    &bytes,
                    implied,
                    header_source,
                    query_key.as_deref(),
                )
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "ingest task failed");
                Err(ApiError::Internal)
            })
        }
        Err(e) => Err(e),
    };
    in_flight.dec();
    state.metrics.batch_latency(started.elapsed());
    result.map(|answer| Json(answer).into_response())
}

/// Takes a request of `source`'s rate ([`crate::ingest::rate`]); refused
/// (429) and counted when the key used it up.
fn take_rate(state: &AppState, source: &str) -> Result<(), ApiError> {
    state.key_rates.take(source).map_err(|retry_after_s| {
        state.metrics.key_limited(source);
        ApiError::KeyRateLimited { retry_after_s }
    })
}

/// Everything after the body was read: prepare (authenticating from the
/// body if the header did not: `header_source` is the source the header's
/// key stands for), store, answer.
fn process(
    state: &AppState,
    headers: &HeaderMap,
    bytes: &Bytes,
    implied: Option<MessageType>,
    header_source: Option<String>,
    query_key: Option<&str>,
) -> Result<BatchResponse, ApiError> {
    let received_at = clock::now_ms();
    let authorize = |keys: BodyKeys<'_>| match header_source {
        Some(source) => Ok(source),
        None => {
            let source =
                state
                    .keys
                    .authorize_ingest(None, keys.envelope, keys.message, query_key)?;
            take_rate(state, &source)?;
            Ok(source)
        }
    };
    let Prepared {
        slots,
        events: new_events,
        dead_letters,
        findings,
        quality,
        source,
    } = prepare(
        headers,
        bytes,
        implied,
        &state.limits,
        received_at,
        state.plans.as_deref(),
        authorize,
    )?;

    let outcomes = if new_events.is_empty() && dead_letters.is_empty() {
        // No write transaction counts this request: count it here.
        state.health.batches.record(received_at, true);
        Vec::new()
    } else {
        let commit_started = Instant::now();
        let outcomes = state
            .store
            .write_judged(&new_events, &dead_letters, &quality)?;
        state.metrics.commit_latency(commit_started.elapsed());
        outcomes
    };
    if outcomes.len() != new_events.len() {
        tracing::error!(
            events = new_events.len(),
            outcomes = outcomes.len(),
            "store returned the wrong number of outcomes"
        );
        return Err(ApiError::Internal);
    }
    // Counted once the batch is stored: a request the store refused is
    // sent again, and judged again.
    for finding in &findings {
        state.metrics.plan.finding(&source, finding);
    }
    let response = answer::build(slots, &new_events, &outcomes, clock::now_ms());
    state
        .metrics
        .outcomes(response.accepted, response.duplicate, response.rejected);
    Ok(response)
}

/// `/v1/m`: Segment's browser library posts its own telemetry here; it is
/// not analytics data, so it is acknowledged and dropped unread.
pub(super) async fn client_telemetry() -> Response {
    Json(json!({})).into_response()
}

/// `GET /v1/time`: the collector's clock, for a device estimating its
/// offset.
pub(super) async fn time() -> Response {
    let server_time = format_timestamp(clock::now_ms());
    let mut response = Json(json!({ "server_time": server_time })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

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
