//! The health task: every `[alerts] interval_s` it adds this collector's
//! uncounted requests to the store, reads the pipeline figures once,
//! refreshes the Prometheus gauges from them, and evaluates the alert
//! rules (see [`crate::alerts`]); with a webhook on a shared store it
//! then takes its turn at the alert outbox (renewing or taking the sender
//! lease, queueing what changed). A scrape of `/metrics` never queries
//! the store. Once an hour it also deletes health figures older than
//! [`HEALTH_RETENTION_MS`] (90 days).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::alerts::outbox::{self, SharedWebhook};
use crate::alerts::rules::{
    Reading, Transition, COMPLETENESS_GAPS_GROWING, DEDUP_RATE_HIGH, PLAN_VIOLATION_RATE_HIGH,
    REJECTION_RATE_HIGH, STALE_CLIENT_QUEUES,
};
use crate::alerts::webhook::Webhook;
use crate::clock;
use crate::health::{ratio, HealthState};
use crate::metrics::Metrics;
use crate::metrics::WindowRates;
use crate::store::health::{HEALTH_RETENTION_MS, HOUR_MS};
use crate::store::outbox::RuleNotice;
use crate::store::Store;
use crate::store::{HealthTotals, PipelineFigures};

/// Store totals and missing seqs at one evaluation.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: i64,
    totals: HealthTotals,
    missing: u64,
}

/// The samples of the last rate window, oldest first.
#[derive(Debug)]
struct Samples {
    window_ms: i64,
    samples: VecDeque<Sample>,
}

impl Samples {
    /// Adds `now`'s sample and returns the baseline to compare it with:
    /// the newest sample at least one window old, else the oldest kept.
    fn push(&mut self, sample: Sample) -> Sample {
        let start = sample.at.saturating_sub(self.window_ms);
        while self.samples.len() >= 2 && self.samples[1].at <= start {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        self.samples[0]
    }
}

/// The rates between `base` and `now`.
fn rates(base: &HealthTotals, now: &HealthTotals) -> WindowRates {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let batches = d(base.batches, now.batches);
    let ok = d(base.batches_ok, now.batches_ok);
    let accepted = d(base.accepted, now.accepted);
    let duplicate = d(base.duplicate, now.duplicate);
    let rejected = d(base.rejected, now.rejected);
    WindowRates {
        batch_success: ratio(ok, batches),
        dedup: ratio(duplicate, accepted + duplicate),
        rejection: ratio(rejected, accepted + duplicate + rejected),
    }
}

/// Each rule's reading: its value, and the count behind it, from the
/// figures now and the baseline sample a window before. The violation
/// rate divides the plan violations (flagged or rejected) by the messages
/// accepted or rejected (duplicates are neither judged again nor counted
/// again).
fn readings(base: &Sample, figures: &PipelineFigures) -> [(&'static str, Reading); 5] {
    let (then, now) = (&base.totals, &figures.totals);
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let rates = rates(then, now);
    let fleet = &figures.fleet;
    let rejected = d(then.rejected, now.rejected);
    let violations = d(then.plan_violations, now.plan_violations);
    let judged = d(then.accepted, now.accepted) + rejected;
    let missing = figures.completeness.missing as f64 - base.missing as f64;
    let reading = |value, count| Reading { value, count };
    [
        (
            STALE_CLIENT_QUEUES,
            reading(
                ratio(
                    fleet.installs_oldest_pending_over_24h,
                    fleet.installs_reporting,
                ),
                fleet.installs_oldest_pending_over_24h,
            ),
        ),
        (
            DEDUP_RATE_HIGH,
            reading(rates.dedup, d(then.duplicate, now.duplicate)),
        ),
        (REJECTION_RATE_HIGH, reading(rates.rejection, rejected)),
        (
            COMPLETENESS_GAPS_GROWING,
            reading(Some(missing), missing.max(0.0) as u64),
        ),
        (
            PLAN_VIOLATION_RATE_HIGH,
            reading(ratio(violations, judged), violations),
        ),
    ]
}

/// What the health task works on: the store, the health state it shares
/// with the HTTP layer, and the metrics it refreshes (the API builds it
/// from its state).
#[derive(Clone)]
pub struct Monitored {
    /// The store the figures are read from.
    pub store: Arc<dyn Store>,
    /// Uncounted requests, the alert rules and their settings.
    pub health: Arc<HealthState>,
    /// The gauges refreshed from the figures.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Monitored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitored").finish_non_exhaustive()
    }
}

/// Starts the health task on the current runtime; it runs until
/// [`Monitor::stop`] or until the runtime shuts down.
pub fn spawn(state: impl Into<Monitored>) -> Monitor {
    let state = state.into();
    let stop = Arc::new(Notify::new());
    Monitor {
        task: tokio::spawn(run(state, Arc::clone(&stop))),
        stop,
    }
}

/// The running health task.
#[derive(Debug)]
pub struct Monitor {
    task: tokio::task::JoinHandle<()>,
    stop: Arc<Notify>,
}

impl Monitor {
    /// Stops the task cleanly, for a collector that is shutting down: a
    /// webhook attempt in flight finishes, and a sender lease this
    /// collector holds is released, so another collector sharing the
    /// store sends the next notification at its next evaluation rather
    /// than once the lease expired (about a minute).
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }

