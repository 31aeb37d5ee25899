//! Classification of every answer (or absence of one) into what the
//! uploader does next: the SDK's side of the sync protocol (the
//! protocol itself is in `tally-proto`'s crate doc and `docs/how-sync-works.md`).
//!
//! | answer | [`Outcome`] | uploader does |
//! |---|---|---|
//! | 200 with one result per message | `Results` | ack accepted and duplicate as delivered, rejected into the quarantine |
//! | 200 unreadable, or results not matching the batch | `ServerError` | back off, retry (the server is broken, the data is fine) |
//! | 400 | `BadRequest` | re-encode from the log once, then bisect to quarantine the record at fault |
//! | 401, 403 | `Unauthorized` | stop sending, keep data, surface in health |
//! | 413 | `TooLarge` | split, shrink the budget; a single message is quarantined |
//! | 429, 503 | `RetryAfter` | wait as told |
//! | other 5xx | `ServerError` | full-jitter backoff; repeated on the same head, bisect (poison isolation) |
//! | other 4xx (404, 415, ...) | `ServerError` | back off: a misrouted endpoint is a configuration problem that must not lose data |
//! | timeout, reset, refused | `Network` | full-jitter backoff; a timeout also shrinks the budget |

use tally_proto::BatchResponse;

use std::time::UNIX_EPOCH;

use super::policy::{DEFAULT_RETRY_AFTER_MS, MIN_BACKOFF_MS};
use super::transport::{Response, TransportError};

/// What an answer means for the batch that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Per-message results, one for each message sent, in order.
    Results(BatchResponse),
    /// The body was refused as a whole (400: undecodable, digest mismatch).
    BadRequest,
    /// The credentials were refused (401 or 403).
    Unauthorized(u16),
    /// The body is too large (413).
    TooLarge,
    /// The server asked to wait this many milliseconds (429, 503).
    RetryAfter(u64),
    /// The server failed (5xx, an unexpected status, or a 200 that cannot
    /// be matched to the batch).
    ServerError(u16),
    /// No answer arrived.
    Network(TransportError),
}

/// Classifies the result of sending a batch of `sent` messages, answered
/// at `now_ms` (Unix ms, device clock: a `Retry-After` date is read
/// against it).
pub fn classify(result: Result<Response, TransportError>, sent: usize, now_ms: i64) -> Outcome {
    let response = match result {
        Ok(r) => r,
        Err(e) => return Outcome::Network(e),
    };
    match response.status {
        200..=299 => match serde_json::from_slice::<BatchResponse>(&response.body) {
            Ok(answer) if answer.results.len() == sent => Outcome::Results(answer),
            _ => Outcome::ServerError(response.status),
        },
        400 => Outcome::BadRequest,
        401 | 403 => Outcome::Unauthorized(response.status),
        413 => Outcome::TooLarge,
        429 | 503 => Outcome::RetryAfter(retry_after_ms(response.retry_after.as_deref(), now_ms)),
        status => Outcome::ServerError(status),
    }
}

/// Reads `Retry-After` in both forms RFC 9110 allows: delta-seconds, or an
/// HTTP-date (IMF-fixdate, and the obsolete RFC 850 and asctime forms),
/// which is turned into a wait from `now_ms`. An absent or unreadable
/// value gives the default. The wait is at least [`MIN_BACKOFF_MS`], so a
/// date in the past (a skewed device clock) or `0` never turns into a
/// retry loop without pause.
pub fn retry_after_ms(header: Option<&str>, now_ms: i64) -> u64 {
    let Some(value) = header.map(str::trim) else {
        return DEFAULT_RETRY_AFTER_MS;
    };
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        seconds.saturating_mul(1_000)
    } else if let Ok(date) = httpdate::parse_http_date(value) {
        let at_ms = date
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0)
    } else {
        DEFAULT_RETRY_AFTER_MS
    };
    wait.max(MIN_BACKOFF_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(
        status: u16,
        body: &str,
        retry_after: Option<&str>,
    ) -> Result<Response, TransportError> {
        Ok(Response {
            status,
            retry_after: retry_after.map(str::to_owned),
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn every_row_of_the_table() {
        let ok = r#"{"server_time":"2024-01-01T00:00:00.000Z","accepted":1,"duplicate":0,"rejected":0,"results":[{"status":"accepted"}]}"#;
        assert!(
            matches!(classify(answer(200, ok, None), 1, 0), Outcome::Results(r) if r.accepted == 1)
        );
        assert_eq!(
            classify(answer(200, ok, None), 2, 0),
            Outcome::ServerError(200)
        );
        assert_eq!(
            classify(answer(200, "<html>", None), 1, 0),
            Outcome::ServerError(200)
        );
        assert_eq!(classify(answer(400, "{}", None), 1, 0), Outcome::BadRequest);
        assert_eq!(
            classify(answer(401, "{}", None), 1, 0),
            Outcome::Unauthorized(401)
        );
        assert_eq!(
            classify(answer(403, "{}", None), 1, 0),
            Outcome::Unauthorized(403)
        );
        assert_eq!(classify(answer(413, "{}", None), 1, 0), Outcome::TooLarge);
        assert_eq!(
            classify(answer(429, "{}", Some("7")), 1, 0),
            Outcome::RetryAfter(7_000)
        );
        assert_eq!(
            classify(answer(503, "{}", None), 1, 0),
            Outcome::RetryAfter(DEFAULT_RETRY_AFTER_MS)
        );
        assert_eq!(
            classify(answer(500, "{}", None), 1, 0),
            Outcome::ServerError(500)
        );
        assert_eq!(
            classify(answer(404, "{}", None), 1, 0),
            Outcome::ServerError(404)
        );
        assert_eq!(
            classify(Err(TransportError::Timeout), 1, 0),
            Outcome::Network(TransportError::Timeout)
        );
    }

    #[test]
    fn retry_after_forms() {
        // 2015-10-21T07:28:00Z, the RFC's example date.
        let date_ms: i64 = 1_445_412_480_000;
        assert_eq!(retry_after_ms(Some(" 120 "), date_ms), 120_000);
        for form in [
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed Oct 21 07:28:00 2015",
        ] {
            assert_eq!(
                retry_after_ms(Some(form), date_ms - 90_500),
                90_500,
                "{form}"
            );
        }
        // A date already past (or now): the smallest pause, not a spin.
        assert_eq!(
            retry_after_ms(Some("Wed, 21 Oct 2015 07:28:00 GMT"), date_ms + 5_000),
            MIN_BACKOFF_MS
        );
        assert_eq!(retry_after_ms(Some("0"), date_ms), MIN_BACKOFF_MS);
        assert_eq!(
            retry_after_ms(Some("in a while"), date_ms),
            DEFAULT_RETRY_AFTER_MS
        );
        assert_eq!(retry_after_ms(None, date_ms), DEFAULT_RETRY_AFTER_MS);
        assert_eq!(
            classify(
                answer(503, "{}", Some("Wed, 21 Oct 2015 07:28:00 GMT")),
                1,
                date_ms - 7_000
            ),
            Outcome::RetryAfter(7_000)
        );
    }
}
