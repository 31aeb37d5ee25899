//! The alert rules, their thresholds and `for` durations, and the state
//! machine each one runs: `ok → pending → firing → ok`.
//!
//! A rule **breaches** when its value is above its threshold and the
//! count behind the value (what the rule counts: the duplicates of a dedup
//! rate, the violations of a violation rate) is at least its `min_count`,
//! so that three bad events of ten are not an incident (a value that
//! cannot be computed, such as a rate with nothing received, does not
//! breach). A breaching rule turns `pending`, and `firing` once it has
//! breached for `for_s` (at once when `for_s` is 0); a rule that stops
//! breaching returns to `ok` from either state. Every change is a
//! [`Transition`], which the collector POSTs to the webhook.

use serde::{Deserialize, Serialize};

/// Share of active installs whose oldest queued event is over 24 h old.
pub const STALE_CLIENT_QUEUES: &str = "stale_client_queues";
/// Duplicates / (accepted + duplicates) over the rate window.
pub const DEDUP_RATE_HIGH: &str = "dedup_rate_high";
/// Rejected / everything received over the rate window.
pub const REJECTION_RATE_HIGH: &str = "rejection_rate_high";
/// Growth of the missing seqs over the rate window.
pub const COMPLETENESS_GAPS_GROWING: &str = "completeness_gaps_growing";
/// Tracking-plan violations (flagged + rejected) / (accepted + rejected)
/// over the rate window.
pub const PLAN_VIOLATION_RATE_HIGH: &str = "plan_violation_rate_high";

/// One rule's settings (`[alerts.<rule>]` in `tally.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// The rule breaches when its value is above this.
    pub threshold: f64,
    /// Seconds a breach lasts before the rule fires.
    #[serde(default)]
    pub for_s: f64,
    /// The rule breaches only when the count behind its value is at least
    /// this (0: any count).
    #[serde(default)]
    pub min_count: u64,
}

/// What one evaluation reads for a rule.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reading {
    /// The rule's value (`None` when it cannot be computed).
    pub value: Option<f64>,
    /// The count behind it, compared with `min_count`.
    pub count: u64,
}

/// What a rule watches, in words (shown by `GET /v1/alerts`).
pub fn expression(rule: &str) -> &'static str {
    match rule {
        STALE_CLIENT_QUEUES => {
            "share of installs reporting in 7 days whose oldest pending event is over 24 h old"
        }
        DEDUP_RATE_HIGH => "duplicates / (accepted + duplicates) over the rate window",
        REJECTION_RATE_HIGH => "rejected / (accepted + duplicates + rejected) over the rate window",
        COMPLETENESS_GAPS_GROWING => "missing seqs now − missing seqs one rate window ago",
        PLAN_VIOLATION_RATE_HIGH => {
            "tracking-plan violations (flagged + rejected) / (accepted + rejected) over the rate window"
        }
        _ => "",
    }
}

/// The rules and their default settings, in the order they are shown.
pub fn defaults() -> [(&'static str, RuleSettings); 5] {
    let rule = |threshold, for_s, min_count| RuleSettings {
        threshold,
        for_s,
        min_count,
    };
    [
        (STALE_CLIENT_QUEUES, rule(0.05, 0.0, 0)),
        (DEDUP_RATE_HIGH, rule(0.10, 0.0, 0)),
        (REJECTION_RATE_HIGH, rule(0.01, 0.0, 0)),
        (COMPLETENESS_GAPS_GROWING, rule(0.0, 0.0, 0)),
        // Over 5 % of the window's events, and at least 10 of them: a
        // release that breaks an event shows within the window, a stray
        // event from an old build does not.
        (PLAN_VIOLATION_RATE_HIGH, rule(0.05, 0.0, 10)),
    ]
}

/// A rule's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Not breaching.
    Ok,
    /// Breaching for less than `for_s`.
    Pending,
    /// Breaching for `for_s` or longer.
    Firing,
}

impl AlertState {
    /// The value of the `tally_alert_state` gauge: 0, 1, 2.
    pub fn level(self) -> i64 {
        match self {
            Self::Ok => 0,
            Self::Pending => 1,
            Self::Firing => 2,
        }
    }

    /// `ok`, `pending`, `firing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Pending => "pending",
            Self::Firing => "firing",
        }
    }
}

/// One rule and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name.
    pub name: &'static str,
    /// Its settings.
    pub settings: RuleSettings,
    /// Its state.
    pub state: AlertState,
    /// Its last value (`None` before the first evaluation, or when it
    /// cannot be computed).
    pub value: Option<f64>,
    /// The count behind its last value (`None` before the first
    /// evaluation).
    pub count: Option<u64>,
    /// When the breach began (pending and firing), Unix ms.
    pub breach_since: Option<i64>,
    /// When the current state began, Unix ms (`None` while ok).
    pub since: Option<i64>,
}

