//! What a phone needs from the SDK: the network as the app's connectivity
//! callback reports it, a low-power mode, and background syncs that fit a
//! deadline the OS sets (Android WorkManager, iOS BGTaskScheduler).
//!
//! ## No idle wake-ups
//!
//! A phone's battery pays for every timer that wakes a thread. With
//! nothing pending and nothing due, every SDK thread sleeps until an
//! event, a call or a timer it needs (a group commit of records waiting, a
//! backoff, a health beacon, the log's age bound on a pending record):
//!
//! | thread | sleeps until |
//! |---|---|
//! | pipeline | a message or command; the group commit or state save it owes |
//! | log writer | an append or command; the sync it owes; housekeeping after acks or when a pending record expires |
//! | uploader | durable records, a call, a network or consent change; the backoff, the low-power hold, the next beacon |
//!
//! Offline, or with the uploader blocked (consent not granted, the write key
//! refused), the uploader has no timer at all: `set_network`, `sync_now`
//! or `set_consent` wake it.
//!
//! ## The network
//!
//! [`crate::Tracker::set_network`] takes what the OS reports. Offline, no
//! request is attempted (a failed request costs a radio wake-up and a
//! backoff step for nothing). Going online, or from a metered network to
//! an unmetered one, cancels the backoff wait and syncs at once. On a
//! metered network the [`MeteredPolicy`] says what may be sent.
//!
//! ## Low power
//!
//! [`crate::Tracker::set_low_power`] (from Android's power-save mode or iOS
//! Low Power Mode): pending records are held until [`LOW_POWER_HOLD_MS`]
//! after the uploader first saw them, or until a full batch waits, so a
//! trickle of events costs one request a hold instead of one per group
//! commit. `flush`, `sync_now` and background syncs do not wait.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use tally_proto::Priority;

/// How long low-power mode holds pending records before sending them: a
/// cellular radio stays in its high-power state for about ten seconds
/// after each transfer (the RRC tail), so on a trickle of events one send
/// a minute keeps the radio's active time to a fraction of one send per
/// group commit, while a dashboard still sees the session within a minute.
pub const LOW_POWER_HOLD_MS: u64 = 60_000;

/// What may be sent on a metered network (mobile data).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MeteredPolicy {
    /// Everything, as on any network (the default).
    #[default]
    SendAll,
    /// Only critical messages (and the SDK's reports of drops, which are
    /// critical); the rest waits for an unmetered network.
    CriticalOnly,
    /// Nothing: everything waits for an unmetered network.
    Nothing,
}

/// What the network lets the uploader send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowed {
    Nothing,
    CriticalOnly,
    Everything,
}

impl Allowed {
    /// Whether a record of `priority` may be sent.
    pub(crate) fn admits(self, priority: Priority) -> bool {
        match self {
            Self::Everything => true,
            Self::CriticalOnly => priority == Priority::Critical,
            Self::Nothing => false,
        }
    }
}

/// How a background sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackgroundOutcome {
    /// Nothing is pending any more.
    Done,
    /// What is left may not be sent on this network (metered policy).
    Held,
    /// The deadline came, or the next batch would not have fit before it.
    DeadlineReached,
    /// A send failed; the uploader backs off, the rest waits.
    Failed,
    /// The app said the device is offline.
    Offline,
    /// Consent is not granted, or the collector refused the write key.
    Blocked,
}

/// What a background sync achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackgroundSync {
    /// Messages the collector answered for during the sync (accepted,
    /// duplicate or rejected).
    pub sent: u64,
    /// Messages still pending on the device when it returned.
    pub remaining: u64,
    /// Why it returned.
    pub outcome: BackgroundOutcome,
}

/// What the uploader tells a running background sync.
const BG_RUNNING: u8 = 0;
const BG_IDLE: u8 = 1;
const BG_NO_TIME: u8 = 2;
const BG_FAILED: u8 = 3;

/// Where a background sync stands, as the uploader last told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackgroundState {
    /// Still sending, or not told anything yet.
    Running,
    /// The uploader found nothing it may send.
    Idle,
    /// The uploader will not start a batch that cannot end in time.
    OutOfTime,
    /// A send failed.
    Failed,
}

