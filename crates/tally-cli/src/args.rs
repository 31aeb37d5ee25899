//! What the client commands share: the collector they talk to by default,
//! and the one syntax of durations on the command line.

use std::time::Duration;

/// The collector every client command talks to unless `--endpoint` or
/// `TALLY_ENDPOINT` says otherwise: where `tally serve` listens by default.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

/// A duration on the command line: a number and a unit, `ms`, `s`, `m`,
/// `h` or `d` (`250ms`, `90s`, `10m`, `1.5h`, `7d`), or a bare number of
/// seconds (`30`, `0.5`), so flags that took seconds keep their meaning.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a duration like 90s, 10m, 2h or 7d");
    if number.is_empty() {
        return Err(bad());
    }
    let n: f64 = number.parse().map_err(|_| bad())?;
    let seconds_per_unit = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "{text:?}: the unit must be ms, s, m, h or d (or none, for seconds)"
            ))
        }
    };
    Duration::try_from_secs_f64(n * seconds_per_unit).map_err(|_| format!("{text:?} is too long"))
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
    fn anything_else_is_refused_with_the_syntax() {
        for text in ["", "s", "10 m", "10w", "1h30m", "-5s", "1e3", "..s"] {
            let err = parse_duration(text).unwrap_err();
            assert!(
                err.contains("like 90s") || err.contains("the unit must be"),
                "{text}: {err}"
            );
        }
        assert!(parse_duration("99999999999999999999999d")
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
