//! The store: where accepted events, dead letters, identities, tombstones
//! and completeness live. Two implementations: SQLite (the embedded
//! default) and PostgreSQL (shared by several collectors).
//!
//! # Roles
//!
//! What the collector asks of a store is split by who asks it, one trait
//! each; [`Store`] is all of them, the handle the collector holds
//! (`Arc<dyn Store>`).
//!
//! | trait | asked by | operations |
//! |---|---|---|
//! | [`IngestStore`] | ingest | one request's events and dead letters |
//! | [`QueryStore`] | the query API | event counts and the product queries |
//! | [`AdminStore`] | the admin API | completeness of an install, deletions, dead letters, export |
//! | [`HealthStore`] | health, stats, alerts | totals, liveness, pipeline-health figures, the alert outbox |
//! | [`RetentionStore`] | retention | expired events and dead letters, in chunks |
//! | [`keys::KeyStore`] | the key ring, the admin API | write keys and tokens: created, rotated, revoked, polled by version |
//! | [`audit::AuditStore`] | the audit layer, retention | the audit log: appended, read in pages, expired |
//! | [`quality::QualityStore`] | the quality API | the tracking plan's findings, counted by ingest |
//!
//! Each backend implements each role in the file of its concern
//! (`sqlite/write.rs`, `postgres/expiry.rs`, ...).
//!
//! # Contract
//!
//! - [`IngestStore::write_batch`] writes one request's events and dead letters in
//!   **one transaction** and returns only after it committed. The HTTP layer
//!   answers `accepted` only after that, so a crash at any moment loses no
//!   event that was answered `accepted`.
//! - Dedup is exact and has no time window, within a **source** (the write
//!   key that sent the event, [`NewEvent::source`]): `message_id` is unique
//!   forever per source; a non-empty `dedup_key` is unique forever per
//!   source too. First writer wins; a later event of the same source with
//!   either key already stored is a [`WriteOutcome::Duplicate`] (also
//!   within the same batch), counted, and not stored again. Another
//!   source's events never make one a duplicate, so a public write key can
//!   neither suppress another app's events nor learn whether its ids
//!   exist. Across several collectors on one PostgreSQL the unique
//!   constraints decide. Events stored before sources were recorded have
//!   the source `''` and still count as duplicates for every source.
//! - An install belongs to the first source that sends for it: another
//!   source's events for it are stored but touch neither its completeness
//!   nor its beacon, and its drop reports for it are refused
//!   (`invalid_drop_report`).
//! - An event whose person (user id, or an anonymous id linked to a user)
//!   has a deletion tombstone is not stored: [`WriteOutcome::Rejected`]
//!   with `deleted_user`, written to the dead letters without its text.
//!   An `alias` merging a user id that has events of its own is refused
//!   the same way (`alias_of_identified_user`).
//! - Dead letters are bounded ([`DeadLetterLimits`]): past the limits a
//!   rejection is still answered and counted, but not kept.
//! - Counters (`accepted`, `duplicate`, `rejected`) are kept in the store,
//!   in the same transaction as the rows, so [`HealthStore::stats`] is exact across
//!   restarts and across collectors.
//! - Every method blocks; the HTTP layer calls them on the blocking pool
//!   with its own bound on in-flight work.
//!
//! # Implementations
//!
//! | module | for | writes |
//! |---|---|---|
//! | [`sqlite`] | one collector, zero setup (`DATA_DIR/tally.db`) | one writer connection, group commit, WAL |
//! | [`postgres`](mod@postgres) | several collectors sharing one database | pooled connections, unique constraints decide |
//!
//! [`open`] picks one from the command line's `--data-dir` and
//! `--database-url`. Both stores pass the same test suite
//! (`tests/store_suite.rs`); `benches/store.rs` measures their write path.
//!
//! # Durability
//!
//! SQLite (WAL) with [`Synchronous::Normal`], the default: a committed
//! batch survives kill -9 of the collector (it is in the WAL file before
//! `write_batch` returns) but commits since the last WAL sync can be lost
//! on power loss or an OS crash. [`Synchronous::Full`] survives those too,
//! at one fsync per group commit. PostgreSQL: the server's
//! `synchronous_commit` (on by default) decides; with it, both crashes are
//! survived.
//!
//! # Identity, stitching and deletion
//!
//! `identify` links its anonymous id and its install id to its user id;
//! `alias` links `previousId` (as an anonymous id and as a user id) to its
//! user id, unless `previousId` already has events of its own as a user id
//! (two identified users are never merged). The **person** of an event (what [`EventCount::users`] counts
//! and what a deletion removes) is its user id, resolved through an alias
//! if that user id was aliased; for an event without a user id, the user
//! its anonymous id is linked to, else the user its install is linked to
//! (each resolved through one alias hop); else its install id; else its
//! anonymous id. So anonymous events sent before an `identify` count for
//! that user once the link exists, in whatever order they arrive.
//!
//! **Conflict rule**: an identifier linked to two users keeps the link with
//! the earliest corrected time, then the smaller user id. It depends only
//! on the events, not on arrival order, so collectors sharing a database
//! agree.
//!
//! **Deletion** removes the events carrying the user's id, the anonymous
//! events whose person the user is directly (never through an alias from
//! another user id: a public write key can claim any alias), the dead
//! letters carrying those ids, and the user's identities; the device links
//! to the user move into the tombstone and every link naming it goes. From
//! then on an event with that user id, or an anonymous event of a device
//! linked to it, is refused as `deleted_user` (see `identity::refused_sql`).
//! A person who never identified is deleted by anonymous id or install
//! ([`AdminStore::delete_device`]): the events carrying it without a user
//! id go, and its tombstone refuses that device's later anonymous events
//! the same way.
//! Deletion scans the events table: it is rare, and an index per id column
//! would cost every insert.
//!
//! # Completeness
//!
//! Every event with an install id and a seq marks that seq seen, whatever
//! its outcome (the collector saw it); drops reported in an accepted
//! event's [`NewEvent::drops`] are kept per install with their reason. Seen
//! seqs are stored as merged ranges, so an install costs a few rows.
//! `missing` is `1..=max_seq` minus seen minus dropped. A seq above
//! `i64::MAX` (a corrupt device counter) is stored as absent and not
//! tracked.