/// The device's state as the app reports it, shared by the tracker's
/// threads.
#[derive(Debug, Default)]
pub(crate) struct Device {
    offline: AtomicBool,
    metered: AtomicBool,
    low_power: AtomicBool,
    /// Set when the network got better: the uploader drops its backoff wait.
    retry_now: AtomicBool,
    /// A background sync's deadline on the tracker's monotonic clock (0:
    /// none running).
    background_deadline_ms: AtomicU64,
    background_state: AtomicU8,
}

impl Device {
    pub(crate) fn offline(&self) -> bool {
        self.offline.load(Ordering::SeqCst)
    }

    pub(crate) fn low_power(&self) -> bool {
        self.low_power.load(Ordering::SeqCst)
    }

    /// What may be sent now under `policy`.
    pub(crate) fn allowed(&self, policy: MeteredPolicy) -> Allowed {
        if self.offline() {
            return Allowed::Nothing;
        }
        if !self.metered.load(Ordering::SeqCst) {
            return Allowed::Everything;
        }
        match policy {
            MeteredPolicy::SendAll => Allowed::Everything,
            MeteredPolicy::CriticalOnly => Allowed::CriticalOnly,
            MeteredPolicy::Nothing => Allowed::Nothing,
        }
    }

    /// Whether the backoff wait is to be dropped (once per request).
    pub(crate) fn take_retry_now(&self) -> bool {
        self.retry_now.swap(false, Ordering::SeqCst)
    }

    /// The running background sync's deadline, if one runs.
    pub(crate) fn background_deadline(&self) -> Option<u64> {
        match self.background_deadline_ms.load(Ordering::SeqCst) {
            0 => None,
            at => Some(at),
        }
    }

    /// The uploader found nothing it may send.
    pub(crate) fn background_idle(&self) {
        self.background_end(BG_IDLE);
    }

    /// The uploader will not start a batch that cannot end in time.
    pub(crate) fn background_out_of_time(&self) {
        self.background_end(BG_NO_TIME);
    }

    /// A send failed during the background sync.
    pub(crate) fn background_failed(&self) {
        self.background_end(BG_FAILED);
    }

    /// The app's connectivity callback: whether the device is online, and
    /// whether the network is metered. Going online (or to an unmetered
    /// network) asks the uploader to drop its backoff wait.
    pub(crate) fn set_network(&self, online: bool, metered: bool) {
        let was_offline = self.offline.swap(!online, Ordering::SeqCst);
        let was_metered = self.metered.swap(metered, Ordering::SeqCst);
        if online && (was_offline || (was_metered && !metered)) {
            self.retry_now.store(true, Ordering::SeqCst);
        }
    }

    /// Low-power mode on or off.
    pub(crate) fn set_low_power(&self, on: bool) {
        self.low_power.store(on, Ordering::SeqCst);
    }

    /// A background sync starts, to end by `deadline_ms` on the tracker's
    /// monotonic clock; the uploader drops its backoff wait.
    pub(crate) fn background_start(&self, deadline_ms: u64) {
        self.background_state.store(BG_RUNNING, Ordering::SeqCst);
        self.background_deadline_ms
            .store(deadline_ms.max(1), Ordering::SeqCst);
        self.retry_now.store(true, Ordering::SeqCst);
    }

    /// Where the running background sync stands.
    pub(crate) fn background_state(&self) -> BackgroundState {
        match self.background_state.load(Ordering::SeqCst) {
            BG_IDLE => BackgroundState::Idle,
            BG_NO_TIME => BackgroundState::OutOfTime,
            BG_FAILED => BackgroundState::Failed,
            _ => BackgroundState::Running,
        }
    }

    /// The background sync returned: the uploader goes back to its own
    /// schedule.
    pub(crate) fn background_stop(&self) {
        self.background_deadline_ms.store(0, Ordering::SeqCst);
    }

    fn background_end(&self, state: u8) {
        let _ = self.background_state.compare_exchange(
            BG_RUNNING,
            state,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}
