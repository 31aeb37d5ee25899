//! # The durable event log
//!
//! What the app handed to `track()` survives kills, crashes, power loss,
//! full disks and corruption — or its loss is counted. The log sits between
//! the tracker's pipeline (which [`Log::append_in`]s one compact record per
//! event, in the context the event shares with others; see
//! [`crate::stored`]) and the uploader (which [`Log::read_pending`]s,
//! sends, and [`Log::ack`]s).
//!
//! ## Invariants
//!
//! 1. **Flushed means durable.** When [`Log::flush`] returns `Ok`, every
//!    entry appended before the call is on disk (segment fdatasynced, and
//!    the directory fsynced if the segment is new) and will be returned by
//!    `read_pending` after any crash until it is acknowledged.
//! 2. **Acked means gone for good.** When [`Log::ack`] returns `Ok`, the
//!    acks are synced in the ledger; those records are never returned
//!    again, even after a crash. A crash before that may resend — the
//!    collector deduplicates by message id — but never loses.
//! 3. **Every loss is counted.** A record dropped by a bound (`log_full`,
//!    `expired`), found corrupt, or rejected at append is counted by reason
//!    in [`LogStats`] and in the persisted drop ledger
//!    ([`Log::drop_ledger`]), so the collector can tell a policy drop from
//!    a gap in transit.
//! 4. **No plaintext at rest.** Payloads are sealed with XChaCha20-Poly1305;
//!    seq, priority and time are authenticated as associated data.
//! 5. **Never panic on bytes.** Recovery reads any file content; what it
//!    cannot trust it skips and counts.
//! 6. **A context is stored before the records that name it.** Bytes many
//!    records share ([`Log::append_in`]) are written once per segment, in
//!    a context frame ahead of the first record that names it in the same
//!    write, so whatever survives a crash has its context; a record whose
//!    context cannot be read is counted corrupt, never given another.
//! 7. **Poisoned after a failed fsync.** The page cache may have dropped the
//!    data, so the log refuses writes from then on (as fjall does) and says
//!    so in [`LogStats::poisoned`]. ENOSPC is different: it is reported,
//!    the group is kept in memory and retried, and the writer recovers when
//!    space returns.
//!
//! ## Threads
//!
//! `append` copies the payload onto an in-memory queue under a short lock;
//! it never waits for the disk, except under [`FullPolicy::Block`] or when
//! the writer is more than [`LogConfig::max_inflight_bytes`] behind, and
//! does no cryptography, so the caller's cost stays well under a
//! microsecond. One background writer drains the queue in groups, seals
//! each record, appends each group to the lane's segment with one write,
//! and syncs per [`Durability`] (group commit). Plaintext exists only in
//! that queue, in memory.
//!
//! Within a group, the ledger entries of refused appends (and of the
//! drops the caller records with [`Log::record_drop`]) are written and
//! synced first, then the lanes in seq order (run by run where they
//! interleave), a lane's unsynced writes synced before the other lane is
//! written: whatever a kill or a power cut interrupts, what is on disk
//! never holds a record above a seq that is neither on disk nor counted
//! in the ledger.
//!
//! ## On-disk layout
//!
//! | path in the log directory | what |
//! |---|---|
//! | `<id:016x>-c.seg`, `<id:016x>-n.seg` | segments of the critical / normal lane: a 32-byte header ([`segment`]) then frames ([`record`]): records, and (format 2) the contexts they name |
//! | `ledger` | acks, drops, corrupt stretches, counters ([`ledger`]) |
//! | `keys/key-<id>` | 32-byte keys, 0600 ([`FileKeyProvider`], the default) |
//!
//! Segment ids grow by one per new segment across both lanes, so id order
//! is append order. A new segment is started at every open and whenever the
//! current one passes [`LogConfig::segment_bytes`]; a segment whose records
//! are all acknowledged (or dropped) is deleted and the directory synced.
//!
//! ## Recovery (on [`Log::open`])
//!
//! 1. Replay the ledger up to its first torn or corrupt entry (truncating
//!    the rest): the set of acknowledged records and the counters.
//! 2. Scan every segment: a torn tail (a frame cut short, or zeros to the
//!    end) is truncated without counting — it was never flushed. A frame
//!    with a bad length or checksum starts a *corrupt stretch*: the scan
//!    resynchronises at the next valid frame and counts the stretch once.
//!    A frame that fails decryption (wrong or deleted key, tampering) is
//!    counted corrupt too. Newly found corrupt stretches are written to the
//!    ledger so they are counted once, not at every open.
//! 3. Records not in the ledger are pending again, in append order per lane.
//!    Fully acknowledged segments go, keys older than the current one that
//!    no pending record uses are deleted, and the bounds (age, events,
//!    bytes) apply.
//!
//! A segment header written by a newer format version stops the open with
//! [`OpenError::UnsupportedVersion`] rather than destroying data.
//!
//! [`inspect`] reads the same files without writing anything and without
//! a writer thread, so it is safe on a live app's directory.
//!
//! ## How it is tested
//!
//! | test | what it pins |
//! |---|---|
//! | `tests/log_known_errors.rs` | flipped bits, zeroed and overlong lengths, truncation at every byte of the last record, a deleted segment, a wrong key: exactly what recovery keeps and counts |
//! | `tests/log_model.rs` | proptest: append / flush / ack / crash / reopen / rotate against a model, on [`MemFs`] (a crash keeps only synced bytes plus a torn tail) |
//! | `tests/log_crash.rs` | real processes killed with SIGKILL; `TALLY_LOG_CRASH_TRIALS=1000 cargo test -p tally-sdk --test log_crash` for 1,000 trials |
//! | `tests/log_faults.rs` | failed fsync (poison), ENOSPC (retry), short writes, a power cut between any two syncs (a prefix of the seqs survives), no plaintext on disk |
//! | `tests/log_fixtures.rs` | files written by format versions 1 and 2 still open with exactly their content (and contexts) |
//! | `tests/log_contexts.rs` | contexts stored once per segment, read back after reopen, across segments and key rotation; a lost context makes its records counted corrupt |
//! | `fuzz/` | `cargo +nightly fuzz run segment_reader` (segment scan, ledger, full recovery) |
//! | `benches/log_figures.rs` | throughput, `append` percentiles and peak RSS as one JSON line |

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use tally_proto::{DropReason, Priority};

