//! The ingest path: one stage per module, run in this order for every
//! `POST /v1/batch` (and the single-message and beacon paths).
//!
//! | stage | module | refuses with |
//! |---|---|---|
//! | authenticate (header, query) | [`auth`] | 401 |
//! | the key's request rate (a key in a header) | [`rate`] | 429 + `Retry-After` |
//! | take an ingest slot of the request's pool | [`slots`] | 429 + `Retry-After` |
//! | bound the body as sent, in size and time | [`body`] | 413, 408 |
//! | verify `Content-Digest`, decompress under limits | [`decode`] | 400, 413, 415 |
//! | decode the JSON (per-message isolation) | `tally_proto::decode_json` | 400, 413 |
//! | authenticate (body, message, query) | [`auth`] | 401 |
//! | the key's request rate (a key in the body or query) | [`rate`] | 429 + `Retry-After` |
//! | validate each message | `tally_proto::validate` | per message: `rejected` + reason |
//! | judge track events against the tracking plan | [`crate::plan`] | per message, in `enforce` mode: `rejected` + `plan_violation` |
//! | correct the clock | [`clock`] | never |
//! | build events and dead letters | [`events`] | — |
//! | dedup and store, one transaction | [`crate::store::IngestStore::write_batch`] | 503 (+ `Retry-After`), 500 |
//! | answer | [`answer`] | — |
//!
//! # Invariants
//!
//! - **Durability**: `accepted` is answered only after `write_batch`
//!   returned, i.e. after the transaction committed. A client that gets no
//!   answer resends; the store's unique keys turn the resend into
//!   `duplicate`, never a second count.
//! - **Isolation**: a bad message is rejected alone and kept as a dead
//!   letter; it never fails its neighbours. Only a body that cannot be read
//!   at all fails as a whole, and then nothing of it is stored.
//! - **Bounded work**: at most `max_in_flight` ingest requests whose key
//!   was checked hold a slot (body buffer, decoding, store transaction),
//!   and [`slots::BODY_KEY_SLOTS`] whose key can only be in the body; the
//!   next one is answered 429 at once instead of queueing. Each slot holds
//!   at most [`tally_proto::limits::MAX_BODY_BYTES`] as sent (a body-key
//!   one [`slots::BODY_KEY_MAX_BYTES`]) and
//!   [`tally_proto::limits::MAX_DECODED_BYTES`] decoded, and only while
//!   the body keeps arriving (the rate rule of [`body`]).
//! - **No credentials, no cost to others**: a key in a header or the query
//!   is checked before a slot or a body byte is spent, so a client without
//!   one (or with a wrong one) never takes a keyed client's slot.
//! - Dedup itself is the store's (unique `message_id` and `dedup_key`,
//!   within a batch too), so it is exact across restarts and collectors.
//!
//! Everything between reading the body and the store is [`prepare`]: pure
//! (no I/O, no clock), so the fuzz target `ingest` (in `fuzz/`) runs it on
//! arbitrary requests, and CI replays its corpus (`tests/fuzz_smoke.rs`).
//!
//! The CPU stages and the store call run together on the blocking pool, so
//! the async workers only move bytes. A request whose client goes away
//! mid-transaction still completes, and its slot is held until it does.

pub mod answer;
pub mod auth;
pub mod body;
pub mod clock;
pub mod decode;
pub mod events;
pub mod rate;
pub mod slots;

use axum::http::HeaderMap;
use tally_proto::{
    decode_json, validate, DecodeLimits, Message, MessageType, RejectReason, Rejection,
};

use crate::error::ApiError;
use crate::plan::{Finding, Judgement, PlanCheck, Plans};
use crate::store::quality::QualityFinding;
use crate::store::{DeadLetter, NewEvent};
use answer::Slot;

/// The write keys a decoded body carries, for [`prepare`]'s `authorize`.
#[derive(Debug, Clone, Copy)]
pub struct BodyKeys<'a> {
    /// The envelope's `writeKey`.
    pub envelope: Option<&'a str>,
    /// The first message's `writeKey`.
    pub message: Option<&'a str>,
}

/// A request body made ready for the store: one slot per message, in the
/// order sent, each an event or a rejection with its dead letter.
#[derive(Debug)]
pub struct Prepared {
    /// What became of each message before the store.
    pub slots: Vec<Slot>,
    /// The accepted messages, as the store writes them.
    pub events: Vec<NewEvent>,
    /// The rejected messages, as the store keeps them.
    pub dead_letters: Vec<DeadLetter>,
    /// What the tracking plan found (unplanned events, violations, ...),
    /// accepted or rejected, for the metrics.
    pub findings: Vec<Finding>,
    /// The same findings as the store counts them, each tied to its event
    /// or to its dead letter.
    pub quality: Vec<QualityFinding>,
    /// The source (write key id) that sent the request.
    pub source: String,
}

