//! The health task: every `[alerts] interval_s` it adds this collector's
//! uncounted requests to the store, reads the pipeline figures once,
//! refreshes the Prometheus gauges from them, and evaluates the alert
//! rules (see [`crate::alerts`]). A scrape of `/metrics` never queries the
//! store.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::alerts::rules::{
    COMPLETENESS_GAPS_GROWING, DEDUP_RATE_HIGH, REJECTION_RATE_HIGH, STALE_CLIENT_QUEUES,
};
use crate::alerts::webhook::Webhook;
use crate::app::AppState;
use crate::health::ratio;
use crate::ingest::clock;
use crate::metrics::WindowRates;
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

/// Starts the health task on the current runtime; it runs until the
/// runtime shuts down.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(state))
}

async fn run(state: AppState) {
    let config = state.health.config.clone();
    let webhook = config.webhook.clone().and_then(|url| {
        Webhook::start(
            url,
            state.health.alerts.webhook.clone(),
            state.metrics.clone(),
        )
        .map_err(|e| tracing::error!(error = %e, "cannot start the alert webhook sender"))
        .ok()
    });
    let mut samples = Samples {
        window_ms: i64::try_from(config.window.as_millis()).unwrap_or(i64::MAX),
        samples: VecDeque::new(),
    };
    for (rule, _) in &config.rules {
        state.metrics.alert_state(rule, 0);
    }
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = clock::now_ms();
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
        let rates = rates(&base.totals, &figures.totals);
        state.metrics.set_pipeline(&figures, &rates);
        let fleet = &figures.fleet;
        let values = [
            (
                STALE_CLIENT_QUEUES,
                ratio(
                    fleet.installs_oldest_pending_over_24h,
                    fleet.installs_reporting,
                ),
            ),
            (DEDUP_RATE_HIGH, rates.dedup),
            (REJECTION_RATE_HIGH, rates.rejection),
            (
                COMPLETENESS_GAPS_GROWING,
                Some(figures.completeness.missing as f64 - base.missing as f64),
            ),
        ];
        for change in state.health.alerts.evaluate(&values, now) {
            state.metrics.alert_state(change.rule, change.state.level());
            tracing::info!(
                rule = change.rule,
                state = change.state.as_str(),
                value = change.value,
                threshold = change.threshold,
                "alert state changed"
            );
            if let Some(webhook) = &webhook {
                webhook.send(change);
            }
        }
    }
}

/// Flushes this collector's request counts and reads the figures of the
/// rate window; `None` (logged) when the store does not answer.
async fn read(state: &AppState, now: i64, window_ms: i64) -> Option<PipelineFigures> {
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
}
