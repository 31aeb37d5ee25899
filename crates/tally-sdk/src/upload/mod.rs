//! The uploader: from durable records in the log to answers from the
//! collector, and back to the log as acks.
//!
//! ## Invariants
//!
//! - Only records a flush made durable are sent (`seq` ≤ the pipeline's
//!   durable watermark), so a crash never loses an event the collector has
//!   already counted, and never makes the SDK reuse a `seq` it has seen.
//! - A record leaves the log only after the collector answered for it
//!   (accepted, duplicate, or rejected into the counted quarantine), or a
//!   named policy dropped it (`deleted_user`). Before any ack the highest
//!   acked `seq` is saved, so a restart never reuses a number.
//! - Order: batches are taken from the head of each lane in order; a
//!   failed batch is retried before anything after it, and a split sends
//!   its halves in order, stopping at the first half that fails.
//! - No batch is resent forever: a 400 is re-encoded once and then bisected
//!   until the one record at fault is quarantined; a 413 is split, and a
//!   single record that is still too large is quarantined; a batch whose
//!   first record keeps getting 5xx is narrowed to that record, which is
//!   quarantined after [`policy::POISON_QUARANTINE_AFTER`] tries.
//!
//! | module | concern |
//! |---|---|
//! | [`batcher`] | envelope, encoding, adaptive budget |
//! | [`transport`] | the `Transport` trait and the HTTP client |
//! | [`outcome`] | answer → [`outcome::Outcome`] |
//! | [`backoff`] | full-jitter exponential backoff |
//! | [`policy`] | every limit and delay |
//! | `reports` | `tally.dropped` and `tally.health`, handed to the pipeline through `reports::Emitter` |

pub mod backoff;
pub mod batcher;
pub mod outcome;
pub mod policy;
pub(crate) mod reports;
pub mod transport;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tally_proto::{
    device_offset, format_timestamp, parse_timestamp, BatchResponse, DropReason, Status,
};

use crate::log::{Disposition, Record, REASON_CORRUPT};
use crate::mobile::{Allowed, LOW_POWER_HOLD_MS};
use crate::pipeline::privacy::Consent;
use crate::shared::Shared;
use crate::stored::Expander;

use self::backoff::Backoff;
use self::batcher::Budget;
use self::outcome::{classify, Outcome};
use self::policy::{MAX_BATCH_RECORDS, POISON_QUARANTINE_AFTER, POISON_SPLIT_AFTER};
use self::reports::Emitter;
use self::transport::{Method, Request, Transport, TransportError};

pub use self::reports::{DROPPED_EVENT, HEALTH_EVENT};

/// Pause before reporting drops again when a report could not be queued
/// (full hand-off queue): long enough not to spin, short against a sync.
const DROP_REPORT_RETRY_MS: u64 = 10;

/// A background sync starts a batch only if this many times the recent
/// p99 send latency ends before its deadline: a send's latency varies
/// (a batch cut off at the deadline is only sent again later, but the OS
/// may suspend the app mid-request), and twice the p99 leaves room for
/// the slowest send of a window without giving up half the time.
const BACKGROUND_SEND_MARGIN: u64 = 2;

/// Why the uploader gives up on a record the collector cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quarantine {
    /// Undecodable even alone and re-encoded (400).
    Undecodable,
    /// Too large even alone (413).
    TooLarge,
    /// Kept failing with a server error (5xx).
    ServerError,
}

impl Quarantine {
    /// The code the record's rejection is counted under in the log.
    fn rejected_code(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::TooLarge => "too_large",
            Self::ServerError => "server_error",
        }
    }

    /// The reason its seq is reported as dropped.
    fn drop_reason(self) -> DropReason {
        match self {
            Self::Undecodable => DropReason::QuarantinedUndecodable,
            Self::TooLarge => DropReason::QuarantinedTooLarge,
            Self::ServerError => DropReason::QuarantinedServerError,
        }
    }
}

