//! Retention: stored events older than their policy allows are deleted by
//! a background job, in chunks small enough that ingest never waits long.
//!
//! # Policy (`tally.toml`)
//!
//! ```toml
//! [retention]
//! default_days = 395            # every event without a rule of its own
//! dead_letters_days = 30        # rejected messages (default 30 days)
//! audit_days = 365              # the audit log (default 365 days)
//! interval_s = 3600             # how often a pass starts (default 1 hour)
//! chunk_rows = 5000             # rows deleted per transaction (default 5000)
//!
//! [retention.events]
//! "Song Played" = 30            # this event name: 30 days
//! "Order Completed" = 2555      # longer than the default: kept 7 years
//! ```
//!
//! An event expires when its **corrected** time (the capture time on the
//! collector's clock) is more than its rule's days before now. The rule of
//! an event is the one for its name (`event` of a track, `name` of a page
//! or screen), else the default; without a default, events without a rule
//! of their own are kept. Identify, group and alias messages have no name:
//! the default applies to them (the identity links they made stay, so
//! stitching still holds for later events).
//!
//! Dead letters (rejected messages, kept for inspection with their raw
//! JSON) expire when they were received more than `dead_letters_days`
//! ago on the collector's clock ([`DEFAULT_DEAD_LETTERS_DAYS`] unless
//! set), so the job always runs. They hold whatever a client sent,
//! personal data included, and a flood of bad messages must not grow the
//! store without end. The `rejected` total is not lowered.
//!
//! # The job
//!
//! A pass deletes, rule by rule, chunks of at most `chunk_rows` expired
//! events, oldest first, each in one short transaction that also lowers
//! the stored `events` counter by exactly what it deleted
//! ([`RetentionStore::expire_events`](crate::store::RetentionStore::expire_events)), until a chunk comes back short. The same
//! transaction deletes the activity rollup rows (15-minute slot, identity)
//! left without any product event, so DAU/WAU/MAU and retention cohorts
//! stop counting expired activity. It checks the events left in a slot,
//! since a per-name rule may expire some events of a slot and keep others,
//! and that check reads every event left there. On SQLite a slot is
//! therefore checked once, by the chunk that finishes it, rather than by
//! every chunk that deletes from it: a busy slot holds many chunks' worth
//! of events, and reading it again per chunk held the single writer many
//! times longer than the deleting did. Until that chunk commits, the slot
//! may still count a person whose events there are gone; the slot is
//! older than the policy keeps. (Should the rest of the slot go another
//! way first, by a deletion request or a rule removed while a pass was
//! stopped inside it, such a row stays.) On PostgreSQL, where collectors
//! share the job and ingest is not blocked by it, each chunk checks the
//! slots it deleted from. Between chunks the job sleeps so that deleting takes at
//! most [`WRITE_SHARE_PERCENT`] of the time: on SQLite the chunk holds the
//! single writer, and on PostgreSQL it takes database CPU that ingest would
//! otherwise use. A large backlog (the first pass after a policy is
//! shortened) is therefore worked off steadily rather than in one long
//! lock.
//!
//! After the event rules, the pass deletes expired dead letters the same
//! way: chunks of `chunk_rows` ([`RetentionStore::expire_dead_letters`](crate::store::RetentionStore::expire_dead_letters)) with the
//! same pauses (on PostgreSQL without turns: a collector's chunk skips
//! the rows another one is deleting).
//!
//! A failed chunk (store unavailable) ends the pass; the next pass, one
//! interval later, continues where it stopped. Several collectors sharing
//! a PostgreSQL store may all run the job: their chunks take turns, each
//! seeing what the others deleted.
//!
//! Last, the audit log's rows older than `audit_days`
//! ([`DEFAULT_AUDIT_DAYS`] unless set) go, in the same chunks
//! ([`AuditStore::expire_audit`](crate::store::audit::AuditStore::expire_audit)):
//! it has a retention of its own, since who read or deleted what is kept
//! longer than the rejected messages and independently of the events.
//!
//! Progress is logged per pass (`retention pass` with the numbers deleted)
//! and counted in `tally_retention_expired_events_total` and
//! `tally_retention_expired_dead_letters_total`.
//!
//! Dedup is exact for the events the store holds: a message resent after
//! its stored copy expired is accepted again (and expires at the next
//! pass, its corrected time being as old).

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::clock;
use crate::metrics::Metrics;
use crate::store::{ExpiryScope, Store, StoreError};

/// Events deleted per transaction unless `chunk_rows` says otherwise: on
/// SQLite a chunk this size holds the writer for tens of milliseconds,
/// about what a group commit of full ingest holds it for.
pub const DEFAULT_CHUNK_ROWS: usize = 5_000;

