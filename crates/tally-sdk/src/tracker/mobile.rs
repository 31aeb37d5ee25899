//! The tracker's API for a phone: the network and low-power mode the app
//! reports, and background syncs within a deadline the OS sets. What these
//! mean for the SDK's threads is told in [`crate::mobile`], which holds the
//! device's state the uploader reads.
//!
//! Invariants: every call here only records what the app reports and
//! wakes the uploader; `run_background_sync` returns by its deadline
//! (give or take one poll) and leaves the uploader on its own schedule.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::mobile::{BackgroundOutcome, BackgroundState, BackgroundSync};
use crate::pipeline::privacy::Consent;
use crate::shared::Shared;

use super::Tracker;

/// How often `run_background_sync` looks at its progress: a small fraction
/// of a batch round trip, and of the shortest background window an OS
/// grants (iOS gives a refresh task about 30 s).
const BACKGROUND_POLL: Duration = Duration::from_millis(10);

/// Messages the collector answered for so far (accepted, duplicate,
/// rejected).
fn answered(shared: &Shared) -> u64 {
    let h = shared.health();
    h.accepted + h.duplicate + h.rejected.values().sum::<u64>()
}

impl Tracker {
    /// From the app's connectivity callback: whether the device is online,
    /// and whether the network is metered. Offline, nothing is attempted;
    /// going online (or to an unmetered network) cancels the backoff wait
    /// and syncs at once. Cheap; call it on every change.
    pub fn set_network(&self, online: bool, metered: bool) {
        self.shared.device.set_network(online, metered);
        self.shared.upload_wake.notify();
    }

    /// Low-power mode (Android power saver, iOS Low Power Mode): uploads
    /// are batched over [`crate::LOW_POWER_HOLD_MS`] instead of following every
    /// group commit.
    pub fn set_low_power(&self, on: bool) {
        self.shared.device.set_low_power(on);
        self.shared.upload_wake.notify();
    }

    /// For a background task the OS granted `within` (Android WorkManager,
    /// iOS BGTaskScheduler): flushes, sends what fits before the deadline
    /// (a batch is started only if twice the recent p99 round trip ends in
    /// time), and returns by the deadline with what was sent and
    /// what is left. Blocks the calling thread, which must not be the UI
    /// thread. Consent, the network and the metered policy apply.
    pub fn run_background_sync(&self, within: Duration) -> BackgroundSync {
        let shared = &self.shared;
        let device = &shared.device;
        let until = Instant::now() + within;
        let before = answered(shared);
        let flushed = self.flush().is_ok();
        let within_ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        device.background_start(shared.clock.mono_ms().saturating_add(within_ms));
        shared.upload_wake.notify();
        let outcome = loop {
            let pending = shared.log.stats().pending_events;
            if flushed && pending == 0 && !shared.has_unreported_drops() {
                break BackgroundOutcome::Done;
            }
            if device.offline() {
                break BackgroundOutcome::Offline;
            }
            if shared.consent() != Consent::Granted
                || shared.metrics.auth_failed.load(Ordering::SeqCst)
            {
                break BackgroundOutcome::Blocked;
            }
            match device.background_state() {
                BackgroundState::Idle if pending == 0 => break BackgroundOutcome::Done,
                BackgroundState::Idle => break BackgroundOutcome::Held,
                BackgroundState::OutOfTime => break BackgroundOutcome::DeadlineReached,
                BackgroundState::Failed => break BackgroundOutcome::Failed,
                BackgroundState::Running => {}
            }
            if Instant::now() >= until {
                break BackgroundOutcome::DeadlineReached;
            }
            std::thread::sleep(BACKGROUND_POLL);
        };
        device.background_stop();
        shared.upload_wake.notify();
        BackgroundSync {
            sent: answered(shared).saturating_sub(before),
            remaining: shared.log.stats().pending_events,
            outcome,
        }
    }
}