/// What one attempt achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Records were answered for; try the next batch at once.
    Progress,
    /// Nothing durable is pending.
    Idle,
    /// The attempt failed; wait until the next try.
    Failed,
}

/// The uploader thread's state.
pub(crate) struct Uploader {
    shared: Arc<Shared>,
    /// Where the SDK's own events go: the capture path, like a call's.
    emitter: Arc<dyn Emitter>,
    transport: Arc<dyn Transport>,
    backoff: Backoff,
    budget: Budget,
    next_try_ms: u64,
    max_records: usize,
    head_failures: Option<(u64, u32)>,
    draining: bool,
    /// Low-power mode: when the uploader first saw the records it holds.
    hold_since: Option<u64>,
    last_beacon_ms: u64,
    authorization: String,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("budget", &self.budget)
            .field("next_try_ms", &self.next_try_ms)
            .finish_non_exhaustive()
    }
}

impl Uploader {
    pub(crate) fn new(
        shared: Arc<Shared>,
        emitter: Arc<dyn Emitter>,
        transport: Arc<dyn Transport>,
    ) -> Self {
        let rng = match shared.config.jitter_seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        // Segment's convention: the write key is the Basic user name.
        let authorization = format!(
            "Basic {}",
            STANDARD.encode(format!("{}:", shared.config.write_key))
        );
        let now = shared.clock.mono_ms();
        Self {
            shared,
            emitter,
            transport,
            backoff: Backoff::new(rng),
            budget: Budget::default(),
            next_try_ms: 0,
            max_records: MAX_BATCH_RECORDS,
            head_failures: None,
            draining: false,
            hold_since: None,
            last_beacon_ms: now,
            authorization,
        }
    }

    pub(crate) fn run(mut self) {
        let clock = Arc::clone(&self.shared.clock);
        let shared = Arc::clone(&self.shared);
        let device = &shared.device;
        loop {
            if self.shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            if self.shared.sync_requested.swap(false, Ordering::SeqCst) {
                self.next_try_ms = 0;
                self.draining = true;
            }
            if device.take_retry_now() {
                self.next_try_ms = 0;
            }
            let background = device.background_deadline();
            let active = self.shared.config.auto_upload || self.draining || background.is_some();
            let blocked = self.shared.consent() != Consent::Granted
                || self.shared.metrics.auth_failed.load(Ordering::SeqCst);
            let allowed = device.allowed(self.shared.config.metered_policy);
            if !active || blocked || allowed == Allowed::Nothing {
                // No timer: a call, a consent or network change wakes it.
                clock.wait_for_wake(&self.shared.upload_wake);
                continue;
            }
            let now = clock.mono_ms();
            if now < self.next_try_ms {
                clock.wait(&self.shared.upload_wake, self.next_try_ms - now);
                continue;
            }
            if let Some(deadline) = background {
                let p99 = self.shared.health().sync_latency_p99_ms.unwrap_or(0);
                if now.saturating_add(p99.saturating_mul(BACKGROUND_SEND_MARGIN)) >= deadline {
                    device.background_out_of_time();
                    clock.wait_for_wake(&self.shared.upload_wake);
                    continue;
                }
            } else if device.low_power() && !self.draining {
                if let Some(hold) = self.low_power_hold(now) {
                    clock.wait(&self.shared.upload_wake, hold);
                    continue;
                }
            }
            self.shared.metrics.backoff_ms.store(0, Ordering::Relaxed);
            self.beacon(now);
            self.report_drops();
            match self.send_next(allowed) {
                Step::Progress => {}
                // Drops found while sending (a report pushing out an old
                // event in a full log) are reported before going idle.
                Step::Idle if self.shared.has_unreported_drops() => {
                    clock.wait(&self.shared.upload_wake, DROP_REPORT_RETRY_MS);
                }
                Step::Idle => {
                    self.draining = false;
                    self.hold_since = None;
                    if background.is_some() {
                        device.background_idle();
                    }
                    self.wait_idle();
                }
                Step::Failed => {
                    if background.is_some() {
                        device.background_failed();
                    }
                }
            }
        }
    }

