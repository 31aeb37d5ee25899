//! The pipeline thread: from a captured message to a record in the log.
//!
//! Contract: messages arrive from the hand-off channel in `seq` order with
//! their capture time and session. For each, in order: identity (the
//! current `anonymousId`/`userId`), `messageId` (a UUIDv7 of the capture
//! time), enrichment (the context template), privacy (scopes, redaction,
//! pseudonymisation), serialization, validation with
//! [`tally_proto::validate`], and `log.append`. A message that fails
//! validation or cannot be appended is dropped and its `seq` recorded as a
//! counted drop (reported to the collector later); nothing here waits for
//! the network. Control commands (flush, reset, purge, shutdown) travel
//! in the same channel, so they apply exactly between the messages the app
//! sent before and after them.
//!
//! Durability is group commit: the log is flushed at most every
//! [`GROUP_COMMIT_MS`] while records are waiting, and on every explicit
//! flush; after each flush the durable `seq` watermark is published to the
//! uploader, which sends nothing above it.
//!
//! | stage | module |
//! |---|---|
//! | sessions | [`session`] |
//! | enrichment | [`enrich`] |
//! | privacy | [`privacy`] |
//! | identity | [`identity`] |

pub mod enrich;
pub mod identity;
pub mod privacy;
pub mod session;

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use tally_proto::limits::SCHEMA_VERSION;
use tally_proto::{
    format_timestamp, validate, Context, Message, MessageType, Priority, RawJson, TallyContext,
};

use crate::config::Config;
use crate::health::bump;
use crate::log::{AppendError, Entry, Log, LogConfig};
use crate::state::State;
use crate::tracker::{FlushError, Shared};

use self::identity::Identity;
use self::privacy::{Consent, Privacy};

/// Longest a persisted record waits for its group commit: 200 ms bounds
/// what a crash can lose to a fifth of a second of events while keeping
/// fsyncs to at most five a second.
pub const GROUP_COMMIT_MS: u64 = 200;

/// How often the session and identity state is saved while events flow
/// (besides every explicit flush): a restart within this loses at most
/// this much of the session's last-activity time.
const STATE_SAVE_MS: u64 = 5_000;

/// Prefix of the SDK's own event names.
pub const INTERNAL_PREFIX: &str = "tally.";

/// What a message is, as captured on the caller's thread.
#[derive(Debug)]
pub(crate) enum Kind {
    Track { event: String, props: String },
    Screen { name: String, props: String },
    Page { name: String, props: String },
    Identify { user_id: String, traits: String },
    Alias { user_id: String },
    Group { group_id: String, traits: String },
}

/// A message handed off by the caller.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) seq: u64,
    pub(crate) ts_ms: i64,
    pub(crate) session_id: Arc<str>,
    pub(crate) session_index: u64,
    pub(crate) kind: Kind,
    pub(crate) priority: Priority,
    pub(crate) dedup_key: Option<String>,
    /// What it holds in memory while queued, as counted against the
    /// hand-off queue's byte budget.
    pub(crate) cost: usize,
}

/// Allocator bookkeeping per heap block (a size word, rounding to 16).
const ALLOC_OVERHEAD: usize = 16;

impl Captured {
    /// The memory a queued message holds: its box, the channel slot that
    /// points at it, and its strings at their capacity.
    pub(crate) fn memory_cost(&self) -> usize {
        let string = |s: &String| s.capacity() + ALLOC_OVERHEAD;
        let strings = match &self.kind {
            Kind::Track { event, props }
            | Kind::Screen { name: event, props }
            | Kind::Page { name: event, props } => string(event) + string(props),
            Kind::Identify { user_id, traits } => string(user_id) + string(traits),
            Kind::Alias { user_id } => string(user_id),
            Kind::Group { group_id, traits } => string(group_id) + string(traits),
        };
        std::mem::size_of::<Captured>()
            + ALLOC_OVERHEAD
            + std::mem::size_of::<Command>()
            + strings
            + self.dedup_key.as_ref().map_or(0, string)
    }
}

