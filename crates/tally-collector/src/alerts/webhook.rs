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
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(REQUEST_TIMEOUT))
                .build()
                .into(),
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
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            let outcome = self
                .agent
                .post(&self.url)
                .header("content-type", "application/json")
                .send(&body[..]);
            match outcome {
                Ok(response) if response.status().is_success() => {
                    self.status.deliveries.fetch_add(1, Ordering::Relaxed);
                    *self
                        .status
                        .last_delivery
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(crate::ingest::clock::now_ms());
                    self.metrics.webhook_delivered();
                    return;
                }
                Ok(response) => {
                    tracing::warn!(
                        rule = change.rule,
                        attempt,
                        status = response.status().as_u16(),
                        "alert webhook refused a state change"
                    );
                }
                Err(e) => {
                    tracing::warn!(rule = change.rule, attempt, error = %e, "alert webhook unreachable");
                }
            }
            self.status.failures.fetch_add(1, Ordering::Relaxed);
            self.metrics.webhook_failed();
            if attempt < MAX_ATTEMPTS {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        self.status.dropped.fetch_add(1, Ordering::Relaxed);
        self.metrics.webhook_dropped();
        tracing::error!(
            rule = change.rule,
            "alert webhook: state change given up after every attempt"
        );
    }
}
