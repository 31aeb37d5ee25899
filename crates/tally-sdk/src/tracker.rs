//! The public API: [`Tracker`] and its builder.
//!
//! ## What runs where
//!
//! | thread | does | never does |
//! |---|---|---|
//! | the caller's | check the limits in O(1), take the capture lock, stamp `seq`, capture time and session, append one record to the hand-off queue (`pipeline/handoff.rs`) | I/O, JSON parsing, waiting (unless [`WhenFull::Block`] is chosen) |
//! | pipeline | identity → `messageId` (UUIDv7 of the capture time) → enrich → privacy → serialize → validate → `log.append`; group-commit flushes; state saves | network |
//! | uploader | read durable records → batch → encode → send → classify → ack, backoff, drop reports, health beacons | capture |
//!
//! `seq` is assigned and handed off under one lock, so the channel (and so
//! the log) holds messages in `seq` order, and a message refused at the
//! call never takes a `seq`: the sequence has no gaps at the source. A
//! message that takes a `seq` and is then dropped on the device (invalid
//! after enrichment, consent withdrawn, log full) is recorded as a counted
//! drop and reported to the collector as a `tally.dropped` event, so the
//! collector tells a drop from a gap in transit.
//!
//! ## Sequence numbers across crashes
//!
//! The uploader only sends records that a flush made durable, and records
//! the highest `seq` the collector answered for before acking it in the
//! log. At start, the next `seq` is one past the highest of: that acked
//! watermark, the highest `seq` in the log. Messages that were accepted but
//! not yet durable when the process died were never sent, so their numbers
//! are reused without the collector ever seeing a number twice.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tally_proto::limits::{
    MAX_EVENT_NAME_BYTES, MAX_ID_BYTES, MAX_JSON_DEPTH, MAX_PROPERTIES_BYTES,
};
use tally_proto::{Priority, RejectReason};

use crate::clock::{Clock, Wake};
use crate::config::{Config, WhenFull, MAX_PROPERTY_COUNT};
use crate::health::{bump, Health, Metrics};
use crate::log::{Durability, Log};
use crate::mobile::{Device, MeteredPolicy};
use crate::pipeline::enrich::ContextProvider;
use crate::pipeline::handoff::{message_bytes, Handoff};
use crate::pipeline::privacy::{Consent, KeyScope};
use crate::pipeline::session::Sessions;
use crate::pipeline::{self, Captured, Command, Kind};
use crate::props::Props;
use crate::state::{State, StateError, StateFile};
use crate::upload::transport::{HttpTransport, Transport};
use crate::upload::{self, Uploader};

/// How long a blocked caller sleeps between retries when the channel is
/// full under [`WhenFull::Block`]: short against the pipeline's per-message
/// time (microseconds), so room is noticed quickly.
const BLOCK_RETRY: Duration = Duration::from_micros(50);

/// How often `wait_until_synced` looks at the pending count: a small
/// fraction of a batch round trip on a local network.
const SYNC_POLL: Duration = Duration::from_millis(10);

/// A message accepted by the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The message's per-install sequence number.
    pub seq: u64,
}

/// Why a message was refused at the call. A refused message takes no
/// sequence number and is counted in `health().refused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The message breaks a rule the collector would reject it for.
    #[error("invalid message: {0}")]
    Invalid(RejectReason),
    /// More properties than [`MAX_PROPERTY_COUNT`].
    #[error("more than {MAX_PROPERTY_COUNT} properties")]
    TooManyProperties,
    /// The hand-off queue is full: its byte budget (see
    /// [`crate::config::DEFAULT_QUEUE_BUDGET_BYTES`]) or its message
    /// capacity is reached while the pipeline is behind.
    #[error("queue full")]
    QueueFull,
    /// Consent is denied.
    #[error("consent denied")]
    ConsentDenied,
    /// Consent is pending and the tracker is configured to store nothing
    /// until it is granted.
    #[error("consent pending")]
    ConsentPending,
    /// The tracker was shut down (or its pipeline thread is gone).
    #[error("tracker shut down")]
    ShutDown,
    /// The message names a session that does not exist: never started by
    /// this install, or already ended (inactivity, `reset()`, a restart
    /// after the timeout). See [`crate::pipeline::session`].
    #[error("unknown or ended session")]
    UnknownSession,
}