/// Days a dead letter is kept unless `dead_letters_days` says otherwise:
/// long enough to investigate a rejection a client reported weeks later.
pub const DEFAULT_DEAD_LETTERS_DAYS: u32 = 30;

/// Days an audit row is kept unless `audit_days` says otherwise: a year,
/// what a yearly access review looks back over.
pub const DEFAULT_AUDIT_DAYS: u32 = 365;

/// How often a pass starts unless `interval_s` says otherwise. Expiry is
/// counted in days; an hour's lateness is invisible in it.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// The share of time, in percent, the job spends deleting while it works
/// off a backlog: after a chunk that took `t` it sleeps `t × (100 − s) / s`. The
/// target is that ingest throughput drops by less than 10% while the job
/// runs; 5% of the writer's time leaves room for the cache misses the
/// deletions cause to the writes around them.
pub const WRITE_SHARE_PERCENT: u32 = 5;

/// The shortest pause between chunks, so a chunk that finished very fast
/// (nothing to do, a warm cache) still lets queued writers in.
const MIN_PAUSE: Duration = Duration::from_millis(10);

/// Milliseconds in a day.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// `[retention]` of `tally.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days an event without a rule of its own is kept; none: forever.
    pub default_days: Option<u32>,
    /// Days by event name.
    pub events: Option<BTreeMap<String, u32>>,
    /// Days a dead letter is kept (by receipt time).
    pub dead_letters_days: Option<u32>,
    /// Days an audit row is kept.
    pub audit_days: Option<u32>,
    /// Seconds between the starts of two passes.
    pub interval_s: Option<u64>,
    /// Rows deleted per transaction.
    pub chunk_rows: Option<usize>,
}

/// Why a retention policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// A rule of 0 days would delete every event as it arrives.
    #[error("retention of {0:?} is 0 days; use at least 1")]
    ZeroDays(String),
    /// `chunk_rows` or `interval_s` is 0.
    #[error("retention {0} must be at least 1")]
    Zero(&'static str),
}

/// The policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Days for events without a rule of their own; `None`: kept.
    pub default_days: Option<u32>,
    /// Days by event name.
    pub events: BTreeMap<String, u32>,
    /// Days a dead letter is kept (by receipt time).
    pub dead_letters_days: u32,
    /// Days an audit row is kept.
    pub audit_days: u32,
    /// Time between the starts of two passes.
    pub interval: Duration,
    /// Rows deleted per transaction.
    pub chunk_rows: usize,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            default_days: None,
            events: BTreeMap::new(),
            dead_letters_days: DEFAULT_DEAD_LETTERS_DAYS,
            audit_days: DEFAULT_AUDIT_DAYS,
            interval: DEFAULT_INTERVAL,
            chunk_rows: DEFAULT_CHUNK_ROWS,
        }
    }
}

impl RetentionSettings {
    /// Fills defaults and checks the values.
    pub fn resolve(self) -> Result<RetentionPolicy, RetentionError> {
        if self.default_days == Some(0) {
            return Err(RetentionError::ZeroDays("default_days".into()));
        }
        let events = self.events.unwrap_or_default();
        if let Some((name, _)) = events.iter().find(|(_, days)| **days == 0) {
            return Err(RetentionError::ZeroDays(name.clone()));
        }
        let dead_letters_days = match self.dead_letters_days {
            Some(0) => return Err(RetentionError::ZeroDays("dead_letters_days".into())),
            Some(days) => days,
            None => DEFAULT_DEAD_LETTERS_DAYS,
        };
        let audit_days = match self.audit_days {
            Some(0) => return Err(RetentionError::ZeroDays("audit_days".into())),
            Some(days) => days,
            None => DEFAULT_AUDIT_DAYS,
        };
        let interval = match self.interval_s {
            Some(0) => return Err(RetentionError::Zero("interval_s")),
            Some(s) => Duration::from_secs(s),
            None => DEFAULT_INTERVAL,
        };
        let chunk_rows = match self.chunk_rows {
            Some(0) => return Err(RetentionError::Zero("chunk_rows")),
            Some(n) => n,
            None => DEFAULT_CHUNK_ROWS,
        };
        Ok(RetentionPolicy {
            default_days: self.default_days,
            events,
            dead_letters_days,
            audit_days,
            interval,
            chunk_rows,
        })
    }
}

