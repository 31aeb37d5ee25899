//! The store: where accepted events, dead letters, identities, tombstones
//! and completeness live. One trait, two implementations: SQLite (the
//! embedded default) and PostgreSQL (shared by several collectors).
//!
//! # Contract
//!
//! - [`Store::write_batch`] writes one request's events and dead letters in
//!   **one transaction** and returns only after it committed. The HTTP layer
//!   answers `accepted` only after that, so a crash at any moment loses no
//!   event that was answered `accepted`.
//! - Dedup is exact and has no time window: `message_id` is unique forever;
//!   a non-empty `dedup_key` is unique forever too. First writer wins; a
//!   later event with either key already stored is a [`WriteOutcome::Duplicate`]
//!   (also within the same batch), counted, and not stored again. Across
//!   several collectors on one PostgreSQL the unique constraints decide.
//! - An event whose person (user id, or an anonymous id linked to a user)
//!   has a deletion tombstone is not stored: [`WriteOutcome::DeletedUser`],
//!   and it is written to the dead letters with reason `deleted_user`.
//! - Counters (`accepted`, `duplicate`, `rejected`) are kept in the store,
//!   in the same transaction as the rows, so [`Store::stats`] is exact across
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
//! user id. The **person** of an event (what [`EventCount::users`] counts
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
//! **Deletion** removes the events whose person is the user (by the rule
//! above, except that an event carrying another, living user id is kept)
//! and writes a tombstone. From then on an event whose user id is the
//! deleted user or aliased to it, or, without a user id, whose anonymous
//! id or install is linked to it, is refused as [`WriteOutcome::DeletedUser`].
//! Links stay, so later anonymous events from that device are refused too.
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

pub mod bulk;
pub mod health;
mod identity;
pub mod outbox;
pub mod postgres;
pub mod query;
mod ranges;
pub mod sqlite;

pub use self::postgres::PostgresStore;
pub use health::{
    Beacon, Completeness, Fleet, HealthTotals, HealthWindow, Histogram, PipelineFigures,
};
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

use std::path::Path;
use std::sync::Arc;
use tally_proto::{MessageType, Priority, RejectReason};

/// The SQLite file inside the data directory.
pub const SQLITE_FILE_NAME: &str = "tally.db";

/// Opens the store the collector was configured with: SQLite at
/// `data_dir/tally.db` (the directory is created if missing), or
/// PostgreSQL when `database_url` is given.
pub fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(url) = database_url {
        return Ok(Arc::new(PostgresStore::connect(url)?));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| {
        StoreError::Backend(format!(
            "cannot create data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    Ok(Arc::new(SqliteStore::open(
        &data_dir.join(SQLITE_FILE_NAME),
    )?))
}

/// One validated message, clock-corrected, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The exact dedup key.
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
    /// The `messageId`, if one could be read.
    pub message_id: Option<String>,
    /// Why it was rejected.
    pub reason: RejectReason,
    /// Which rule, in words.
    pub detail: &'static str,
    /// Collector clock at receipt, Unix ms.
    pub received_at: i64,
    /// The message JSON as received.
    pub raw: String,
}

/// A dead letter as stored (read back for inspection).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredDeadLetter {
    /// The `messageId`, if one could be read.
    pub message_id: Option<String>,
    /// The reason code ([`RejectReason::as_str`]).
    pub reason: String,
    /// Which rule, in words.
    pub detail: String,
    /// Collector clock at receipt, Unix ms.
    pub received_at: i64,
    /// The message JSON as received.
    pub raw: String,
}

/// What the store did with one [`NewEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored, counted once.
    Accepted,
    /// Its `message_id` or `dedup_key` was already stored.
    Duplicate,
    /// Its person was deleted; stored as a dead letter (`deleted_user`).
    DeletedUser,
}

/// Totals from the store (`GET /v1/stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
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

/// `GET /v1/events/count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct EventCount {
    /// Events with that name in the window.
    pub count: u64,
    /// Distinct people among them: the user if known (after stitching),
    /// else the install, else the anonymous id.
    pub users: u64,
}

/// Completeness of one install (`GET /v1/installs/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct InstallReport {
    /// Highest seq seen (stored or reported dropped).
    pub max_seq: u64,
    /// Seq ranges in `1..=max_seq` neither stored nor reported dropped,
    /// as inclusive `[from, to]` pairs, ascending.
    pub missing: Vec<[u64; 2]>,
    /// Events the device reported dropped by policy.
    pub dropped: u64,
    /// The same, by reason.
    pub dropped_by_reason: std::collections::BTreeMap<String, u64>,
}

/// The result of a deletion request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct DeletionReport {
    /// Stored events removed.
    pub deleted_events: u64,
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

