//! What the client commands share: the collector they talk to by default,
//! and the one syntax of durations on the command line.

use std::time::Duration;

/// The collector every client command talks to unless `--endpoint` or
/// `TALLY_ENDPOINT` says otherwise: where `tally serve` listens by default.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

/// A duration on the command line, in jiff's friendly format (`250ms`,
/// `90s`, `10m`, `1.5h`, `7d`, `1h30m`, `2 hours`; a day is 24 hours, a
/// week 7 days), or a bare number of seconds (`30`, `0.5`), so flags that
/// took seconds keep their meaning. Months and years (not a fixed length)
/// and negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration like 90s, 10m, 1h30m, 2h or 7d");
    let too_long = || format!("{text:?} is too long");
    let bare = !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.');
    if bare {
        let seconds: f64 = text.parse().map_err(|_| bad())?;
        return Duration::try_from_secs_f64(seconds).map_err(|_| too_long());
    }
    let span: jiff::Span = text.parse().map_err(|_| bad())?;
    if span.is_negative() {
        return Err(format!("{text:?} is negative"));
    }
    let seconds = span
        .total((
            jiff::Unit::Second,
            jiff::SpanRelativeTo::days_are_24_hours(),
        ))
        .map_err(|_| format!("{text:?}: months and years have no fixed length; use days"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| too_long())
}

/// A duration in whole seconds, for an API parameter that takes seconds.
pub fn whole_seconds(d: Duration, flag: &str) -> anyhow::Result<u64> {
    if d.subsec_nanos() != 0 {
        anyhow::bail!("{flag} must be a whole number of seconds");
    }
    Ok(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_and_bare_seconds() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("90s", Duration::from_secs(90)),
            ("45", Duration::from_secs(45)),
            ("0.5", Duration::from_millis(500)),
            ("10m", Duration::from_secs(600)),
            ("1.5h", Duration::from_secs(5_400)),
            ("2h", Duration::from_secs(7_200)),
            ("7d", Duration::from_secs(604_800)),
            (" 30s ", Duration::from_secs(30)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn combined_and_spelled_out_units() {
        let cases = [
            ("1h30m", Duration::from_secs(5_400)),
            ("2 hours", Duration::from_secs(7_200)),
            ("10 m", Duration::from_secs(600)),
            ("1w", Duration::from_secs(604_800)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        for (text, why) in [
            ("", "like 90s"),
            ("s", "like 90s"),
            ("1e3", "like 90s"),
            ("..s", "like 90s"),
            ("..", "like 90s"),
            ("10 parsecs", "like 90s"),
            ("-5s", "negative"),
            ("1mo", "no fixed length"),
            ("2y", "no fixed length"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
        assert!(parse_duration("99999999999999999999999")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn the_default_endpoint_is_where_serve_listens_by_default() {
        assert_eq!(
            DEFAULT_ENDPOINT,
            format!("http://{}", tally_collector::config::DEFAULT_LISTEN)
        );
    }

    #[test]
    fn whole_seconds_refuses_a_fraction() {
        assert_eq!(
            whole_seconds(Duration::from_secs(86_400), "--window").ok(),
            Some(86_400)
        );
        assert!(whole_seconds(Duration::from_millis(1_500), "--window").is_err());
    }
}