/// The ingest path after the body was read and before the store: verify
/// the digest, decompress and decode under `limits`, authenticate (through
/// `authorize`, which gets the body's keys and returns the source), then
/// validate each message, correct its clock (the collector's clock is
/// `received_at`), judge track events against the tracking plan in force
/// (`plans`, in the source's mode; one plan for the whole request), and
/// build its event or dead letter. `implied` is the type a single-message
/// path gives a message without one. Pure: no I/O, no clock; the fuzz
/// target `ingest` runs it on arbitrary requests.
pub fn prepare(
    headers: &HeaderMap,
    bytes: &[u8],
    implied: Option<MessageType>,
    limits: &DecodeLimits,
    received_at: i64,
    plans: Option<&Plans>,
    authorize: impl FnOnce(BodyKeys<'_>) -> Result<String, ApiError>,
) -> Result<Prepared, ApiError> {
    let json = decode::decode_body(bytes, headers, limits)?;
    let body = decode_json(&json, limits).map_err(decode::body_error)?;
    let message_key = body.messages.iter().find_map(|m| {
        m.parsed
            .as_ref()
            .ok()
            .and_then(|p| Message::non_empty(&p.write_key))
    });
    let source = authorize(BodyKeys {
        envelope: body.write_key.as_deref(),
        message: message_key,
    })?;

    let check = plans.and_then(|p| PlanCheck::for_source(p, &source));
    let batch_sent_at = clock::batch_sent_at(&body, headers);
    let count = body.messages.len();
    let mut prepared = Prepared {
        slots: Vec::with_capacity(count),
        events: Vec::with_capacity(count),
        dead_letters: Vec::new(),
        findings: Vec::new(),
        quality: Vec::new(),
        source: String::new(),
    };
    for decoded in body.messages {
        let mut msg = match decoded.parsed {
            Ok(msg) => msg,
            Err(rejection) => {
                let id = decoded.message_id.filter(|id| !id.is_empty());
                prepared.reject(&source, id, rejection, received_at, decoded.raw);
                continue;
            }
        };
        if msg.kind.is_none() {
            msg.kind.clone_from(&implied);
        }
        match validate(&msg, decoded.raw) {
            Ok(checked) => {
                match check.as_ref().map(|c| c.judge(&msg)) {
                    None | Some(Judgement::Accept(None)) => {}
                    Some(Judgement::Accept(Some(finding))) => {
                        let at = Some(prepared.events.len());
                        prepared.judged(&source, &msg, at, received_at, finding);
                    }
                    Some(Judgement::Reject(finding, detail)) => {
                        prepared.judged(&source, &msg, None, received_at, finding);
                        let id = Message::non_empty(&msg.message_id);
                        prepared.dead_letters.push(events::dead_letter_with(
                            &source,
                            id,
                            RejectReason::PlanViolation,
                            detail.into(),
                            received_at,
                            decoded.raw,
                        ));
                        prepared.slots.push(Slot::Rejected {
                            id: id.map(str::to_owned),
                            reason: RejectReason::PlanViolation,
                        });
                        continue;
                    }
                }
                let times = clock::message_times(&checked, batch_sent_at, received_at);
                prepared.slots.push(Slot::Event(prepared.events.len()));
                prepared.events.push(events::new_event(
                    &source,
                    &msg,
                    checked,
                    times,
                    received_at,
                    decoded.raw,
                ));
            }
            Err(rejection) => {
                let id = Message::non_empty(&msg.message_id).map(str::to_owned);
                prepared.reject(&source, id, rejection, received_at, decoded.raw);
            }
        }
    }
    prepared.source = source;
    Ok(prepared)
}

impl Prepared {
    /// Keeps what the plan found in `msg`, for the metrics and the store
    /// (`event_index` is its event's, `None` when it is rejected).
    fn judged(
        &mut self,
        source: &str,
        msg: &Message,
        event_index: Option<usize>,
        received_at: i64,
        finding: Finding,
    ) {
        self.quality.push(QualityFinding {
            event_index,
            source: source.to_owned(),
            event: finding.name.clone(),
            version: finding.version,
            finding: finding.finding,
            rule: finding.rule.clone(),
            path: finding.path.clone(),
            message_id: Message::non_empty(&msg.message_id).map(str::to_owned),
            received_at,
            detail: finding.detail.clone(),
        });
        self.findings.push(finding);
    }

    fn reject(
        &mut self,
        source: &str,
        id: Option<String>,
        rejection: Rejection,
        received_at: i64,
        raw: &str,
    ) {
        self.dead_letters.push(events::dead_letter(
            source,
            id.as_deref(),
            rejection,
            received_at,
            raw,
        ));
        self.slots.push(Slot::Rejected {
            id,
            reason: rejection.reason,
        });
    }
}
