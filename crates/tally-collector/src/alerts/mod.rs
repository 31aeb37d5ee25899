//! Alerting: rules over the pipeline-health figures, evaluated by the
//! collector's health task (`crate::health::monitor`), shown by
//! `GET /v1/alerts` (admin token) and POSTed to a webhook on every state
//! change.
//!
//! | rule | value | default threshold |
//! |---|---|---|
//! | `stale_client_queues` | installs whose oldest pending event is over 24 h / installs reporting (7 days) | 0.05 |
//! | `dedup_rate_high` | duplicates / (accepted + duplicates) over the rate window | 0.10 |
//! | `rejection_rate_high` | rejected / received over the rate window | 0.01 |
//! | `completeness_gaps_growing` | missing seqs now − one rate window ago | 0 |
//! | `plan_violation_rate_high` | tracking-plan violations (flagged + rejected) / (accepted + rejected) over the rate window, with at least 10 violations | 0.05 |
//!
//! Each rule may also ask for a minimum count behind its value
//! (`min_count`: the duplicates, the rejections, the violations, the stale
//! installs, the missing seqs grown) before it breaches; only the
//! violation rule has one by default.
//!
//! Rates come from the store's cumulative totals sampled at each
//! evaluation (as Prometheus' `increase` does), so they cover every
//! collector sharing the store and exactly the rate window (default one
//! hour) once the collector has run that long; before, they cover its
//! uptime. Each collector evaluates the rules itself, for its own
//! `GET /v1/alerts` and gauges.
//!
//! # One notification per state change across collectors
//!
//! With SQLite (one collector) the health task hands each state change
//! to an in-memory queue and one thread POSTs it ([`webhook`]).
//!
//! Collectors sharing a PostgreSQL store send each notification once:
//! one of them at a time is the **sender**, holding a lease row in the
//! store that it renews at every evaluation ([`outbox::lease`]: three
//! intervals plus the longest attempt). In the same transaction as the
//! renewal, the sender queues in an **outbox** table each state change
//! its rules made, unless the last state queued for that rule already
//! says so; once its rates cover a whole window (it has run for
//! `window_s`), also each rule whose state differs from the last queued.
//! Its sender thread POSTs the outbox in order and records every attempt
//! there. A sender that dies (even mid-retry) stops renewing; once its
//! lease expires, the next collector to evaluate takes it, queues what
//! its own states say changed since the last notification, and delivers
//! what the outbox still owes, continuing the stored attempt count. A
//! collector that stops cleanly ([`crate::health::monitor::Monitor::stop`])
//! lets an attempt in flight end, then releases the lease: the next
//! evaluation of another collector takes it. A restarted collector
//! neither repeats a `firing` already sent nor reports `ok` from its first
//! seconds' rates: what changed while it was down is reported a window
//! later. An attempt starts only while the lease has
//! [`outbox::LEASE_MARGIN`] left, so two collectors never POST at once;
//! the one duplicate left is a delivery whose success the dying sender
//! could not record, sent again by its successor (at least once, never
//! lost). A lease with an outbox was chosen over claiming each
//! transition by an id: the collectors' rate windows start when each
//! started, so their transitions differ in time and value and have no
//! common id; one evaluator's view, handed over with what it queued, does.
//!
//! Settings (`tally.toml`): `[alerts]` `interval_s` (evaluation and gauge
//! refresh, default 15), `window_s` (rate window, default 3600), and a
//! table per rule: `[alerts.dedup_rate_high]` `threshold`, `for_s`,
//! `min_count`.
//! The webhook URL: `--alert-webhook` / `TALLY_ALERT_WEBHOOK` / `alert_webhook`.
//! `docs/alerts.rules.yml` has the same rules for Prometheus.

pub mod outbox;
pub mod rules;
pub mod webhook;

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use rules::{Reading, Rule, RuleSettings, Transition};
use webhook::WebhookStatus;

/// Default evaluation interval: gauges and alerts are at most this stale,
/// and the store answers four small aggregate reads this often.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// Default rate window: the "over the last hour".
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// The alerting settings in force.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    /// How often the health task refreshes gauges and evaluates rules.
    pub interval: Duration,
    /// The window rates are computed over.
    pub window: Duration,
    /// Every rule with its settings, in display order.
    pub rules: Vec<(&'static str, RuleSettings)>,
    /// Where state changes are POSTed.
    pub webhook: Option<String>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            window: DEFAULT_WINDOW,
            rules: rules::defaults().to_vec(),
            webhook: None,
        }
    }
}

