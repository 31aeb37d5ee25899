//! The records and enums the bindings see: plain data, converted to and
//! from the SDK's types at the boundary.

use std::collections::HashMap;

use tally_sdk::{
    BackgroundOutcome as SdkOutcome, BackgroundSync as SdkBackgroundSync, Consent as SdkConsent,
    Durability as SdkDurability, Health as SdkHealth, MeteredPolicy as SdkMeteredPolicy,
    Priority as SdkPriority,
};

/// Consent to analytics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Consent {
    /// Events are captured and sent.
    Granted,
    /// Nothing is captured; what was stored is shredded.
    Denied,
    /// Not decided yet: events are kept on the device (unless
    /// `store_nothing_while_pending`) but nothing is sent.
    Pending,
}

impl From<Consent> for SdkConsent {
    fn from(c: Consent) -> Self {
        match c {
            Consent::Granted => SdkConsent::Granted,
            Consent::Denied => SdkConsent::Denied,
            Consent::Pending => SdkConsent::Pending,
        }
    }
}

impl From<SdkConsent> for Consent {
    fn from(c: SdkConsent) -> Self {
        match c {
            SdkConsent::Granted => Consent::Granted,
            SdkConsent::Denied => Consent::Denied,
            SdkConsent::Pending => Consent::Pending,
        }
    }
}

/// Delivery priority of one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, uniffi::Enum)]
pub enum Priority {
    /// The default.
    #[default]
    Normal,
    /// Kept longest when the log is full, sent first (purchases, sign-ups).
    Critical,
}

impl From<Priority> for SdkPriority {
    fn from(p: Priority) -> Self {
        match p {
            Priority::Normal => SdkPriority::Normal,
            Priority::Critical => SdkPriority::Critical,
        }
    }
}

/// What may be sent on a metered network (mobile data): `SendAll` (the
/// default), `CriticalOnly` (critical messages; the rest waits for an
/// unmetered network), or `Nothing`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, uniffi::Enum)]
pub enum MeteredPolicy {
    #[default]
    SendAll,
    CriticalOnly,
    Nothing,
}

impl From<MeteredPolicy> for SdkMeteredPolicy {
    fn from(p: MeteredPolicy) -> Self {
        match p {
            MeteredPolicy::SendAll => SdkMeteredPolicy::SendAll,
            MeteredPolicy::CriticalOnly => SdkMeteredPolicy::CriticalOnly,
            MeteredPolicy::Nothing => SdkMeteredPolicy::Nothing,
        }
    }
}

/// When what the log wrote reaches the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, uniffi::Enum)]
pub enum Durability {
    /// Group commit: synced at most 200 ms after it was written (the
    /// default); a power cut can lose that much.
    #[default]
    Buffered,
    /// Every group synced as it is written: a power cut loses only what
    /// the writer had not taken yet, for an fdatasync per group.
    Synced,
}

impl From<Durability> for SdkDurability {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Buffered => SdkDurability::Buffered {
                max_delay: tally_sdk::log::DEFAULT_BUFFERED_DELAY,
            },
            Durability::Synced => SdkDurability::Synced,
        }
    }
}

/// How a background sync ended: `Done` (nothing left), `Held` (the rest
/// waits for an unmetered network), `DeadlineReached` (including: the
/// next batch would not have fit), `Failed` (a send failed, the uploader
/// backs off), `Offline`, `Blocked` (no consent, or the write key refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum BackgroundOutcome {
    Done,
    Held,
    DeadlineReached,
    Failed,
    Offline,
    Blocked,
}

/// What a background sync achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct BackgroundSync {
    /// Messages the collector answered for during the sync.
    pub sent: u64,
    /// Messages still pending on the device.
    pub remaining: u64,
    /// Why it returned.
    pub outcome: BackgroundOutcome,
}

impl From<SdkBackgroundSync> for BackgroundSync {
    fn from(b: SdkBackgroundSync) -> Self {
        let outcome = match b.outcome {
            SdkOutcome::Done => BackgroundOutcome::Done,
            SdkOutcome::Held => BackgroundOutcome::Held,
            SdkOutcome::Failed => BackgroundOutcome::Failed,
            SdkOutcome::Offline => BackgroundOutcome::Offline,
            SdkOutcome::Blocked => BackgroundOutcome::Blocked,
            // Non-exhaustive: an outcome added later still means the
            // deadline ended the sync with something left.
            _ => BackgroundOutcome::DeadlineReached,
        };
        Self {
            sent: b.sent,
            remaining: b.remaining,
            outcome,
        }
    }
}

/// One property value: JSON's types, with integers kept apart from
/// floating-point numbers so a Kotlin `Long` or a Python `int` arrives as
/// an integer.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum PropValue {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool { value: bool },
    /// An integer.
    Int { value: i64 },
    /// A finite floating-point number (NaN and infinities are refused:
    /// JSON has no way to write them).
    Double { value: f64 },
    /// A string.
    Text { value: String },
    /// An array (`List` would clash with Kotlin's).
    Items { value: Vec<PropValue> },
    /// An object (`Map` would clash with Kotlin's).
    Members { value: HashMap<String, PropValue> },
}

/// Options of one tracked message.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct TrackOptions {
    /// Delivery priority; `None` takes the configured default for the
    /// event name (critical for a name in `critical_events`).
    #[uniffi(default = None)]
    pub priority: Option<Priority>,
    /// Business idempotency key (an order id): the collector stores one
    /// event per key across every device.
    #[uniffi(default = None)]
    pub dedup_key: Option<String>,
    /// The event's version in the tracking plan the app was built against
    /// (`context.tally.event_version`): the collector judges the event by
    /// it. `None` names none (judged by the plan's latest). The generated
    /// tracking code sets it. Sent as it is, as by the Rust SDK: a version
    /// the plan lacks (0 among them) is counted as `unknown_version`.
    #[uniffi(default = None)]
    pub event_version: Option<u32>,
}