mod dead_letters;
#[macro_use]
mod delegate;

pub mod audit;
#[cfg(feature = "bench")]
pub mod bulk;
mod deletions;
pub mod health;
mod identity;
pub mod keys;
mod migrations;
pub mod outbox;
mod plan;
pub mod postgres;
pub mod quality;
pub mod query;
mod ranges;
pub mod sqlite;

pub use self::postgres::PostgresStore;
pub use dead_letters::{DeadLetterQuery, StoredDeadLetter};
pub use deletions::{DeletionRecord, DeletionReport, DeletionStatus, PersonKind};
pub use health::{
    Beacon, Completeness, Fleet, HealthTotals, HealthWindow, Histogram, PipelineFigures,
};
pub use ranges::InstallReport;
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

use std::path::Path;
use std::sync::Arc;
use tally_proto::{MessageType, Priority, RejectReason};

/// The SQLite file inside the data directory.
pub const SQLITE_FILE_NAME: &str = "tally.db";

/// Opens the store the collector was configured with: SQLite at
/// `data_dir/tally.db` (the directory is created if missing), or
/// PostgreSQL when `database_url` is given; default limits.
pub fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Arc<dyn Store>, StoreError> {
    open_with(data_dir, database_url, DeadLetterLimits::default())
}

/// [`open`] with these dead-letter limits.
pub fn open_with(
    data_dir: &Path,
    database_url: Option<&str>,
    dead_letters: DeadLetterLimits,
) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(url) = database_url {
        return Ok(Arc::new(PostgresStore::connect_with(url, dead_letters)?));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| {
        StoreError::Backend(format!(
            "cannot create data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    Ok(Arc::new(SqliteStore::open_with(
        &data_dir.join(SQLITE_FILE_NAME),
        SqliteOptions {
            dead_letters,
            ..SqliteOptions::default()
        },
    )?))
}

