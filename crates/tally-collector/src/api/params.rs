//! What the admin, product and export handlers share: reading a query
//! string, and running a store call on the blocking pool.

use serde::de::DeserializeOwned;
use tally_proto::parse_timestamp;

use super::AppState;
use crate::error::ApiError;
use crate::store::{Store, StoreError};

/// The query string `query` read into `T`; one that does not fit is a 400
/// saying `malformed`.
pub(super) fn query_params<T: DeserializeOwned>(
    query: Option<&str>,
    malformed: &'static str,
) -> Result<T, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|_| ApiError::BadRequest(malformed))
}

/// An optional RFC 3339 bound of a query string, as Unix ms: absent or
/// empty is `None`; anything else that does not parse is a 400 saying
/// `what`.
pub(super) fn timestamp_param(
    text: Option<String>,
    what: &'static str,
) -> Result<Option<i64>, ApiError> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => parse_timestamp(&t)
            .map(Some)
            .ok_or(ApiError::BadRequest(what)),
    }
}

/// Runs `f` on the store on the blocking pool (store calls block).
pub(super) async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "store task failed");
            ApiError::Internal
        })?
        .map_err(ApiError::from)
}
