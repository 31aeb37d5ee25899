//! The HTTP API: the state every handler shares, the router, and the
//! layers on it. [`app`] builds the [`Router`]; serving it (plain or TLS,
//! graceful shutdown) is [`crate::server`]. The router knows the
//! mechanisms (`ingest`, `queries`, `health`, `alerts`, `governance`,
//! `store`); they never know the router.
//!
//! Handlers are grouped by audience; who may call each route is stated
//! once, in [`routes`], and the router puts each route behind the layer
//! of its [`Access`] ([`auth`]):
//!
//! | module | audience | credential | paths |
//! |---|---|---|---|
//! | [`ingest`] | apps and SDKs | write key ([`auth::ingest_gate`]) | `POST /v1/batch`, `/v1/b`, `/beacon/v1/batch`, `/v1/{track,identify,page,screen,group,alias}`, `/v1/{t,i,p,s,g,a}` (the path gives a missing `type`) |
//! | [`ingest`] | apps and SDKs | none | `POST /v1/m` (client telemetry, answered and dropped), `GET /v1/time` |
//! | [`ingest`] | browser libraries | the write key in the path or the request | `GET /v1/projects/{writeKey}/settings`, `GET /sourceConfig/` |
//! | [`product`], [`export`], [`admin`] | product and data teams, the dashboard | read token or admin token ([`auth::read_gate`]) | `GET /v1/query/{events,active,sessions,funnel,retention,breakdown,top-events}` (`docs/query-api.md`), `GET /v1/export` (NDJSON, streamed), `GET /v1/stats`, `/v1/events/count`, `/v1/me` |
//! | [`admin`], [`export`] | operators | admin token ([`auth::admin_gate`]) | `GET /v1/installs/{id}`, `/v1/installs/{id}/events`, `/v1/dead-letters`, `/v1/health/pipeline`, `/v1/alerts`, `/v1/deletions`, `/v1/people/{id}/export` (one person's events, NDJSON); `POST /v1/deletions` (by `userId`, `anonymousId` or `installId`) |
//! | [`quality`] | product and data teams | read token or admin token ([`auth::read_gate`]) | `GET /v1/quality` (the tracking plan's findings, counted by the store) |
//! | [`keys`] | operators | admin token ([`auth::admin_gate`]) | `GET /v1/keys`, `POST /v1/keys`, `POST /v1/keys/{id}/rotate`, `POST /v1/keys/{id}/revoke` |
//! | [`audit`] | operators | admin token ([`auth::admin_gate`]) | `GET /v1/audit`; and the audit layer on every read and admin path |
//! | [`ops`] | load balancers, Prometheus | none; metrics or admin token ([`auth::metrics_gate`]) | `GET /healthz`; `GET /metrics` (open on a `--metrics-listen` listener of its own: [`metrics_app`]) |
//! | [`dashboard`] | people in a browser | none (its data calls need a read or admin token) | `GET /`, `/assets/{file}` |
//!
//! CORS: the app-facing paths answer any origin, without credentials, and
//! a preflight with the headers it asks for (browsers' Segment and
//! RudderStack libraries send `Authorization`, which `*` does not cover);
//! every other path answers only the origins of `--cors-origin` (none by
//! default), never `null`.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod export;
pub mod ingest;
pub mod keys;
pub mod openapi;
pub mod ops;
mod params;
pub mod plan;
pub mod product;
pub mod quality;
pub mod routes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tally_proto::DecodeLimits;
use tokio::sync::Semaphore;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::audit::DeniedCounts;
use crate::config::DEFAULT_MAX_IN_FLIGHT;
use crate::error::ApiError;
use crate::health::monitor::Monitored;
use crate::health::HealthState;
use crate::ingest::auth::Keys;
use crate::ingest::rate::{KeyRate, KeyRates};
use crate::ingest::slots::BodyKeySlots;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::throttle::AuthThrottle;
pub use routes::Access;