/// One validated message, clock-corrected, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The source (write key id) that sent it: dedup is exact within a
    /// source, and an install's completeness is its own source's.
    pub source: String,
    /// The exact dedup key (within the source).
    pub message_id: String,
    /// One of the six known types.
    pub kind: MessageType,
    /// `event` of a track, `name` of a page or screen.
    pub event: Option<String>,
    /// Non-empty `userId`.
    pub user_id: Option<String>,
    /// Non-empty `anonymousId`.
    pub anonymous_id: Option<String>,
    /// `groupId` of a group call.
    pub group_id: Option<String>,
    /// `previousId` of an alias call.
    pub previous_id: Option<String>,
    /// `context.tally.install_id`.
    pub install_id: Option<String>,
    /// `context.tally.seq`.
    pub seq: Option<u64>,
    /// `context.tally.session_id`.
    pub session_id: Option<String>,
    /// `context.tally.session_index`.
    pub session_index: Option<u64>,
    /// `context.tally.dedup_key`, non-empty.
    pub dedup_key: Option<String>,
    /// `context.tally.priority`.
    pub priority: Priority,
    /// Device clock at capture, Unix ms (absent for some third-party
    /// messages).
    pub timestamp: Option<i64>,
    /// Device clock at send, Unix ms (the message's, else the batch's).
    pub sent_at: Option<i64>,
    /// Collector clock at receipt, Unix ms.
    pub received_at: i64,
    /// Capture time on the collector's clock, Unix ms.
    pub ts_corrected: i64,
    /// `ts_corrected` was clamped (the device claimed a time too far ahead).
    pub clamped: bool,
    /// Seq ranges the device reports it dropped by policy (from a
    /// `tally.dropped` event; empty otherwise). Kept per install so a gap
    /// by policy is told apart from a gap in transit.
    pub drops: Vec<DroppedRange>,
    /// The message JSON as received (properties, context, unknown fields).
    pub raw: String,
}

impl NewEvent {
    /// Whether this is the SDK's drop report (`tally.dropped`).
    pub fn is_drop_report(&self) -> bool {
        self.kind == MessageType::Track && self.event.as_deref() == Some(tally_proto::DROPPED_EVENT)
    }
}

/// Whether an install whose stored owner is `owner` counts the events of
/// `source`: it does if no source has claimed it yet (`None`, or `''` for
/// an install stored before sources were recorded) or `source` has.
pub(crate) fn owns(owner: Option<&str>, source: &str) -> bool {
    owner.is_none_or(|o| o.is_empty() || o == source)
}

/// The stored form of a seq: one that fits the signed column, else none
/// (see [`ranges::MAX_TRACKED_SEQ`]).
pub(crate) fn tracked(seq: Option<u64>) -> Option<i64> {
    seq.filter(|s| *s <= ranges::MAX_TRACKED_SEQ)
        .and_then(|s| i64::try_from(s).ok())
}

/// The stored code of a priority.
pub(crate) fn priority_str(p: Priority) -> &'static str {
    match p {
        Priority::Normal => "normal",
        Priority::Critical => "critical",
    }
}

/// Sequence numbers `from..=to` of one install, dropped on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRange {
    /// First dropped seq.
    pub from: u64,
    /// Last dropped seq (inclusive).
    pub to: u64,
    /// The SDK's drop reason code (`queue_full`, `too_old`, ...).
    pub reason: String,
}

/// A rejected message, kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The source (write key id) that sent it.
    pub source: String,
    /// The `messageId`, if one could be read.
    pub message_id: Option<String>,
    /// Why it was rejected.
    pub reason: RejectReason,
    /// Which rule, in words (never the message's content).
    pub detail: std::borrow::Cow<'static, str>,
    /// Collector clock at receipt, Unix ms.
    pub received_at: i64,
    /// The message JSON as received.
    pub raw: String,
    /// The message's `userId`, if it had a usable one (a deletion of that
    /// user removes the dead letter).
    pub user_id: Option<String>,
    /// Its `anonymousId`, likewise.
    pub anonymous_id: Option<String>,
    /// Its `context.tally.install_id`, likewise.
    pub install_id: Option<String>,
}

