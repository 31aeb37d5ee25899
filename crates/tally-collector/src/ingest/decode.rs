//! From the bytes as sent to JSON: `Content-Encoding`, `Content-Digest`,
//! bounded decompression. Decoding the JSON itself is
//! [`tally_proto::decode_json`], which borrows from the bytes returned here.
//!
//! The digest is checked over the body as sent (RFC 9530), before any
//! decompression, so a corrupted body is refused (400) without spending
//! CPU on it and nothing of it is stored.

use axum::http::HeaderMap;
use tally_proto::{
    decompress, verify_digest, BodyError, ContentEncoding, DecodeLimits, DigestError,
};

use crate::error::ApiError;

/// The `Content-Digest` header (RFC 9530).
pub const CONTENT_DIGEST: &str = "content-digest";

/// Checks the encoding and digest of `body` and decompresses it under
/// `limits`.
pub fn decode_body(
    body: &[u8],
    headers: &HeaderMap,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, ApiError> {
    let encoding = match headers.get(axum::http::header::CONTENT_ENCODING) {
        None => ContentEncoding::Identity,
        Some(v) => {
            let v = v.to_str().map_err(|_| ApiError::UnsupportedEncoding)?;
            ContentEncoding::from_header(Some(v)).map_err(|_| ApiError::UnsupportedEncoding)?
        }
    };
    if let Some(digest) = headers.get(CONTENT_DIGEST) {
        let digest = digest
            .to_str()
            .map_err(|_| ApiError::DigestMismatch("malformed Content-Digest header"))?;
        verify_digest(digest, body).map_err(|e| {
            ApiError::DigestMismatch(match e {
                DigestError::Mismatch => "Content-Digest does not match the body as sent",
                DigestError::Unsupported => "Content-Digest has no sha-256 or sha-512 member",
                _ => "malformed Content-Digest header",
            })
        })?;
    }
    decompress(body, encoding, limits).map_err(body_error)
}

/// Maps a whole-body error to its answer: 413 for size limits, 415 for an
/// unknown encoding, 400 for the rest.
pub fn body_error(e: BodyError) -> ApiError {
    if e.is_too_large() {
        return ApiError::PayloadTooLarge(e.to_string());
    }
    match e {
        BodyError::Encoding(tally_proto::EncodingError::Unsupported) => {
            ApiError::UnsupportedEncoding
        }
        other => ApiError::Undecodable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use tally_proto::content_digest;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn digest_is_checked_over_the_bytes_as_sent() {
        let json = br#"{"batch":[]}"#;
        let body = tally_proto::encoding::encode(json, ContentEncoding::Gzip);
        let good = headers(&[
            ("content-encoding", "gzip"),
            (CONTENT_DIGEST, &content_digest(&body)),
        ]);
        assert_eq!(
            decode_body(&body, &good, &DecodeLimits::default()).unwrap(),
            json
        );
        // A digest of the decoded JSON is not a digest of the body as sent.
        let wrong = headers(&[
            ("content-encoding", "gzip"),
            (CONTENT_DIGEST, &content_digest(json)),
        ]);
        let err = decode_body(&body, &wrong, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, ApiError::DigestMismatch(_)));
    }

    #[test]
    fn encodings_and_their_errors() {
        let l = DecodeLimits::default();
        assert!(matches!(
            decode_body(b"x", &headers(&[("content-encoding", "br")]), &l),
            Err(ApiError::UnsupportedEncoding)
        ));
        assert!(matches!(
            decode_body(b"not gzip", &headers(&[("content-encoding", "gzip")]), &l),
            Err(ApiError::Undecodable(_))
        ));
        let small = DecodeLimits {
            max_decoded_bytes: 4,
            ..l
        };
        assert!(matches!(
            decode_body(b"12345", &HeaderMap::new(), &small),
            Err(ApiError::PayloadTooLarge(_))
        ));
    }
}