    /// Nothing to send: sleeps until woken, or until the next health
    /// beacon is due when beacons are on.
    fn wait_idle(&self) {
        let clock = &self.shared.clock;
        match self.shared.config.health_beacon_ms {
            Some(every) => {
                let due = self.last_beacon_ms.saturating_add(every);
                let wait = due.saturating_sub(clock.mono_ms()).max(1);
                clock.wait(&self.shared.upload_wake, wait);
            }
            None => clock.wait_for_wake(&self.shared.upload_wake),
        }
    }

    /// In low-power mode: how long pending records are still held (see
    /// [`crate::mobile`]), or `None` to send now.
    fn low_power_hold(&mut self, now: u64) -> Option<u64> {
        let stats = self.shared.log.stats();
        let full_batch = stats.pending_events >= MAX_BATCH_RECORDS as u64
            || stats.pending_bytes >= self.budget.bytes() as u64;
        if stats.pending_events == 0 || full_batch {
            return None;
        }
        let since = *self.hold_since.get_or_insert(now);
        let held = now.saturating_sub(since);
        (held < LOW_POWER_HOLD_MS).then(|| LOW_POWER_HOLD_MS - held)
    }

    fn fail(&mut self, delay_ms: u64) -> Step {
        self.next_try_ms = self.shared.clock.mono_ms().saturating_add(delay_ms);
        let metrics = &self.shared.metrics;
        metrics.backoff_ms.store(delay_ms, Ordering::Relaxed);
        metrics
            .consecutive_failures
            .store(u64::from(self.backoff.failures()), Ordering::Relaxed);
        Step::Failed
    }

    fn send_next(&mut self, allowed: Allowed) -> Step {
        let durable = self.shared.durable_seq.load(Ordering::SeqCst);
        let records = match self
            .shared
            .log
            .read_pending(self.max_records, self.budget.bytes())
        {
            Ok(records) => records,
            Err(_) => {
                self.shared
                    .metrics
                    .persistence_errors
                    .fetch_add(1, Ordering::Relaxed);
                let delay = self.backoff.fail();
                return self.fail(delay);
            }
        };
        let records: Vec<Record> = records
            .into_iter()
            .filter(|r| r.seq <= durable && allowed.admits(r.priority))
            .collect();
        let records = self.expand(records);
        if records.is_empty() {
            return Step::Idle;
        }
        self.deliver(&records, false)
    }

    /// Turns stored records into the messages' JSON (see
    /// [`crate::stored`]), as many as the batch budget holds (at least
    /// one). A record that cannot be expanded is dropped as corrupt,
    /// counted in the log's ledger.
    fn expand(&mut self, records: Vec<Record>) -> Vec<Record> {
        let mut expander = Expander::default();
        let mut out = Vec::with_capacity(records.len());
        let mut corrupt = Vec::new();
        let mut bytes = 0usize;
        for mut r in records {
            match expander.json(&r.payload, r.context.as_ref(), r.seq) {
                Ok(json) => {
                    if !out.is_empty() && bytes + json.len() + 1 > self.budget.bytes() {
                        break;
                    }
                    bytes += json.len() + 1;
                    r.payload = json;
                    r.context = None;
                    out.push(r);
                }
                Err(_) => corrupt.push((r, Disposition::Dropped(REASON_CORRUPT.to_owned()))),
            }
        }
        self.ack(corrupt);
        out
    }

