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

use serde_json::value::RawValue;
use tally_proto::{validate, DropReason, Priority};

use crate::capture::Capture;
use crate::error::FlushError;
use crate::health::bump;
use crate::log::AppendError;
use crate::shared::Shared;
use crate::stored::check::{self, EpochFacts};
use crate::stored::{self, Epoch};

use super::enrich;
use super::handoff::{self, Captured, Command, Kind, Record, Records, Waiting, POLL_MS};
use super::identity::Identity;
use super::privacy::{Consent, Privacy};
use super::{GROUP_COMMIT_MS, INTERNAL_PREFIX};

/// How often the session and identity state is saved while events flow
/// (besides every explicit flush): a restart within this loses at most
/// this much of the session's last-activity time.
const STATE_SAVE_MS: u64 = 5_000;
/// Within a batch, the clock is read for the group commit and the state
/// save once per this many messages, not per message: a burst's batch is
/// tens of thousands of messages, a microsecond or less each, so a commit
/// comes at most a fraction of a millisecond late, and the clock read (a
/// tenth of the per-message work) is paid once in 64.
const TICK_EVERY: u32 = 64;

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
    /// What the records share (the context template, the identity, the
    /// session), its bytes as the log stores them once per segment, and
    /// what the validity check needs to know of it.
    epoch: Epoch,
    epoch_bytes: Arc<[u8]>,
    facts: EpochFacts,
    /// The compact record being encoded (its capacity is kept).
    record: Vec<u8>,
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
        let epoch = Epoch {
            context: enrich::context_template(&shared.config.context.device_context()),
            ..Epoch::default()
        };
        let facts = EpochFacts::of(&epoch, &[]);
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
            epoch,
            epoch_bytes: Arc::from(Vec::new()),
            facts,
            record: Vec::with_capacity(256),
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
        let mut until_tick = TICK_EVERY;
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
                    until_tick -= 1;
                    if until_tick == 0 {
                        until_tick = TICK_EVERY;
                        self.tick();
                    }
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
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        // The identity a call changes applies to its own message.
        let (name, props, event_of_bag) = match captured.kind {
            Kind::Track { event, props } => (event, props, Some(event)),
            Kind::Screen { name, props } | Kind::Page { name, props } => (name, props, Some(name)),
            Kind::Identify { traits, .. } => ("", traits, None),
            Kind::Group { group_id, traits } => (group_id, traits, None),
            Kind::Alias { .. } => ("", "{}", None),
        };
        let (kind, user_id, previous_id) = match captured.kind {
            Kind::Track { .. } => (stored::Kind::Track, None, None),
            Kind::Screen { .. } => (stored::Kind::Screen, None, None),
            Kind::Page { .. } => (stored::Kind::Page, None, None),
            Kind::Group { .. } => (stored::Kind::Group, None, None),
            Kind::Identify { user_id, .. } => {
                let user_id = self.privacy.user_id(user_id);
                self.identity.identify(user_id.clone());
                self.state_dirty = true;
                (stored::Kind::Identify, Some(user_id), None)
            }
            Kind::Alias { user_id } => {
                let user_id = self.privacy.user_id(user_id);
                let previous = self.identity.alias(user_id.clone());
                self.state_dirty = true;
                (stored::Kind::Alias, Some(user_id), Some(previous))
            }
        };
        self.refresh_epoch();
        let filtered =
            (props != "{}").then(|| self.privacy.filter_properties(event_of_bag, props).0);
        // JSON object text: the tracker takes properties only as `Props`,
        // which holds serialized objects, and the privacy stage keeps them
        // objects; so no parse here. A debug build checks it.
        let bag = filtered.as_deref();
        debug_assert!(bag.is_none_or(|b| serde_json::from_str::<&RawValue>(b).is_ok()));
        // The SDK's own events (`tally.dropped`, `tally.health`) describe
        // the install, not a person: no userId, so a deleted user's
        // tombstone never swallows the report of that user's drops.
        let internal = matches!(kind, stored::Kind::Track) && name.starts_with(INTERNAL_PREFIX);
        let event = stored::Event {
            kind,
            ts_ms: captured.ts_ms,
            random,
            session_index: captured.session_index,
            name,
            user_id: user_id.as_deref(),
            inherit_user: !internal,
            previous_id: previous_id.as_deref(),
            dedup_key: captured.dedup_key,
            critical: priority == Priority::Critical,
            bag,
            event_version: captured.event_version,
        };
        if !check::certainly_valid(&event, &self.facts, seq) {
            // The exact answer, on the message built whole.
            let context = std::mem::take(&mut self.epoch.context);
            let mut msg = stored::message_in(&event, &self.epoch, seq, context);
            let valid = validate(&msg, &msg.to_json());
            if let Some(mut context) = msg.context.take() {
                context.tally = None;
                self.epoch.context = context;
            }
            if let Err(rejection) = valid {
                self.drop_seq(seq, DropReason::Invalid(rejection.reason));
                return;
            }
        }
        self.record.clear();
        stored::encode(&event, &mut self.record);
        match self
            .shared
            .log
            .append_in(seq, priority, &self.record, Some(&self.epoch_bytes))
        {
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

    /// Makes the epoch the records are appended in match the identity and
    /// session: a change makes a new one (which the log stores once per
    /// segment).
    fn refresh_epoch(&mut self) {
        let e = &self.epoch;
        let same = e.session_id == self.session_id
            && e.anonymous_id == self.identity.anonymous_id
            && e.user_id == self.identity.user_id
            && e.install_id == self.identity.install_id;
        if same && !self.epoch_bytes.is_empty() {
            return;
        }
        self.epoch.session_id.clone_from(&self.session_id);
        self.epoch
            .anonymous_id
            .clone_from(&self.identity.anonymous_id);
        self.epoch.user_id.clone_from(&self.identity.user_id);
        self.epoch.install_id.clone_from(&self.identity.install_id);
        self.epoch_bytes = self.epoch.to_bytes();
        self.facts = EpochFacts::of(&self.epoch, &self.epoch_bytes);
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