impl DeadLetter {
    /// The dead letter of an event the store itself refused for `reason`
    /// ([`WriteOutcome::Rejected`]).
    pub(crate) fn refused(e: &NewEvent, reason: RejectReason) -> DeadLetter {
        DeadLetter {
            source: e.source.clone(),
            message_id: Some(e.message_id.clone()),
            reason,
            detail: match reason {
                RejectReason::DeletedUser => "the user was deleted",
                RejectReason::InvalidDropReport => "a drop report for an install of another source",
                RejectReason::AliasOfIdentifiedUser => {
                    "alias of a user id that has events of its own"
                }
                _ => "refused by the store",
            }
            .into(),
            received_at: e.received_at,
            // A deleted user's late message is refused, not kept: its
            // dead letter records the reason and the ids (which the
            // tombstone holds anyway), never the data.
            raw: if reason == RejectReason::DeletedUser {
                String::new()
            } else {
                e.raw.clone()
            },
            user_id: e.user_id.clone(),
            anonymous_id: e.anonymous_id.clone(),
            install_id: e.install_id.clone(),
        }
    }
}

/// What the store did with one [`NewEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored, counted once.
    Accepted,
    /// Its source already stored an event with its `message_id` or
    /// `dedup_key`.
    Duplicate,
    /// Refused by a rule only the store can check, and kept as a dead
    /// letter with that reason: `deleted_user` (its person was deleted),
    /// `invalid_drop_report` (a drop report for an install another source
    /// owns), `alias_of_identified_user`.
    Rejected(RejectReason),
}

/// Totals from the store (`GET /v1/stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Messages ever accepted (identify and the other types included).
    pub accepted: u64,
    /// Duplicates ever suppressed.
    pub duplicate: u64,
    /// Messages ever rejected (dead letters, `deleted_user` included).
    pub rejected: u64,
    /// Messages stored now (accepted minus deleted and expired).
    pub events: u64,
}

/// What the store keeps of rejected messages. A write key is public, so
/// anyone can send rejected messages by the megabyte: dead letters are
/// bounded by rows and bytes (and by age, through retention), and what is
/// kept of one message is bounded too. A rejection is always answered and
/// counted; only its copy may be dropped or cut, and those are counted
/// ([`DeadLetterTotals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterLimits {
    /// Most dead letters kept; past it new ones are not kept.
    pub max_rows: u64,
    /// Most bytes of kept message text; past it new ones are not kept.
    pub max_bytes: u64,
    /// Most bytes kept of one message; the rest is cut (the dead letter
    /// records the size as received).
    pub max_message_bytes: usize,
}

/// Dead letters kept at most by default: far more than a healthy fleet
/// rejects between two retention passes, small enough to read through.
pub const DEFAULT_DEAD_LETTER_ROWS: u64 = 100_000;

/// Bytes of kept dead letters at most by default: 256 MiB of disk.
pub const DEFAULT_DEAD_LETTER_BYTES: u64 = 256 * 1024 * 1024;

/// Bytes kept of one rejected message by default: every valid message fits
/// ([`tally_proto::limits::MAX_MESSAGE_BYTES`] is 32 KiB), and the start of
/// an oversized one shows what it was.
pub const DEFAULT_DEAD_LETTER_MESSAGE_BYTES: usize = 32 * 1024;

impl Default for DeadLetterLimits {
    fn default() -> Self {
        Self {
            max_rows: DEFAULT_DEAD_LETTER_ROWS,
            max_bytes: DEFAULT_DEAD_LETTER_BYTES,
            max_message_bytes: DEFAULT_DEAD_LETTER_MESSAGE_BYTES,
        }
    }
}

/// The dead letters of one write transaction measured against the limits,
/// starting from what is stored: which to keep, cut to what length, and
/// the counts the transaction adds to the totals.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterBudget {
    limits: DeadLetterLimits,
    rows: u64,
    bytes: u64,
    pub kept_rows: i64,
    pub kept_bytes: i64,
    pub not_kept: i64,
    pub truncated: i64,
}

impl DeadLetterBudget {
    /// A budget over `rows` dead letters of `bytes` stored.
    pub(crate) fn new(limits: DeadLetterLimits, rows: i64, bytes: i64) -> Self {
        Self {
            limits,
            rows: rows.max(0) as u64,
            bytes: bytes.max(0) as u64,
            kept_rows: 0,
            kept_bytes: 0,
            not_kept: 0,
            truncated: 0,
        }
    }

