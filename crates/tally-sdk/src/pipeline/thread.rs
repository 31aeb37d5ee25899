//! The pipeline thread: works through the hand-off queue in order, turns
//! each captured message into a record in the log, and runs the control
//! commands between them (see the [module documentation](super) for the
//! stages).
//!
//! ## Invariants
//!
//! - Records are appended in `seq` order, the order the queue holds them.
//! - A message that takes a `seq` and is not appended (consent withdrawn,
//!   invalid once built, too large, a failed write) is recorded with its
//!   [`DropReason`] in the log's drop ledger, like the two drops the log
//!   makes itself (`log_full`, `writer_backlog`): durable before any later
//!   record, counted, and reported to the collector.
//! - The durable watermark is published only after the log's flush
//!   succeeded, and only grows.
//! - When the thread ends, however it ends, the hand-off queue is closed:
//!   callers are refused as shut down, and commands nobody will run are
//!   dropped, which their senders see as the tracker shut down.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tally_proto::limits::SCHEMA_VERSION;
use tally_proto::{
    format_timestamp, validate, Context, DropReason, Message, MessageType, Priority, RawJson,
    TallyContext,
};

use crate::capture::Capture;
use crate::error::FlushError;
use crate::health::bump;
use crate::log::{AppendError, Entry};
use crate::shared::Shared;

use super::enrich;
use super::handoff::{self, Captured, Command, Kind, Record, Records, Waiting, POLL_MS};
use super::identity::Identity;
use super::privacy::{Consent, Privacy};
use super::{GROUP_COMMIT_MS, INTERNAL_PREFIX};

/// How often the session and identity state is saved while events flow
/// (besides every explicit flush): a restart within this loses at most
/// this much of the session's last-activity time.
const STATE_SAVE_MS: u64 = 5_000;

/// The pipeline thread's state.
pub(crate) struct Pipeline {
    capture: Arc<Capture>,
    shared: Arc<Shared>,
    /// The hand-off records being worked through, and their commands.
    batch: Vec<u8>,
    controls: VecDeque<Command>,
    /// The session of the messages being read (from the last session
    /// record).
    session_id: String,
    session_index: u64,
    /// A shutdown command was read: finish what was accepted, then stop.
    stopping: bool,
    identity: Identity,
    /// The context template (app, device, OS, locale, time zone,
    /// library): moved into each message as it is built and back once it
    /// is serialized, so it is neither copied nor spliced as text.
    context: Context,
    privacy: Privacy,
    rng: fastrand::Rng,
    last_appended: u64,
    unflushed: bool,
    last_flush_ms: u64,
    last_state_save_ms: u64,
    state_dirty: bool,
}

