//! Tracker configuration: every option of [`crate::TrackerBuilder`], with
//! its default and where the default comes from.

use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::log;
use crate::pipeline::enrich::{ContextProvider, DefaultContextProvider};
use crate::pipeline::privacy::{Consent, PrivacyConfig};
use crate::pipeline::session::DEFAULT_SESSION_TIMEOUT_MS;
use crate::upload::transport::Transport;

/// Default capacity of the hand-off queue between `track()` and the
/// pipeline thread, in messages: a count cap far behind the byte budget
/// below, which is what governs refusals. 256 Ki: a 5 MiB budget holds
/// about 87,000 events of 3 short string properties (≈ 60 bytes each), and
/// the cap must not refuse what the budget admits (at 32 Ki it refused
/// 8–15 % of a 100,000-event burst the budget had room for).
pub const DEFAULT_CHANNEL_CAPACITY: usize = 256 * 1024;

/// Default byte budget of the hand-off queue: the bytes of the records
/// waiting for the pipeline (see [`crate::pipeline::handoff`]: about 5
/// bytes of header plus the name, properties and dedup key), half
/// of it at most in the buffer the pipeline has not taken yet. A
/// `track()` that would pass it is refused as `queue_full` (or waits,
/// under [`WhenFull::Block`]); the refusal takes no `seq` and is counted
/// in `health().refused`.
///
/// 5 MiB: the buffer callers fill holds up to 2.5 MiB, about 43,000
/// events of 3 short string properties (≈ 60 bytes each), while the
/// pipeline works through a batch as large. A burst that long is absorbed
/// while the pipeline drains it, and the SDK's peak RSS stays under 16 MB
/// whatever the burst (while one lasts, both buffers stay allocated and
/// touched, so a call takes no page fault; a drained queue gives them
/// back), because the budget counts bytes (large messages cannot multiply
/// it as a count of messages would). How much of a longer burst is
/// refused depends on how fast the pipeline persists on the device.
/// Measured by `cargo run --release -p tally-sdk --example track_latency`.
pub const DEFAULT_QUEUE_BUDGET_BYTES: usize = 5 * 1024 * 1024;

/// Most top-level properties per event: 255, Mixpanel's documented limit,
/// far above what any dashboard can show.
pub const MAX_PROPERTY_COUNT: usize = 255;

/// What `track()` does when the hand-off queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse the message at once ([`crate::Refusal::QueueFull`]); the
    /// caller never waits.
    Refuse,
    /// Wait up to this many milliseconds for room, then refuse.
    Block(u64),
}

/// Everything the builder collects.
#[derive(Debug, Clone)]
pub struct Config {
    /// The collector's write key.
    pub write_key: String,
    /// The collector's base URL.
    pub endpoint: String,
    /// Where the log and state live.
    pub data_dir: PathBuf,
    /// Inactivity that ends a session.
    pub session_timeout_ms: i64,
    /// Capacity of the hand-off queue, in messages.
    pub channel_capacity: usize,
    /// Byte budget of the hand-off queue.
    pub queue_budget_bytes: usize,
    /// Full-channel policy.
    pub when_full: WhenFull,
    /// Consent for a new install (an existing one keeps what was set).
    /// Pending by default: analytics is opt-in.
    pub initial_consent: Consent,
    /// While consent is pending, refuse messages instead of storing them.
    pub store_nothing_while_pending: bool,
    /// Privacy rules.
    pub privacy: PrivacyConfig,
    /// Device context.
    pub context: Arc<dyn ContextProvider>,
    /// Transport (`None`: HTTP to `endpoint`).
    pub transport: Option<Arc<dyn Transport>>,
    /// PEM certificates of the only CAs the default transport trusts for
    /// `https://` (`None`: the public web PKI roots).
    pub trusted_ca_pem: Option<Vec<u8>>,
    /// Where the log's encryption keys live (default: 0600 files in the
    /// log's directory).
    pub key_provider: Option<std::sync::Arc<dyn crate::log::KeyProvider>>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Log byte capacity (default: the log's own defaults, see
    /// [`crate::log::DEFAULT_MAX_BYTES`]).
    pub log_max_bytes: u64,
    /// Log event capacity.
    pub log_max_events: u64,
    /// Oldest normal-priority event the log keeps.
    pub log_max_age_ms: u64,
    /// Oldest critical event the log keeps.
    pub log_critical_max_age_ms: u64,
    /// What the log does at its capacity.
    pub log_full_policy: log::FullPolicy,
    /// Upload in the background (off: only `sync_now` and
    /// `wait_until_synced` upload).
    pub auto_upload: bool,
    /// Send a `tally.health` event this often (ms), if set.
    pub health_beacon_ms: Option<u64>,
    /// Seed of the backoff jitter (tests fix it).
    pub jitter_seed: Option<u64>,
    /// What may be sent on a metered network.
    pub metered_policy: crate::mobile::MeteredPolicy,
    /// When the log's writer syncs.
    pub durability: log::Durability,
    /// Whether a plain `http://` endpoint on a host other than loopback is
    /// accepted (default: refused when the tracker is built).
    pub allow_insecure_http: bool,
}

impl Config {
    pub(crate) fn new(write_key: String, endpoint: String, data_dir: PathBuf) -> Self {
        Self {
            write_key,
            endpoint,
            data_dir,
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            queue_budget_bytes: DEFAULT_QUEUE_BUDGET_BYTES,
            when_full: WhenFull::Refuse,
            initial_consent: Consent::Pending,
            store_nothing_while_pending: false,
            privacy: PrivacyConfig::default(),
            context: Arc::new(DefaultContextProvider),
            transport: None,
            trusted_ca_pem: None,
            key_provider: None,
            clock: Arc::new(SystemClock::default()),
            log_max_bytes: log::DEFAULT_MAX_BYTES,
            log_max_events: log::DEFAULT_MAX_EVENTS,
            log_max_age_ms: u64::try_from(log::DEFAULT_MAX_AGE.as_millis()).unwrap_or(u64::MAX),
            log_critical_max_age_ms: u64::try_from(log::DEFAULT_CRITICAL_MAX_AGE.as_millis())
                .unwrap_or(u64::MAX),
            log_full_policy: log::FullPolicy::DropOldest,
            auto_upload: true,
            health_beacon_ms: None,
            jitter_seed: None,
            metered_policy: crate::mobile::MeteredPolicy::default(),
            durability: log::Durability::Buffered {
                max_delay: log::DEFAULT_BUFFERED_DELAY,
            },
            allow_insecure_http: false,
        }
    }
}