    /// What to store of `raw`: the whole text, its start (cut at a
    /// character boundary), or nothing when the limits are reached.
    pub(crate) fn keep<'a>(&mut self, raw: &'a str) -> Option<&'a str> {
        let mut end = raw.len().min(self.limits.max_message_bytes);
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        let kept = &raw[..end];
        let len = kept.len() as u64;
        if self.rows >= self.limits.max_rows || self.bytes + len > self.limits.max_bytes {
            self.not_kept += 1;
            return None;
        }
        self.rows += 1;
        self.bytes += len;
        self.kept_rows += 1;
        self.kept_bytes += len as i64;
        if end < raw.len() {
            self.truncated += 1;
        }
        Some(kept)
    }
}

/// Dead-letter totals (`GET /v1/stats`, `GET /v1/dead-letters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetterTotals {
    /// Dead letters stored now.
    pub kept: u64,
    /// Bytes of message text they hold.
    pub bytes: u64,
    /// Rejected messages not kept because the limits were reached.
    pub not_kept: u64,
    /// Rejected messages kept cut to the per-message limit.
    pub truncated: u64,
}

/// `GET /v1/events/count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct EventCount {
    /// Events with that name in the window.
    pub count: u64,
    /// Distinct people among them: the user if known (after stitching),
    /// else the install, else the anonymous id.
    pub users: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store is saturated or temporarily unreachable (SQLite busy,
    /// PostgreSQL pool exhausted or connection lost): retry later (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Migrations failed or the schema is newer than this binary.
    #[error("store migration failed: {0}")]
    Migration(String),
    /// Any other database or I/O failure (500).
    #[error("store failure: {0}")]
    Backend(String),
}

/// Writing what ingest accepted ([`IngestStore::write_batch`]).
pub trait IngestStore {
    /// Writes events and dead letters of one request in one transaction,
    /// counting the plan's `findings` of those it stores or dead-letters
    /// ([`quality`]), and returns one outcome per event, in order.
    fn write_judged(
        &self,
        events: &[NewEvent],
        dead_letters: &[DeadLetter],
        findings: &[quality::QualityFinding],
    ) -> Result<Vec<WriteOutcome>, StoreError>;

    /// [`IngestStore::write_judged`] of a batch without findings.
    fn write_batch(
        &self,
        e: &[NewEvent],
        d: &[DeadLetter],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        self.write_judged(e, d, &[])
    }
}

/// Product answers: event counts, and the building blocks of the query API
/// ([`query::ProductQueries`]).
pub trait QueryStore: query::ProductQueries {
    /// Count and distinct people for one event name, `from <= ts_corrected
    /// < to` (Unix ms), either bound optional; with `source`, only the
    /// events that write key id sent.
    fn count_events(
        &self,
        event: &str,
        from: Option<i64>,
        to: Option<i64>,
        source: Option<&str>,
    ) -> Result<EventCount, StoreError>;
}

/// What an operator reads and asks of the store: completeness of an
/// install, deletions, dead letters, export.
pub trait AdminStore {
    /// Completeness of one install; `None` if the store never saw it.
    fn install(&self, install_id: &str) -> Result<Option<InstallReport>, StoreError>;