/// The operations the collector needs from a store.
pub trait Store: query::ProductQueries + Send + Sync + 'static {
    /// Writes events and dead letters of one request in one transaction
    /// and returns one outcome per event, in order.
    fn write_batch(
        &self,
        events: &[NewEvent],
        dead_letters: &[DeadLetter],
    ) -> Result<Vec<WriteOutcome>, StoreError>;

    /// Totals.
    fn stats(&self) -> Result<Stats, StoreError>;

    /// Count and distinct people for one event name, `from <= ts_corrected
    /// < to` (Unix ms), either bound optional.
    fn count_events(
        &self,
        event: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<EventCount, StoreError>;

    /// Completeness of one install; `None` if the store never saw it.
    fn install(&self, install_id: &str) -> Result<Option<InstallReport>, StoreError>;

    /// Deletes the user's events (their own and those stitched to them)
    /// and writes a tombstone so later events for them are refused.
    fn delete_user(&self, user_id: &str, requested_at: i64) -> Result<DeletionReport, StoreError>;

    /// Whether `user_id` has a tombstone.
    fn is_deleted(&self, user_id: &str) -> Result<bool, StoreError>;

    /// A cheap round trip, for `/healthz`.
    fn ping(&self) -> Result<(), StoreError>;

    /// The most recent dead letters, newest first, at most `limit`.
    fn dead_letters(&self, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError>;

    /// Adds ingest requests that reached no write transaction (refused
    /// before the store, or empty) to the request counts of the hour of
    /// `at` (Unix ms): `batches` requests, `succeeded` of them answered 200.
    /// A request that wrote is counted by [`Store::write_batch`] itself.
    fn add_batches(&self, at: i64, batches: u64, succeeded: u64) -> Result<(), StoreError>;

    /// Pipeline-health figures from one snapshot: cumulative totals, the
    /// hours `from..to` touches (Unix ms, received time, rounded out to
    /// whole hours), completeness, and the fleet's latest beacons captured
    /// at or after `now` − [`health::FLEET_MAX_AGE_MS`].
    fn pipeline_health(&self, from: i64, to: i64, now: i64) -> Result<PipelineFigures, StoreError>;

    /// Deletes the health figures of the hours before `before` (Unix ms),
    /// and beacons captured before it; returns the rows deleted. The
    /// health task calls it hourly with [`health::HEALTH_RETENTION_MS`],
    /// so each call deletes about one hour of rows.
    fn prune_health(&self, before: i64) -> Result<u64, StoreError>;
    /// Deletes at most `limit` events of `scope` whose corrected time is
    /// before `before` (Unix ms), oldest first, in one short transaction
    /// that also lowers the `events` counter by the number returned and
    /// deletes the `active_slots` rows left without a product event of
    /// their identity in their slot (see [`query`]), so active people and
    /// retention cohorts no longer count expired activity. A store may
    /// leave that to the call that finishes a slot (SQLite does: see
    /// [`crate::retention`]). Retention calls it in a loop, so ingest never
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
    /// like [`Store::expire_events`]. The `rejected` total is not lowered:
    /// it counts messages ever rejected.
    fn expire_dead_letters(&self, before: i64, limit: usize) -> Result<u64, StoreError>;

    /// The recorded deletion requests, newest first, at most `limit`.
    fn deletions(&self, limit: usize) -> Result<Vec<DeletionRecord>, StoreError>;

    /// Stored events with `from <= ts_corrected < to`, ordered by corrected
    /// time (ties in an order of the store's own), at most `limit`, after
    /// `after` (the cursor of the previous page's last event). Pages are
    /// read by a keyset cursor: each costs an index range scan, however
    /// deep into the window it is.
    fn export_page(
        &self,
        from: i64,
        to: i64,
        after: Option<&ExportCursor>,
        limit: usize,
    ) -> Result<Vec<ExportedEvent>, StoreError>;

    /// Stored events with `from <= ts_corrected < to`.
    fn count_stored(&self, from: i64, to: i64) -> Result<u64, StoreError>;

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

    /// The alert sender lease and notification outbox, for a store
    /// several collectors share (PostgreSQL); `None` for a store of one
    /// collector (SQLite), whose collector notifies from memory.
    fn alert_outbox(&self) -> Option<&dyn outbox::AlertOutbox> {
        None
    }
}

/// Which stored events a retention rule expires
/// ([`Store::expire_events`]).
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

/// What became of a deletion request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DeletionStatus {
    /// The user's events were removed and the tombstone written, in the
    /// transaction that recorded the request. (A request whose transaction
    /// failed leaves no record: it was answered with an error and is
    /// retried by its sender.)
    Done,
}

impl DeletionStatus {
    /// The stored code.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Done => "done",
        }
    }

    fn from_stored(code: &str) -> Result<Self, StoreError> {
        match code {
            "done" => Ok(Self::Done),
            other => Err(StoreError::Backend(format!(
                "unknown deletion status {other:?} in the store"
            ))),
        }
    }
}

/// One deletion request as recorded (`GET /v1/deletions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionRecord {
    /// The deleted user.
    pub user_id: String,
    /// When the request arrived, Unix ms (collector clock).
    pub requested_at: i64,
    /// What became of it.
    pub status: DeletionStatus,
    /// Stored events it removed (0 when the user had none left).
    pub deleted_events: u64,
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
    /// PostgreSQL: the message id.
    MessageId(String),
}

/// One stored event as exported ([`Store::export_page`]).
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
