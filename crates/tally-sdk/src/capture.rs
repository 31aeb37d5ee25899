//! The capture path: the caller's half of every message, from the checks
//! that need the tracker's state to a record in the hand-off queue.
//!
//! On the caller's thread, for each message: consent and shutdown are
//! checked, the capture time is read, and under one lock ([`Capture`]'s)
//! the queue's budget is checked, the session is touched, the next `seq`
//! is taken and the message is appended to the hand-off queue
//! ([`crate::pipeline::handoff`]). No I/O, no JSON parsing, no waiting
//! (unless [`crate::WhenFull::Block`] is chosen).
//!
//! ## Invariants
//!
//! - `seq` is assigned and handed off under the one lock, so the queue
//!   (and so the log) holds messages in `seq` order, and a message refused
//!   here never takes a `seq`: the sequence has no gaps at the source.
//! - Every refusal is counted in `health().refused` under its code.
//! - The queue never holds more than the byte budget: what waits in the
//!   buffer not yet taken is within half of it, and the bytes and messages
//!   taken but not yet processed are counted until the pipeline is done
//!   with them ([`Capture::processed`]).
//! - Control commands travel in the same queue, so they apply exactly
//!   between the messages sent before and after them.
//!
//! The uploader hands the SDK's own events (`tally.dropped`,
//! `tally.health`) to this path like any call, through the narrow
//! [`Emitter`] interface [`Capture`] implements.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tally_proto::limits::MAX_ID_BYTES;
use tally_proto::{Priority, RejectReason};

use crate::config::WhenFull;
use crate::error::{FlushError, Refusal};
use crate::health::bump;
use crate::pipeline::handoff::{Captured, Command, Handoff, Kind, Waiting};
use crate::pipeline::privacy::Consent;
use crate::pipeline::session::{SavedSession, Sessions};
use crate::props::Props;
use crate::shared::Shared;
use crate::upload::reports::Emitter;

/// How long a blocked caller sleeps between retries when the channel is
/// full under [`WhenFull::Block`]: short against the pipeline's per-message
/// time (microseconds), so room is noticed quickly.
const BLOCK_RETRY: Duration = Duration::from_micros(50);

/// A message accepted by the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The message's per-install sequence number.
    pub seq: u64,
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
    /// The version of the event in the tracking plan the app was built
    /// against (`context.tally.event_version`): the collector judges the
    /// event by that version. `tally plan codegen` sets it.
    pub event_version: Option<u32>,
}

/// The caller-side capture state, under one lock.
#[derive(Debug)]
pub(crate) struct CaptureState {
    next_seq: u64,
    sessions: Sessions,
    handoff: Handoff,
}

/// The capture path and the hand-off queue it fills.
#[derive(Debug)]
pub(crate) struct Capture {
    shared: Arc<Shared>,
    state: Mutex<CaptureState>,
    /// Signals the pipeline that the hand-off queue has records for it.
    handoff_ready: Condvar,
    /// Bytes of message records in the hand-off queue (waiting, or taken
    /// and not yet processed), against the byte budget.
    queued_bytes: AtomicUsize,
    /// Messages in the hand-off queue (at most `channel_capacity`).
    queued_messages: AtomicUsize,
}

impl Capture {
    /// The capture path of a tracker whose next message takes `next_seq`.
    pub(crate) fn new(shared: Arc<Shared>, next_seq: u64, sessions: Sessions) -> Self {
        Self {
            shared,
            state: Mutex::new(CaptureState {
                next_seq,
                sessions,
                handoff: Handoff::new(),
            }),
            handoff_ready: Condvar::new(),
            queued_bytes: AtomicUsize::new(0),
            queued_messages: AtomicUsize::new(0),
        }
    }

    /// What the tracker's threads share.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn lock(&self) -> MutexGuard<'_, CaptureState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a refusal and returns it.
    pub(crate) fn refuse(&self, refusal: Refusal) -> TrackResult {
        bump(&self.shared.metrics.refused, refusal.code(), 1);
        Err(refusal)
    }