    fn request(&self, records: &[Record]) -> Request {
        let sent_at = format_timestamp(self.shared.clock.wall_ms());
        let json = batcher::envelope(records.iter().map(|r| r.payload.as_slice()), &sent_at);
        let sent = batcher::encode(&json);
        Request {
            method: Method::Post,
            path: "/v1/batch".to_owned(),
            headers: vec![
                ("Authorization", self.authorization.clone()),
                ("Content-Type", "application/json".to_owned()),
                ("Content-Encoding", sent.encoding.as_str().to_owned()),
                ("Content-Digest", sent.digest),
            ],
            body: sent.body,
        }
    }

    fn deliver(&mut self, records: &[Record], reencoded: bool) -> Step {
        let clock = Arc::clone(&self.shared.clock);
        let request = self.request(records);
        let t_send = clock.wall_ms();
        let t0 = clock.mono_ms();
        self.shared
            .metrics
            .sync_attempts
            .fetch_add(1, Ordering::Relaxed);
        let result = self.transport.send(&request);
        let elapsed = clock.mono_ms().saturating_sub(t0);
        let t_recv = clock.wall_ms();
        match classify(result, records.len(), t_recv) {
            Outcome::Results(answer) => {
                self.shared
                    .metrics
                    .sync_successes
                    .fetch_add(1, Ordering::Relaxed);
                self.on_results(records, &answer, t_send, t_recv);
                self.budget.after_success(elapsed);
                self.shared.metrics.record_latency(elapsed);
                Step::Progress
            }
            Outcome::BadRequest if !reencoded => self.deliver(records, true),
            Outcome::BadRequest if records.len() > 1 => self.split(records),
            Outcome::BadRequest => self.quarantine(&records[0], Quarantine::Undecodable),
            Outcome::TooLarge => {
                self.budget.shrink();
                if records.len() > 1 {
                    self.split(records)
                } else {
                    self.quarantine(&records[0], Quarantine::TooLarge)
                }
            }
            Outcome::Unauthorized(_) => {
                self.shared
                    .metrics
                    .auth_failed
                    .store(true, Ordering::SeqCst);
                self.draining = false;
                Step::Failed
            }
            Outcome::RetryAfter(ms) => {
                let delay = self.backoff.fail_with(ms);
                self.fail(delay)
            }
            Outcome::ServerError(_) => self.server_error(records),
            Outcome::Network(e) => {
                if e == TransportError::Timeout {
                    self.budget.shrink();
                }
                let delay = self.backoff.fail();
                self.fail(delay)
            }
        }
    }

    fn split(&mut self, records: &[Record]) -> Step {
        let mid = records.len() / 2;
        match self.deliver(&records[..mid], false) {
            Step::Progress => self.deliver(&records[mid..], false),
            other => other,
        }
    }

    /// Poison isolation for 5xx: the same head failing again and again is
    /// narrowed to itself, then quarantined.
    fn server_error(&mut self, records: &[Record]) -> Step {
        let head = records[0].seq;
        let count = match self.head_failures {
            Some((seq, n)) if seq == head => n + 1,
            _ => 1,
        };
        self.head_failures = Some((head, count));
        if records.len() == 1 && count >= POISON_QUARANTINE_AFTER {
            self.head_failures = None;
            return self.quarantine(&records[0], Quarantine::ServerError);
        }
        if count >= POISON_SPLIT_AFTER {
            self.max_records = (records.len() / 2).max(1);
        }
        let delay = self.backoff.fail();
        self.fail(delay)
    }

    fn succeeded(&mut self) {
        self.backoff.succeed();
        self.head_failures = None;
        self.max_records = MAX_BATCH_RECORDS;
        let metrics = &self.shared.metrics;
        metrics.consecutive_failures.store(0, Ordering::Relaxed);
        metrics.backoff_ms.store(0, Ordering::Relaxed);
    }

