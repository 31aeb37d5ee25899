//! The HTTP application: state, routes, CORS and the status metric.
//! [`app`] builds the [`Router`]; serving it (plain or TLS, graceful
//! shutdown) is [`crate::server`].
//!
//! | path | method | auth | does |
//! |---|---|---|---|
//! | `/v1/batch`, `/v1/b`, `/beacon/v1/batch` | POST | write key | ingest a batch (or one message) |
//! | `/v1/{track,identify,page,screen,group,alias}`, `/v1/{t,i,p,s,g,a}` | POST | write key | ingest one message; the path gives a missing `type` |
//! | `/v1/m` | POST | none | client telemetry: answered 200 and dropped |
//! | `/v1/time` | GET | none | `{"server_time"}` |
//! | `/healthz` | GET | none | 200 when the store answers, else 503 |
//! | `/metrics` | GET | metrics or admin token | Prometheus text (open on a `--metrics-listen` listener of its own: [`metrics_app`]) |
//! | `/v1/stats`, `/v1/events/count`, `/v1/installs/{id}` | GET | admin | queries |
//! | `/v1/deletions` | POST | admin | delete a user, 202 |
//! | `/v1/health/pipeline` | GET | admin | pipeline health ([`crate::health`]) |
//! | `/v1/alerts` | GET | admin | alert rules and their states ([`crate::alerts`]) |
//! | `/v1/deletions` | GET | admin | the deletion requests and their status |
//! | `/v1/export` | GET | admin | stored events as NDJSON, streamed ([`crate::export`]) |
//! | `/v1/installs/{id}/events` | GET | admin | an install's events in seq order, with their person |
//! | `/`, `/assets/{file}` | GET | none | the dashboard (its data calls need the admin token) |
//! | `/v1/projects/{writeKey}/settings`, `/sourceConfig/` | GET | write key | settings of Segment's and RudderStack's browser libraries ([`crate::browser_settings`]) |
//! | `/v1/query/{events,active,sessions,funnel,retention,breakdown,top-events}` | GET | admin | product queries (`docs/query-api.md`) |
//!
//! Every admin path goes through a gate that checks the admin token and
//! throttles wrong ones per client address ([`crate::throttle`]).
//!
//! CORS: the ingest paths (and `/v1/m`, `/v1/time`) answer any origin,
//! without credentials, and a preflight with the headers it asks for
//! (browsers' Segment and RudderStack libraries send `Authorization`,
//! which `*` does not cover); every other path answers only the origins of
//! `--cors-origin` (none by default), never `null`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tally_proto::{format_timestamp, DecodeLimits, MessageType};
use tokio::sync::Semaphore;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::client::ClientAddr;
use crate::dashboard;
use crate::error::ApiError;
use crate::health::{self, HealthState};
use crate::ingest;
use crate::ingest::auth::{self, Credential, Keys};
use crate::ingest::slots::BodyKeySlots;
use crate::metrics::Metrics;
use crate::queries;
use crate::query;
use crate::store::Store;
use crate::throttle::{AuthThrottle, Verdict};

