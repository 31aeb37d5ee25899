//! Delivering alert state changes to the webhook (`--alert-webhook URL`).
//!
//! The health task hands each [`Transition`] to [`Webhook::send`], which
//! never blocks: the queue holds [`QUEUE_CAPACITY`] changes and a change
//! that finds it full is dropped and counted. One sender thread POSTs them
//! in order as JSON `{"rule", "state", "value", "threshold", "at"}`; a
//! change that fails (no answer within [`REQUEST_TIMEOUT`], or a status
//! other than 2xx) is retried after a capped exponential backoff
//! ([`FIRST_BACKOFF`] doubling to [`MAX_BACKOFF`]), at most
//! [`MAX_ATTEMPTS`] times. Every failed attempt is counted
//! (`GET /v1/alerts` → `webhook.failures`, `tally_alert_webhook_failures_total`).
//!
//! The URL may hold a secret (a token in the path), so it is never logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::rules::Transition;
use crate::metrics::Metrics;

/// State changes waiting for delivery at most: far more than four rules
/// produce while a receiver is down for the whole retry schedule.
pub const QUEUE_CAPACITY: usize = 256;

/// Attempts per state change, the first included.
pub const MAX_ATTEMPTS: u32 = 8;

/// Wait after the first failed attempt; it doubles after each failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Longest wait between attempts: a receiver down for minutes still gets
/// the change within about a minute of its return.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Longest wait for one answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What `GET /v1/alerts` shows of the webhook.
#[derive(Debug, Default)]
pub struct WebhookStatus {
    /// State changes delivered.
    pub deliveries: AtomicU64,
    /// Failed attempts.
    pub failures: AtomicU64,
    /// State changes given up: queue full, or every attempt failed.
    pub dropped: AtomicU64,
    /// When the last delivery succeeded, Unix ms.
    pub last_delivery: Mutex<Option<i64>>,
}

/// The sending end; dropping it stops the sender thread once the queue
/// is empty.
#[derive(Debug)]
pub struct Webhook {
    queue: SyncSender<Transition>,
    status: Arc<WebhookStatus>,
    metrics: Arc<Metrics>,
}

impl Webhook {
    /// Starts the sender thread for `url`.
    pub fn start(
        url: String,
        status: Arc<WebhookStatus>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Webhook> {
        let (queue, changes) = sync_channel(QUEUE_CAPACITY);
        let sender = Sender {
            url,
            status: status.clone(),
            metrics: metrics.clone(),
            agent: agent(),
        };
        std::thread::Builder::new()
            .name("tally-alert-webhook".into())
            .spawn(move || sender.run(changes))?;
        Ok(Webhook {
            queue,
            status,
            metrics,
        })
    }

    /// Queues a state change for delivery; never blocks.
    pub fn send(&self, change: Transition) {
        match self.queue.try_send(change) {
            Ok(()) => {}
            Err(TrySendError::Full(change)) => {
                self.status.dropped.fetch_add(1, Ordering::Relaxed);
                self.metrics.webhook_dropped();
                tracing::warn!(
                    rule = change.rule,
                    "alert webhook queue full: state change dropped"
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                self.status.dropped.fetch_add(1, Ordering::Relaxed);
                self.metrics.webhook_dropped();
            }
        }
    }
}

struct Sender {
    url: String,
    status: Arc<WebhookStatus>,
    metrics: Arc<Metrics>,
    agent: ureq::Agent,
}

impl Sender {
    fn run(self, changes: Receiver<Transition>) {
        for change in changes {
            self.deliver(&change);
        }
    }

    fn deliver(&self, change: &Transition) {
        let Ok(body) = serde_json::to_vec(change) else {
            return;
        };
        for attempt in 1..=MAX_ATTEMPTS {
            if post(&self.agent, &self.url, &body, change.rule, attempt) {
                delivered(&self.status, &self.metrics);
                return;
            }
            failed(&self.status, &self.metrics);
            if attempt < MAX_ATTEMPTS {
                std::thread::sleep(backoff_after(attempt));
            }
        }
        given_up(&self.status, &self.metrics, change.rule);
    }
}

/// The HTTP client of a sender: statuses are answers, not errors, and one
/// attempt lasts at most [`REQUEST_TIMEOUT`].
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into()
}

/// One attempt: POSTs `body` (JSON) to `url`; whether it was answered
/// 2xx. A failure is logged with the rule and attempt number (never the
/// URL, which may hold a token).
pub(crate) fn post(agent: &ureq::Agent, url: &str, body: &[u8], rule: &str, attempt: u32) -> bool {
    match agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
    {
        Ok(response) if response.status().is_success() => true,
        Ok(response) => {
            tracing::warn!(
                rule,
                attempt,
                status = response.status().as_u16(),
                "alert webhook refused a state change"
            );
            false
        }
        Err(e) => {
            tracing::warn!(rule, attempt, error = %e, "alert webhook unreachable");
            false
        }
    }
}

/// The wait after failed attempt number `attempt` (1-based):
/// [`FIRST_BACKOFF`] doubling, at most [`MAX_BACKOFF`].
pub(crate) fn backoff_after(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// Counts a delivery.
pub(crate) fn delivered(status: &WebhookStatus, metrics: &Metrics) {
    status.deliveries.fetch_add(1, Ordering::Relaxed);
    *status
        .last_delivery
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(crate::clock::now_ms());
    metrics.webhook_delivered();
}

/// Counts a failed attempt.
pub(crate) fn failed(status: &WebhookStatus, metrics: &Metrics) {
    status.failures.fetch_add(1, Ordering::Relaxed);
    metrics.webhook_failed();
}

/// Counts and logs a state change given up after its last attempt.
pub(crate) fn given_up(status: &WebhookStatus, metrics: &Metrics, rule: &str) {
    status.dropped.fetch_add(1, Ordering::Relaxed);
    metrics.webhook_dropped();
    tracing::error!(
        rule,
        "alert webhook: state change given up after every attempt"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::AlertState;

    fn change(n: usize) -> Transition {
        Transition {
            rule: "dedup_rate_high",
            state: AlertState::Firing,
            value: Some(n as f64),
            threshold: 0.1,
            at: tally_proto::format_timestamp(0),
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        assert_eq!(backoff_after(1), FIRST_BACKOFF);
        assert_eq!(backoff_after(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff_after(7), Duration::from_secs(32));
        assert_eq!(backoff_after(8), MAX_BACKOFF);
        assert_eq!(backoff_after(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking_and_failures_are_counted() {
        // Nothing listens on the discard port: every attempt is refused,
        // so the sender sits in its backoff while the queue fills.
        let status = Arc::new(WebhookStatus::default());
        let metrics = Arc::new(Metrics::new());
        let webhook = Webhook::start(
            "http://127.0.0.1:9/hook".into(),
            status.clone(),
            metrics.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let started = std::time::Instant::now();
        for n in 0..QUEUE_CAPACITY + 2 {
            webhook.send(change(n));
        }
        // Never blocked: 258 sends take no retry's time.
        assert!(started.elapsed() < FIRST_BACKOFF, "{:?}", started.elapsed());
        let dropped = status.dropped.load(Ordering::Relaxed);
        // The sender took at most one change off the queue.
        assert!((1..=2).contains(&dropped), "{dropped}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while status.failures.load(Ordering::Relaxed) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no failed attempt counted"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(status.deliveries.load(Ordering::Relaxed), 0);
        let text = metrics.encode();
        assert!(
            text.contains(&format!("tally_alert_webhook_dropped_total {dropped}")),
            "{text}"
        );
    }
}
