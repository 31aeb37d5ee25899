//! The product teams' paths (admin token, checked by
//! [`super::auth::admin_gate`]): `GET /v1/query/{events,active,sessions,
//! funnel,retention,breakdown,top-events,finality}`, each answered by
//! [`crate::queries::answer`] on the blocking pool.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::error::ApiError;
use crate::queries::{answer, ProductQuery, QueryError};

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadRequest(m) => ApiError::BadRequest(m),
            QueryError::Store(e) => ApiError::from(e),
        }
    }
}

/// Answers on the blocking pool.
async fn handle(
    state: AppState,
    query_string: Option<String>,
    query: ProductQuery,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let raw = query_string.unwrap_or_default();
    let value = tokio::task::spawn_blocking(move || answer(store.as_ref(), query, &raw))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "query task failed");
            ApiError::Internal
        })??;
    Ok(Json(value).into_response())
}

macro_rules! handlers {
    ($($(#[$doc:meta])* $name:ident => $query:ident;)*) => {$(
        $(#[$doc])*
        pub(super) async fn $name(
            State(state): State<AppState>,
            RawQuery(query): RawQuery,
        ) -> Result<Response, ApiError> {
            handle(state, query, ProductQuery::$query).await
        }
    )*};
}

handlers! {
    /// `GET /v1/query/events`.
    events => Events;
    /// `GET /v1/query/active`.
    active => Active;
    /// `GET /v1/query/sessions`.
    sessions => Sessions;
    /// `GET /v1/query/funnel`.
    funnel => Funnel;
    /// `GET /v1/query/finality`.
    finality => Finality;
    /// `GET /v1/query/retention`.
    retention => Retention;
    /// `GET /v1/query/breakdown`.
    breakdown => Breakdown;
    /// `GET /v1/query/top-events`.
    top_events => TopEvents;
}
