//! What the tracker's threads share: the configuration, the clock, the
//! log, the SDK state and its file, the counters, the device's state, and
//! the signals between the threads.
//!
//! | member | written by | read by |
//! |---|---|---|
//! | consent | `set_consent` (caller) | capture, pipeline, uploader |
//! | SDK state (under its lock) | pipeline, uploader, `set_consent` | pipeline, uploader |
//! | `durable_seq` | pipeline, after each flush | uploader: sends nothing above it |
//! | `sync_requested`, `stopping` | the API | uploader |
//! | device | the app's network and power callbacks | uploader |
//!
//! Invariants: `durable_seq` only grows; the SDK state is saved under its
//! lock, so two saves never interleave and the file holds the last one; a
//! failed save is counted in `persistence_errors` and made again at the
//! next save (the state in memory stays the truth). Nothing here hands
//! messages to the pipeline: that is the capture path's
//! ([`crate::capture`]), which the uploader reaches only through
//! [`crate::upload::reports::Emitter`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::{Clock, Wake};
use crate::config::Config;
use crate::health::{Health, LogFigures, Metrics};
use crate::install_state::{State, StateError, StateFile};
use crate::log::Log;
use crate::mobile::Device;
use crate::pipeline::privacy::Consent;

/// What the tracker's threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// The consent, as [`consent_code`] stores it: read on every call
    /// without a lock.
    consent: AtomicU8,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    pub(crate) log: Log,
    state: Mutex<State>,
    state_file: StateFile,
    /// Wakes the uploader (durable records, a call, a consent or network
    /// change, shutdown).
    pub(crate) upload_wake: Wake,
    /// Highest seq a flush made durable: the uploader sends nothing above.
    pub(crate) durable_seq: AtomicU64,
    pub(crate) sync_requested: AtomicBool,
    pub(crate) stopping: AtomicBool,
    pub(crate) install_id: String,
    /// The network and power state the app reports.
    pub(crate) device: Device,
}

fn consent_code(c: Consent) -> u8 {
    match c {
        Consent::Pending => 0,
        Consent::Granted => 1,
        Consent::Denied => 2,
    }
}

impl Shared {
    /// What the threads of a tracker start from: `state` as read from
    /// `state_file`, and `durable_seq`, the highest seq that may already
    /// be durable (one below the next seq).
    pub(crate) fn new(
        config: Config,
        log: Log,
        state: State,
        state_file: StateFile,
        durable_seq: u64,
    ) -> Self {
        Self {
            consent: AtomicU8::new(consent_code(state.consent)),
            clock: Arc::clone(&config.clock),
            metrics: Metrics::restored(&state.totals),
            log,
            install_id: state.identity.install_id.clone(),
            durable_seq: AtomicU64::new(durable_seq),
            state: Mutex::new(state),
            state_file,
            upload_wake: Wake::default(),
            sync_requested: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            device: Device::default(),
            config,
        }
    }

    pub(crate) fn consent(&self) -> Consent {
        match self.consent.load(Ordering::Acquire) {
            1 => Consent::Granted,
            2 => Consent::Denied,
            _ => Consent::Pending,
        }
    }

    /// Sets the consent every thread reads from now on, and the one the
    /// state saves (the state is saved at once; a failure is counted).
    pub(crate) fn set_consent(&self, consent: Consent) {
        self.consent.store(consent_code(consent), Ordering::Release);
        let mut state = self.lock_state();
        state.consent = consent;
        self.save_state(&state);
    }

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves the state; a failure is counted, and retried at the next save.
    pub(crate) fn save_state(&self, state: &State) {
        if self.try_save_state(state).is_err() {
            self.metrics
                .persistence_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Saves the state with the health counters as they are now, saying
    /// why it could not.
    pub(crate) fn try_save_state(&self, state: &State) -> Result<(), StateError> {
        let mut state = state.clone();
        state.totals = self.metrics.totals(self.log.stats().persistence_errors);
        self.state_file.save(&state)
    }

    /// Whether device-side drops wait to be reported to the collector (or
    /// for the collector's answer to their report).
    pub(crate) fn has_unreported_drops(&self) -> bool {
        let ledger = self.log.drop_ledger();
        let state = self.lock_state();
        !state.unreported_drops.is_empty()
            || !state.reports_in_flight.is_empty()
            || ledger.iter().any(|r| {
                !state
                    .unreported_ledger(&r.reason, r.first_seq, r.last_seq)
                    .is_empty()
            })
    }

    /// The health report of the tracker.
    pub(crate) fn health(&self) -> Health {
        let stats = self.log.stats();
        let figures = LogFigures {
            pending: stats.pending_events,
            pending_bytes: stats.pending_bytes,
            oldest_pending_age_s: stats.oldest_pending_age.map_or(0.0, |a| a.as_secs_f64()),
            corrupt: stats.corrupt,
            rejected: stats.rejected,
            dropped: stats.dropped,
            persistence_errors: stats.persistence_errors,
        };
        self.metrics
            .report(figures, self.install_id.clone(), self.consent())
    }
}