/// What travels in the hand-off channel.
#[derive(Debug)]
pub(crate) enum Command {
    Message(Box<Captured>),
    Flush(SyncSender<Result<(), FlushError>>),
    Reset,
    /// The collector deleted these users: if one is the current user,
    /// forget them (as `reset()` does).
    Forget(Vec<String>),
    Purge(SyncSender<Result<(), FlushError>>),
    Shutdown,
}

/// Bytes the tracker's log may hold appended but not yet written: the
/// log's writer seals and writes far faster than this one pipeline thread
/// produces records, so a quarter of the log's default keeps groups large
/// while the queue, the group being sealed and the group being written
/// stay small (a burst's memory belongs in the hand-off queue's budget).
const LOG_INFLIGHT_BYTES: usize = 512 * 1024;

/// Opens the log in `<data_dir>/log` with the configured bounds.
pub(crate) fn open_log(config: &Config) -> Result<Log, String> {
    let mut log_config = LogConfig::new(config.data_dir.join("log")).bounds(
        config.log_max_bytes,
        config.log_max_events,
        Duration::from_millis(config.log_max_age_ms),
    );
    log_config.max_inflight_bytes = LOG_INFLIGHT_BYTES;
    if let Some(keys) = &config.key_provider {
        log_config = log_config.key_provider(keys.clone());
    }
    Log::open(log_config).map_err(|e| e.to_string())
}

/// The first `seq` to use: one past everything the collector may have
/// seen, the log holds or the log dropped (see the tracker's module doc).
/// Also puts back among the unreported drops the ranges of every drop
/// report in flight whose record is no longer pending (it was lost before
/// it became durable, or dropped): its seq may be reused from now on, so
/// it must not be taken for the report's answer. Returns whether `state`
/// changed. Reads the log's index only: no record is read or decrypted.
pub(crate) fn recover_next_seq(log: &Log, state: &mut State) -> (u64, bool) {
    let pending = log.pending_seqs();
    let changed = if state.reports_in_flight.is_empty() {
        false
    } else {
        let pending_seqs: std::collections::HashSet<u64> = pending.iter().copied().collect();
        state.requeue_lost_reports(|seq| !pending_seqs.contains(&seq)) > 0
    };
    let in_log = pending.iter().copied().max().unwrap_or(0);
    let dropped = log
        .drop_ledger()
        .iter()
        .map(|r| r.last_seq)
        .max()
        .unwrap_or(0);
    let own_drops = state
        .unreported_drops
        .iter()
        .map(|d| d.to)
        .max()
        .unwrap_or(0);
    let next = state
        .acked_seq
        .max(state.durable_seq)
        .max(in_log)
        .max(dropped)
        .max(own_drops)
        + 1;
    (next, changed)
}

/// The pipeline thread's state.
pub(crate) struct Pipeline {
    shared: Arc<Shared>,
    rx: Receiver<Command>,
    identity: Identity,
    /// The context template's members as JSON text (without braces),
    /// spliced into every message: serialized once, not per message.
    static_context: String,
    privacy: Privacy,
    rng: fastrand::Rng,
    last_appended: u64,
    unflushed: bool,
    last_flush_ms: u64,
    last_state_save_ms: u64,
    state_dirty: bool,
}