    /// Gives up on a record the collector cannot take. The collector
    /// never stored it, so its seq is also reported as dropped
    /// (`quarantined_<reason>`), keeping it out of the missing ranges.
    fn quarantine(&mut self, record: &Record, reason: Quarantine) -> Step {
        {
            let mut state = self.shared.lock_state();
            state.record_drop(reason.drop_reason().as_str(), record.seq);
            self.shared.save_state(&state);
        }
        self.ack(vec![(
            record.clone(),
            Disposition::Rejected(reason.rejected_code().to_owned()),
        )]);
        self.succeeded();
        Step::Progress
    }

    /// Saves the acked watermark and settles the drop reports among the
    /// acks (answered: reported for good; dropped on the device: reported
    /// again), then acks in the log.
    fn ack(&self, acks: Vec<(Record, Disposition)>) {
        let Some(max_seq) = acks.iter().map(|(r, _)| r.seq).max() else {
            return;
        };
        {
            let mut state = self.shared.lock_state();
            let mut changed = false;
            if max_seq > state.acked_seq {
                state.acked_seq = max_seq;
                changed = true;
            }
            if !state.reports_in_flight.is_empty() {
                for (record, disposition) in &acks {
                    changed |= match disposition {
                        Disposition::Delivered | Disposition::Rejected(_) => {
                            state.report_answered(record.seq)
                        }
                        Disposition::Dropped(_) => {
                            state.requeue_lost_reports(|seq| seq == record.seq) > 0
                        }
                    };
                }
            }
            if changed {
                self.shared.save_state(&state);
            }
        }
        let acks: Vec<_> = acks.into_iter().map(|(r, d)| (r.id, d)).collect();
        if self.shared.log.ack(&acks).is_err() {
            self.shared
                .metrics
                .persistence_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_results(&mut self, records: &[Record], answer: &BatchResponse, t_send: i64, t_recv: i64) {
        let metrics = &self.shared.metrics;
        if let Some(server) = parse_timestamp(&answer.server_time) {
            let (offset, rtt) = device_offset(t_send, server, t_recv);
            metrics.record_offset(offset, rtt);
        }
        let mut acks = Vec::with_capacity(records.len());
        for (record, result) in records.iter().zip(&answer.results) {
            let disposition = match result.status {
                Status::Accepted => {
                    metrics.accepted.fetch_add(1, Ordering::Relaxed);
                    Disposition::Delivered
                }
                Status::Duplicate => {
                    metrics.duplicate.fetch_add(1, Ordering::Relaxed);
                    Disposition::Delivered
                }
                Status::Rejected => {
                    let reason = result.reason.map_or("unrecognized", |r| r.as_str());
                    Disposition::Rejected(reason.to_owned())
                }
            };
            acks.push((record.clone(), disposition));
        }
        // Before the ack: whoever sees the records answered (pending 0)
        // sees when they were.
        metrics.last_success_ms.store(t_recv, Ordering::Relaxed);
        self.ack(acks);
        self.succeeded();
        if !answer.deleted_users.is_empty() {
            self.purge_deleted(&answer.deleted_users);
        }
    }

    /// Drops every pending record of a deleted user (`deleted_user`), and
    /// makes the pipeline forget the user if it is the current one.
    fn purge_deleted(&self, users: &[String]) {
        // Later messages must not be about the deleted person either.
        self.emitter.forget(users.to_vec());
        let users: HashSet<&str> = users.iter().map(String::as_str).collect();
        let Ok(pending) = self.shared.log.read_pending(usize::MAX, usize::MAX) else {
            self.shared
                .metrics
                .persistence_errors
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut expander = Expander::default();
        let doomed: Vec<(Record, Disposition)> = pending
            .into_iter()
            .filter(|r| {
                expander
                    .user_id(&r.payload, r.context.as_ref())
                    .ok()
                    .flatten()
                    .is_some_and(|u| users.contains(u.as_str()))
            })
            .map(|r| {
                (
                    r,
                    Disposition::Dropped(DropReason::DeletedUser.as_str().to_owned()),
                )
            })
            .collect();
        // The log counts these drops and keeps their ranges in its ledger.
        self.ack(doomed);
    }
}