    /// Stored events of one install with a seq above `after_seq`, in seq
    /// order, at most `limit`, each with its person (see the module docs).
    /// It scans the events table (install ids have no index, as for
    /// deletion): for checks and investigations, not dashboards.
    fn install_events(
        &self,
        install_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<InstallEvent>, StoreError>;

    /// Deletes one person's data and writes a tombstone refusing their
    /// later events, and records the request: for a user id, the user's
    /// events (their own and those stitched to them); for an anonymous id
    /// or an install, the events carrying it without a user id (a person
    /// who never identified, or one device of one); with their dead
    /// letters. Without a `source`, from every source, with the person's
    /// identities and links (see the module docs). With a `source` (a
    /// write key id), only that source's events and dead letters, the
    /// reach computed within it, and a tombstone refusing only that
    /// source's later events (see `identity::ScopedDeletionSql`).
    fn delete_person(
        &self,
        kind: PersonKind,
        id: &str,
        source: Option<&str>,
        requested_at: i64,
    ) -> Result<DeletionReport, StoreError>;

    /// [`AdminStore::delete_person`] of a user id, every source.
    fn delete_user(&self, user_id: &str, requested_at: i64) -> Result<DeletionReport, StoreError> {
        self.delete_person(PersonKind::User, user_id, None, requested_at)
    }

    /// [`AdminStore::delete_person`] of an anonymous id or an install
    /// ([`PersonKind::Anonymous`] or [`PersonKind::Install`]), every
    /// source.
    fn delete_device(
        &self,
        kind: PersonKind,
        id: &str,
        requested_at: i64,
    ) -> Result<DeletionReport, StoreError> {
        self.delete_person(kind, id, None, requested_at)
    }

    /// Whether `user_id` has a tombstone (of any source).
    fn is_deleted(&self, user_id: &str) -> Result<bool, StoreError>;

    /// The recorded deletion requests, newest first, at most `limit`.
    fn deletions(&self, limit: usize) -> Result<Vec<DeletionRecord>, StoreError>;

    /// Dead letters newest first, filtered and paged as `q` says.
    fn dead_letters(&self, q: &DeadLetterQuery) -> Result<Vec<StoredDeadLetter>, StoreError>;

    /// What the dead letters hold, and what was not kept of them.
    fn dead_letter_totals(&self) -> Result<DeadLetterTotals, StoreError>;

    /// Stored events with `from <= ts_corrected < to`, of `source` only if
    /// given, ordered by corrected time (ties in an order of the store's
    /// own), at most `limit`, after `after` (the cursor of the previous
    /// page's last event). Pages are read by a keyset cursor: each costs an
    /// index range scan, however deep into the window it is (with a
    /// source, the other sources' events in the range are read and
    /// skipped).
    fn export_page(
        &self,
        from: i64,
        to: i64,
        source: Option<&str>,
        after: Option<&ExportCursor>,
        limit: usize,
    ) -> Result<Vec<ExportedEvent>, StoreError>;

    /// Stored events with `from <= ts_corrected < to`, of `source` only if
    /// given.
    fn count_stored(&self, from: i64, to: i64, source: Option<&str>) -> Result<u64, StoreError>;

    /// The stored events of one person, for an access request, in
    /// corrected-time order, at most `limit`, after `after`: for a user id
    /// what a deletion of it would remove (its events and the anonymous
    /// events stitched to it directly), for an anonymous id or an install
    /// id the events carrying it without a user id; with `source`, what a
    /// deletion within that source would remove (its own events, through
    /// the links its own calls made). It scans the events table, like a
    /// deletion.
    fn person_page(
        &self,
        kind: PersonKind,
        id: &str,
        source: Option<&str>,
        after: Option<&ExportCursor>,
        limit: usize,
    ) -> Result<Vec<ExportedEvent>, StoreError>;
}

/// The collector's own health: totals, liveness, pipeline-health figures
/// (written here for requests that wrote nothing, read, pruned) and, for a
/// shared store, the alert outbox.
pub trait HealthStore {
    /// Totals.
    fn stats(&self) -> Result<Stats, StoreError>;

    /// A cheap round trip, for `/healthz`.
    fn ping(&self) -> Result<(), StoreError>;

    /// Adds ingest requests that reached no write transaction (refused
    /// before the store, or empty) to the request counts of the hour of
    /// `at` (Unix ms): `batches` requests, `succeeded` of them answered 200.
    /// A request that wrote is counted by [`IngestStore::write_batch`] itself.
    fn add_batches(&self, at: i64, batches: u64, succeeded: u64) -> Result<(), StoreError>;

    /// Pipeline-health figures from one snapshot: cumulative totals, the
    /// hours `from..to` touches (Unix ms, received time, rounded out to
    /// whole hours), completeness, and the fleet's latest beacons captured
    /// at or after `now` − [`health::FLEET_MAX_AGE_MS`].
    fn pipeline_health(&self, from: i64, to: i64, now: i64) -> Result<PipelineFigures, StoreError>;

