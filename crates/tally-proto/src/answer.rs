//! The collector's answers: per-message results and error bodies.
//!
//! A batch answer lists one result per message, in the order sent, so a
//! client can match results by position even for messages without a
//! readable `messageId`.

use serde::{Deserialize, Serialize};

use crate::reason::RejectReason;

/// What happened to one message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored now, counted once.
    Accepted,
    /// Stored before (same `messageId`, or same `dedup_key`); not counted
    /// again. For a client this is as good as accepted.
    Duplicate,
    /// Refused for `reason`; kept in the collector's dead-letter table.
    Rejected,
}

/// The answer for one message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageResult {
    /// The `messageId`, when the message had a readable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The outcome.
    pub status: Status,
    /// Why, for a rejected message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
}

impl MessageResult {
    /// An accepted message.
    pub fn accepted(id: Option<String>) -> Self {
        Self {
            id,
            status: Status::Accepted,
            reason: None,
        }
    }

    /// A duplicate message.
    pub fn duplicate(id: Option<String>) -> Self {
        Self {
            id,
            status: Status::Duplicate,
            reason: None,
        }
    }

    /// A rejected message.
    pub fn rejected(id: Option<String>, reason: RejectReason) -> Self {
        Self {
            id,
            status: Status::Rejected,
            reason: Some(reason),
        }
    }
}

/// The 200 answer to a batch (or single message).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BatchResponse {
    /// The collector's clock when it answered (RFC 3339); the SDK estimates
    /// its clock offset from it.
    pub server_time: String,
    /// Messages accepted.
    pub accepted: u64,
    /// Messages that were duplicates.
    pub duplicate: u64,
    /// Messages rejected.
    pub rejected: u64,
    /// One result per message, in the order sent.
    pub results: Vec<MessageResult>,
    /// Users named in this batch who were deleted: the device should purge
    /// what it still holds for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_users: Vec<String>,
}

impl BatchResponse {
    /// A response with the counts derived from `results`.
    pub fn from_results(server_time: String, results: Vec<MessageResult>) -> Self {
        let count = |s: Status| results.iter().filter(|r| r.status == s).count() as u64;
        Self {
            server_time,
            accepted: count(Status::Accepted),
            duplicate: count(Status::Duplicate),
            rejected: count(Status::Rejected),
            results,
            deleted_users: Vec::new(),
        }
    }
}

/// The body of every error answer: `{"code", "message"}` (RudderStack's
/// clients need both members).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code (see [`ErrorCode`]).
    pub code: String,
    /// A sentence for people; never holds message content or keys.
    pub message: String,
}

/// Stable codes of error answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 401: no credentials, or a key that is not known.
    Unauthorized,
    /// 403: known credentials without the right (a write key on an admin
    /// path).
    Forbidden,
    /// 400: the body is not JSON, or not a batch or message.
    Undecodable,
    /// 400: `Content-Digest` does not match the body as sent.
    DigestMismatch,
    /// 415: a `Content-Encoding` other than identity, gzip, zstd.
    UnsupportedEncoding,
    /// 413: body, decoded body or message count over the limit.
    PayloadTooLarge,
    /// 429: too many requests in flight; retry after `Retry-After`.
    RateLimited,
    /// 503: the store is saturated or down; retry after `Retry-After`.
    Unavailable,
    /// 404: no such path or resource.
    NotFound,
    /// 405: the path exists, but not for this method.
    MethodNotAllowed,
    /// 400: a query parameter or an admin request body is malformed.
    BadRequest,
    /// 408: the request body did not arrive in time; resend it.
    RequestTimeout,
    /// 500: an internal failure; details are in the collector's log.
    Internal,
}

impl ErrorCode {
    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Undecodable => "undecodable",
            Self::DigestMismatch => "digest_mismatch",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BadRequest => "bad_request",
            Self::RequestTimeout => "request_timeout",
            Self::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_json_shape_and_round_trip() {
        let r = BatchResponse::from_results(
            "2024-01-01T00:00:00.000Z".into(),
            vec![
                MessageResult::accepted(Some("a".into())),
                MessageResult::duplicate(Some("b".into())),
                MessageResult::rejected(None, RejectReason::SeqZero),
            ],
        );
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"server_time":"2024-01-01T00:00:00.000Z","accepted":1,"duplicate":1,"rejected":1,"results":[{"id":"a","status":"accepted"},{"id":"b","status":"duplicate"},{"status":"rejected","reason":"seq_zero"}]}"#
        );
        assert_eq!(serde_json::from_str::<BatchResponse>(&json).unwrap(), r);
    }

    #[test]
    fn error_codes_are_distinct_snake_case() {
        use ErrorCode as E;
        let all = [
            E::Unauthorized,
            E::Forbidden,
            E::Undecodable,
            E::DigestMismatch,
            E::UnsupportedEncoding,
            E::PayloadTooLarge,
            E::RateLimited,
            E::Unavailable,
            E::NotFound,
            E::MethodNotAllowed,
            E::BadRequest,
            E::RequestTimeout,
            E::Internal,
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(codes.len(), all.len());
        assert!(codes
            .iter()
            .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        assert_eq!(E::MethodNotAllowed.as_str(), "method_not_allowed");
        assert_eq!(E::BadRequest.as_str(), "bad_request");
    }
}