impl Pipeline {
    pub(crate) fn new(capture: Arc<Capture>) -> Self {
        let shared = Arc::clone(capture.shared());
        let identity = shared.lock_state().identity.clone();
        let context = enrich::context_template(&shared.config.context.device_context());
        let privacy = Privacy::new(shared.config.privacy.clone());
        let last_appended = shared.durable_seq.load(Ordering::SeqCst);
        let now = shared.clock.mono_ms();
        Self {
            capture,
            shared,
            batch: Vec::new(),
            controls: VecDeque::new(),
            session_id: String::new(),
            session_index: 0,
            stopping: false,
            identity,
            context,
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
        let _close = CloseOnExit(Arc::clone(&self.capture));
        let mut waiting = Waiting::Idle;
        loop {
            let took = self.take(waiting);
            waiting = if took {
                Waiting::Polling
            } else {
                Waiting::Idle
            };
            if took {
                self.work();
            }
            if self.stopping {
                // Closed now: what callers pushed before is accepted, so
                // it is persisted before the last flush.
                while self.take_closing() {
                    self.work();
                }
                let _ = self.flush(true);
                return;
            }
            self.tick();
        }
    }

    /// Waits (as `waiting` says) for records and takes them all. Returns
    /// whether it took any.
    fn take(&mut self, waiting: Waiting) -> bool {
        let timeout = match waiting {
            Waiting::Polling => Some(POLL_MS),
            _ => self.due_in(),
        };
        self.capture
            .take(waiting, timeout, &mut self.batch, &mut self.controls)
    }

    /// How long until the group commit or the state save this thread owes
    /// is due; `None` when it owes neither (see [`crate::mobile`]: an idle
    /// SDK sets no timer).
    fn due_in(&self) -> Option<u64> {
        let now = self.shared.clock.mono_ms();
        let commit = self
            .unflushed
            .then(|| GROUP_COMMIT_MS.saturating_sub(now.saturating_sub(self.last_flush_ms)));
        let save = self
            .state_dirty
            .then(|| STATE_SAVE_MS.saturating_sub(now.saturating_sub(self.last_state_save_ms)));
        commit.into_iter().chain(save).min().map(|ms| ms.max(1))
    }

    /// Closes the hand-off queue and takes what it still holds. Returns
    /// whether it took any.
    fn take_closing(&mut self) -> bool {
        self.capture
            .take_closing(&mut self.batch, &mut self.controls)
    }

    /// Works through the batch taken, in order.
    fn work(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        for record in Records::new(&batch) {
            match record {
                Record::Session { id, index } => {
                    self.session_id.clear();
                    self.session_id.push_str(id);
                    self.session_index = index;
                }
                Record::Message(mut captured) => {
                    captured.session_index = self.session_index;
                    self.capture.processed(&captured);
                    self.process(captured);
                    self.tick();
                }
                Record::Control => {
                    if let Some(command) = self.controls.pop_front() {
                        self.control(command);
                    }
                }
            }
        }
        self.batch = batch;
        self.prepare_buffer();
        self.batch.clear();
    }

    /// Readies the buffer the next take swaps in as the one callers fill,
    /// while a burst lasts (the batch just taken was large): reserved at
    /// the most callers may put in it, half the queue budget, and touched
    /// here, so that a caller appending to it takes no page fault (the
    /// fault, a microsecond or two, was the tail of `track()`'s latency
    /// in a burst). The caller wrote the batch's own bytes; the rest is
    /// zeroed once. A drained queue gives this memory back (see
    /// [`handoff::Handoff::take`]).
    fn prepare_buffer(&mut self) {
        let taken = self.batch.len();
        let want = self.shared.config.queue_budget_bytes / 2;
        if taken >= handoff::WAKE_BYTES && taken < want {
            self.batch.reserve_exact(want - taken);
            self.batch.resize(want, 0);
        }
    }

    fn control(&mut self, command: Command) {
        match command {
            Command::Flush(reply) => {
                let result = self.flush(true);
                let _ = reply.send(result);
            }
            Command::Reset => {
                self.identity.reset();
                self.state_dirty = true;
            }
            Command::Forget(users) => {
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
            Command::Purge(reply) => {
                let _ = reply.send(self.purge());
            }
            Command::Shutdown => self.stopping = true,
        }
    }

    /// The group commit and the periodic state save, when due.
    fn tick(&mut self) {
        let now = self.shared.clock.mono_ms();
        if self.unflushed && now.saturating_sub(self.last_flush_ms) >= GROUP_COMMIT_MS {
            let _ = self.flush(false);
        }
        if self.state_dirty && now.saturating_sub(self.last_state_save_ms) >= STATE_SAVE_MS {
            self.save_state();
        }
    }

    fn save_state(&mut self) {
        let session = self.capture.saved_session();
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
    /// returns the collector sees them explained, not missing; so are the
    /// drop ledger's ranges not yet reported.
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
        // The shredding takes the drop ledger with it: what it holds that
        // is not yet reported moves to the state's own drops (saved before
        // the log is purged), and its counts to the tracker's, so every
        // drop stays explained and counted.
        let ledger = self.shared.log.drop_ledger();
        let log_dropped = self.shared.log.stats().dropped;
        {
            let mut state = self.shared.lock_state();
            for range in &ledger {
                let open = state.unreported_ledger(&range.reason, range.first_seq, range.last_seq);
                for [from, to] in open {
                    state.record_drops(&range.reason, from, to);
                }
            }
            self.shared.save_state(&state);
        }
        if let Err(e) = self.shared.log.purge() {
            self.shared
                .metrics
                .persistence_errors
                .fetch_add(1, Ordering::Relaxed);
            return Err(log_error(e));
        }
        for (reason, n) in log_dropped {
            bump(&self.shared.metrics.dropped, &reason, n);
        }
        let reason = DropReason::ConsentDenied.as_str();
        if !seqs.is_empty() {
            bump(&self.shared.metrics.dropped, reason, seqs.len() as u64);
        }
        let mut state = self.shared.lock_state();
        for seq in seqs {
            state.record_drop(reason, seq);
        }
        self.shared.save_state(&state);
        Ok(())
    }

    /// A message that took `seq` and will not be appended: the drop goes
    /// to the log's drop ledger, which the writer makes durable before any
    /// record appended after it (so a kill never leaves a record above an
    /// unexplained seq), and which counts it.
    fn drop_seq(&mut self, seq: u64, reason: DropReason) {
        self.shared.log.record_drop(seq, reason.as_str());
        self.last_appended = self.last_appended.max(seq);
        self.unflushed = true;
        self.drop_to_report();
    }

    /// A drop waits to be reported: the uploader, which sets no timer while
    /// idle (see [`crate::mobile`]), is told.
    fn drop_to_report(&self) {
        self.shared.upload_wake.notify();
    }

    fn process(&mut self, captured: Captured<'_>) {
        let seq = captured.seq;
        if self.shared.consent() == Consent::Denied {
            self.drop_seq(seq, DropReason::ConsentDenied);
            return;
        }
        let priority = captured.priority;
        let mut msg = self.build(captured);
        let json = msg.to_json();
        let valid = validate(&msg, &json);
        // The template goes back for the next message.
        if let Some(mut context) = msg.context.take() {
            context.tally = None;
            self.context = context;
        }
        if let Err(rejection) = valid {
            self.drop_seq(seq, DropReason::Invalid(rejection.reason));
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
            Err(AppendError::Full | AppendError::Backlog) => self.drop_to_report(),
            Err(AppendError::TooLarge(_)) => self.drop_seq(seq, DropReason::TooLarge),
            Err(_) => {
                self.shared
                    .metrics
                    .persistence_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.drop_seq(seq, DropReason::PersistFailed);
            }
        }
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

    fn build(&mut self, c: Captured<'_>) -> Message {
        let id = self.message_id(c.ts_ms);
        let ts = format_timestamp(c.ts_ms);
        let mut msg = match c.kind {
            Kind::Track { event, props } => {
                let properties = self.raw(Some(event), props);
                Message {
                    properties,
                    ..Message::track(id, ts, event.to_owned())
                }
            }
            Kind::Screen { name, props } => {
                let properties = self.raw(Some(name), props);
                Message {
                    properties,
                    ..Message::view(MessageType::Screen, id, ts, name.to_owned())
                }
            }
            Kind::Page { name, props } => {
                let properties = self.raw(Some(name), props);
                Message {
                    properties,
                    ..Message::view(MessageType::Page, id, ts, name.to_owned())
                }
            }
            Kind::Identify { user_id, traits } => {
                let user_id = self.privacy.user_id(user_id);
                self.identity.identify(user_id.clone());
                self.state_dirty = true;
                Message {
                    traits: self.raw(None, traits),
                    ..Message::identify(id, ts, user_id)
                }
            }
            Kind::Alias { user_id } => {
                let user_id = self.privacy.user_id(user_id);
                let previous = self.identity.alias(user_id.clone());
                self.state_dirty = true;
                Message::alias(id, ts, previous, user_id)
            }
            Kind::Group { group_id, traits } => Message {
                traits: self.raw(None, traits),
                ..Message::group(id, ts, group_id.to_owned())
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
                session_id: Some(self.session_id.clone()),
                session_index: Some(c.session_index),
                schema: Some(SCHEMA_VERSION),
                priority: (c.priority == Priority::Critical).then_some(Priority::Critical),
                dedup_key: c.dedup_key.map(str::to_owned),
                event_version: c.event_version,
                ..TallyContext::default()
            }),
            ..std::mem::take(&mut self.context)
        };
        msg.context = Some(context);
        msg
    }
}

/// Closes the hand-off queue when the pipeline thread ends, however it
/// ends: callers are then refused as shut down, and commands nobody will
/// run are dropped, which their senders see as the tracker shut down.
struct CloseOnExit(Arc<Capture>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        let orphans = self.0.close();
        drop(orphans);
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("last_appended", &self.last_appended)
            .finish_non_exhaustive()
    }
}