    /// The installs whose latest `tally.health` beacon shows an event
    /// pending longer than `older_than_s` seconds, the oldest queue first,
    /// at most `limit`: the queues that are not draining. Every kept
    /// beacon counts, however old (an install that went silent with a
    /// full queue is the one to look at); `at` says when it was captured.
    fn stalled_installs(
        &self,
        older_than_s: f64,
        limit: usize,
    ) -> Result<Vec<health::Beacon>, StoreError>;

    /// Deletes the health figures of the hours before `before` (Unix ms),
    /// beacons and [`quality`] rows before it; returns the rows deleted. The
    /// health task calls it hourly with [`health::HEALTH_RETENTION_MS`],
    /// so each call deletes about one hour of rows.
    fn prune_health(&self, before: i64) -> Result<u64, StoreError>;

    /// The alert sender lease and notification outbox, for a store
    /// several collectors share (PostgreSQL); `None` for a store of one
    /// collector (SQLite), whose collector notifies from memory.
    fn alert_outbox(&self) -> Option<&dyn outbox::AlertOutbox> {
        None
    }
}

/// Retention: expired events and dead letters deleted in short chunks.
pub trait RetentionStore {
    /// Deletes at most `limit` events of `scope` whose corrected time is
    /// before `before` (Unix ms), oldest first, in one short transaction
    /// that also lowers the `events` counter by the number returned and
    /// deletes the `active_slots` rows left without a product event of
    /// their identity in their slot (see [`query`]), so active people and
    /// retention cohorts no longer count expired activity. A store may
    /// leave that to the call that finishes a slot (SQLite does: see
    /// [`crate::governance::retention`]). Retention calls it in a loop, so ingest never
    /// waits behind a long deletion.
    fn expire_events(
        &self,
        scope: ExpiryScope<'_>,
        before: i64,
        limit: usize,
    ) -> Result<u64, StoreError>;

    /// Deletes at most `limit` dead letters received before `before` (Unix
    /// ms, collector clock), in one short transaction, by the index on
    /// their receipt time; returns how many. Retention calls it in a loop
    /// like [`RetentionStore::expire_events`]. The `rejected` total is not lowered:
    /// it counts messages ever rejected.
    fn expire_dead_letters(&self, before: i64, limit: usize) -> Result<u64, StoreError>;
}

/// Everything the collector needs from a store, as one handle
/// (`Arc<dyn Store>`): every store that plays all the roles is one. A
/// part of the collector that needs one role can take just that trait.
pub trait Store:
    IngestStore
    + QueryStore
    + AdminStore
    + HealthStore
    + RetentionStore
    + keys::KeyStore
    + audit::AuditStore
    + quality::QualityStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: IngestStore
        + QueryStore
        + AdminStore
        + HealthStore
        + RetentionStore
        + keys::KeyStore
        + audit::AuditStore
        + quality::QualityStore
        + Send
        + Sync
        + 'static
{
}
/// Which stored events a retention rule expires
/// ([`RetentionStore::expire_events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryScope<'a> {
    /// Events with this name (`event` of a track, `name` of a page or
    /// screen).
    Event(&'a str),
    /// Every event except those with one of these names (they have rules
    /// of their own); events without a name (identify, group, alias) are
    /// included.
    AllExcept(&'a [String]),
}

/// Where an export page ends; pass it back to read the next page. Opaque:
/// each store orders ties on the corrected time by a key of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportCursor {
    ts_corrected: i64,
    tie: CursorTie,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CursorTie {
    /// SQLite: the row id.
    Row(i64),
    /// PostgreSQL: the source and the message id.
    MessageId {
        /// The event's source.
        source: String,
        /// The event's message id.
        id: String,
    },
}

/// One stored event as exported ([`AdminStore::export_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedEvent {
    /// Capture time on the collector's clock, Unix ms.
    pub ts_corrected: i64,
    /// Collector clock at receipt, Unix ms.
    pub received_at: i64,
    /// The message JSON as received.
    pub raw: String,
    /// The position of this event in the export order.
    pub cursor: ExportCursor,
}

/// One stored event of an install (`GET /v1/installs/{id}/events`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct InstallEvent {
    /// `context.tally.seq`.
    pub seq: u64,
    /// The message type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `event` of a track, `name` of a page or screen.
    pub event: Option<String>,
    /// The person it counts for after stitching: the resolved user if
    /// there is one, else the install.
    pub person: String,
}
