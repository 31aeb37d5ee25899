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
//! | [`clock`] | real and virtual time |

pub mod backoff;
pub mod batcher;
pub mod clock;
pub mod outcome;
pub mod policy;
pub mod transport;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use tally_proto::{
    device_offset, format_timestamp, parse_timestamp, BatchResponse, Priority, Status,
};

use crate::health::{Health, LogFigures};
use crate::log::{Disposition, Record};
use crate::pipeline::privacy::Consent;
use crate::pipeline::{Command, Kind};
use crate::props::Props;
use crate::tracker::{Shared, TrackOptions};

use self::backoff::Backoff;
use self::batcher::Budget;
use self::outcome::{classify, Outcome};
use self::policy::{IDLE_POLL_MS, MAX_BATCH_RECORDS, POISON_QUARANTINE_AFTER, POISON_SPLIT_AFTER};
use self::transport::{Method, Request, Transport, TransportError};

/// The event that reports device-side drops to the collector.
pub const DROPPED_EVENT: &str = "tally.dropped";

/// The periodic health beacon event.
pub const HEALTH_EVENT: &str = "tally.health";

/// Most ranges in one `tally.dropped` event: keeps its properties far under
/// the 24 KiB limit (a range is at most about 45 bytes of JSON).
const MAX_RANGES_PER_REPORT: usize = 400;