impl Refusal {
    /// The reason code counted in health.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(r) => r.as_str(),
            Self::TooManyProperties => "too_many_properties",
            Self::QueueFull => "queue_full",
            Self::ConsentDenied => "consent_denied",
            Self::ConsentPending => "consent_pending",
            Self::ShutDown => "shut_down",
            Self::UnknownSession => "unknown_session",
        }
    }
}

/// The result of `track()` and its siblings.
pub type TrackResult = Result<Accepted, Refusal>;

/// Options of one tracked message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackOptions {
    /// Delivery priority (critical: kept longest, sent first).
    pub priority: Priority,
    /// Business idempotency key (an order id).
    pub dedup_key: Option<String>,
}

/// Why the tracker could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The SDK state in the data directory could not be read or created.
    #[error("SDK state: {0}")]
    State(#[from] StateError),
    /// The durable log could not be opened.
    #[error("event log: {0}")]
    Log(String),
    /// The trusted CA certificates given to the builder are unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A background thread could not be started.
    #[error("could not start a thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The endpoint is plain `http://` to a host that is not loopback, and
    /// [`TrackerBuilder::allow_insecure_http`] was not set: events and the
    /// write key would cross the network unencrypted.
    #[error(
        "refusing plain http:// to {0}: events and the write key would travel unencrypted; \
         use https://, or allow_insecure_http(true) on a network you trust"
    )]
    InsecureEndpoint(String),
}

/// Why a flush (or a consent change that purges) did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The log could not make the data durable (the message is the log's
    /// error).
    #[error("log flush failed: {0}")]
    Log(String),
    /// The pipeline thread is gone (the tracker was shut down).
    #[error("tracker shut down")]
    ShutDown,
}

/// Why shutdown did not finish cleanly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The final flush failed; what it did not persist is lost.
    #[error(transparent)]
    Flush(#[from] FlushError),
    /// The background threads did not stop within the timeout (they are
    /// left to finish on their own).
    #[error("background threads still running after the timeout")]
    Timeout,
}

/// Builds a [`Tracker`].
#[derive(Debug)]
pub struct TrackerBuilder {
    config: Config,
}

impl TrackerBuilder {
    /// Inactivity after which a new session starts (default 30 min).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Capacity of the hand-off queue, in messages.
    pub fn channel_capacity(mut self, capacity: usize) -> Self {
        self.config.channel_capacity = capacity.max(1);
        self
    }

    /// Byte budget of the hand-off queue (default
    /// [`crate::config::DEFAULT_QUEUE_BUDGET_BYTES`]): the memory messages
    /// waiting for the pipeline may hold before `track()` refuses.
    pub fn queue_budget(mut self, bytes: usize) -> Self {
        self.config.queue_budget_bytes = bytes.max(1);
        self
    }