/// Everything a tracker is built from. Only the write key, the endpoint
/// and the data directory are required; every other member has the SDK's
/// default.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TallyConfig {
    /// The collector's write key (public: it ships inside the app).
    pub write_key: String,
    /// The collector's base URL, `https://…` in production.
    pub endpoint: String,
    /// A directory the app owns (on Android `context.filesDir`, on iOS
    /// Application Support) where the log and the SDK state live.
    pub data_dir: String,
    /// Consent of a new install (an existing install keeps what was set).
    /// Default: pending, analytics is opt-in.
    #[uniffi(default = None)]
    pub consent: Option<Consent>,
    /// While consent is pending, refuse messages instead of storing them.
    #[uniffi(default = false)]
    pub store_nothing_while_pending: bool,
    /// Bound on the log's pending bytes (default 64 MiB).
    #[uniffi(default = None)]
    pub max_log_bytes: Option<u64>,
    /// Bound on the log's pending events (default 200,000).
    #[uniffi(default = None)]
    pub max_log_events: Option<u64>,
    /// Oldest event the log keeps, in ms (default 30 days).
    #[uniffi(default = None)]
    pub max_log_age_ms: Option<u64>,
    /// Byte budget of the hand-off queue between `track()` and the SDK's
    /// thread (default 5 MiB).
    #[uniffi(default = None)]
    pub queue_budget_bytes: Option<u64>,
    /// When the hand-off queue is full, wait up to this many ms for room
    /// instead of refusing at once (default: refuse at once).
    #[uniffi(default = None)]
    pub queue_full_wait_ms: Option<u64>,
    /// Inactivity after which a new session starts, in ms (default 30 min).
    #[uniffi(default = None)]
    pub session_timeout_ms: Option<u64>,
    /// Event names tracked as critical unless a call says otherwise.
    #[uniffi(default)]
    pub critical_events: Vec<String>,
    /// Send a `tally.health` beacon this often, in ms (default: off).
    #[uniffi(default = None)]
    pub health_beacon_ms: Option<u64>,
    /// Upload in the background (default on). Off, only `sync_now`,
    /// `wait_until_synced` and background syncs upload.
    #[uniffi(default = true)]
    pub auto_upload: bool,
    /// PEM certificates of the only CAs trusted for an `https://`
    /// endpoint (default: the public web PKI roots).
    #[uniffi(default = None)]
    pub trusted_ca_pem: Option<String>,
    /// What may be sent on a metered network (default: everything).
    #[uniffi(default = None)]
    pub metered_policy: Option<MeteredPolicy>,
    /// When the log's writes reach the disk (default: buffered).
    #[uniffi(default = None)]
    pub durability: Option<Durability>,
}

/// The health report: member for member the Rust SDK's `Health`, where
/// each is described. In short: `pending`/`pending_bytes`/
/// `oldest_pending_age_s` wait on the device; `tracked` were taken at the
/// call in this process, `refused` (by code) refused at the call; `accepted`,
/// `duplicate`, `rejected` (by reason) are the collector's answers;
/// `dropped` (by reason) went by a device policy; `sync_attempts`,
/// `sync_successes` and `sync_success_rate` say how well the link works
/// (these, the answers, `refused`, `dropped` and `persistence_errors`
/// count for the life of the install); `backoff_ms` and
/// `consecutive_failures` describe a failing link; `auth_failed` means the
/// write key was refused and sending stopped until `sync_now()`.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Health {
    pub install_id: String,
    pub pending: u64,
    pub pending_bytes: u64,
    pub oldest_pending_age_s: f64,
    pub tracked: u64,
    pub refused: HashMap<String, u64>,
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: HashMap<String, u64>,
    pub dropped: HashMap<String, u64>,
    pub corrupt: u64,
    pub persistence_errors: u64,
    pub sync_attempts: u64,
    pub sync_successes: u64,
    pub sync_success_rate: Option<f64>,
    pub consecutive_failures: u64,
    pub backoff_ms: u64,
    pub last_success_ms: Option<i64>,
    pub sync_latency_p50_ms: Option<u64>,
    pub sync_latency_p99_ms: Option<u64>,
    pub clock_offset_ms: Option<i64>,
    pub consent: Consent,
    pub auth_failed: bool,
}

impl From<SdkHealth> for Health {
    fn from(h: SdkHealth) -> Self {
        Self {
            install_id: h.install_id,
            pending: h.pending,
            pending_bytes: h.pending_bytes,
            oldest_pending_age_s: h.oldest_pending_age_s,
            tracked: h.tracked,
            refused: h.refused.into_iter().collect(),
            accepted: h.accepted,
            duplicate: h.duplicate,
            rejected: h.rejected.into_iter().collect(),
            dropped: h.dropped.into_iter().collect(),
            corrupt: h.corrupt,
            persistence_errors: h.persistence_errors,
            sync_attempts: h.sync_attempts,
            sync_successes: h.sync_successes,
            sync_success_rate: h.sync_success_rate,
            consecutive_failures: h.consecutive_failures,
            backoff_ms: h.backoff_ms,
            last_success_ms: h.last_success_ms,
            sync_latency_p50_ms: h.sync_latency_p50_ms,
            sync_latency_p99_ms: h.sync_latency_p99_ms,
            clock_offset_ms: h.clock_offset_ms,
            consent: h.consent.into(),
            auth_failed: h.auth_failed,
        }
    }
}