impl RetentionPolicy {
    /// Every rule with its cutoff at `now_ms`: events of the scope with a
    /// corrected time before the cutoff have expired. Named rules first,
    /// then the default for all other names.
    fn cutoffs(&self, now_ms: i64) -> Vec<(Rule<'_>, i64)> {
        let cutoff = |days: u32| now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
        let mut rules: Vec<(Rule<'_>, i64)> = self
            .events
            .iter()
            .map(|(name, days)| (Rule::Event(name), cutoff(*days)))
            .collect();
        if let Some(days) = self.default_days {
            rules.push((Rule::Default, cutoff(days)));
        }
        rules
    }

    /// Dead letters received before this (Unix ms) have expired at `now_ms`.
    fn dead_letters_cutoff(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(i64::from(self.dead_letters_days).saturating_mul(DAY_MS))
    }
}

#[derive(Debug, Clone, Copy)]
enum Rule<'a> {
    Event(&'a str),
    Default,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassReport {
    /// Events deleted.
    pub expired: u64,
    /// Dead letters deleted.
    pub dead_letters: u64,
    /// Audit rows deleted.
    pub audit: u64,
    /// Transactions (chunks) it took, events and dead letters.
    pub chunks: u64,
}

/// One pass at `now_ms`: every rule's expired events, then the expired
/// dead letters, chunk by chunk, pausing between chunks (see
/// [`WRITE_SHARE_PERCENT`]) unless `stop` says the collector is stopping.
/// Blocks; returns what it deleted, or the first store error (what was
/// deleted before it stays deleted and counted).
pub fn pass(
    store: &dyn Store,
    policy: &RetentionPolicy,
    now_ms: i64,
    metrics: &Metrics,
    stop: &Stop,
) -> Result<PassReport, StoreError> {
    let named: Vec<String> = policy.events.keys().cloned().collect();
    let mut report = PassReport::default();
    for (rule, before) in policy.cutoffs(now_ms) {
        let scope = match rule {
            Rule::Event(name) => ExpiryScope::Event(name),
            Rule::Default => ExpiryScope::AllExcept(&named),
        };
        let stopped = drain(policy, stop, &mut report.chunks, || {
            let started = Instant::now();
            let deleted = store.expire_events(scope, before, policy.chunk_rows)?;
            let took = started.elapsed();
            report.expired += deleted;
            metrics.retention_chunk(deleted, took);
            Ok((deleted, took))
        })?;
        if stopped {
            return Ok(report);
        }
    }
    let before = policy.dead_letters_cutoff(now_ms);
    drain(policy, stop, &mut report.chunks, || {
        let started = Instant::now();
        let deleted = store.expire_dead_letters(before, policy.chunk_rows)?;
        let took = started.elapsed();
        report.dead_letters += deleted;
        metrics.retention_dead_letters_chunk(deleted, took);
        Ok((deleted, took))
    })?;
    let before = now_ms.saturating_sub(i64::from(policy.audit_days).saturating_mul(DAY_MS));
    drain(policy, stop, &mut report.chunks, || {
        let started = Instant::now();
        let deleted = store.expire_audit(before, policy.chunk_rows)?;
        report.audit += deleted;
        Ok((deleted, started.elapsed()))
    })?;
    Ok(report)
}

/// Runs `chunk` (one transaction: rows deleted and time taken) until one
/// comes back short of `chunk_rows`, pausing after each full one and
/// counting them in `chunks`. Returns whether `stop` ended it first.
fn drain(
    policy: &RetentionPolicy,
    stop: &Stop,
    chunks: &mut u64,
    mut chunk: impl FnMut() -> Result<(u64, Duration), StoreError>,
) -> Result<bool, StoreError> {
    loop {
        if stop.is_set() {
            return Ok(true);
        }
        let (deleted, took) = chunk()?;
        *chunks += 1;
        if deleted < policy.chunk_rows as u64 {
            return Ok(false);
        }
        stop.wait(pause_after(took));
    }
}

/// The pause after a chunk that took `took`: deleting gets at most
/// [`WRITE_SHARE_PERCENT`] of the time.
fn pause_after(took: Duration) -> Duration {
    (took.saturating_mul(100 - WRITE_SHARE_PERCENT) / WRITE_SHARE_PERCENT).max(MIN_PAUSE)
}

/// A stop flag a sleeping job wakes up for.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Sets the flag and wakes the sleeper.
    pub fn set(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps for `d` or until the flag is set; returns whether it is.
    pub fn wait(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        while !*stopped {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            stopped = self
                .wake
                .wait_timeout(stopped, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *stopped
    }
}

/// The background job: a thread running a [`pass`] at start and then every
/// [`RetentionPolicy::interval`]. Dropping it stops the thread (a chunk in
/// progress finishes first) and waits for it.
#[derive(Debug)]
pub struct RetentionJob {
    stop: Arc<Stop>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RetentionJob {
    /// Starts the job. Store calls block, so it has a thread of its own
    /// rather than a task on the async runtime.
    pub fn start(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        policy: RetentionPolicy,
    ) -> std::io::Result<RetentionJob> {
        let stop = Arc::new(Stop::default());
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tally-retention".into())
            .spawn(move || loop {
                let started = Instant::now();
                match pass(store.as_ref(), &policy, clock::now_ms(), &metrics, &flag) {
                    Ok(report)
                        if report.expired > 0 || report.dead_letters > 0 || report.audit > 0 =>
                    {
                        tracing::info!(
                            expired = report.expired,
                            dead_letters = report.dead_letters,
                            audit = report.audit,
                            chunks = report.chunks,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "retention pass"
                        )
                    }
                    Ok(_) => tracing::debug!("retention pass: nothing expired"),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "retention pass stopped; the next pass continues it"
                    ),
                }
                let next = policy.interval.saturating_sub(started.elapsed());
                if flag.wait(next) {
                    break;
                }
            })?;
        Ok(RetentionJob {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RetentionJob {
    fn drop(&mut self) {
        self.stop.set();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn settings_resolve_with_defaults_and_refuse_zeros() {
        let policy = RetentionSettings::default().resolve().unwrap();
        assert_eq!(policy, RetentionPolicy::default());
        assert_eq!(policy.dead_letters_days, DEFAULT_DEAD_LETTERS_DAYS);
        let toml = "default_days = 30\ndead_letters_days = 90\ninterval_s = 60\n[events]\n\"Song Played\" = 7\n";
        let policy = toml::from_str::<RetentionSettings>(toml)
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(policy.dead_letters_days, 90);
        assert_eq!(policy.dead_letters_cutoff(100 * DAY_MS), 10 * DAY_MS);
        assert_eq!(policy.interval, Duration::from_secs(60));
        assert_eq!(policy.chunk_rows, DEFAULT_CHUNK_ROWS);
        assert_eq!(policy.events.get("Song Played"), Some(&7));
        let zero = |t: &str| toml::from_str::<RetentionSettings>(t).unwrap().resolve();
        assert_eq!(
            zero("default_days = 0"),
            Err(RetentionError::ZeroDays("default_days".into()))
        );
        assert_eq!(
            zero("[events]\nx = 0"),
            Err(RetentionError::ZeroDays("x".into()))
        );
        assert_eq!(
            zero("dead_letters_days = 0"),
            Err(RetentionError::ZeroDays("dead_letters_days".into()))
        );
        assert_eq!(
            zero("chunk_rows = 0"),
            Err(RetentionError::Zero("chunk_rows"))
        );
        assert_eq!(
            zero("interval_s = 0"),
            Err(RetentionError::Zero("interval_s"))
        );
        assert!(toml::from_str::<RetentionSettings>("days = 3").is_err());
    }

    #[test]
    fn cutoffs_are_days_before_now_named_rules_first() {
        let policy = RetentionSettings {
            default_days: Some(10),
            events: Some(BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 400)])),
            ..RetentionSettings::default()
        }
        .resolve()
        .unwrap();
        let now = 1_000 * DAY_MS;
        let cutoffs: Vec<(String, i64)> = policy
            .cutoffs(now)
            .into_iter()
            .map(|(rule, at)| match rule {
                Rule::Event(n) => (n.to_owned(), at),
                Rule::Default => ("*".to_owned(), at),
            })
            .collect();
        assert_eq!(
            cutoffs,
            [
                ("a".to_owned(), 999 * DAY_MS),
                ("b".to_owned(), 600 * DAY_MS),
                ("*".to_owned(), 990 * DAY_MS)
            ]
        );
    }

    #[test]
    fn the_pause_keeps_deletion_to_its_share() {
        assert_eq!(
            pause_after(Duration::from_millis(20)),
            Duration::from_millis(380)
        );
        assert_eq!(pause_after(Duration::ZERO), MIN_PAUSE);
    }

    #[test]
    fn stop_wakes_a_sleeper() {
        let stop = Arc::new(Stop::default());
        let sleeper = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let t = Instant::now();
                (stop.wait(Duration::from_secs(30)), t.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        stop.set();
        let (stopped, slept) = sleeper.join().unwrap();
        assert!(stopped);
        assert!(slept < Duration::from_secs(10), "{slept:?}");
        assert!(!Stop::default().wait(Duration::from_millis(1)));
    }
}