pub mod crypto;
pub mod fs;
mod handle;
mod index;
mod inspect;
pub mod ledger;
mod queue;
pub mod record;
pub mod segment;
mod wiped;
mod writer;

pub use crypto::{FileKeyProvider, Key, KeyError, KeyId, KeyProvider, MemKeyProvider};
pub use fs::{FileHandle, Filesystem, MemFs, StdFs};
pub use handle::Log;
pub use inspect::{find_log_dir, inspect, Inspection, LOG_FOLDER};
pub use ledger::{Disposition, DroppedRange};
pub use segment::Lane;

/// Default bound on pending bytes: 64 MiB is a week of heavy use of a
/// typical app (≈ 2,000 events a day of ≈ 500 bytes) many times over, and
/// small next to a phone's free space.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default bound on pending events.
pub const DEFAULT_MAX_EVENTS: u64 = 200_000;
/// Default bound on a pending event's age: 30 days, after which most
/// analytics questions about that period have been asked already.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default bound on a pending *critical* event's age: 90 days. Critical
/// events (a purchase, a sign-up) are the ones a product team reconciles
/// against other records months later, and they are few, so they are kept
/// three times as long as the rest while a device stays offline.
pub const DEFAULT_CRITICAL_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default segment size: 8 MiB keeps the number of files small while a
/// fully acknowledged segment frees its space promptly.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Default cap on bytes appended but not yet written: 2 MiB is about 8,000
/// 200-byte events, several group commits' worth, and keeps memory bounded
/// (the queue, the group being sealed and the group being written each hold
/// up to this much) when the disk stalls.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 2 * 1024 * 1024;
/// Default group-commit delay in [`Durability::Buffered`] mode: 200 ms is
/// below what a user notices and makes one fdatasync serve thousands of events.
pub const DEFAULT_BUFFERED_DELAY: Duration = Duration::from_millis(200);

/// Reason recorded when a bound drops a record or rejects an append.
pub const REASON_LOG_FULL: &str = DropReason::LogFull.as_str();
/// Reason recorded when a record passes the age bound.
pub const REASON_EXPIRED: &str = DropReason::Expired.as_str();
/// Reason recorded when an append is refused because the writer is too far
/// behind (the disk stalls or is full).
pub const REASON_BACKLOG: &str = DropReason::WriterBacklog.as_str();
pub use ledger::REASON_CORRUPT;

