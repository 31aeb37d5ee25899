//! Delivering alert state changes from the store's outbox, for collectors
//! sharing a PostgreSQL store (see [`crate::alerts`] for the design and
//! [`crate::store::outbox`] for the store's side).
//!
//! The health task of every collector calls [`AlertOutbox::alert_round`]
//! each evaluation; the one holding the sender lease wakes its
//! [`SharedWebhook`] thread, which POSTs the outbox's notifications in
//! order, each attempt started only while the lease has
//! [`LEASE_MARGIN`] left, and records every attempt in the store. Retries
//! follow the schedule of [`super::webhook`] ([`MAX_ATTEMPTS`], backoff
//! from [`super::webhook::FIRST_BACKOFF`]); the attempts count is stored,
//! so a collector taking over continues it.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::webhook::{self, WebhookStatus, MAX_ATTEMPTS, REQUEST_TIMEOUT};
use crate::metrics::Metrics;
use crate::store::outbox::Attempt;
use crate::store::Store;

/// Lease left that an attempt needs before it starts: one request's
/// timeout and a second to record it. The lease cannot pass to another
/// collector while an attempt is in flight, so two collectors never POST
/// the same notification at once.
pub const LEASE_MARGIN: Duration = Duration::from_secs(REQUEST_TIMEOUT.as_secs() + 1);

/// The sender lease taken or renewed at each evaluation: [`LEASE_MARGIN`]
/// plus three evaluation intervals, so the sender keeps sending through
/// two missed renewals, and another collector takes over at most this
/// long (plus one interval) after the sender died.
pub fn lease(interval: Duration) -> Duration {
    LEASE_MARGIN.saturating_add(interval.saturating_mul(3))
}

/// A name for this collector as a lease holder: unique among the
/// collectors alive at one time (process id, time, random bits).
pub fn holder_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos:08x}-{random:016x}", std::process::id())
}

/// The sending end: [`SharedWebhook::wake`] after a round that found this
/// collector holding the lease. Dropping it stops the thread before its
/// next attempt (an attempt in flight finishes); [`SharedWebhook::finish`]
/// also waits for that and hands the lease on.
pub struct SharedWebhook {
    wake: SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
    holder: String,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for SharedWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWebhook")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl SharedWebhook {
    /// Starts the sender thread of `holder` for `url`.
    pub fn start(
        url: String,
        holder: String,
        store: Arc<dyn Store>,
        status: Arc<WebhookStatus>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<SharedWebhook> {
        let (wake, woken) = sync_channel(1);
        let sender = Sender {
            url,
            holder: holder.clone(),
            store: Arc::clone(&store),
            status,
            metrics,
            agent: webhook::agent(),
        };
        let thread = std::thread::Builder::new()
            .name("tally-alert-outbox".into())
            .spawn(move || sender.run(woken))?;
        Ok(SharedWebhook {
            wake,
            thread,
            holder,
            store,
        })
    }

    /// A clean stop: the thread ends (after an attempt in flight, at most
    /// [`REQUEST_TIMEOUT`]), then the lease is released, so another
    /// collector takes over at its next evaluation instead of once the
    /// lease expired. Blocks. A notification this sender queued but had not
    /// delivered stays in the outbox for the next sender.
    pub fn finish(self) {
        let SharedWebhook {
            wake,
            thread,
            holder,
            store,
        } = self;
        drop(wake);
        if thread.join().is_err() {
            tracing::warn!("the alert outbox sender panicked");
        }
        let Some(outbox) = store.alert_outbox() else {
            return;
        };
        match outbox.release_alert_lease(&holder) {
            Ok(true) => tracing::info!("alert sender lease released"),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                error = %e,
                "cannot release the alert sender lease; it expires on its own"
            ),
        }
    }

    /// This collector's name as a lease holder.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Asks the thread to send what the outbox holds; never blocks.
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }
}

struct Sender {
    url: String,
    holder: String,
    store: Arc<dyn Store>,
    status: Arc<WebhookStatus>,
    metrics: Arc<Metrics>,
    agent: ureq::Agent,
}

impl Sender {
    fn run(self, woken: Receiver<()>) {
        while woken.recv().is_ok() {
            if !self.drain(&woken) {
                return;
            }
        }
    }

    /// Sends the outbox's notifications while this collector holds the
    /// lease; returns false when the collector is stopping.
    fn drain(&self, woken: &Receiver<()>) -> bool {
        let Some(outbox) = self.store.alert_outbox() else {
            return true;
        };
        loop {
            if let Err(TryRecvError::Disconnected) = woken.try_recv() {
                return false;
            }
            let next = match outbox.next_notification(&self.holder, LEASE_MARGIN) {
                Ok(Some(next)) => next,
                // Nothing owed, or another collector is the sender.
                Ok(None) => return true,
                Err(e) => {
                    tracing::warn!(error = %e, "alert outbox: the store did not answer");
                    return true;
                }
            };
            let attempt = next.attempts.saturating_add(1);
            let ok = webhook::post(
                &self.agent,
                &self.url,
                next.body.as_bytes(),
                &next.rule,
                attempt,
            );
            let recorded = outbox.notification_attempted(
                next.id,
                if ok {
                    Attempt::Delivered
                } else {
                    Attempt::Failed {
                        max_attempts: MAX_ATTEMPTS,
                    }
                },
            );
            if ok {
                webhook::delivered(&self.status, &self.metrics);
            } else {
                webhook::failed(&self.status, &self.metrics);
            }
            match recorded {
                Ok(true) if !ok => webhook::given_up(&self.status, &self.metrics, &next.rule),
                Ok(true) => {}
                Ok(false) => {
                    if !pause(woken, webhook::backoff_after(attempt)) {
                        return false;
                    }
                }
                Err(e) => {
                    // The next round retries; a delivery not recorded is
                    // sent again then (at least once, never lost).
                    tracing::warn!(
                        rule = next.rule,
                        error = %e,
                        "alert outbox: cannot record an attempt"
                    );
                    return true;
                }
            }
        }
    }
}

/// Sleeps `d`; returns false as soon as the sending end is dropped.
fn pause(woken: &Receiver<()>, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return true;
        };
        match woken.recv_timeout(left) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_outlasts_an_attempt_and_three_intervals() {
        let interval = Duration::from_secs(15);
        assert_eq!(lease(interval), Duration::from_secs(56));
        assert!(lease(Duration::ZERO) > REQUEST_TIMEOUT);
        assert_ne!(holder_name(), holder_name());
    }

    #[test]
    fn a_pause_ends_when_the_collector_stops() {
        let (wake, woken) = sync_channel(1);
        let started = Instant::now();
        wake.try_send(()).ok();
        assert!(pause(&woken, Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
        drop(wake);
        let started = Instant::now();
        assert!(!pause(&woken, Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