    /// Ends the task where it is, as if the process died: nothing is
    /// released (the lease expires on its own).
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Where state changes go.
enum Delivery {
    /// No webhook.
    None,
    /// This collector's own queue (a store of one collector).
    Local(Webhook),
    /// The store's outbox, sent by the lease holder (a shared store).
    Shared(SharedWebhook),
}

fn delivery(state: &Monitored) -> Delivery {
    let Some(url) = state.health.config.webhook.clone() else {
        return Delivery::None;
    };
    let status = state.health.alerts.webhook.clone();
    let started = if state.store.alert_outbox().is_some() {
        SharedWebhook::start(
            url,
            outbox::holder_name(),
            Arc::clone(&state.store),
            status,
            state.metrics.clone(),
        )
        .map(Delivery::Shared)
    } else {
        Webhook::start(url, status, state.metrics.clone()).map(Delivery::Local)
    };
    started.unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot start the alert webhook sender");
        Delivery::None
    })
}

async fn run(state: Monitored, stop: Arc<Notify>) {
    let config = state.health.config.clone();
    let delivery = delivery(&state);
    let mut samples = Samples {
        window_ms: i64::try_from(config.window.as_millis()).unwrap_or(i64::MAX),
        samples: VecDeque::new(),
    };
    for (rule, _) in &config.rules {
        state.metrics.alert_state(rule, 0);
    }
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_at = i64::MIN;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.notified() => break,
        }
        let now = clock::now_ms();
        if now.saturating_sub(pruned_at) >= PRUNE_EVERY_MS {
            pruned_at = now;
            prune(&state, now.saturating_sub(HEALTH_RETENTION_MS)).await;
        }
        let figures = match read(&state, now, samples.window_ms).await {
            Some(f) => f,
            None => {
                state.metrics.health_refresh_failed();
                continue;
            }
        };
        let base = samples.push(Sample {
            at: now,
            totals: figures.totals,
            missing: figures.completeness.missing,
        });
        // The rates cover a whole window (not only this collector's
        // uptime) once the baseline is a window old.
        let warm = now.saturating_sub(base.at) >= samples.window_ms;
        let rates = rates(&base.totals, &figures.totals);
        state.metrics.set_pipeline(&figures, &rates);
        let values = readings(&base, &figures);
        let changes = state.health.alerts.evaluate(&values, now);
        for change in &changes {
            state.metrics.alert_state(change.rule, change.state.level());
            tracing::info!(
                rule = change.rule,
                state = change.state.as_str(),
                value = change.value,
                threshold = change.threshold,
                "alert state changed"
            );
        }
        match &delivery {
            Delivery::None => {}
            Delivery::Local(webhook) => {
                for change in changes {
                    webhook.send(change);
                }
            }
            Delivery::Shared(sender) => {
                // Changes seen here are news unless already queued;
                // what changed while no collector was sending is made up
                // only from rates over a whole window, never from a
                // restarted collector's first seconds.
                let notices = if warm {
                    state.health.alerts.notices(&changes, now)
                } else {
                    changes
                };
                if round(
                    &state,
                    sender.holder(),
                    outbox::lease(config.interval),
                    notices,
                )
                .await
                {
                    sender.wake();
                }
            }
        }
    }
    if let Delivery::Shared(sender) = delivery {
        if tokio::task::spawn_blocking(move || sender.finish())
            .await
            .is_err()
        {
            tracing::warn!("the alert sender did not stop cleanly");
        }
    }
}