/// Ingest requests allowed to hold a slot at once by default.
///
/// Each slot may hold a 20 MiB body and a 16 MiB decoded copy, so 64 slots
/// bound ingest memory near 2.3 GiB in the worst case, and far more than
/// the store can commit concurrently (SQLite has one writer; a PostgreSQL
/// pool a few connections), so real load queues in the store, not here.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// How long browsers may cache a preflight answer: one day, the longest
/// Firefox honours (Chromium caps at two hours anyway).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Where events go.
    pub store: Arc<dyn Store>,
    /// Write keys and the admin token.
    pub keys: Arc<Keys>,
    /// Body and decode limits.
    pub limits: DecodeLimits,
    /// Ingest slots of requests whose key was checked before the body
    /// (see [`DEFAULT_MAX_IN_FLIGHT`]).
    pub ingest_slots: Arc<Semaphore>,
    /// Ingest slots of requests whose key can only be in the body.
    pub body_key_slots: Arc<BodyKeySlots>,
    /// Failed admin authentication per client.
    pub auth_throttle: Arc<AuthThrottle>,
    /// Origins whose pages may call the admin, query and export paths.
    pub cors_origins: Vec<HeaderValue>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Pipeline health shared with the health task.
    pub health: Arc<HealthState>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("keys", &self.keys)
            .field("limits", &self.limits)
            .field("ingest_slots", &self.ingest_slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `store` with default limits.
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self {
            store,
            keys: Arc::new(keys),
            limits: DecodeLimits::default(),
            ingest_slots: Arc::new(Semaphore::new(DEFAULT_MAX_IN_FLIGHT)),
            body_key_slots: Arc::new(BodyKeySlots::default()),
            auth_throttle: Arc::new(AuthThrottle::default()),
            cors_origins: Vec::new(),
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(HealthState::default()),
        }
    }

    /// The same state with other decode limits.
    pub fn with_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same state with these alerting settings (rules, webhook).
    pub fn with_alerts(mut self, alerts: crate::alerts::AlertConfig) -> Self {
        self.health = Arc::new(HealthState::new(alerts));
        self
    }

    /// The same state with `max_in_flight` ingest slots (at least 1).
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.ingest_slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
        self
    }

    /// The same state letting pages of `origins` (checked by
    /// [`crate::config`]) call the admin paths; an origin that is not a
    /// valid header value is skipped.
    pub fn with_cors_origins(mut self, origins: &[String]) -> Self {
        self.cors_origins = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        self
    }
}

/// The router of the collector.
pub fn app(state: AppState) -> Router {
    let mut ingest = Router::new();
    for (paths, kind) in [
        (&["/v1/batch", "/v1/b", "/beacon/v1/batch"][..], None),
        (&["/v1/track", "/v1/t"][..], Some(MessageType::Track)),
        (&["/v1/identify", "/v1/i"][..], Some(MessageType::Identify)),
        (&["/v1/page", "/v1/p"][..], Some(MessageType::Page)),
        (&["/v1/screen", "/v1/s"][..], Some(MessageType::Screen)),
        (&["/v1/group", "/v1/g"][..], Some(MessageType::Group)),
        (&["/v1/alias", "/v1/a"][..], Some(MessageType::Alias)),
    ] {
        for path in paths {
            let kind = kind.clone();
            ingest = ingest.route(
                path,
                post(move |State(state): State<AppState>, request: Request| {
                    ingest::handle(state, kind, request)
                }),
            );
        }
    }
    let ingest = ingest
        .route("/v1/m", post(client_telemetry))
        .route("/v1/time", get(time))
        // Browser libraries fetch their settings cross-origin, like ingest.
        .route(
            "/v1/projects/{write_key}/settings",
            get(crate::browser_settings::segment),
        )
        .route("/sourceConfig/", get(crate::browser_settings::rudderstack))
        // Set before the CORS layer, so a preflight of a POST-only path
        // reaches the layer instead of this answer.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(ingest_cors());
    // Every path that needs the admin token goes through the gate, which
    // throttles wrong tokens per client before the handler runs.
    let admin = Router::new()
        .route("/v1/dead-letters", get(query::dead_letters))
        .route("/v1/stats", get(query::stats))
        .route("/v1/events/count", get(query::count_events))
        .route("/v1/installs/{install_id}", get(query::install))
        .route("/v1/deletions", post(query::delete_user))
        .route("/v1/health/pipeline", get(health::pipeline))
        .route("/v1/alerts", get(crate::alerts::list))
        .route("/v1/deletions", get(query::list_deletions))
        .route("/v1/export", get(crate::export::export))
        .route(
            "/v1/installs/{install_id}/events",
            get(query::install_events),
        )
        .route("/v1/query/events", get(queries::events))
        .route("/v1/query/active", get(queries::active))
        .route("/v1/query/sessions", get(queries::sessions))
        .route("/v1/query/funnel", get(queries::funnel))
        .route("/v1/query/retention", get(queries::retention))
        .route("/v1/query/breakdown", get(queries::breakdown))
        .route("/v1/query/top-events", get(queries::top_events))
        .route_layer(middleware::from_fn_with_state(state.clone(), admin_gate));
    let metrics = Router::new()
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), metrics_gate));
    let rest = Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::asset))
        .merge(admin)
        .merge(metrics)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(admin_cors(state.cors_origins.clone()));
    Router::new()
        .merge(ingest)
        .merge(rest)
        .fallback(|| async { ApiError::NotFound("no such path") })
        .layer(middleware::from_fn_with_state(state.clone(), count_status))
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// `/metrics` alone, without a token: for a listener of its own
/// (`--metrics-listen`) that only the monitoring network reaches.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .fallback(|| async { ApiError::NotFound("no such path") })
        .with_state(state)
}