/// When appended entries reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Group commit on a timer: the writer syncs at most `max_delay` after a
    /// group was written, or when [`Log::flush`] asks. **Loss window**: a
    /// power cut or kernel crash loses up to `max_delay` of appends plus
    /// what was still queued; a process crash loses only what was queued
    /// (written groups are in the page cache).
    Buffered {
        /// Longest a written group waits for its fdatasync.
        max_delay: Duration,
    },
    /// Every group is synced before the writer takes the next one. **Loss
    /// window**: only the entries still queued (appended but not yet taken
    /// by the writer, typically well under a millisecond's worth).
    Synced,
}

/// What `append` does when a bound (bytes, events) is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Accept the new entry and drop the oldest pending normal-priority
    /// records (critical ones only when no normal one is left).
    DropOldest,
    /// Refuse the new entry with [`AppendError::Full`].
    RejectNew,
    /// Wait up to `timeout` for acks to make room, then refuse.
    Block {
        /// Longest `append` waits.
        timeout: Duration,
    },
}

/// How to open a log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The log's directory (created if missing).
    pub dir: PathBuf,
    /// When appends become durable.
    pub durability: Durability,
    /// Bound on pending bytes (frames as stored).
    pub max_bytes: u64,
    /// Bound on pending events.
    pub max_events: u64,
    /// Bound on a pending normal-priority event's age; older ones are
    /// dropped as `expired`.
    pub max_age: Duration,
    /// Bound on a pending critical event's age (default
    /// [`DEFAULT_CRITICAL_MAX_AGE`]); older ones are dropped as `expired`.
    pub critical_max_age: Duration,
    /// What happens at the bytes / events bound.
    pub full_policy: FullPolicy,
    /// Where keys come from.
    pub key_provider: Arc<dyn KeyProvider>,
    /// The filesystem (tests inject faults).
    pub fs: Arc<dyn Filesystem>,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Bytes appended but not yet written beyond which `append` waits for
    /// the writer (bounded memory).
    pub max_inflight_bytes: usize,
    /// A key the log keeps even when no record uses it (0: none): the one
    /// the SDK's state file seals the user id under.
    pub(crate) retained_key: Arc<AtomicU32>,
}

impl LogConfig {
    /// Defaults on the real filesystem, keys in `dir/keys`.
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig::with_fs(dir, Arc::new(StdFs))
    }

    /// Defaults on `fs`, keys in `dir/keys` on the same filesystem.
    pub fn with_fs(dir: impl Into<PathBuf>, fs: Arc<dyn Filesystem>) -> LogConfig {
        let dir = dir.into();
        LogConfig {
            key_provider: Arc::new(FileKeyProvider::new(dir.join("keys"), fs.clone())),
            dir,
            durability: Durability::Buffered {
                max_delay: DEFAULT_BUFFERED_DELAY,
            },
            max_bytes: DEFAULT_MAX_BYTES,
            max_events: DEFAULT_MAX_EVENTS,
            max_age: DEFAULT_MAX_AGE,
            critical_max_age: DEFAULT_CRITICAL_MAX_AGE,
            full_policy: FullPolicy::DropOldest,
            fs,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            retained_key: Arc::default(),
        }
    }

    /// Sets the durability mode.
    pub fn durability(mut self, d: Durability) -> LogConfig {
        self.durability = d;
        self
    }
    /// Sets the bounds; `max_age` applies to both lanes (a different one
    /// for the critical lane is set after, with
    /// [`LogConfig::critical_max_age`]).
    pub fn bounds(mut self, max_bytes: u64, max_events: u64, max_age: Duration) -> LogConfig {
        self.max_bytes = max_bytes;
        self.max_events = max_events;
        self.max_age = max_age;
        self.critical_max_age = max_age;
        self
    }
    /// Sets the age bound of the critical lane.
    pub fn critical_max_age(mut self, age: Duration) -> LogConfig {
        self.critical_max_age = age;
        self
    }
    /// The age bound of each lane, by [`Lane`] index.
    pub(crate) fn max_ages(&self) -> [Duration; 2] {
        let mut ages = [self.max_age; 2];
        ages[Lane::Critical.index()] = self.critical_max_age;
        ages
    }
    /// Sets the full policy.
    pub fn full_policy(mut self, p: FullPolicy) -> LogConfig {
        self.full_policy = p;
        self
    }
    /// Sets the key provider.
    pub fn key_provider(mut self, k: Arc<dyn KeyProvider>) -> LogConfig {
        self.key_provider = k;
        self
    }
    /// Sets the segment size.
    pub fn segment_bytes(mut self, n: u64) -> LogConfig {
        self.segment_bytes = n;
        self
    }
}

