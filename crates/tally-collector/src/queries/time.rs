//! Windows and buckets in a time zone: hour and day buckets cut on the
//! zone's clock (a DST day has 23 or 25 hours), labelled with the
//! bucket's start and the zone's offset then.

use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};

use crate::store::query::Span;

/// Most buckets one answer holds: 400 days of hours. Beyond, a request
/// is refused (400) rather than building a huge answer.
pub const MAX_BUCKETS: usize = 400 * 24;

/// Longest window a query reads: ten years. Keeps the bucket and day
/// arithmetic far from jiff's range limits.
pub const MAX_WINDOW_MS: i64 = 10 * 366 * DAY_MS;

/// Milliseconds in a 24-hour day (the default window is 30 of them).
pub const DAY_MS: i64 = 86_400_000;

const HOUR_MS: i64 = 3_600_000;

/// Bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Clock hours of the zone.
    Hour,
    /// Calendar days of the zone.
    Day,
}

impl Interval {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }
}

/// Why a window cannot be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WindowError {
    /// More than [`MAX_BUCKETS`] buckets.
    #[error("the window holds too many buckets; use a shorter window or a longer interval")]
    TooManyBuckets,
    /// A date-time outside what the calendar arithmetic supports.
    #[error("date-time out of range")]
    OutOfRange,
}

fn zoned(ms: i64, tz: &TimeZone) -> Result<ZonedDateTime, WindowError> {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_zoned_datetime(tz.clone()))
        .map_err(|_| WindowError::OutOfRange)
}

/// The start (Unix ms) of the zone's day holding `ms`.
pub fn day_start(ms: i64, tz: &TimeZone) -> Result<i64, WindowError> {
    zoned(ms, tz)?
        .start_of_day()
        .map(|z| z.timestamp().as_millisecond())
        .map_err(|_| WindowError::OutOfRange)
}

/// The start of the zone's next day after the day starting at `start`.
pub fn next_day(start: i64, tz: &TimeZone) -> Result<i64, WindowError> {
    zoned(start, tz)?
        .tomorrow()
        .and_then(|z| z.start_of_day())
        .map(|z| z.timestamp().as_millisecond())
        .map_err(|_| WindowError::OutOfRange)
}

/// The start of the zone's clock hour holding `ms`: whole hours of the
/// local clock, so a zone at +05:30 cuts at half past in UTC.
fn hour_start(ms: i64, tz: &TimeZone) -> Result<i64, WindowError> {
    let z = zoned(ms, tz)?;
    let into_hour =
        (i64::from(z.minute()) * 60 + i64::from(z.second())) * 1000 + i64::from(z.millisecond());
    Ok(ms - into_hour)
}

/// `start` as RFC 3339 with the zone's offset at that instant.
pub fn label(start: i64, tz: &TimeZone) -> String {
    match zoned(start, tz) {
        Ok(z) => z.timestamp().display_with_offset(z.offset()).to_string(),
        Err(_) => start.to_string(),
    }
}

/// One bucket: its label's instant and the part of the window it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// The bucket's start (may be before the window's `from`).
    pub start: i64,
    /// The part of the window inside the bucket.
    pub span: Span,
}

/// The buckets of `window`, one per hour or day, each clipped to it.
pub fn buckets(
    window: Span,
    interval: Interval,
    tz: &TimeZone,
) -> Result<Vec<Bucket>, WindowError> {
    let mut out = Vec::new();
    let mut start = match interval {
        Interval::Hour => hour_start(window.from, tz)?,
        Interval::Day => day_start(window.from, tz)?,
    };
    while start < window.to {
        if out.len() >= MAX_BUCKETS {
            return Err(WindowError::TooManyBuckets);
        }
        let end = match interval {
            Interval::Hour => start + HOUR_MS,
            Interval::Day => next_day(start, tz)?,
        };
        out.push(Bucket {
            start,
            span: Span {
                from: start.max(window.from),
                to: end.min(window.to),
            },
        });
        start = end;
    }
    Ok(out)
}

/// Day starts from the day holding `from` through the first start at or
/// after `to` (so day `i` is `[days[i], days[i + 1])`).
pub fn day_starts(from: i64, to: i64, tz: &TimeZone) -> Result<Vec<i64>, WindowError> {
    let mut days = vec![day_start(from, tz)?];
    while let Some(&last) = days.last() {
        if last >= to {
            break;
        }
        if days.len() > MAX_BUCKETS {
            return Err(WindowError::TooManyBuckets);
        }
        days.push(next_day(last, tz)?);
    }
    Ok(days)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        rfc3339.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn a_dst_day_in_paris_has_23_hours_and_labels_carry_the_offset() {
        let tz = TimeZone::get("Europe/Paris").unwrap();
        let window = Span {
            from: ms("2026-03-28T23:00:00Z"),
            to: ms("2026-03-30T22:00:00Z"),
        };
        let days = buckets(window, Interval::Day, &tz).unwrap();
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].span.to - days[0].span.from, 23 * HOUR_MS);
        assert_eq!(label(days[0].start, &tz), "2026-03-29T00:00:00+01:00");
        assert_eq!(label(days[1].start, &tz), "2026-03-30T00:00:00+02:00");
        let hours = buckets(window, Interval::Hour, &tz).unwrap();
        assert_eq!(hours.len(), 23 + 24);
    }

    #[test]
    fn half_hour_zones_cut_hours_at_half_past() {
        let tz = TimeZone::get("Asia/Kolkata").unwrap();
        let window = Span {
            from: ms("2026-01-01T00:00:00Z"),
            to: ms("2026-01-01T02:00:00Z"),
        };
        let hours = buckets(window, Interval::Hour, &tz).unwrap();
        assert_eq!(label(hours[0].start, &tz), "2026-01-01T05:00:00+05:30");
        assert_eq!(hours[0].span.from, window.from);
        assert_eq!(hours[1].start, ms("2026-01-01T00:30:00Z"));
        assert_eq!(hours.len(), 3);
    }
}