/// CORS of the ingest paths: any origin, without credentials (a write key
/// is public, and a page of any site may send events). Requested headers
/// are mirrored: browsers' Segment and RudderStack libraries send
/// `Authorization`, which `*` does not cover.
fn ingest_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_headers(AllowHeaders::mirror_request())
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .expose_headers([header::RETRY_AFTER])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// CORS of every other path: only the configured origins (none by default:
/// the dashboard is served from the collector itself and needs none), and
/// never `null` (the origin of sandboxed frames and local files).
fn admin_cors(origins: Vec<HeaderValue>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .expose_headers([header::RETRY_AFTER])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Authenticates a request to an admin path under the failed-auth
/// throttle ([`crate::throttle`]); the handler then runs with a checked
/// token.
async fn admin_gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    gate(&state, request, next, Keys::authorize_admin).await
}

/// Authenticates a scrape of `/metrics`: the metrics token or the admin
/// token, under the same throttle.
async fn metrics_gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    gate(&state, request, next, Keys::authorize_metrics).await
}

/// Runs `check` on the request's credential: none is refused as `check`
/// says, without counting; a present one is judged by the throttle, and
/// refused (429) while its client is throttled whether it is right or
/// wrong, so the answer tells nothing about the guess.
async fn gate(
    state: &AppState,
    request: Request,
    next: Next,
    check: fn(&Keys, Option<&Credential>) -> Result<(), ApiError>,
) -> Response {
    let outcome = match auth::credential(request.headers()) {
        // No guess made: refused as `check` says, never counted.
        Ok(None) => {
            return match check(&state.keys, None) {
                Ok(()) => next.run(request).await,
                Err(e) => e.into_response(),
            };
        }
        Ok(Some(credential)) => check(&state.keys, Some(&credential)),
        Err(malformed) => Err(malformed),
    };
    let client = ClientAddr::of(request.extensions()).map(ClientAddr::bucket);
    match state.auth_throttle.judge(client, outcome.is_ok()) {
        Verdict::Throttled { retry_after_s } => {
            state.metrics.auth_throttled();
            ApiError::AuthThrottled { retry_after_s }.into_response()
        }
        Verdict::Allowed => match outcome {
            Ok(()) => next.run(request).await,
            Err(e) => {
                state.metrics.auth_failure();
                e.into_response()
            }
        },
    }
}

async fn count_status(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state.metrics.request(response.status().as_u16());
    response
}

/// `/v1/m`: Segment's browser library posts its own telemetry here; it is
/// not analytics data, so it is acknowledged and dropped unread.
async fn client_telemetry() -> Response {
    Json(serde_json::json!({})).into_response()
}

async fn time() -> Response {
    let server_time = format_timestamp(ingest::clock::now_ms());
    let mut response = Json(serde_json::json!({ "server_time": server_time })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// 200 when the store answers a round trip; 503 otherwise, whatever the
/// cause, so a load balancer takes this collector out of rotation.
async fn healthz(State(state): State<AppState>) -> Result<Response, ApiError> {
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

async fn metrics_text(State(state): State<AppState>) -> Response {
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