/// Pause before reporting drops again when a report could not be queued
/// (full hand-off channel): long enough not to spin, short against a sync.
const DROP_REPORT_RETRY_MS: u64 = 10;

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
    transport: Arc<dyn Transport>,
    backoff: Backoff,
    budget: Budget,
    next_try_ms: u64,
    max_records: usize,
    head_failures: Option<(u64, u32)>,
    draining: bool,
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
    pub(crate) fn new(shared: Arc<Shared>, transport: Arc<dyn Transport>) -> Self {
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
            transport,
            backoff: Backoff::new(rng),
            budget: Budget::default(),
            next_try_ms: 0,
            max_records: MAX_BATCH_RECORDS,
            head_failures: None,
            draining: false,
            last_beacon_ms: now,
            authorization,
        }
    }

    pub(crate) fn run(mut self) {
        let clock = Arc::clone(&self.shared.clock);
        loop {
            if self.shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            if self.shared.sync_requested.swap(false, Ordering::SeqCst) {
                self.next_try_ms = 0;
                self.draining = true;
            }
            let active = self.shared.config.auto_upload || self.draining;
            let blocked = self.shared.consent() != Consent::Granted
                || self.shared.metrics.auth_failed.load(Ordering::SeqCst);
            if !active || blocked {
                clock.wait(&self.shared.upload_wake, IDLE_POLL_MS);
                continue;
            }
            let now = clock.mono_ms();
            if now < self.next_try_ms {
                clock.wait(&self.shared.upload_wake, self.next_try_ms - now);
                continue;
            }
            self.shared.metrics.backoff_ms.store(0, Ordering::Relaxed);
            self.beacon(now);
            self.report_drops();
            match self.send_next() {
                Step::Progress => {}
                // Drops found while sending (a report pushing out an old
                // event in a full log) are reported before going idle.
                Step::Idle if has_unreported_drops(&self.shared) => {
                    clock.wait(&self.shared.upload_wake, DROP_REPORT_RETRY_MS);
                }
                Step::Idle => {
                    self.draining = false;
                    clock.wait(&self.shared.upload_wake, IDLE_POLL_MS);
                }
                Step::Failed => {}
            }
        }
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

    fn send_next(&mut self) -> Step {
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
        let records: Vec<Record> = records.into_iter().filter(|r| r.seq <= durable).collect();
        if records.is_empty() {
            return Step::Idle;
        }
        self.deliver(&records, false)
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
        let result = self.transport.send(&request);
        let elapsed = clock.mono_ms().saturating_sub(t0);
        let t_recv = clock.wall_ms();
        match classify(result, records.len()) {
            Outcome::Results(answer) => {
                self.on_results(records, &answer, t_send, t_recv);
                self.budget.after_success(elapsed);
                self.shared.metrics.record_latency(elapsed);
                Step::Progress
            }
            Outcome::BadRequest if !reencoded => self.deliver(records, true),
            Outcome::BadRequest if records.len() > 1 => self.split(records),
            Outcome::BadRequest => self.quarantine(&records[0], "undecodable"),
            Outcome::TooLarge => {
                self.budget.shrink();
                if records.len() > 1 {
                    self.split(records)
                } else {
                    self.quarantine(&records[0], "too_large")
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
            return self.quarantine(&records[0], "server_error");
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
    fn quarantine(&mut self, record: &Record, reason: &str) -> Step {
        {
            let mut state = self.shared.lock_state();
            state.record_drop(&format!("quarantined_{reason}"), record.seq);
            self.shared.save_state(&state);
        }
        self.ack(vec![(
            record.clone(),
            Disposition::Rejected(reason.to_owned()),
        )]);
        self.succeeded();
        Step::Progress
    }

    /// Saves the acked watermark, then acks in the log.
    fn ack(&self, acks: Vec<(Record, Disposition)>) {
        let Some(max_seq) = acks.iter().map(|(r, _)| r.seq).max() else {
            return;
        };
        {
            let mut state = self.shared.lock_state();
            if max_seq > state.acked_seq {
                state.acked_seq = max_seq;
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
        self.ack(acks);
        metrics.last_success_ms.store(t_recv, Ordering::Relaxed);
        self.succeeded();
        if !answer.deleted_users.is_empty() {
            self.purge_deleted(&answer.deleted_users);
        }
    }

    /// Drops every pending record of a deleted user (`deleted_user`), and
    /// makes the pipeline forget the user if it is the current one.
    fn purge_deleted(&self, users: &[String]) {
        #[derive(Deserialize)]
        struct UserOf {
            #[serde(rename = "userId")]
            user_id: Option<String>,
        }
        // Later messages must not be about the deleted person either.
        let _ = self.shared.control(Command::Forget(users.to_vec()));
        let users: HashSet<&str> = users.iter().map(String::as_str).collect();
        let Ok(pending) = self.shared.log.read_pending(usize::MAX, usize::MAX) else {
            self.shared
                .metrics
                .persistence_errors
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let doomed: Vec<(Record, Disposition)> = pending
            .into_iter()
            .filter(|r| {
                serde_json::from_slice::<UserOf>(&r.payload)
                    .ok()
                    .and_then(|m| m.user_id)
                    .is_some_and(|u| users.contains(u.as_str()))
            })
            .map(|r| (r, Disposition::Dropped("deleted_user".to_owned())))
            .collect();
        // The log counts these drops and keeps their ranges in its ledger.
        self.ack(doomed);
    }

    /// Reports device-side drops (the pipeline's, and new ranges of the
    /// log's drop ledger) as `tally.dropped` events, and forgets them once
    /// the reports are durable.
    fn report_drops(&self) {
        let ledger = self.shared.log.drop_ledger();
        let (own, from_ledger) = {
            let state = self.shared.lock_state();
            let from_ledger: Vec<(String, [u64; 2])> = ledger
                .iter()
                .flat_map(|r| {
                    state
                        .unreported_ledger(&r.reason, r.first_seq, r.last_seq)
                        .into_iter()
                        .map(|range| (r.reason.clone(), range))
                })
                .collect();
            (state.unreported_drops.clone(), from_ledger)
        };
        if own.is_empty() && from_ledger.is_empty() {
            return;
        }
        let mut by_reason: BTreeMap<&str, Vec<[u64; 2]>> = BTreeMap::new();
        for d in &own {
            by_reason.entry(&d.reason).or_default().push([d.from, d.to]);
        }
        for (reason, range) in &from_ledger {
            by_reason.entry(reason).or_default().push(*range);
        }
        for (reason, ranges) in by_reason {
            for chunk in ranges.chunks(MAX_RANGES_PER_REPORT) {
                let props = Props::new().with("reason", reason).with("ranges", chunk);
                let kind = Kind::Track {
                    event: DROPPED_EVENT.to_owned(),
                    props: props.into_json(),
                };
                let options = TrackOptions {
                    priority: Priority::Critical,
                    dedup_key: None,
                };
                if self.shared.capture(kind, options).is_err() {
                    return;
                }
            }
        }
        if self.shared.flush().is_err() {
            return;
        }
        let mut state = self.shared.lock_state();
        let reported = own.len().min(state.unreported_drops.len());
        state.unreported_drops.drain(..reported);
        for (reason, [first, last]) in &from_ledger {
            state.mark_ledger_reported(reason, *first, *last);
        }
        self.shared.save_state(&state);
    }

    fn beacon(&mut self, now: u64) {
        let Some(every) = self.shared.config.health_beacon_ms else {
            return;
        };
        if now.saturating_sub(self.last_beacon_ms) < every {
            return;
        }
        self.last_beacon_ms = now;
        let h = health(&self.shared);
        let props = Props::new()
            .with("pending", h.pending)
            .with("pending_bytes", h.pending_bytes)
            .with("oldest_pending_age_s", h.oldest_pending_age_s)
            .with("consecutive_failures", h.consecutive_failures)
            .with("dropped", &h.dropped)
            .with("rejected", &h.rejected)
            .with("clock_offset_ms", h.clock_offset_ms);
        let kind = Kind::Track {
            event: HEALTH_EVENT.to_owned(),
            props: props.into_json(),
        };
        let _ = self.shared.capture(kind, TrackOptions::default());
    }
}

/// Whether device-side drops wait to be reported to the collector.
pub(crate) fn has_unreported_drops(shared: &Shared) -> bool {
    let ledger = shared.log.drop_ledger();
    let state = shared.lock_state();
    !state.unreported_drops.is_empty()
        || ledger.iter().any(|r| {
            !state
                .unreported_ledger(&r.reason, r.first_seq, r.last_seq)
                .is_empty()
        })
}

/// The health report of a tracker.
pub(crate) fn health(shared: &Shared) -> Health {
    let stats = shared.log.stats();
    let figures = LogFigures {
        pending: stats.pending_events,
        pending_bytes: stats.pending_bytes,
        oldest_pending_age_s: stats.oldest_pending_age.map_or(0.0, |a| a.as_secs_f64()),
        corrupt: stats.corrupt,
        rejected: stats.rejected,
        dropped: stats.dropped,
        persistence_errors: stats.persistence_errors,
    };
    shared
        .metrics
        .report(figures, shared.install_id.clone(), shared.consent())
}