/// How long browsers may cache a preflight answer: one day, the longest
/// Firefox honours (Chromium caps at two hours anyway).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// `GET /openapi.json`: the API's OpenAPI document ([`openapi`]).
async fn openapi_json() -> Response {
    let mut response = Response::new(axum::body::Body::from(openapi::json()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

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
    /// (see [`crate::config::DEFAULT_MAX_IN_FLIGHT`]).
    pub ingest_slots: Arc<Semaphore>,
    /// Ingest slots of requests whose key can only be in the body.
    pub body_key_slots: Arc<BodyKeySlots>,
    /// Failed admin authentication per client.
    pub auth_throttle: Arc<AuthThrottle>,
    /// Refused read and admin requests, counted until written to the
    /// audit log ([`crate::audit`]).
    pub audit_denied: Arc<DeniedCounts>,
    /// Request rate of each write key ([`crate::ingest::rate`]).
    pub key_rates: Arc<KeyRates>,
    /// Origins whose pages may call the admin, query and export paths.
    pub cors_origins: Vec<HeaderValue>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Pipeline health shared with the health task.
    pub health: Arc<HealthState>,
    /// The tracking plan in force and each source's mode, if a plan is
    /// configured.
    pub plans: Option<Arc<crate::plan::Plans>>,
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
            audit_denied: Arc::new(DeniedCounts::default()),
            key_rates: Arc::new(KeyRates::default()),
            cors_origins: Vec::new(),
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(HealthState::default()),
            plans: None,
        }
    }

    /// The same state judging events against `plans`.
    pub fn with_plans(mut self, plans: Option<Arc<crate::plan::Plans>>) -> Self {
        self.plans = plans;
        self
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

    /// The same state with each write key limited to `rate` requests (none:
    /// no limit).
    pub fn with_key_rate(mut self, rate: Option<KeyRate>) -> Self {
        self.key_rates = Arc::new(KeyRates::new(rate));
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

/// The router of the collector, built from [`routes::routes`]: each
/// route goes behind the layer of its [`Access`].
pub fn app(state: AppState) -> Router {
    let mut groups: HashMap<Access, Router<AppState>> = HashMap::new();
    for route in routes::routes() {
        let group = groups.remove(&route.info.access).unwrap_or_default();
        groups.insert(
            route.info.access,
            group.route(route.info.path, route.handler),
        );
    }
    let mut take = |access: Access| groups.remove(&access).unwrap_or_default();
    let apps = take(Access::WriteKey)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::ingest_gate,
        ))
        .merge(take(Access::App))
        // Browser libraries fetch their settings cross-origin, like ingest.
        .merge(take(Access::WriteKeyInRequest))
        // Set before the CORS layer, so a preflight of a POST-only path
        // reaches the layer instead of this answer.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(ingest_cors());
    // Every path that needs a token goes through its gate, which
    // throttles wrong tokens per client before the handler runs; read and
    // admin paths are audited outside their gate, refusals included.
    let audited = || middleware::from_fn_with_state(state.clone(), audit::record);
    let rest = take(Access::Public)
        .merge(
            take(Access::Read)
                .route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    auth::read_gate,
                ))
                .route_layer(audited()),
        )
        .merge(
            take(Access::Admin)
                .route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    auth::admin_gate,
                ))
                .route_layer(audited()),
        )
        .merge(
            take(Access::Metrics).route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::metrics_gate,
            )),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .layer(admin_cors(state.cors_origins.clone()));
    Router::new()
        .merge(apps)
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
        .route("/metrics", get(ops::metrics_text))
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

/// Counts every answer by its route's template (`/v1/installs/{install_id}`,
/// so ids never become label values) and status, and times it to the
/// response head.
async fn count_status(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state.metrics.request(
        route.as_deref().unwrap_or(crate::metrics::UNMATCHED_ROUTE),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

impl From<&AppState> for Monitored {
    fn from(state: &AppState) -> Monitored {
        Monitored {
            store: Arc::clone(&state.store),
            health: Arc::clone(&state.health),
            metrics: Arc::clone(&state.metrics),
        }
    }
}

impl From<AppState> for Monitored {
    fn from(state: AppState) -> Monitored {
        Monitored::from(&state)
    }
}