    /// What `track()` does when the channel is full (default: refuse).
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.config.when_full = policy;
        self
    }

    /// Consent of a new install (default pending: analytics is opt-in).
    pub fn consent(mut self, consent: Consent) -> Self {
        self.config.initial_consent = consent;
        self
    }

    /// Refuse messages while consent is pending instead of storing them.
    pub fn store_nothing_while_pending(mut self, yes: bool) -> Self {
        self.config.store_nothing_while_pending = yes;
        self
    }

    /// Which property keys `event` may carry.
    pub fn property_scope(mut self, event: &str, scope: KeyScope) -> Self {
        self.config.privacy.scopes.insert(event.to_owned(), scope);
        self
    }

    /// Extra key fragments whose values are redacted.
    pub fn sensitive_key(mut self, fragment: &str) -> Self {
        self.config
            .privacy
            .extra_sensitive_keys
            .push(fragment.to_owned());
        self
    }

    /// Pseudonymise user ids with HMAC-SHA256 under `key`.
    pub fn pseudonymise_user_ids(mut self, key: &[u8]) -> Self {
        self.config.privacy.pseudonymisation_key = Some(key.to_vec());
        self
    }

    /// The device context provider (default: what the OS tells).
    pub fn context_provider(mut self, provider: Arc<dyn ContextProvider>) -> Self {
        self.config.context = provider;
        self
    }

    /// The transport (default: HTTP to the endpoint).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.config.transport = Some(transport);
        self
    }

    /// Trust only the CA certificates in `pem` for an `https://` endpoint
    /// (default: the public web PKI roots). Ignored with a custom
    /// [`TrackerBuilder::transport`].
    pub fn trust_ca_pem(mut self, pem: &[u8]) -> Self {
        self.config.trusted_ca_pem = Some(pem.to_vec());
        self
    }

    /// Accept a plain `http://` endpoint on a host other than loopback
    /// (default: [`TrackerBuilder::build`] refuses it with
    /// [`BuildError::InsecureEndpoint`]). Loopback (`localhost`,
    /// `127.0.0.0/8`, `::1`) is always accepted.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.config.allow_insecure_http = allow;
        self
    }

    /// Where the log's encryption keys live. The default keeps them as 0600
    /// files beside the log; on a phone, implement [`KeyProvider`] over the
    /// platform keystore so the key never sits in the app's files.
    ///
    /// [`KeyProvider`]: crate::log::KeyProvider
    pub fn key_provider(mut self, keys: Arc<dyn crate::log::KeyProvider>) -> Self {
        self.config.key_provider = Some(keys);
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.config.clock = clock;
        self
    }

    /// Log capacity in bytes and events.
    pub fn log_capacity(mut self, max_bytes: u64, max_events: u64) -> Self {
        self.config.log_max_bytes = max_bytes;
        self.config.log_max_events = max_events;
        self
    }

    /// Oldest event the log keeps.
    pub fn log_max_age(mut self, age: Duration) -> Self {
        self.config.log_max_age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Upload in the background (default on). Off, only
    /// [`Tracker::sync_now`] and [`Tracker::wait_until_synced`] upload.
    pub fn auto_upload(mut self, on: bool) -> Self {
        self.config.auto_upload = on;
        self
    }

    /// Send a `tally.health` event with the health figures this often
    /// (off by default), the first one `every` after the tracker starts,
    /// while uploads run. The collector's fleet view and its
    /// `stale_client_queues` alert read these beacons.
    pub fn health_beacon(mut self, every: Duration) -> Self {
        self.config.health_beacon_ms = Some(u64::try_from(every.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// What may be sent on a metered network (default: everything); see
    /// [`Tracker::set_network`].
    pub fn metered_policy(mut self, policy: MeteredPolicy) -> Self {
        self.config.metered_policy = policy;
        self
    }

    /// When the log's writer syncs what it wrote (default: buffered, a
    /// group commit at most 200 ms later). [`Durability::Synced`] narrows
    /// what a power cut can lose to what the writer had not yet taken, for
    /// an fdatasync per group.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
        self
    }

    /// Seed the backoff jitter (for reproducible tests).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.config.jitter_seed = Some(seed);
        self
    }

    /// Opens the data directory and starts the pipeline and uploader.
    pub fn build(self) -> Result<Tracker, BuildError> {
        Tracker::start(self.config)
    }
}

/// The caller-side capture state, under one lock.
#[derive(Debug)]
pub(crate) struct Capture {
    pub(crate) next_seq: u64,
    pub(crate) sessions: Sessions,
    pub(crate) handoff: Handoff,
}

/// What the tracker's threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) capture: Mutex<Capture>,
    /// Signals the pipeline that the hand-off queue has records for it.
    pub(crate) handoff_ready: Condvar,
    /// Bytes of message records in the hand-off queue (waiting, or taken
    /// and not yet processed), against the byte budget.
    pub(crate) queued_bytes: AtomicUsize,
    /// Messages in the hand-off queue (at most `channel_capacity`).
    pub(crate) queued_messages: AtomicUsize,
    pub(crate) consent: AtomicU8,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    pub(crate) log: Log,
    pub(crate) state: Mutex<State>,
    pub(crate) state_file: StateFile,
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
    pub(crate) fn consent(&self) -> Consent {
        match self.consent.load(Ordering::Acquire) {
            1 => Consent::Granted,
            2 => Consent::Denied,
            _ => Consent::Pending,
        }
    }

    pub(crate) fn lock_capture(&self) -> MutexGuard<'_, Capture> {
        self.capture.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves the state; a failure is counted, and retried at the next save.
    pub(crate) fn save_state(&self, state: &State) {
        if self.state_file.save(state).is_err() {
            self.metrics
                .persistence_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn refuse(&self, refusal: Refusal) -> TrackResult {
        bump(&self.metrics.refused, refusal.code(), 1);
        Err(refusal)
    }

    /// The caller-thread half of every message; `session` is the session
    /// the app named, if it named one.
    pub(crate) fn capture(
        &self,
        kind: Kind<'_>,
        options: TrackOptions,
        session: Option<&str>,
    ) -> TrackResult {
        match self.consent() {
            Consent::Denied => return self.refuse(Refusal::ConsentDenied),
            Consent::Pending if self.config.store_nothing_while_pending => {
                return self.refuse(Refusal::ConsentPending)
            }
            _ => {}
        }
        if self.stopping.load(Ordering::Relaxed) {
            return self.refuse(Refusal::ShutDown);
        }
        let dedup_key = options.dedup_key.as_deref();
        if dedup_key.is_some_and(|d| d.len() > MAX_ID_BYTES) {
            return self.refuse(Refusal::Invalid(RejectReason::IdTooLong));
        }
        if dedup_key.is_some_and(|d| d.contains('\0')) {
            return self.refuse(Refusal::Invalid(RejectReason::NulCharacter));
        }
        let ts_ms = self.clock.wall_ms();
        let deadline = match self.config.when_full {
            WhenFull::Refuse => None,
            WhenFull::Block(ms) => Some(Instant::now() + Duration::from_millis(ms)),
        };
        let mut captured = Captured {
            seq: 0,
            ts_ms,
            session_index: 0,
            kind,
            priority: options.priority,
            dedup_key,
        };
        let cost = message_bytes(&captured);
        let budget = self.config.queue_budget_bytes;
        let capacity = self.config.channel_capacity;
        loop {
            let mut capture = self.lock_capture();
            if capture.handoff.closed {
                drop(capture);
                return self.refuse(Refusal::ShutDown);
            }
            // Within the budget, and within half of it in the buffer not
            // yet taken: the pipeline's batch and this buffer together
            // never hold more than the budget.
            if self.queued_bytes.load(Ordering::Relaxed) + cost > budget
                || capture.handoff.len() + cost > budget / 2
                || self.queued_messages.load(Ordering::Relaxed) >= capacity
            {
                if capture.handoff.wake_when_full() {
                    self.handoff_ready.notify_one();
                }
                drop(capture);
                match deadline {
                    Some(d) if Instant::now() < d => {
                        std::thread::sleep(BLOCK_RETRY);
                        continue;
                    }
                    _ => return self.refuse(Refusal::QueueFull),
                }
            }
            let (session_id, session_index) = match session {
                None => capture.sessions.touch(ts_ms),
                Some(named) => match capture.sessions.touch_named(named, ts_ms) {
                    Some(found) => found,
                    None => {
                        drop(capture);
                        return self.refuse(Refusal::UnknownSession);
                    }
                },
            };
            let seq = capture.next_seq;
            captured.seq = seq;
            captured.session_index = session_index;
            self.queued_bytes.fetch_add(cost, Ordering::Relaxed);
            self.queued_messages.fetch_add(1, Ordering::Relaxed);
            if capture.handoff.push_message(&captured, &session_id) {
                self.handoff_ready.notify_one();
            }
            capture.next_seq += 1;
            drop(capture);
            self.metrics.tracked.fetch_add(1, Ordering::Relaxed);
            return Ok(Accepted { seq });
        }
    }

    /// Sends a control command in order with the messages.
    pub(crate) fn control(&self, command: Command) -> Result<(), FlushError> {
        let mut capture = self.lock_capture();
        self.push_control(&mut capture, command)
    }

    fn push_control(&self, capture: &mut Capture, command: Command) -> Result<(), FlushError> {
        if capture.handoff.closed {
            return Err(FlushError::ShutDown);
        }
        if capture.handoff.push_control(command) {
            self.handoff_ready.notify_one();
        }
        Ok(())
    }

    /// Waits until everything handed off so far is durable.
    pub(crate) fn flush(&self) -> Result<(), FlushError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.control(Command::Flush(tx))?;
        rx.recv().map_err(|_| FlushError::ShutDown)?
    }
}

/// The SDK's entry point: cheap to call from any thread.
///
/// ```no_run
/// use tally_sdk::{Consent, Props, Tracker};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tracker = Tracker::builder("write-key", "http://127.0.0.1:8080", "/tmp/tally-demo")
///     .consent(Consent::Granted)
///     .build()?;
/// tracker.track("Order Completed", Props::new().with("total", 42.5))?;
/// tracker.flush()?;                       // durable on the device
/// tracker.wait_until_synced(std::time::Duration::from_secs(10));
/// println!("{}", serde_json::to_string(&tracker.health())?);
/// tracker.shutdown(std::time::Duration::from_secs(5))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Tracker {
    pub(crate) shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Tracker {
    /// A builder for a tracker sending to `endpoint` with `write_key`,
    /// keeping its log and state in `data_dir`.
    pub fn builder(
        write_key: impl Into<String>,
        endpoint: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> TrackerBuilder {
        TrackerBuilder {
            config: Config::new(write_key.into(), endpoint.into(), data_dir.into()),
        }
    }

    fn start(config: Config) -> Result<Self, BuildError> {
        if !config.allow_insecure_http {
            if let Some(host) = crate::upload::transport::insecure_http_host(&config.endpoint) {
                return Err(BuildError::InsecureEndpoint(host));
            }
        }
        let log_config = pipeline::log_config(&config);
        let (state_file, mut state) = StateFile::open(
            &config.data_dir,
            config.initial_consent,
            log_config.key_provider.clone(),
            log_config.retained_key.clone(),
        )?;
        let log = Log::open(log_config).map_err(|e| BuildError::Log(e.to_string()))?;
        // Moves a user id sealed under an older key (or in clear, from an
        // earlier version) to the current key; writes nothing otherwise.
        state_file.save(&state)?;
        let clock = Arc::clone(&config.clock);
        let now = clock.wall_ms();
        let (next_seq, changed) = pipeline::recover_next_seq(&log, &mut state);
        if changed {
            state_file.save(&state)?;
        }
        let sessions = Sessions::restore(state.session.clone(), now, config.session_timeout_ms);
        let transport: Arc<dyn Transport> = match (&config.transport, &config.trusted_ca_pem) {
            (Some(t), _) => Arc::clone(t),
            (None, Some(pem)) => Arc::new(
                HttpTransport::with_trusted_ca(&config.endpoint, pem)
                    .map_err(|e| BuildError::Tls(e.to_string()))?,
            ),
            (None, None) => Arc::new(HttpTransport::new(&config.endpoint)),
        };
        let shared = Arc::new(Shared {
            capture: Mutex::new(Capture {
                next_seq,
                sessions,
                handoff: Handoff::new(),
            }),
            handoff_ready: Condvar::new(),
            queued_bytes: AtomicUsize::new(0),
            queued_messages: AtomicUsize::new(0),
            consent: AtomicU8::new(consent_code(state.consent)),
            clock,
            metrics: Metrics::default(),
            log,
            install_id: state.identity.install_id.clone(),
            durable_seq: AtomicU64::new(next_seq - 1),
            state: Mutex::new(state),
            state_file,
            upload_wake: Wake::default(),
            sync_requested: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            device: Device::default(),
            config,
        });
        let mut threads = Vec::with_capacity(2);
        let pipeline = pipeline::Pipeline::new(Arc::clone(&shared));
        threads.push(
            std::thread::Builder::new()
                .name("tally-pipeline".into())
                .spawn(move || pipeline.run())
                .map_err(BuildError::Thread)?,
        );
        let uploader = Uploader::new(Arc::clone(&shared), transport);
        match std::thread::Builder::new()
            .name("tally-upload".into())
            .spawn(move || uploader.run())
        {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                shared.stopping.store(true, Ordering::SeqCst);
                let _ = shared.control(Command::Shutdown);
                return Err(BuildError::Thread(e));
            }
        }
        Ok(Self {
            shared,
            threads: Mutex::new(threads),
        })
    }

    fn props_check(&self, props: &Props) -> Result<(), Refusal> {
        if props.as_json().len() > MAX_PROPERTIES_BYTES {
            return Err(Refusal::Invalid(RejectReason::PropertiesTooLarge));
        }
        if props.len() > MAX_PROPERTY_COUNT {
            return Err(Refusal::TooManyProperties);
        }
        // The properties sit one level inside the message.
        if props.depth() + 1 > MAX_JSON_DEPTH {
            return Err(Refusal::Invalid(RejectReason::NestingTooDeep));
        }
        Ok(())
    }

    fn checked(&self, props: &Props, checks: &[(bool, RejectReason)]) -> Result<(), Refusal> {
        if let Some((_, reason)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(Refusal::Invalid(*reason));
        }
        self.props_check(props)
    }

    fn name_checks(name: &str) -> [(bool, RejectReason); 3] {
        [
            (name.is_empty(), RejectReason::MissingEventName),
            (
                name.len() > MAX_EVENT_NAME_BYTES,
                RejectReason::EventNameTooLong,
            ),
            (name.contains('\0'), RejectReason::NulCharacter),
        ]
    }

    /// A page or screen name may be empty.
    fn view_name_checks(name: &str) -> [(bool, RejectReason); 2] {
        [
            (
                name.len() > MAX_EVENT_NAME_BYTES,
                RejectReason::EventNameTooLong,
            ),
            (name.contains('\0'), RejectReason::NulCharacter),
        ]
    }

    fn id_checks(id: &str, missing: RejectReason) -> [(bool, RejectReason); 3] {
        [
            (id.is_empty(), missing),
            (id.len() > MAX_ID_BYTES, RejectReason::IdTooLong),
            (id.contains('\0'), RejectReason::NulCharacter),
        ]
    }

    fn submit(
        &self,
        check: Result<(), Refusal>,
        kind: Kind<'_>,
        options: TrackOptions,
    ) -> TrackResult {
        match check {
            Ok(()) => self.shared.capture(kind, options, None),
            Err(refusal) => self.shared.refuse(refusal),
        }
    }

    /// Tracks event `name` with `props`. Never blocks on disk or network
    /// and never panics.
    pub fn track(&self, name: &str, props: Props) -> TrackResult {
        self.track_with(name, props, TrackOptions::default())
    }

    /// Tracks with a priority or a dedup key.
    pub fn track_with(&self, name: &str, props: Props, options: TrackOptions) -> TrackResult {
        let check = self.checked(&props, &Self::name_checks(name));
        let kind = Kind::Track {
            event: name,
            props: props.as_json(),
        };
        self.submit(check, kind, options)
    }

    /// Tracks event `name` as part of session `session_id`, which the app
    /// read from [`Tracker::session`] earlier. Refused with
    /// [`Refusal::UnknownSession`] (counted as `unknown_session`) unless
    /// that session is the one that exists now.
    pub fn track_in_session(
        &self,
        session_id: &str,
        name: &str,
        props: Props,
        options: TrackOptions,
    ) -> TrackResult {
        if let Err(refusal) = self.checked(&props, &Self::name_checks(name)) {
            return self.shared.refuse(refusal);
        }
        let kind = Kind::Track {
            event: name,
            props: props.as_json(),
        };
        self.shared.capture(kind, options, Some(session_id))
    }

    /// The current session's id and index.
    pub fn session(&self) -> (String, u64) {
        let capture = self.shared.lock_capture();
        let (id, index) = capture.sessions.current();
        (id.to_string(), index)
    }

    /// A screen view (mobile).
    pub fn screen(&self, name: &str, props: Props) -> TrackResult {
        let check = self.checked(&props, &Self::view_name_checks(name));
        let kind = Kind::Screen {
            name,
            props: props.as_json(),
        };
        self.submit(check, kind, TrackOptions::default())
    }

    /// A page view (web).
    pub fn page(&self, name: &str, props: Props) -> TrackResult {
        let check = self.checked(&props, &Self::view_name_checks(name));
        let kind = Kind::Page {
            name,
            props: props.as_json(),
        };
        self.submit(check, kind, TrackOptions::default())
    }

    /// Names the user from this message on (see the identity policy in
    /// [`crate::pipeline::identity`]).
    pub fn identify(&self, user_id: &str, traits: Props) -> TrackResult {
        let check = self.checked(
            &traits,
            &Self::id_checks(user_id, RejectReason::MissingIdentity),
        );
        let kind = Kind::Identify {
            user_id,
            traits: traits.as_json(),
        };
        self.submit(check, kind, TrackOptions::default())
    }

    /// Says the current identity and `user_id` are one person.
    pub fn alias(&self, user_id: &str) -> TrackResult {
        let check = self.checked(
            &Props::new(),
            &Self::id_checks(user_id, RejectReason::MissingIdentity),
        );
        let kind = Kind::Alias { user_id };
        self.submit(check, kind, TrackOptions::default())
    }

    /// Links the user to group `group_id`.
    pub fn group(&self, group_id: &str, traits: Props) -> TrackResult {
        let check = self.checked(
            &traits,
            &Self::id_checks(group_id, RejectReason::MissingGroupId),
        );
        let kind = Kind::Group {
            group_id,
            traits: traits.as_json(),
        };
        self.submit(check, kind, TrackOptions::default())
    }

    /// Logout: forgets the user and starts a new anonymous identity and
    /// session; messages before this call keep the old identity.
    pub fn reset(&self) -> Result<(), FlushError> {
        let now = self.shared.clock.wall_ms();
        let mut capture = self.shared.lock_capture();
        capture.sessions.start_new(now);
        self.shared.push_control(&mut capture, Command::Reset)
    }

    /// Sets consent. `Denied` refuses new messages and shreds everything
    /// stored (returns once the purge is done); `Granted` lets the
    /// uploader send; `Pending` keeps (or refuses) messages and sends none.
    pub fn set_consent(&self, consent: Consent) -> Result<(), FlushError> {
        self.shared
            .consent
            .store(consent_code(consent), Ordering::Release);
        {
            let mut state = self.shared.lock_state();
            state.consent = consent;
            self.shared.save_state(&state);
        }
        if consent == Consent::Denied {
            let (tx, rx) = mpsc::sync_channel(1);
            self.shared.control(Command::Purge(tx))?;
            rx.recv().map_err(|_| FlushError::ShutDown)??;
        }
        self.shared.upload_wake.notify();
        Ok(())
    }

    /// The durability barrier: returns once every message accepted before
    /// the call is in the log on disk.
    pub fn flush(&self) -> Result<(), FlushError> {
        self.shared.flush()
    }

    /// Seals events from now on under a new key. Events sealed under older
    /// keys stay readable until the collector acknowledged them; then the
    /// old key is deleted, so a leaked old key reveals nothing still held.
    pub fn rotate_key(&self) -> Result<(), FlushError> {
        self.shared
            .log
            .rotate_key()
            .map_err(|e| FlushError::Log(e.to_string()))?;
        // The state file's user id moves to the new key, so the log may
        // delete the old one once its records are acknowledged.
        let state = self.shared.lock_state();
        self.shared
            .state_file
            .save(&state)
            .map_err(|e| FlushError::Log(e.to_string()))
    }

    /// Asks the uploader to try now: skips a running backoff and clears a
    /// stop after 401/403.
    pub fn sync_now(&self) {
        self.shared.sync_requested.store(true, Ordering::SeqCst);
        self.shared
            .metrics
            .auth_failed
            .store(false, Ordering::SeqCst);
        self.shared.upload_wake.notify();
    }

    /// Flushes, asks the uploader to sync now, and waits until nothing is
    /// pending (events, and reports of device-side drops) or `timeout`
    /// passed; says whether nothing is pending. The
    /// uploader keeps its backoff between tries while this waits.
    pub fn wait_until_synced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if self.flush().is_err() {
            return false;
        }
        self.sync_now();
        loop {
            if self.shared.log.stats().pending_events == 0
                && !upload::has_unreported_drops(&self.shared)
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(SYNC_POLL);
        }
    }

    /// The health report.
    pub fn health(&self) -> Health {
        upload::health(&self.shared)
    }

    /// This install's id.
    pub fn install_id(&self) -> &str {
        &self.shared.install_id
    }

    /// Flushes, stops the background threads and waits up to `timeout`
    /// for them.
    pub fn shutdown(self, timeout: Duration) -> Result<(), ShutdownError> {
        let flushed = self.shared.flush();
        self.stop(timeout)?;
        flushed.map_err(ShutdownError::from)
    }

    fn stop(&self, timeout: Duration) -> Result<(), ShutdownError> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.upload_wake.notify();
        let _ = self.shared.control(Command::Shutdown);
        let deadline = Instant::now() + timeout;
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in threads {
            while !handle.is_finished() {
                if Instant::now() >= deadline {
                    return Err(ShutdownError::Timeout);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = handle.join();
        }
        Ok(())
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Dropping without `shutdown` still persists what was handed off.
        let _ = self.stop(Duration::from_secs(5));
    }
}
