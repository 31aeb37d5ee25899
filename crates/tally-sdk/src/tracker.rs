//! The public API: [`Tracker`] and its builder, and which thread does what.
//!
//! ## What runs where
//!
//! | thread | does | never does | where |
//! |---|---|---|---|
//! | the caller's | check the limits in O(1), take the capture lock, stamp `seq`, capture time and session, append one record to the hand-off queue | I/O, JSON parsing, waiting (unless [`WhenFull::Block`] is chosen) | this file's checks, then `capture.rs` → `pipeline/handoff.rs` |
//! | pipeline | identity → `messageId` (UUIDv7 of the capture time) → enrich → privacy → serialize → validate → `log.append`; group-commit flushes; state saves | network | `pipeline/thread.rs` |
//! | uploader | read durable records → batch → encode → send → classify → ack, backoff, drop reports, health beacons | capture, except handing its own events over through `upload::reports::Emitter` | `upload/` |
//!
//! What the threads share (config, clock, log, SDK state, counters) is in
//! `shared.rs`; the imports go one way: this file → capture and pipeline →
//! the log, and the uploader sees only what is shared and the emitter.
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
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tally_proto::limits::{
    MAX_EVENT_NAME_BYTES, MAX_ID_BYTES, MAX_JSON_DEPTH, MAX_PROPERTIES_BYTES,
};
use tally_proto::RejectReason;

use crate::capture::Capture;
use crate::clock::Clock;
use crate::config::{Config, WhenFull, MAX_PROPERTY_COUNT};
use crate::health::Health;
use crate::install_state::StateFile;
use crate::log::{Durability, FullPolicy, Log};
use crate::mobile::MeteredPolicy;
use crate::pipeline::enrich::ContextProvider;
use crate::pipeline::handoff::{Command, Kind};
use crate::pipeline::privacy::{Consent, KeyScope};
use crate::pipeline::session::Sessions;
use crate::pipeline::thread::Pipeline;
use crate::pipeline::{self};
use crate::props::Props;
use crate::shared::Shared;
use crate::upload::transport::{HttpTransport, Transport};
use crate::upload::Uploader;

pub use crate::capture::{Accepted, TrackOptions, TrackResult};
pub use crate::error::{BuildError, FlushError, PlanRefusal, Refusal, ShutdownError};

mod mobile;

/// How often `wait_until_synced` looks at the pending count: a small
/// fraction of a batch round trip on a local network.
const SYNC_POLL: Duration = Duration::from_millis(10);

/// Builds a [`Tracker`].
#[derive(Debug)]
pub struct TrackerBuilder {
    config: Config,
    /// The tracking plan track events are judged by at the call.
    #[cfg(feature = "plan")]
    plan: Option<crate::plan::PlanCheck>,
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