/// The rules and their states, shared by the health task and the API.
#[derive(Debug)]
pub struct AlertBoard {
    rules: Mutex<Vec<Rule>>,
    /// The webhook's counters.
    pub webhook: std::sync::Arc<WebhookStatus>,
    configured: bool,
}

impl AlertBoard {
    /// Every rule ok.
    pub fn new(config: &AlertConfig) -> AlertBoard {
        AlertBoard {
            rules: Mutex::new(
                config
                    .rules
                    .iter()
                    .map(|(name, settings)| Rule::new(name, *settings))
                    .collect(),
            ),
            webhook: Default::default(),
            configured: config.webhook.is_some(),
        }
    }

    /// Takes each rule's reading (by name) at `now`; returns the changes.
    /// A rule without a reading reads nothing (no value).
    pub fn evaluate(&self, readings: &[(&str, Reading)], now: i64) -> Vec<Transition> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules
            .iter_mut()
            .filter_map(|rule| {
                let reading = readings
                    .iter()
                    .find(|(name, _)| *name == rule.name)
                    .map(|(_, r)| *r)
                    .unwrap_or_default();
                rule.observe(reading, now)
            })
            .collect()
    }

    /// Every rule's state as a notification would state it: the change
    /// of this evaluation (`changes`) if the rule has one, else its
    /// current state since it began (`now` for ok).
    pub fn notices(&self, changes: &[Transition], now: i64) -> Vec<Transition> {
        self.rules()
            .into_iter()
            .map(|rule| {
                changes
                    .iter()
                    .find(|c| c.rule == rule.name)
                    .cloned()
                    .unwrap_or_else(|| Transition {
                        rule: rule.name,
                        state: rule.state,
                        value: rule.value,
                        threshold: rule.settings.threshold,
                        at: tally_proto::format_timestamp(rule.since.unwrap_or(now)),
                    })
            })
            .collect()
    }

    /// The rules as they stand.
    pub fn rules(&self) -> Vec<Rule> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The body of `GET /v1/alerts`.
    pub fn view(&self) -> AlertsView {
        let rules = self
            .rules()
            .into_iter()
            .map(|r| RuleView {
                name: r.name,
                expr: rules::expression(r.name),
                threshold: r.settings.threshold,
                for_s: r.settings.for_s,
                min_count: r.settings.min_count,
                state: r.state.as_str(),
                value: r.value,
                count: r.count,
                since: r.since.map(tally_proto::format_timestamp),
            })
            .collect();
        let w = &self.webhook;
        AlertsView {
            rules,
            webhook: WebhookView {
                configured: self.configured,
                last_delivery: w
                    .last_delivery
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .map(tally_proto::format_timestamp),
                deliveries: w.deliveries.load(Ordering::Relaxed),
                failures: w.failures.load(Ordering::Relaxed),
                dropped: w.dropped.load(Ordering::Relaxed),
            },
        }
    }
}

/// One rule in `GET /v1/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RuleView {
    /// Its name.
    pub name: &'static str,
    /// What it watches.
    pub expr: &'static str,
    /// Breaches above this.
    pub threshold: f64,
    /// Fires after breaching this long.
    pub for_s: f64,
    /// Breaches only when the count behind the value is at least this.
    pub min_count: u64,
    /// `ok`, `pending` or `firing`.
    pub state: &'static str,
    /// Last value (`null` before the first evaluation or with nothing to count).
    pub value: Option<f64>,
    /// The count behind the last value (the rule's numerator: duplicates,
    /// rejections, violations, stale installs, missing seqs grown; `null`
    /// before the first evaluation).
    pub count: Option<u64>,
    /// When the current state began (`null` while ok).
    pub since: Option<String>,
}

/// The webhook in `GET /v1/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// Whether a URL is set.
    pub configured: bool,
    /// The last successful delivery, RFC 3339.
    pub last_delivery: Option<String>,
    /// State changes delivered.
    pub deliveries: u64,
    /// Failed attempts.
    pub failures: u64,
    /// State changes given up.
    pub dropped: u64,
}

/// `GET /v1/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AlertsView {
    /// Every rule.
    pub rules: Vec<RuleView>,
    /// The webhook.
    pub webhook: WebhookView,
}