impl Pipeline {
    pub(crate) fn new(shared: Arc<Shared>, rx: Receiver<Command>) -> Self {
        let identity = shared.lock_state().identity.clone();
        let template = enrich::context_template(&shared.config.context.device_context());
        let template_json = serde_json::to_string(&template).unwrap_or_default();
        let static_context = template_json
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or_default()
            .to_owned();
        let privacy = Privacy::new(shared.config.privacy.clone());
        let last_appended = shared.durable_seq.load(Ordering::SeqCst);
        let now = shared.clock.mono_ms();
        Self {
            shared,
            rx,
            identity,
            static_context,
            privacy,
            rng: fastrand::Rng::new(),
            last_appended,
            unflushed: false,
            last_flush_ms: now,
            last_state_save_ms: now,
            state_dirty: false,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            match self.rx.recv_timeout(Duration::from_millis(GROUP_COMMIT_MS)) {
                Ok(Command::Message(m)) => {
                    self.shared
                        .queued_bytes
                        .fetch_sub(m.cost, Ordering::Relaxed);
                    self.shared.queued_messages.fetch_sub(1, Ordering::Relaxed);
                    self.process(*m);
                }
                Ok(Command::Flush(reply)) => {
                    let result = self.flush(true);
                    let _ = reply.send(result);
                }
                Ok(Command::Reset) => {
                    self.identity.reset();
                    self.state_dirty = true;
                }
                Ok(Command::Forget(users)) => {
                    if self
                        .identity
                        .user_id
                        .as_ref()
                        .is_some_and(|u| users.contains(u))
                    {
                        self.identity.reset();
                        self.state_dirty = true;
                    }
                }
                Ok(Command::Purge(reply)) => {
                    let _ = reply.send(self.purge());
                }
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.flush(true);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = self.shared.clock.mono_ms();
            if self.unflushed && now.saturating_sub(self.last_flush_ms) >= GROUP_COMMIT_MS {
                let _ = self.flush(false);
            }
            if self.state_dirty && now.saturating_sub(self.last_state_save_ms) >= STATE_SAVE_MS {
                self.save_state();
            }
        }
    }

    fn save_state(&mut self) {
        let session = self
            .shared
            .capture
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sessions
            .saved();
        let mut state = self.shared.lock_state();
        state.identity = self.identity.clone();
        state.session = Some(session);
        state.durable_seq = state
            .durable_seq
            .max(self.shared.durable_seq.load(Ordering::SeqCst));
        self.shared.save_state(&state);
        drop(state);
        self.state_dirty = false;
        self.last_state_save_ms = self.shared.clock.mono_ms();
    }

    /// Makes everything appended durable and publishes the watermark;
    /// `explicit` (an app's flush) also saves the state.
    fn flush(&mut self, explicit: bool) -> Result<(), FlushError> {
        self.last_flush_ms = self.shared.clock.mono_ms();
        if self.unflushed {
            if let Err(e) = self.shared.log.flush() {
                self.shared
                    .metrics
                    .persistence_errors
                    .fetch_add(1, Ordering::Relaxed);
                return Err(FlushError::Log(e.to_string()));
            }
            self.unflushed = false;
            self.shared
                .durable_seq
                .fetch_max(self.last_appended, Ordering::SeqCst);
            self.shared.upload_wake.notify();
        }
        if explicit || self.state_dirty {
            self.save_state();
        }
        Ok(())
    }

    /// Consent withdrawn: shreds the log. What was shredded was never
    /// sent; its numbers are recorded as dropped by consent, so if consent
    /// returns the collector sees them explained, not missing.
    fn purge(&mut self) -> Result<(), FlushError> {
        let log_error = |e: crate::log::LogError| FlushError::Log(e.to_string());
        let _ = self.flush(false);
        let mut seqs: Vec<u64> = self
            .shared
            .log
            .read_pending(usize::MAX, usize::MAX)
            .map_err(log_error)?
            .iter()
            .map(|r| r.seq)
            .collect();
        seqs.sort_unstable();
        if let Err(e) = self.shared.log.purge() {
            self.shared
                .metrics
                .persistence_errors
                .fetch_add(1, Ordering::Relaxed);
            return Err(log_error(e));
        }
        bump(
            &self.shared.metrics.dropped,
            "consent_denied",
            seqs.len() as u64,
        );
        let mut state = self.shared.lock_state();
        for seq in seqs {
            state.record_drop("consent_denied", seq);
        }
        self.shared.save_state(&state);
        Ok(())
    }

    fn drop_seq(&mut self, seq: u64, reason: &str) {
        bump(&self.shared.metrics.dropped, reason, 1);
        self.shared.lock_state().record_drop(reason, seq);
        self.state_dirty = true;
        self.last_appended = self.last_appended.max(seq);
    }

    fn process(&mut self, captured: Captured) {
        let seq = captured.seq;
        if self.shared.consent() == Consent::Denied {
            self.drop_seq(seq, "consent_denied");
            return;
        }
        let priority = captured.priority;
        let msg = self.build(captured);
        let json = self.with_static_context(msg.to_json());
        if let Err(rejection) = validate(&msg, &json) {
            self.drop_seq(seq, &format!("invalid:{}", rejection.reason));
            return;
        }
        match self.shared.log.append(Entry {
            seq,
            priority,
            payload: json.into_bytes(),
        }) {
            Ok(()) => {
                self.last_appended = seq;
                self.unflushed = true;
            }
            // The log counted these two itself, in its drop ledger.
            Err(AppendError::Full | AppendError::Backlog) => {}
            Err(AppendError::TooLarge(_)) => self.drop_seq(seq, "too_large"),
            Err(_) => {
                self.shared
                    .metrics
                    .persistence_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.drop_seq(seq, "persist_failed");
            }
        }
    }

    /// Inserts the static context members before `"tally"`. The message's
    /// context is its last member and holds only `tally` (whose members
    /// are ids and numbers), so the last `"context":{"tally":` is it.
    fn with_static_context(&self, mut json: String) -> String {
        const MARK: &str = "\"context\":{\"tally\":";
        if self.static_context.is_empty() {
            return json;
        }
        if let Some(at) = json.rfind(MARK) {
            let insert_at = at + "\"context\":{".len();
            json.insert(insert_at, ',');
            json.insert_str(insert_at, &self.static_context);
        }
        json
    }

    fn message_id(&mut self, ts_ms: i64) -> String {
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        let ms = u64::try_from(ts_ms).unwrap_or(0);
        uuid::Builder::from_unix_timestamp_millis(ms, &random)
            .into_uuid()
            .to_string()
    }

    fn raw(&self, event: Option<&str>, json: &str) -> Option<RawJson> {
        if json == "{}" {
            return None;
        }
        let (filtered, _) = self.privacy.filter_properties(event, json);
        RawJson::from_text(&filtered).ok()
    }

    fn build(&mut self, c: Captured) -> Message {
        let id = self.message_id(c.ts_ms);
        let ts = format_timestamp(c.ts_ms);
        let mut msg = match c.kind {
            Kind::Track { event, props } => {
                let properties = self.raw(Some(&event), &props);
                Message {
                    properties,
                    ..Message::track(id, ts, event)
                }
            }
            Kind::Screen { name, props } => {
                let properties = self.raw(Some(&name), &props);
                Message {
                    properties,
                    ..Message::view(MessageType::Screen, id, ts, name)
                }
            }
            Kind::Page { name, props } => {
                let properties = self.raw(Some(&name), &props);
                Message {
                    properties,
                    ..Message::view(MessageType::Page, id, ts, name)
                }
            }
            Kind::Identify { user_id, traits } => {
                let user_id = self.privacy.user_id(&user_id);
                self.identity.identify(user_id.clone());
                self.state_dirty = true;
                Message {
                    traits: self.raw(None, &traits),
                    ..Message::identify(id, ts, user_id)
                }
            }
            Kind::Alias { user_id } => {
                let user_id = self.privacy.user_id(&user_id);
                let previous = self.identity.alias(user_id.clone());
                self.state_dirty = true;
                Message::alias(id, ts, previous, user_id)
            }
            Kind::Group { group_id, traits } => Message {
                traits: self.raw(None, &traits),
                ..Message::group(id, ts, group_id)
            },
        };
        msg.anonymous_id = Some(self.identity.anonymous_id.clone());
        // The SDK's own events (`tally.dropped`, `tally.health`) describe
        // the install, not a person: no userId, so a deleted user's
        // tombstone never swallows the report of that user's drops.
        let internal = msg
            .event
            .as_deref()
            .is_some_and(|e| e.starts_with(INTERNAL_PREFIX));
        if msg.user_id.is_none() && !internal {
            msg.user_id = self.identity.user_id.clone();
        }
        let context = Context {
            tally: Some(TallyContext {
                install_id: Some(self.identity.install_id.clone()),
                seq: Some(c.seq),
                session_id: Some(c.session_id.to_string()),
                session_index: Some(c.session_index),
                schema: Some(SCHEMA_VERSION),
                priority: (c.priority == Priority::Critical).then_some(Priority::Critical),
                dedup_key: c.dedup_key,
                ..TallyContext::default()
            }),
            ..Context::default()
        };
        msg.context = Some(context);
        msg
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("last_appended", &self.last_appended)
            .finish_non_exhaustive()
    }
}