    /// Oldest normal-priority event the log keeps (default 30 days,
    /// [`crate::log::DEFAULT_MAX_AGE`]); older ones are dropped as
    /// `expired` and reported.
    pub fn log_max_age(mut self, age: Duration) -> Self {
        self.config.log_max_age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Oldest critical event the log keeps (default 90 days,
    /// [`crate::log::DEFAULT_CRITICAL_MAX_AGE`]): critical events are kept
    /// longer in age, as they are when the log is full.
    pub fn log_critical_max_age(mut self, age: Duration) -> Self {
        self.config.log_critical_max_age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// What the log does when its capacity ([`Self::log_capacity`]) is
    /// reached. Whatever the policy, every event lost to it is counted as
    /// `log_full` and reported to the collector.
    ///
    /// - [`FullPolicy::DropOldest`] (default): the new event is kept and
    ///   the oldest pending normal-priority events make room (critical
    ///   ones only when no normal one is left). **Loses** the oldest
    ///   events not yet sent.
    /// - [`FullPolicy::RejectNew`]: what is stored is kept; the new event
    ///   is dropped. **Loses** the newest events, as long as the device
    ///   cannot upload.
    /// - [`FullPolicy::Block`]: the pipeline waits up to `timeout` for an
    ///   upload to make room, then drops the new event as `RejectNew`
    ///   does. While it waits, `track()` fills the hand-off queue and is
    ///   then refused (`queue_full`, or waits under [`WhenFull::Block`]).
    pub fn log_full_policy(mut self, policy: FullPolicy) -> Self {
        self.config.log_full_policy = policy;
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

    /// When the log's writer syncs what it wrote. In either mode,
    /// `track()` returns before its event is in the log, and
    /// [`Tracker::flush`] is the barrier that makes everything accepted
    /// before it durable.
    ///
    /// - [`Durability::Buffered`] (default, `max_delay` 200 ms): the
    ///   writer writes groups as they come and syncs at the pipeline's
    ///   group commit (every 200 ms while events flow). **Loss window**: a
    ///   process kill loses only what is still in memory (the hand-off
    ///   queue and what the writer has not yet written: well under a
    ///   millisecond of events, at most the queue budget in a burst); a
    ///   power cut or kernel crash also loses what was written and not yet
    ///   synced, at most the last 200 ms.
    /// - [`Durability::Synced`]: every group is synced before the writer
    ///   takes the next one. **Loss window**: a kill or a power cut loses
    ///   only what is still in memory, for an fdatasync per group.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
        self
    }

    /// Seed the backoff jitter (for reproducible tests).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.config.jitter_seed = Some(seed);
        self
    }

    /// Judge every track event against a tracking plan at the call
    /// (feature `plan`, for development builds): an event that breaks it
    /// is refused with [`Refusal::Plan`] before it takes a `seq`, and
    /// counted in `health().refused`. See [`crate::plan`].
    #[cfg(feature = "plan")]
    pub fn tracking_plan(mut self, check: crate::plan::PlanCheck) -> Self {
        self.plan = Some(check);
        self
    }

    /// Opens the data directory and starts the pipeline and uploader.
    pub fn build(self) -> Result<Tracker, BuildError> {
        #[allow(unused_mut)]
        let mut tracker = Tracker::start(self.config)?;
        #[cfg(feature = "plan")]
        {
            tracker.plan = self.plan;
        }
        Ok(tracker)
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
    shared: Arc<Shared>,
    capture: Arc<Capture>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    #[cfg(feature = "plan")]
    plan: Option<crate::plan::PlanCheck>,
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
            #[cfg(feature = "plan")]
            plan: None,
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
            log_config.fs.clone(),
        )?;
        let log = Log::open(log_config).map_err(|e| BuildError::Log(e.to_string()))?;
        // Moves a user id sealed under an older key (or in clear, from an
        // earlier version) to the current key; writes nothing otherwise.
        state_file.save(&state)?;
        let now = config.clock.wall_ms();
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
        let shared = Arc::new(Shared::new(config, log, state, state_file, next_seq - 1));
        let capture = Arc::new(Capture::new(Arc::clone(&shared), next_seq, sessions));
        let mut threads = Vec::with_capacity(2);
        let pipeline = Pipeline::new(Arc::clone(&capture));
        threads.push(
            std::thread::Builder::new()
                .name("tally-pipeline".into())
                .spawn(move || pipeline.run())
                .map_err(BuildError::Thread)?,
        );
        let uploader = Uploader::new(Arc::clone(&shared), capture.clone(), transport);
        match std::thread::Builder::new()
            .name("tally-upload".into())
            .spawn(move || uploader.run())
        {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                shared.stopping.store(true, Ordering::SeqCst);
                let _ = capture.control(Command::Shutdown);
                return Err(BuildError::Thread(e));
            }
        }
        Ok(Self {
            shared,
            capture,
            threads: Mutex::new(threads),
            #[cfg(feature = "plan")]
            plan: None,
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

    /// The tracking plan's judgement of a track event (feature `plan`);
    /// without a plan, nothing.
    #[inline]
    fn plan_check(&self, name: &str, props: &Props, options: &TrackOptions) -> Result<(), Refusal> {
        #[cfg(feature = "plan")]
        {
            if let Some(plan) = &self.plan {
                return plan
                    .judge(name, options.event_version, props.as_json())
                    .map_err(|r| Refusal::Plan(Box::new(r)));
            }
        }
        let _ = (name, props, options);
        Ok(())
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
            Ok(()) => self.capture.accept(kind, options, None),
            Err(refusal) => self.capture.refuse(refusal),
        }
    }

    /// Tracks event `name` with `props`. Never blocks on disk or network
    /// and never panics.
    pub fn track(&self, name: &str, props: Props) -> TrackResult {
        self.track_with(name, props, TrackOptions::default())
    }

    /// Tracks with a priority, a dedup key or the event's plan version.
    pub fn track_with(&self, name: &str, props: Props, options: TrackOptions) -> TrackResult {
        let check = self
            .checked(&props, &Self::name_checks(name))
            .and_then(|()| self.plan_check(name, &props, &options));
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
        let check = self
            .checked(&props, &Self::name_checks(name))
            .and_then(|()| self.plan_check(name, &props, &options));
        if let Err(refusal) = check {
            return self.capture.refuse(refusal);
        }
        let kind = Kind::Track {
            event: name,
            props: props.as_json(),
        };
        self.capture.accept(kind, options, Some(session_id))
    }

    /// The current session's id and index.
    pub fn session(&self) -> (String, u64) {
        self.capture.current_session()
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
        self.capture.reset(self.shared.clock.wall_ms())
    }

    /// Sets consent. `Denied` refuses new messages and shreds everything
    /// stored (returns once the purge is done); `Granted` lets the
    /// uploader send; `Pending` keeps (or refuses) messages and sends none.
    pub fn set_consent(&self, consent: Consent) -> Result<(), FlushError> {
        self.shared.set_consent(consent);
        if consent == Consent::Denied {
            let (tx, rx) = mpsc::sync_channel(1);
            self.capture.control(Command::Purge(tx))?;
            rx.recv().map_err(|_| FlushError::ShutDown)??;
        }
        self.shared.upload_wake.notify();
        Ok(())
    }

    /// The durability barrier: returns once every message accepted before
    /// the call is in the log on disk.
    pub fn flush(&self) -> Result<(), FlushError> {
        self.capture.flush()
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
            .try_save_state(&state)
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
            if self.shared.log.stats().pending_events == 0 && !self.shared.has_unreported_drops() {
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
        self.shared.health()
    }

    /// This install's id.
    pub fn install_id(&self) -> &str {
        &self.shared.install_id
    }

    /// Flushes, stops the background threads and waits up to `timeout`
    /// for them.
    pub fn shutdown(self, timeout: Duration) -> Result<(), ShutdownError> {
        let flushed = self.capture.flush();
        self.stop(timeout)?;
        flushed.map_err(ShutdownError::from)
    }

    fn stop(&self, timeout: Duration) -> Result<(), ShutdownError> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.upload_wake.notify();
        let _ = self.capture.control(Command::Shutdown);
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
