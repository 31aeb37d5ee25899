//! Timestamps on the wire: RFC 3339 text; inside Tally: milliseconds since
//! the Unix epoch (UTC), the precision of the Segment Spec.

use time::format_description::well_known::{Iso8601, Rfc3339};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Parses a wire timestamp to Unix milliseconds.
///
/// Accepts RFC 3339 with any offset (`Z`, `+00:00`, `-07:00`), fractional
/// seconds of any length, and (as some SDKs send from naive clocks) ISO 8601
/// without an offset, taken as UTC. Returns `None` for anything else.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(text, &Iso8601::DEFAULT))
        .or_else(|_| {
            PrimitiveDateTime::parse(text, &Iso8601::DEFAULT)
                .map(|t| t.assume_offset(UtcOffset::UTC))
        })
        .ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds
/// (`2024-05-01T12:00:00.123Z`). Values outside years 1–9999 are clamped.
pub fn format_timestamp(unix_ms: i64) -> String {
    let ms = unix_ms.clamp(MIN_MS, MAX_MS);
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// 0001-01-01T00:00:00Z.
const MIN_MS: i64 = -62_135_596_800_000;
/// 9999-12-31T23:59:59.999Z.
const MAX_MS: i64 = 253_402_300_799_999;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_what_real_sdks_send() {
        let base = 1_424_730_535_111; // 2015-02-23T22:28:55.111Z
        assert_eq!(parse_timestamp("2015-02-23T22:28:55.111Z"), Some(base));
        assert_eq!(parse_timestamp("2015-02-23T22:28:55.111+00:00"), Some(base));
        assert_eq!(
            parse_timestamp("2015-02-23T22:28:55.111456+00:00"),
            Some(base)
        );
        assert_eq!(parse_timestamp("2015-02-23T14:28:55.111-08:00"), Some(base));
        assert_eq!(parse_timestamp("2015-02-23T22:28:55.111"), Some(base));
        assert_eq!(parse_timestamp("2015-02-23T22:28:55Z"), Some(base - 111));
        for bad in [
            "",
            "yesterday",
            "2015-02-30T00:00:00Z",
            "1424730535111",
            "2015-02-23",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_with_millis_in_utc() {
        assert_eq!(
            format_timestamp(1_424_730_535_111),
            "2015-02-23T22:28:55.111Z"
        );
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp(i64::MAX), "9999-12-31T23:59:59.999Z");
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(ms in MIN_MS..=MAX_MS) {
            prop_assert_eq!(parse_timestamp(&format_timestamp(ms)), Some(ms));
        }
    }
}