    /// The caller-thread half of every message; `session` is the session
    /// the app named, if it named one.
    pub(crate) fn accept(
        &self,
        kind: Kind<'_>,
        options: TrackOptions,
        session: Option<&str>,
    ) -> TrackResult {
        let shared = &self.shared;
        match shared.consent() {
            Consent::Denied => return self.refuse(Refusal::ConsentDenied),
            Consent::Pending if shared.config.store_nothing_while_pending => {
                return self.refuse(Refusal::ConsentPending)
            }
            _ => {}
        }
        if shared.stopping.load(Ordering::Relaxed) {
            return self.refuse(Refusal::ShutDown);
        }
        let dedup_key = options.dedup_key.as_deref();
        if dedup_key.is_some_and(|d| d.len() > MAX_ID_BYTES) {
            return self.refuse(Refusal::Invalid(RejectReason::IdTooLong));
        }
        if dedup_key.is_some_and(|d| d.contains('\0')) {
            return self.refuse(Refusal::Invalid(RejectReason::NulCharacter));
        }
        let ts_ms = shared.clock.wall_ms();
        let deadline = match shared.config.when_full {
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
            event_version: options.event_version,
            cost: 0,
        };
        let budget = shared.config.queue_budget_bytes;
        let capacity = shared.config.channel_capacity;
        loop {
            let mut capture = self.lock();
            if capture.handoff.closed {
                drop(capture);
                return self.refuse(Refusal::ShutDown);
            }
            // Within the budget, and within half of it in the buffer not
            // yet taken: the pipeline's batch and this buffer together
            // never hold more than the budget.
            captured.seq = capture.next_seq;
            let cost = capture.handoff.cost(&captured);
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
            let seq = captured.seq;
            captured.session_index = session_index;
            self.queued_bytes.fetch_add(cost, Ordering::Relaxed);
            self.queued_messages.fetch_add(1, Ordering::Relaxed);
            if capture.handoff.push_message(&captured, &session_id) {
                self.handoff_ready.notify_one();
            }
            capture.next_seq += 1;
            drop(capture);
            shared.metrics.tracked.fetch_add(1, Ordering::Relaxed);
            return Ok(Accepted { seq });
        }
    }

    /// Sends a control command in order with the messages.
    pub(crate) fn control(&self, command: Command) -> Result<(), FlushError> {
        let mut capture = self.lock();
        self.push_control(&mut capture, command)
    }

    fn push_control(&self, capture: &mut CaptureState, command: Command) -> Result<(), FlushError> {
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

    /// Logout: a new session from `now_ms`, and the pipeline resets the
    /// identity in order with the messages (those before keep the old one).
    pub(crate) fn reset(&self, now_ms: i64) -> Result<(), FlushError> {
        let mut capture = self.lock();
        capture.sessions.start_new(now_ms);
        self.push_control(&mut capture, Command::Reset)
    }

    /// The current session's id and index.
    pub(crate) fn current_session(&self) -> (String, u64) {
        let capture = self.lock();
        let (id, index) = capture.sessions.current();
        (id.to_string(), index)
    }

    /// The session as the SDK state saves it.
    pub(crate) fn saved_session(&self) -> SavedSession {
        self.lock().sessions.saved()
    }

    // The pipeline's side of the queue.

    /// Waits (as `waiting` says, up to `timeout_ms` when set) for records
    /// and takes them all into `batch` and `controls`. Returns whether it
    /// took any.
    pub(crate) fn take(
        &self,
        waiting: Waiting,
        timeout_ms: Option<u64>,
        batch: &mut Vec<u8>,
        controls: &mut VecDeque<Command>,
    ) -> bool {
        let mut capture = self.lock();
        if capture.handoff.is_empty() {
            capture.handoff.waiting = waiting;
            let empty = |c: &mut CaptureState| c.handoff.is_empty();
            let ready = &self.handoff_ready;
            capture = match timeout_ms {
                Some(ms) => {
                    ready
                        .wait_timeout_while(capture, Duration::from_millis(ms), empty)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                // Nothing due: sleep until a caller hands something off.
                None => ready
                    .wait_while(capture, empty)
                    .unwrap_or_else(|p| p.into_inner()),
            };
            capture.handoff.waiting = Waiting::No;
        }
        capture.handoff.take(batch, controls)
    }

    /// Closes the hand-off queue and takes what it still holds. Returns
    /// whether it took any.
    pub(crate) fn take_closing(
        &self,
        batch: &mut Vec<u8>,
        controls: &mut VecDeque<Command>,
    ) -> bool {
        let mut capture = self.lock();
        capture.handoff.closed = true;
        capture.handoff.take(batch, controls)
    }

    /// Closes the hand-off queue for good: callers are refused as shut
    /// down from now on. Returns the control commands nobody will run.
    pub(crate) fn close(&self) -> VecDeque<Command> {
        self.lock().handoff.close()
    }

    /// The pipeline is done with a message taken from the queue: its
    /// bytes and its place no longer count against the budget.
    pub(crate) fn processed(&self, captured: &Captured<'_>) {
        self.queued_bytes
            .fetch_sub(captured.cost, Ordering::Relaxed);
        self.queued_messages.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Emitter for Capture {
    fn emit(&self, event: &str, props: &Props, priority: Priority) -> Option<u64> {
        let kind = Kind::Track {
            event,
            props: props.as_json(),
        };
        let options = TrackOptions {
            priority,
            ..TrackOptions::default()
        };
        self.accept(kind, options, None).ok().map(|a| a.seq)
    }

    fn flush(&self) -> Result<(), FlushError> {
        Capture::flush(self)
    }

    fn forget(&self, users: Vec<String>) {
        // Refused only once the tracker is shut down: nothing is left to
        // forget then.
        let _ = self.control(Command::Forget(users));
    }
}