/// One event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The event's per-install sequence number.
    pub seq: u64,
    /// Its priority lane.
    pub priority: Priority,
    /// The record's bytes (the SDK's compact record of one message).
    pub payload: Vec<u8>,
}

/// Where a record lives; stable across reopen until it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    /// Segment id.
    pub segment: u64,
    /// Byte offset of the frame in the segment.
    pub offset: u32,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

/// A pending record, decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Pass back to [`Log::ack`].
    pub id: RecordId,
    /// The entry's seq.
    pub seq: u64,
    /// The entry's priority.
    pub priority: Priority,
    /// The entry's payload.
    pub payload: Vec<u8>,
    /// The context it was appended in ([`Log::append_in`]), if any.
    pub context: Option<Arc<[u8]>>,
}

/// Health of the log, for the SDK's health report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Events appended and not yet acknowledged or dropped (queued included).
    pub pending_events: u64,
    /// Their size as stored.
    pub pending_bytes: u64,
    /// Records acknowledged as delivered, ever (persisted).
    pub acknowledged: u64,
    /// Records acknowledged as rejected by the collector, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Age of the oldest pending record.
    pub oldest_pending_age: Option<Duration>,
    /// Corrupt stretches found (bad length, checksum or decryption).
    pub corrupt: u64,
    /// Records dropped on the device, by reason (`corrupt` included).
    pub dropped: BTreeMap<String, u64>,
    /// Write, sync and ledger errors since open.
    pub persistence_errors: u64,
    /// The last persistence error, if any (no event content).
    pub last_error: Option<String>,
    /// True after a failed fsync: writes are refused.
    pub poisoned: bool,
    /// Segment files on disk.
    pub segments: u64,
    /// Groups the writer wrote since open (group commit: appended events
    /// divided by this is the mean group size).
    pub groups_written: u64,
}

/// Why [`Log::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory, a segment or the ledger could not be read or written.
    #[error("log I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The key provider failed (keys cannot be read or created).
    #[error("log keys: {0}")]
    Key(#[from] KeyError),
    /// A segment was written by a newer format version; opening it with
    /// this version would lose it.
    #[error("segment {segment} has format version {version}, newer than this version reads")]
    UnsupportedVersion {
        /// The segment's file name.
        segment: String,
        /// The version in its header.
        version: u16,
    },
    /// The configuration is unusable (a zero bound or segment size).
    #[error("invalid log configuration: {0}")]
    Config(&'static str),
    /// Recording what recovery found (drops by the bounds) failed.
    #[error("log recovery could not be recorded: {0}")]
    Persist(#[from] LogError),
}

/// Why [`Log::append`] refused an entry. For `Full` and `Backlog` the log
/// has already counted the drop and recorded its seq in the drop ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// A bound is reached and the policy is `RejectNew`, or `Block` timed out.
    #[error("the log is full")]
    Full,
    /// The writer has been more than `max_inflight_bytes` behind for longer
    /// than the backlog wait (the disk stalls or is full).
    #[error("the log writer is too far behind")]
    Backlog,
    /// A failed fsync poisoned the log; nothing more is accepted.
    #[error("the log is poisoned by a failed fsync")]
    Poisoned,
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// The payload is larger than [`record::MAX_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes is too large for a record")]
    TooLarge(usize),
}

/// Why another log operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A failed fsync poisoned the log.
    #[error("the log is poisoned by a failed fsync")]
    Poisoned,
    /// The disk is full; the data is kept in memory and retried.
    #[error("no space left on the device; the writer retries")]
    NoSpace,
    /// A write, read or sync failed (the message has no event content).
    #[error("log I/O: {0}")]
    Io(String),
    /// The key provider failed.
    #[error("log keys: {0}")]
    Key(String),
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
}

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> LogError {
        if e.kind() == std::io::ErrorKind::StorageFull {
            LogError::NoSpace
        } else {
            LogError::Io(e.to_string())
        }
    }
}

impl From<KeyError> for LogError {
    fn from(e: KeyError) -> LogError {
        LogError::Key(e.to_string())
    }
}
