//! `Content-Digest` (RFC 9530) over a body as sent.
//!
//! The header is a Structured Field dictionary: `sha-256=:<base64>:`,
//! possibly with other algorithms beside it. Tally writes `sha-256` and
//! checks `sha-256` and `sha-512`; every supported member present must
//! match, and at least one must be present.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256, Sha512};

/// Why a `Content-Digest` did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// The header is not a dictionary of byte sequences.
    #[error("malformed Content-Digest header")]
    Malformed,
    /// No member uses an algorithm Tally checks (sha-256, sha-512).
    #[error("Content-Digest has no sha-256 or sha-512 member")]
    Unsupported,
    /// A digest does not match the body.
    #[error("Content-Digest does not match the body")]
    Mismatch,
}

/// The `Content-Digest` header value for `body`: `sha-256=:<base64>:`.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

/// Checks `header` against `body` (the bytes as sent, before decoding).
pub fn verify_digest(header: &str, body: &[u8]) -> Result<(), DigestError> {
    let mut checked = 0;
    for member in header.split(',') {
        let (key, value) = member
            .trim()
            .split_once('=')
            .ok_or(DigestError::Malformed)?;
        // Parameters (`;p=1`) are allowed by the grammar and carry nothing here.
        let value = value.split(';').next().unwrap_or_default().trim();
        let encoded = value
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or(DigestError::Malformed)?;
        let claimed = STANDARD
            .decode(encoded)
            .map_err(|_| DigestError::Malformed)?;
        let actual: Vec<u8> = match key.trim() {
            "sha-256" => Sha256::digest(body).to_vec(),
            "sha-512" => Sha512::digest(body).to_vec(),
            _ => continue,
        };
        if !constant_time_eq(&claimed, &actual) {
            return Err(DigestError::Mismatch);
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(DigestError::Unsupported);
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 9530 §B.1: sha-256 of `{"hello": "world"}` (with a trailing LF).
        assert_eq!(
            content_digest(b"{\"hello\": \"world\"}\n"),
            "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"
        );
    }

    #[test]
    fn verifies_and_refuses() {
        let body = b"payload";
        let header = content_digest(body);
        assert_eq!(verify_digest(&header, body), Ok(()));
        assert_eq!(
            verify_digest(&header, b"payloaD"),
            Err(DigestError::Mismatch)
        );
        assert_eq!(
            verify_digest("sha-256=abc", body),
            Err(DigestError::Malformed)
        );
        assert_eq!(
            verify_digest("sha-256=:!!:", body),
            Err(DigestError::Malformed)
        );
        assert_eq!(
            verify_digest("md5=:AAAA:", body),
            Err(DigestError::Unsupported)
        );
        assert_eq!(verify_digest("", body), Err(DigestError::Malformed));
    }

    #[test]
    fn every_supported_member_must_match() {
        let body = b"payload";
        let sha512 = format!("sha-512=:{}:", STANDARD.encode(Sha512::digest(body)));
        let both = format!("{sha512}, {}", content_digest(body));
        assert_eq!(verify_digest(&both, body), Ok(()));
        let with_unknown = format!("unixsum=:AAAA:, {}", content_digest(body));
        assert_eq!(verify_digest(&with_unknown, body), Ok(()));
        let one_wrong = format!("{sha512}, {}", content_digest(b"other"));
        assert_eq!(verify_digest(&one_wrong, body), Err(DigestError::Mismatch));
    }
}
