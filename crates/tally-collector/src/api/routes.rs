//! The one table of routes: every path, its methods, its handler and who
//! may call it. [`super::app`] builds the router from it, putting each
//! route behind the layer of its [`Access`], so a route cannot be added
//! without saying who may call it; tests walk [`table`] with every
//! credential.

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::routing::{get, post, MethodRouter};
use tally_proto::MessageType;

use super::{
    admin, audit, dashboard, export, ingest, keys, openapi_json, ops, plan, product, quality,
    AppState,
};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Apps and SDKs, without a credential (client telemetry, the clock).
    App,
    /// A write key: in a header or the query (checked before the body), or
    /// in the body.
    WriteKey,
    /// A known write key in the path or the request (the settings
    /// documents browser libraries fetch); 404 otherwise.
    WriteKeyInRequest,
    /// Anyone: load balancers, and the dashboard's page (which asks for a
    /// token before it reads anything).
    Public,
    /// A read token or the admin token.
    Read,
    /// The admin token.
    Admin,
    /// The metrics token or the admin token.
    Metrics,
}

impl Access {
    /// Whether the route is called by apps on any site (CORS: any origin,
    /// no credentials) rather than by operators and the dashboard.
    pub fn app_facing(self) -> bool {
        matches!(
            self,
            Access::App | Access::WriteKey | Access::WriteKeyInRequest
        )
    }

    /// The name the API reference uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::App | Access::Public => "none",
            Access::WriteKey => "write key",
            Access::WriteKeyInRequest => "write key in the path or request",
            Access::Read => "read token",
            Access::Admin => "admin token",
            Access::Metrics => "metrics token",
        }
    }
}

/// A route as the table states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// The path, with `{name}` for a path parameter.
    pub path: &'static str,
    /// `GET`, `POST`, or both.
    pub methods: &'static [&'static str],
    /// Who may call it.
    pub access: Access,
}

/// A route and its handler.
pub(super) struct Route {
    pub info: RouteInfo,
    pub handler: MethodRouter<AppState>,
}

fn route(
    path: &'static str,
    methods: &'static [&'static str],
    access: Access,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        info: RouteInfo {
            path,
            methods,
            access,
        },
        handler,
    }
}

fn get_route<H, T>(path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    route(path, &["GET"], access, get(handler))
}

fn post_route<H, T>(path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    route(path, &["POST"], access, post(handler))
}

/// The ingest paths: the batch paths, and one path (with its short form)
/// per message type, which gives a message without `type` its type.
fn ingest_routes() -> Vec<Route> {
    let mut routes = Vec::new();
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
            let handler = post(move |State(state): State<AppState>, request: Request| {
                ingest::handle(state, kind, request)
            });
            routes.push(route(path, &["POST"], Access::WriteKey, handler));
        }
    }
    routes
}

/// Every route of the collector's main listener.
pub(super) fn routes() -> Vec<Route> {
    use Access::*;
    let mut routes = ingest_routes();
    routes.extend([
        post_route("/v1/m", App, ingest::client_telemetry),
        get_route("/v1/time", App, ingest::time),
        get_route(
            "/v1/projects/{write_key}/settings",
            WriteKeyInRequest,
            ingest::segment,
        ),
        get_route("/sourceConfig/", WriteKeyInRequest, ingest::rudderstack),
        get_route("/healthz", Public, ops::healthz),
        get_route("/", Public, dashboard::index),
        get_route("/assets/{file}", Public, dashboard::asset),
        get_route("/metrics", Metrics, ops::metrics_text),
        get_route("/openapi.json", Public, openapi_json),
        get_route("/v1/me", Read, admin::me),
        get_route("/v1/stats", Read, admin::stats),
        get_route("/v1/events/count", Read, admin::count_events),
        get_route("/v1/query/events", Read, product::events),
        get_route("/v1/query/active", Read, product::active),
        get_route("/v1/query/sessions", Read, product::sessions),
        get_route("/v1/query/funnel", Read, product::funnel),
        get_route("/v1/query/retention", Read, product::retention),
        get_route("/v1/query/breakdown", Read, product::breakdown),
        get_route("/v1/query/top-events", Read, product::top_events),
        get_route("/v1/query/finality", Read, product::finality),
        get_route("/v1/export", Read, export::export),
        get_route("/v1/dead-letters", Admin, admin::dead_letters),
        get_route("/v1/installs", Admin, admin::stalled_installs),
        get_route("/v1/installs/{install_id}", Admin, admin::install),
        get_route(
            "/v1/installs/{install_id}/events",
            Admin,
            admin::install_events,
        ),
        route(
            "/v1/deletions",
            &["GET", "POST"],
            Admin,
            post(admin::delete_user).get(admin::list_deletions),
        ),
        get_route("/v1/health/pipeline", Admin, admin::pipeline),
        get_route("/v1/alerts", Admin, admin::alerts),
        get_route("/v1/plan", Read, plan::show),
        get_route("/v1/quality", Read, quality::quality),
        post_route("/v1/plan/reload", Admin, plan::reload),
        route(
            "/v1/keys",
            &["GET", "POST"],
            Admin,
            get(keys::list).post(keys::create),
        ),
        post_route("/v1/keys/{key_id}/rotate", Admin, keys::rotate),
        post_route("/v1/keys/{key_id}/revoke", Admin, keys::revoke),
        get_route("/v1/audit", Admin, audit::list),
        get_route("/v1/people/{person_id}/export", Admin, export::person),
    ]);
    routes
}

/// Every route of the main listener, as the router states it.
pub fn table() -> Vec<RouteInfo> {
    routes().into_iter().map(|r| r.info).collect()
}
