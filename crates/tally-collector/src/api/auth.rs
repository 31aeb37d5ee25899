//! Authentication as layers: every route states its credential by the
//! sub-router it is on, so no handler can forget to check it.
//!
//! | layer | on | checks |
//! |---|---|---|
//! | [`ingest_gate`] | the ingest paths | a write key in the `Authorization` header or the `writeKey` query parameter, before a slot or a byte of the body is spent; a request whose key can only be in the body passes, marked so, to a pool of its own |
//! | [`read_gate`] | product query, export and totals paths | a read token or the admin token, with wrong ones throttled per client address ([`crate::throttle`]) |
//! | [`admin_gate`] | admin paths | the admin token, under the same throttle |
//! | [`metrics_gate`] | `/metrics` | the metrics token or the admin token, under the same throttle |

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::client::ClientAddr;
use crate::clock;
use crate::error::ApiError;
use crate::ingest::auth::{self, query_write_key, Credential, Keys, Principal, Role};
use crate::throttle::Verdict;

/// What the ingest gate learned of a request's write key before its body,
/// for the handler.
#[derive(Debug, Clone)]
pub(crate) struct IngestKey {
    /// A good key came in a header or the query: the request takes a slot
    /// of the main pool and the full body limit.
    pub keyed: bool,
    /// The source of the header's key, which decides; without one, the
    /// body's key (read later) takes precedence over the query's.
    pub header_source: Option<String>,
    /// The `writeKey` query parameter.
    pub query_key: Option<String>,
}

/// Checks a write key sent in a header or the query; a wrong one is
/// refused (401) at once, counted as a failed request for pipeline health.
pub(super) async fn ingest_gate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let refused = |state: &AppState, e: ApiError| {
        state.health.batches.record(clock::now_ms(), false);
        e.into_response()
    };
    let header = match auth::credential(request.headers()) {
        Ok(header) => header,
        Err(e) => return refused(&state, e),
    };
    let query_key = query_write_key(request.uri().query());
    let keyed = header.is_some() || query_key.is_some();
    let header_source = if keyed {
        match state
            .keys
            .authorize_ingest(header.as_ref(), None, None, query_key.as_deref())
        {
            Ok(source) => header.is_some().then_some(source),
            Err(e) => return refused(&state, e),
        }
    } else {
        None
    };
    request.extensions_mut().insert(IngestKey {
        keyed,
        header_source,
        query_key,
    });
    next.run(request).await
}

/// Authenticates a request to a read path (a read token or the admin
/// token) under the failed-auth throttle ([`crate::throttle`]); the
/// handler then runs with the token's [`Role`] in the request's
/// extensions.
pub(super) async fn read_gate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    gate(&state, request, next, |keys, credential| {
        keys.principal(Role::Read, credential).map(Some)
    })
    .await
}

/// Authenticates a request to an admin path, like [`read_gate`].
pub(super) async fn admin_gate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    gate(&state, request, next, |keys, credential| {
        keys.principal(Role::Admin, credential).map(Some)
    })
    .await
}

/// Authenticates a scrape of `/metrics`: the metrics token or the admin
/// token, under the same throttle.
pub(super) async fn metrics_gate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    gate(&state, request, next, |keys, credential| {
        keys.authorize_metrics(credential).map(|()| None)
    })
    .await
}

/// Runs `check` on the request's credential: none is refused as `check`
/// says, without counting; a present one is judged by the throttle, and
/// refused (429) while its client is throttled whether it is right or
/// wrong, so the answer tells nothing about the guess. The [`Principal`]
/// `check` found, and its [`Role`], go into the request's extensions.
async fn gate(
    state: &AppState,
    request: Request,
    next: Next,
    check: fn(&Keys, Option<&Credential>) -> Result<Option<Principal>, ApiError>,
) -> Response {
    let outcome = match auth::credential(request.headers()) {
        // No guess made: refused as `check` says, never counted.
        Ok(None) => {
            return match check(&state.keys, None) {
                Ok(principal) => run(request, next, principal).await,
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
            Ok(principal) => run(request, next, principal).await,
            Err(e) => {
                state.metrics.auth_failure();
                e.into_response()
            }
        },
    }
}

/// Runs the handler with the [`Principal`] and its [`Role`] in the
/// request's extensions, and the principal in the response's too (for
/// the audit layer outside the gate).
async fn run(mut request: Request, next: Next, principal: Option<Principal>) -> Response {
    let Some(principal) = principal else {
        return next.run(request).await;
    };
    request.extensions_mut().insert(principal.role);
    request.extensions_mut().insert(principal.clone());
    let mut response = next.run(request).await;
    response.extensions_mut().insert(principal);
    response
}
