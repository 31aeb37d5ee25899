//! The collector's HTTP errors: one enum, one `{code, message}` body each.
//!
//! Internal causes (store failures) are logged where they happen and never
//! sent to the client; the message a client sees names the rule it broke,
//! never the content it sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tally_proto::{ErrorBody, ErrorCode};

/// Seconds a client is told to wait (`Retry-After`) when the collector is
/// saturated or its store is unavailable. One second: in-flight work drains
/// in tens of milliseconds and the SDKs add their own jittered backoff.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Every error answer of the collector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No credentials, or a key that is not known (401).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A write key on an admin path (403).
    #[error("a write key is not an admin token")]
    Forbidden,
    /// The body is not JSON, not a batch or message, or its encoding is
    /// corrupt (400).
    #[error("{0}")]
    Undecodable(String),
    /// `Content-Digest` does not match the body as sent, or cannot be read
    /// (400).
    #[error("{0}")]
    DigestMismatch(&'static str),
    /// A malformed query parameter or admin request body (400).
    #[error("{0}")]
    BadRequest(&'static str),
    /// A request that cannot be done as asked, and why (400): a tracking
    /// plan that does not load.
    #[error("{0}")]
    Invalid(String),
    /// A `Content-Encoding` other than identity, gzip or zstd (415).
    #[error("supported content encodings are identity, gzip and zstd")]
    UnsupportedEncoding,
    /// The body fell behind the minimum rate or ran past its cap (408,
    /// see [`crate::ingest::body`]): a stalled client does not hold an
    /// ingest slot.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// Body as sent, decoded body or message count over its limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Every ingest slot is taken (429, with `Retry-After`).
    #[error("too many requests in flight; retry later")]
    RateLimited,
    /// This client presented too many wrong tokens (429, with
    /// `Retry-After`; see [`crate::throttle`]).
    #[error("too many failed authentications from this address; retry later")]
    AuthThrottled {
        /// Seconds until the client may try again.
        retry_after_s: u64,
    },
    /// The request's write key used up its request rate (429, with
    /// `Retry-After`; see [`crate::ingest::rate`]).
    #[error("this write key sent more requests than its rate allows; retry later")]
    KeyRateLimited {
        /// Seconds until the key may send again.
        retry_after_s: u64,
    },
    /// The store is saturated or unreachable (503, with `Retry-After`).
    #[error("the store is unavailable; retry later")]
    Unavailable,
    /// No such path or resource (404).
    #[error("{0}")]
    NotFound(&'static str),
    /// The path exists, but not for this method (405).
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// Any other failure; the cause is in the collector's log (500).
    #[error("internal error; see the collector's log")]
    Internal,
}

impl ApiError {
    /// The HTTP status and stable code of this error.
    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            Self::Forbidden => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            Self::Undecodable(_) => (StatusCode::BAD_REQUEST, ErrorCode::Undecodable),
            Self::DigestMismatch(_) => (StatusCode::BAD_REQUEST, ErrorCode::DigestMismatch),
            Self::BadRequest(_) | Self::Invalid(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::BadRequest)
            }
            Self::UnsupportedEncoding => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedEncoding,
            ),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, ErrorCode::RequestTimeout),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            Self::RateLimited | Self::AuthThrottled { .. } | Self::KeyRateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited)
            }
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            code: code.as_str().to_owned(),
            message: self.to_string(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match self {
            Self::RateLimited | Self::Unavailable => Some(u64::from(RETRY_AFTER_SECS)),
            Self::AuthThrottled { retry_after_s } | Self::KeyRateLimited { retry_after_s } => {
                Some(retry_after_s)
            }
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "store unavailable");
                Self::Unavailable
            }
            other => {
                tracing::error!(error = %other, "store failure");
                Self::Internal
            }
        }
    }
}