/// This evaluation's turn at the shared outbox (see [`crate::alerts`]):
/// whether this collector is the sender.
async fn round(state: &Monitored, holder: &str, lease: Duration, notices: Vec<Transition>) -> bool {
    let store = Arc::clone(&state.store);
    let holder = holder.to_owned();
    let round = tokio::task::spawn_blocking(move || {
        let bodies = notices
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| crate::store::StoreError::Backend(format!("alert notice: {e}")))?;
        let rules: Vec<RuleNotice<'_>> = notices
            .iter()
            .zip(&bodies)
            .map(|(n, body)| RuleNotice {
                rule: n.rule,
                state: n.state.as_str(),
                body,
            })
            .collect();
        match store.alert_outbox() {
            Some(outbox) => outbox.alert_round(&holder, lease, &rules),
            None => Ok(false),
        }
    })
    .await;
    match round {
        Ok(Ok(sender)) => sender,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "alert outbox: the store did not answer");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "alert outbox task failed");
            false
        }
    }
}

/// How often old health figures are deleted: hourly, so each pass
/// deletes about one hour of rows.
const PRUNE_EVERY_MS: i64 = HOUR_MS;

/// Deletes the health figures of the hours before `before`.
async fn prune(state: &Monitored, before: i64) {
    let store = Arc::clone(&state.store);
    match tokio::task::spawn_blocking(move || store.prune_health(before)).await {
        Ok(Ok(rows)) => tracing::debug!(rows, "old health figures deleted"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot delete old health figures"),
        Err(e) => tracing::error!(error = %e, "health pruning task failed"),
    }
}

/// Flushes this collector's request counts and reads the figures of the
/// rate window; `None` (logged) when the store does not answer.
async fn read(state: &Monitored, now: i64, window_ms: i64) -> Option<PipelineFigures> {
    let store = Arc::clone(&state.store);
    let health = Arc::clone(&state.health);
    let read = tokio::task::spawn_blocking(move || {
        if let Err(e) = health.batches.flush(store.as_ref()) {
            tracing::warn!(error = %e, "cannot add request counts to the store yet");
        }
        store.pipeline_health(now.saturating_sub(window_ms), now, now)
    })
    .await;
    match read {
        Ok(Ok(figures)) => Some(figures),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health refresh: the store did not answer");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "health refresh task failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, accepted: u64, duplicate: u64) -> Sample {
        Sample {
            at,
            totals: HealthTotals {
                accepted,
                duplicate,
                ..HealthTotals::default()
            },
            missing: 0,
        }
    }

    #[test]
    fn the_baseline_is_the_newest_sample_a_window_old() {
        let mut s = Samples {
            window_ms: 1_000,
            samples: VecDeque::new(),
        };
        assert_eq!(s.push(sample(0, 0, 0)).at, 0);
        assert_eq!(s.push(sample(600, 10, 0)).at, 0);
        assert_eq!(s.push(sample(1_000, 10, 10)).at, 0);
        let base = s.push(sample(1_700, 20, 10));
        assert_eq!(base.at, 600);
        let r = rates(&base.totals, &sample(1_700, 20, 10).totals);
        assert_eq!(r.dedup, Some(0.5));
        assert_eq!(r.rejection, Some(0.0));
        assert_eq!(r.batch_success, None);
    }

    #[test]
    fn the_violation_rate_divides_by_what_was_accepted_or_rejected() {
        let base = Sample {
            at: 0,
            totals: HealthTotals {
                accepted: 100,
                duplicate: 7,
                rejected: 4,
                plan_violations: 9,
                ..HealthTotals::default()
            },
            missing: 0,
        };
        // 10 accepted, 5 duplicates and 2 rejected since; 3 violations.
        let figures = PipelineFigures {
            totals: HealthTotals {
                accepted: 110,
                duplicate: 12,
                rejected: 6,
                plan_violations: 12,
                ..HealthTotals::default()
            },
            ..PipelineFigures::default()
        };
        let read = readings(&base, &figures);
        let (name, plan) = read[4];
        assert_eq!(name, PLAN_VIOLATION_RATE_HIGH);
        assert_eq!(
            plan,
            Reading {
                value: Some(3.0 / 12.0),
                count: 3
            }
        );
        assert_eq!(read[1].1.count, 5, "duplicates");
        assert_eq!(read[2].1.count, 2, "rejections");
        // Nothing received: nothing to divide by.
        let idle = readings(
            &base,
            &PipelineFigures {
                totals: base.totals,
                ..PipelineFigures::default()
            },
        );
        assert_eq!(
            idle[4].1,
            Reading {
                value: None,
                count: 0
            }
        );
    }
}
