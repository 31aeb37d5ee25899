//! The pipeline: from a captured message to a record in the log.
//!
//! Contract: messages arrive from the hand-off queue ([`handoff`]) in `seq` order with
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
//! | the hand-off queue, and what travels in it | [`handoff`] |
//! | the thread, in order through the stages below | `thread` |
//! | sessions | [`session`] |
//! | enrichment | [`enrich`] |
//! | privacy | [`privacy`] |
//! | identity | [`identity`] |

pub mod enrich;
pub mod handoff;
pub mod identity;
pub mod privacy;
pub mod session;
pub(crate) mod thread;

use std::time::Duration;

use crate::config::Config;
use crate::install_state::State;
use crate::log::{Log, LogConfig};

/// Longest a persisted record waits for its group commit: 200 ms bounds
/// what a crash can lose to a fifth of a second of events while keeping
/// fsyncs to at most five a second.
pub const GROUP_COMMIT_MS: u64 = 200;

/// Prefix of the SDK's own event names.
pub const INTERNAL_PREFIX: &str = crate::stored::INTERNAL_PREFIX;

/// Bytes the tracker's log may hold appended but not yet written: the
/// log's writer seals and writes far faster than this one pipeline thread
/// produces records, so a quarter of the log's default keeps groups large
/// while the queue, the group being sealed and the group being written
/// stay small (a burst's memory belongs in the hand-off queue's budget).
const LOG_INFLIGHT_BYTES: usize = 512 * 1024;

/// Opens the log in `<data_dir>/log` with the configured bounds.
/// The log's settings for `config` (its key provider also seals the
/// state file's user id: [`crate::install_state`]).
pub(crate) fn log_config(config: &Config) -> LogConfig {
    let mut log_config = LogConfig::new(config.data_dir.join("log"))
        .bounds(
            config.log_max_bytes,
            config.log_max_events,
            Duration::from_millis(config.log_max_age_ms),
        )
        .critical_max_age(Duration::from_millis(config.log_critical_max_age_ms))
        .full_policy(config.log_full_policy)
        .durability(config.durability);
    log_config.max_inflight_bytes = LOG_INFLIGHT_BYTES;
    if let Some(keys) = &config.key_provider {
        log_config = log_config.key_provider(keys.clone());
    }
    log_config
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