/// A state change, as POSTed to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Transition {
    /// The rule.
    pub rule: &'static str,
    /// The new state.
    pub state: AlertState,
    /// The value that caused it.
    pub value: Option<f64>,
    /// The rule's threshold.
    pub threshold: f64,
    /// When, RFC 3339.
    pub at: String,
}

impl Rule {
    /// A rule in state ok.
    pub fn new(name: &'static str, settings: RuleSettings) -> Rule {
        Rule {
            name,
            settings,
            state: AlertState::Ok,
            value: None,
            count: None,
            breach_since: None,
            since: None,
        }
    }

    /// Takes the reading of an evaluation at `now` (Unix ms); returns the
    /// state change, if any.
    pub fn observe(&mut self, reading: Reading, now: i64) -> Option<Transition> {
        let Reading { value, count } = reading;
        self.value = value;
        self.count = Some(count);
        let breaching =
            value.is_some_and(|v| v > self.settings.threshold) && count >= self.settings.min_count;
        let next = if !breaching {
            self.breach_since = None;
            AlertState::Ok
        } else {
            let since = *self.breach_since.get_or_insert(now);
            let for_ms = (self.settings.for_s.max(0.0) * 1000.0) as i64;
            if now.saturating_sub(since) >= for_ms {
                AlertState::Firing
            } else {
                AlertState::Pending
            }
        };
        if next == self.state {
            return None;
        }
        self.state = next;
        self.since = (next != AlertState::Ok).then_some(now);
        Some(Transition {
            rule: self.name,
            state: next,
            value,
            threshold: self.settings.threshold,
            at: tally_proto::format_timestamp(now),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A reading of `value` over a count of 100.
    fn v(value: f64) -> Reading {
        Reading {
            value: Some(value),
            count: 100,
        }
    }

    #[test]
    fn ok_pending_firing_ok() {
        let mut rule = Rule::new(
            DEDUP_RATE_HIGH,
            RuleSettings {
                threshold: 0.1,
                for_s: 2.0,
                min_count: 0,
            },
        );
        assert_eq!(rule.observe(v(0.05), 0), None);
        assert_eq!(rule.observe(Reading::default(), 500), None);
        let t = rule.observe(v(0.2), 1_000).unwrap();
        assert_eq!((t.state, t.value), (AlertState::Pending, Some(0.2)));
        assert_eq!(rule.observe(v(0.3), 2_999), None);
        assert_eq!(rule.since, Some(1_000));
        let t = rule.observe(v(0.3), 3_000).unwrap();
        assert_eq!(t.state, AlertState::Firing);
        assert_eq!(rule.since, Some(3_000));
        assert_eq!(rule.observe(v(0.3), 9_000), None);
        let t = rule.observe(v(0.1), 10_000).unwrap();
        assert_eq!((t.state, rule.since), (AlertState::Ok, None));
        // A breach that ends while pending returns to ok, and the next
        // one waits its full `for_s` again.
        rule.observe(v(0.5), 11_000).unwrap();
        assert_eq!(rule.observe(v(0.0), 12_000).unwrap().state, AlertState::Ok);
        assert_eq!(
            rule.observe(v(0.5), 13_000).unwrap().state,
            AlertState::Pending
        );
        assert_eq!(rule.observe(v(0.5), 14_000), None);
    }

    #[test]
    fn for_zero_fires_at_once() {
        let mut rule = Rule::new(
            COMPLETENESS_GAPS_GROWING,
            RuleSettings {
                threshold: 0.0,
                for_s: 0.0,
                min_count: 0,
            },
        );
        assert_eq!(rule.observe(v(0.0), 1), None);
        assert_eq!(rule.observe(v(1.0), 2).unwrap().state, AlertState::Firing);
    }

    #[test]
    fn below_its_minimum_count_a_rule_does_not_breach() {
        let mut rule = Rule::new(
            PLAN_VIOLATION_RATE_HIGH,
            RuleSettings {
                threshold: 0.05,
                for_s: 0.0,
                min_count: 10,
            },
        );
        let reading = |value, count| Reading {
            value: Some(value),
            count,
        };
        // 9 violations of 10 events: over the threshold, under the count.
        assert_eq!(rule.observe(reading(0.9, 9), 1), None);
        assert_eq!((rule.value, rule.count), (Some(0.9), Some(9)));
        let t = rule.observe(reading(0.5, 10), 2).unwrap();
        assert_eq!((t.state, t.value), (AlertState::Firing, Some(0.5)));
        // Many violations, a small share: ok again.
        let t = rule.observe(reading(0.05, 500), 3).unwrap();
        assert_eq!(t.state, AlertState::Ok);
    }
}
