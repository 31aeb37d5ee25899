//! The embedded store: one SQLite file in WAL mode.
//!
//! # Writes: one connection, group commit
//!
//! SQLite allows one writer at a time, so the store keeps one writer
//! connection behind a mutex and merges concurrent [`Store::write_batch`]
//! calls into one transaction (group commit): the first caller opens the
//! transaction, each caller runs its own batch inside a `SAVEPOINT` (a
//! failure rolls back that batch alone), and the caller that finds nobody
//! queued behind it commits for the whole group. Every caller returns only
//! after the commit that holds its rows, so `accepted` is never answered
//! for uncommitted data. A group is also committed once it holds
//! [`MAX_GROUP_EVENTS`] events or is [`MAX_GROUP_AGE`] old, bounding
//! latency under sustained load.
//!
//! Reads (`stats`, `count_events`, `install`, `is_deleted`, `ping`) use a
//! small pool of separate connections: in WAL mode readers see the last
//! commit and never block the writer.
//!
//! # Durability ([`Synchronous`])
//!
//! | setting | survives kill -9 of the process | survives power loss / OS crash |
//! |---|---|---|
//! | `Normal` (default) | yes: a commit is in the WAL file (OS page cache) before `write_batch` returns | no: commits since the last WAL sync (at checkpoints) can be lost |
//! | `Full` | yes | yes: the WAL is fsynced at every commit (group commit shares one fsync among the batches of a group) |
//!
//! The default is `Normal`: the collector's acceptance rule is that no event
//! answered `accepted` is lost when the process dies, which WAL with
//! `synchronous=NORMAL` guarantees at a fraction of the cost of an fsync
//! per commit. Deployments that must also survive power loss choose `Full`.
//!
//! # Schema
//!
//! Versioned migrations ([`MIGRATIONS`]) run at open inside one
//! `BEGIN IMMEDIATE` transaction; `schema_version` holds the number applied.
//! A database newer than this binary is refused ([`StoreError::Migration`]).
//!
//! | table | holds |
//! |---|---|
//! | `events` | accepted messages; `message_id` unique, `dedup_key` unique when present |
//! | `dead_letters` | rejected messages with reason, detail and raw JSON; expired by receipt time |
//! | `counters` | one row: accepted, duplicate, rejected, stored |
//! | `links` | identity links (see the [store module](super)) |
//! | `tombstones` | deleted users |
//! | `installs`, `install_seen`, `install_drops` | completeness: max seq, seen seq ranges (merged), dropped ranges with reasons |
//! | `health_hours`, `health_rejections`, `health_histograms`, `install_health` | pipeline health (see [`super::health`]) |
//! | `deletions` | every deletion request: user, time, status, events removed |
//!
//! Retention deletes expired events in chunks through the writer (each
//! chunk waits its turn like a batch and holds the writer for that chunk
//! only), with the `active_slots` and `event_names` rows the chunk left
//! without events; export reads pages on the reader connections by the
//! `(ts_corrected, row_id)` keyset of the `events_by_time` index.
//!
//! Deletion scans `events` (it resolves every event's person) inside the
//! writer, so ingest waits for it: it is rare and administrative, and an
//! index per id column would cost every insert.

use super::health::{self, BatchHealth, PipelineFigures};
use super::identity::{self, Link};
use super::query;
use super::ranges::{self, SeqRange, MAX_TRACKED_SEQ};
use super::InstallEvent;
use super::{
    CursorTie, DeadLetter, DeadLetterBudget, DeadLetterLimits, DeadLetterTotals, DeletionRecord,
    DeletionReport, DeletionStatus, EventCount, ExpiryScope, ExportCursor, ExportedEvent,
    InstallReport, NewEvent, Stats, Store, StoreError, StoredDeadLetter, WriteOutcome,
};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tally_proto::{Priority, RejectReason};

/// A group commits once it holds this many events even if more callers
/// are queued: 16 batches of 500, a few milliseconds of work, so a queued
/// caller never waits behind an unbounded transaction.
pub const MAX_GROUP_EVENTS: usize = 8_000;

/// A group commits once it is this old even if more callers are queued;
/// it bounds the latency group commit adds (the issue's p99 budget is
/// 20 ms at half load).
pub const MAX_GROUP_AGE: Duration = Duration::from_millis(5);

/// How long a statement waits for a lock held by another process before
/// the store answers [`StoreError::Unavailable`]: long enough to ride out
/// a checkpoint or a backup, short against an HTTP client's timeout.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache of the writer connection, in KiB (SQLite's `cache_size`
/// takes a negative number as KiB). 64 MiB keeps the unique indexes of
/// tens of millions of events in memory; SQLite's default is 2 MiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// WAL size, in pages, at which the writer's commit checkpoints it into
/// the database file: 4096 pages of [`PAGE_SIZE`] are 64 MiB. SQLite's
/// default (1000 pages) makes the writer checkpoint, and with `Normal`
/// fsync the database file, dozens of times a second at full ingest; a
/// larger WAL copies hot index pages once per checkpoint, and 64 MiB still
/// bounds the file and the recovery time after a crash.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 4_096;

/// Page size of a new database file, in bytes. Rows carry the raw JSON
/// (about 0.5 KiB): 16 KiB pages hold ~25 of them, so fewer page splits
/// and WAL frames per event; the bench measured 18% less CPU per event
/// than with SQLite's 4 KiB default.
const PAGE_SIZE: u32 = 16_384;

/// Longest wait for readers when a deletion truncates the WAL.
const ERASE_WAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Reader connections kept open for reuse; more are opened on demand and
/// closed after use. Two cover the HTTP layer's query endpoints on a
/// small machine.
const IDLE_READERS: usize = 4;

/// Prepared statements kept per connection (rusqlite's default is 16; the
/// writer uses about 20 distinct statements).
const STATEMENT_CACHE: usize = 64;

/// When a commit returns from disk (see the module doc for the loss
/// window of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// WAL is synced at checkpoints only: survives a process crash, may
    /// lose the last commits on power loss.
    #[default]
    Normal,
    /// WAL is synced at every commit: survives power loss too.
    Full,
}

/// How to open a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability of a commit.
    pub synchronous: Synchronous,
    /// How long to wait for a lock held by another process.
    pub busy_timeout: Duration,
    /// What is kept of rejected messages.
    pub dead_letters: DeadLetterLimits,
    /// Overwrite deleted content with zeros (SQLite's `secure_delete`), so
    /// a deleted user's data does not stay readable in freed pages. On by
    /// default; off only to measure what it costs.
    pub secure_delete: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::default(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            dead_letters: DeadLetterLimits::default(),
            secure_delete: true,
        }
    }
}

/// Schema migrations, applied in order; index + 1 is the version. Never
/// edit a released entry: add a new one.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    row_id        INTEGER PRIMARY KEY,
    message_id    TEXT NOT NULL UNIQUE,
    dedup_key     TEXT,
    kind          TEXT NOT NULL,
    event         TEXT,
    user_id       TEXT,
    anonymous_id  TEXT,
    group_id      TEXT,
    previous_id   TEXT,
    install_id    TEXT,
    seq           INTEGER,
    session_id    TEXT,
    session_index INTEGER,
    priority      TEXT NOT NULL,
    timestamp     INTEGER,
    sent_at       INTEGER,
    received_at   INTEGER NOT NULL,
    ts_corrected  INTEGER NOT NULL,
    clamped       INTEGER NOT NULL,
    raw           TEXT NOT NULL
);
-- Partial: most events have no dedup key and cost no entry here.
CREATE UNIQUE INDEX events_by_dedup_key ON events (dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX events_by_name_time ON events (event, ts_corrected);
CREATE TABLE dead_letters (
    row_id      INTEGER PRIMARY KEY,
    message_id  TEXT,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    raw         TEXT NOT NULL
);
CREATE TABLE counters (
    id        INTEGER PRIMARY KEY CHECK (id = 0),
    accepted  INTEGER NOT NULL,
    duplicate INTEGER NOT NULL,
    rejected  INTEGER NOT NULL,
    stored    INTEGER NOT NULL
);
INSERT INTO counters VALUES (0, 0, 0, 0, 0);
CREATE TABLE links (
    kind      TEXT NOT NULL,
    id        TEXT NOT NULL,
    target    TEXT NOT NULL,
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE INDEX links_by_target ON links (target);
CREATE TABLE tombstones (
    user_id      TEXT PRIMARY KEY,
    requested_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE installs (
    install_id TEXT PRIMARY KEY,
    max_seq    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE install_seen (
    install_id TEXT NOT NULL,
    from_seq   INTEGER NOT NULL,
    to_seq     INTEGER NOT NULL,
    PRIMARY KEY (install_id, from_seq)
) WITHOUT ROWID;
CREATE TABLE install_drops (
    install_id TEXT NOT NULL,
    from_seq   INTEGER NOT NULL,
    to_seq     INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (install_id, from_seq, to_seq, reason)
) WITHOUT ROWID;
"#,
    r#"
-- Pipeline health (see store/health.rs).
ALTER TABLE counters ADD COLUMN batches INTEGER NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN batches_ok INTEGER NOT NULL DEFAULT 0;
CREATE TABLE health_hours (
    hour       INTEGER NOT NULL,
    shard      INTEGER NOT NULL,
    batches    INTEGER NOT NULL,
    batches_ok INTEGER NOT NULL,
    accepted   INTEGER NOT NULL,
    duplicate  INTEGER NOT NULL,
    rejected   INTEGER NOT NULL,
    PRIMARY KEY (hour, shard)
) WITHOUT ROWID;
CREATE TABLE health_rejections (
    hour   INTEGER NOT NULL,
    shard  INTEGER NOT NULL,
    reason TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (hour, shard, reason)
) WITHOUT ROWID;
CREATE TABLE health_histograms (
    metric TEXT NOT NULL,
    hour   INTEGER NOT NULL,
    shard  INTEGER NOT NULL,
    le     INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (metric, hour, shard, le)
) WITHOUT ROWID;
CREATE TABLE install_health (
    install_id           TEXT PRIMARY KEY,
    at                   INTEGER NOT NULL,
    received_at          INTEGER NOT NULL,
    pending              INTEGER NOT NULL,
    pending_bytes        INTEGER NOT NULL,
    oldest_pending_age_s REAL NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    backoff_ms           INTEGER NOT NULL,
    persistence_errors   INTEGER NOT NULL,
    sync_p50_ms          REAL,
    sync_p99_ms          REAL,
    clock_offset_ms      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX install_health_by_at ON install_health (at);
-- Retention (expired events by corrected time) and export (keyset pages
-- in corrected-time order; the row id breaks ties) scan by time.
CREATE INDEX events_by_time ON events (ts_corrected);
CREATE TABLE deletions (
    row_id         INTEGER PRIMARY KEY,
    user_id        TEXT NOT NULL,
    requested_at   INTEGER NOT NULL,
    status         TEXT NOT NULL,
    deleted_events INTEGER NOT NULL
);
"#,
    // 3: product queries (see `store::query`): identities, the covering
    // index, event names and active slots, backfilled from stored events.
    r#"
CREATE TABLE idents (
    id           INTEGER PRIMARY KEY,
    user_id      TEXT NOT NULL,
    anonymous_id TEXT NOT NULL,
    install_id   TEXT NOT NULL,
    person       TEXT,
    UNIQUE (user_id, anonymous_id, install_id)
);
CREATE INDEX idents_by_anonymous_id ON idents (anonymous_id) WHERE user_id = '';
CREATE INDEX idents_by_install_id ON idents (install_id) WHERE user_id = '';
ALTER TABLE events ADD COLUMN ident INTEGER;
INSERT INTO idents (user_id, anonymous_id, install_id)
    SELECT DISTINCT COALESCE(user_id, ''),
        CASE WHEN user_id IS NULL THEN COALESCE(anonymous_id, '') ELSE '' END,
        CASE WHEN user_id IS NULL THEN COALESCE(install_id, '') ELSE '' END
    FROM events;
UPDATE idents AS k SET person = {IDENT_PERSON_SQL};
UPDATE events SET ident = (SELECT k.id FROM idents k WHERE k.user_id = COALESCE(events.user_id, '')
    AND k.anonymous_id = CASE WHEN events.user_id IS NULL THEN COALESCE(events.anonymous_id, '') ELSE '' END
    AND k.install_id = CASE WHEN events.user_id IS NULL THEN COALESCE(events.install_id, '') ELSE '' END);
CREATE INDEX events_by_name_time_ident ON events (event, ts_corrected, ident);
DROP INDEX events_by_name_time;
CREATE TABLE event_names (name TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT INTO event_names SELECT DISTINCT event FROM events WHERE event IS NOT NULL;
CREATE TABLE active_slots (
    slot  INTEGER NOT NULL,
    ident INTEGER NOT NULL,
    PRIMARY KEY (slot, ident)
) WITHOUT ROWID;
INSERT INTO active_slots SELECT DISTINCT ts_corrected / 900000, ident FROM events
    WHERE event IS NOT NULL AND substr(event, 1, 6) <> 'tally.';
"#,
    // 4: retention of dead letters finds the expired ones by receipt time.
    r#"
CREATE INDEX dead_letters_by_received ON dead_letters (received_at);
"#,
    // 5: sources. Each event records the source (write key) that sent it,
    // and dedup is exact per source: `message_id` and `dedup_key` are
    // unique within a source, not across the store. SQLite cannot drop a
    // column's UNIQUE constraint, so the table is rebuilt (row ids kept:
    // export cursors and retention read them). Rows stored before have the
    // source '' (unknown); while any is left, a new event is also checked
    // against them (see `WriterState::legacy_events`). An install belongs
    // to the first source that sends for it; '' marks one not yet claimed.
    r#"
CREATE TABLE events_v5 (
    row_id        INTEGER PRIMARY KEY,
    message_id    TEXT NOT NULL,
    dedup_key     TEXT,
    kind          TEXT NOT NULL,
    event         TEXT,
    user_id       TEXT,
    anonymous_id  TEXT,
    group_id      TEXT,
    previous_id   TEXT,
    install_id    TEXT,
    seq           INTEGER,
    session_id    TEXT,
    session_index INTEGER,
    priority      TEXT NOT NULL,
    timestamp     INTEGER,
    sent_at       INTEGER,
    received_at   INTEGER NOT NULL,
    ts_corrected  INTEGER NOT NULL,
    clamped       INTEGER NOT NULL,
    raw           TEXT NOT NULL,
    ident         INTEGER,
    source        TEXT NOT NULL,
    UNIQUE (source, message_id)
);
INSERT INTO events_v5 (row_id, message_id, dedup_key, kind, event, user_id, anonymous_id,
    group_id, previous_id, install_id, seq, session_id, session_index, priority, timestamp,
    sent_at, received_at, ts_corrected, clamped, raw, ident, source)
    SELECT row_id, message_id, dedup_key, kind, event, user_id, anonymous_id, group_id,
    previous_id, install_id, seq, session_id, session_index, priority, timestamp, sent_at,
    received_at, ts_corrected, clamped, raw, ident, '' FROM events;
DROP TABLE events;
ALTER TABLE events_v5 RENAME TO events;
CREATE UNIQUE INDEX events_by_dedup_key ON events (source, dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX events_by_name_time_ident ON events (event, ts_corrected, ident);
CREATE INDEX events_by_time ON events (ts_corrected);
ALTER TABLE dead_letters ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE installs ADD COLUMN source TEXT NOT NULL DEFAULT '';
"#,
    // 6: deletion reaches dead letters and links. A dead letter records
    // the ids of its message (read leniently: it was rejected) and its size
    // as received; the links to a deleted user move into the tombstone
    // (`tombstone_links`), and the aliases naming it go. The counters of
    // kept dead letters let ingest cap them by rows and bytes.
    r#"
ALTER TABLE dead_letters ADD COLUMN user_id TEXT;
ALTER TABLE dead_letters ADD COLUMN anonymous_id TEXT;
ALTER TABLE dead_letters ADD COLUMN install_id TEXT;
ALTER TABLE dead_letters ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE dead_letters SET size = length(CAST(raw AS BLOB)),
    user_id = CASE WHEN json_valid(raw) THEN CASE WHEN json_type(raw, '$.userId') = 'text'
        THEN nullif(json_extract(raw, '$.userId'), '') END END,
    anonymous_id = CASE WHEN json_valid(raw) THEN CASE WHEN json_type(raw, '$.anonymousId') = 'text'
        THEN nullif(json_extract(raw, '$.anonymousId'), '') END END,
    install_id = CASE WHEN json_valid(raw) THEN CASE WHEN json_type(raw, '$.context.tally.install_id') = 'text'
        THEN nullif(json_extract(raw, '$.context.tally.install_id'), '') END END;
CREATE TABLE tombstone_links (
    kind    TEXT NOT NULL,
    id      TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
INSERT INTO tombstone_links (kind, id, user_id) SELECT kind, id, target FROM links
    WHERE kind IN ('a', 'i') AND target IN (SELECT user_id FROM tombstones);
DELETE FROM links WHERE target IN (SELECT user_id FROM tombstones)
    OR (kind = 'u' AND id IN (SELECT user_id FROM tombstones));
ALTER TABLE counters ADD COLUMN dead_letter_rows INTEGER NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN dead_letter_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN dead_letters_not_kept INTEGER NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN dead_letters_truncated INTEGER NOT NULL DEFAULT 0;
UPDATE counters SET dead_letter_rows = (SELECT count(*) FROM dead_letters),
    dead_letter_bytes = (SELECT coalesce(sum(length(CAST(raw AS BLOB))), 0) FROM dead_letters);
"#,
];

/// The SQLite store. Cheap to share behind an `Arc`; every method blocks.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    readers: Readers,
    /// Held for its `Drop`, which stops the checkpoint thread.
    _checkpointer: Checkpointer,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with the default
    /// [`SqliteOptions`] and runs pending migrations.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens the database at `path` with `options`.
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let context = |e: rusqlite::Error| opening_error(path, e);
        let mut conn = Connection::open(path).map_err(context)?;
        conn.busy_timeout(options.busy_timeout).map_err(context)?;
        // The first statement reads the header: a file that is not a
        // database fails here, with the path in the message. The page
        // size applies only to a new, empty file.
        conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE}"))
            .map_err(context)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(context)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "SQLite database at {} cannot use WAL (journal mode {mode})",
                path.display()
            )));
        }
        let sync = match options.synchronous {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        // temp_store: the per-caller savepoint's statement journal stays in
        // memory instead of a temporary file.
        let secure_delete = if options.secure_delete { "ON" } else { "OFF" };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA cache_size = -{WRITER_CACHE_KIB}; \
             PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}; \
             PRAGMA secure_delete = {secure_delete};"
        ))
        .map_err(context)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut conn, path)?;
        let tombstones_exist = conn
            .query_row("SELECT EXISTS (SELECT 1 FROM tombstones)", [], |r| r.get(0))
            .map_err(context)?;
        let legacy_events = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM events WHERE source = '')",
                [],
                |r| r.get(0),
            )
            .map_err(context)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: Writer {
                state: Mutex::new(WriterState {
                    conn,
                    group: None,
                    tombstones_exist,
                    known: Known::default(),
                    dead_letter_limits: options.dead_letters,
                    legacy_events,
                }),
                queued: AtomicUsize::new(0),
                max_group_age: MAX_GROUP_AGE,
            },
            readers: Readers {
                path: path.to_path_buf(),
                busy_timeout: options.busy_timeout,
                idle: Mutex::new(Vec::new()),
            },
            _checkpointer: Checkpointer::start(path)?,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies the WAL into the database file and truncates it to zero
    /// bytes, so the page images a deletion replaced (which still hold the
    /// deleted values) leave the WAL now rather than when later commits
    /// happen to overwrite them. Ingest waits while it runs (milliseconds
    /// for a WAL of [`WAL_AUTOCHECKPOINT_PAGES`]); a reader that keeps it
    /// waiting past [`ERASE_WAL_TIMEOUT`] leaves the old frames to the next
    /// checkpoint, with a warning.
    fn erase_wal(&self) {
        let truncated = Connection::open(&self.path).and_then(|c| {
            c.busy_timeout(ERASE_WAL_TIMEOUT)?;
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
        });
        match truncated {
            Ok(0) => {}
            Ok(_) => tracing::warn!(
                "after a deletion the WAL could not be truncated (readers busy); \
                 the next checkpoint overwrites it"
            ),
            Err(e) => tracing::warn!(error = %e, "after a deletion the WAL checkpoint failed"),
        }
    }

    /// Runs `f` on a reader connection (queries of `store::query`).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.readers.with(f)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.readers.with(|c| {
            c.query_row("SELECT version FROM schema_version", [], |r| r.get(0))
                .map_err(db_error)
        })
    }
}

fn opening_error(path: &Path, e: rusqlite::Error) -> StoreError {
    match db_error(e) {
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{}: {m}", path.display())),
        other => StoreError::Backend(format!(
            "cannot open SQLite database at {}: {}",
            path.display(),
            match other {
                StoreError::Backend(m) | StoreError::Migration(m) => m,
                StoreError::Unavailable(m) => m,
            }
        )),
    }
}

/// Maps a SQLite error: lock contention is [`StoreError::Unavailable`]
/// (retry later), anything else [`StoreError::Backend`].
pub(crate) fn db_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!("SQLite busy: {e}"))
        }
        _ => StoreError::Backend(format!("SQLite: {e}")),
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| match db_error(e) {
        StoreError::Backend(m) => {
            StoreError::Migration(format!("SQLite database at {}: {m}", path.display()))
        }
        other => other,
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(fail)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(fail)?;
    let current: Option<u32> = tx
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()
        .map_err(fail)?;
    let current = current.unwrap_or(0) as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Migration(format!(
            "SQLite database at {} has schema version {current}, newer than this binary's {}",
            path.display(),
            MIGRATIONS.len()
        )));
    }
    for migration in &MIGRATIONS[current..] {
        tx.execute_batch(&identity::expand_migration(migration))
            .map_err(fail)?;
    }
    tx.execute("DELETE FROM schema_version", []).map_err(fail)?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES (?1)",
        [MIGRATIONS.len() as i64],
    )
    .map_err(fail)?;
    tx.commit().map_err(fail)
}

/// The writer connection and its open group, if any.
#[derive(Debug)]
struct Writer {
    state: Mutex<WriterState>,
    /// Callers waiting for `state`: the holder commits only when none is.
    queued: AtomicUsize,
    /// [`MAX_GROUP_AGE`]; tests that hold a group open on purpose raise it.
    max_group_age: Duration,
}

#[derive(Debug)]
struct WriterState {
    conn: Connection,
    group: Option<Group>,
    /// Whether any tombstone exists: while none does, the per-event
    /// deletion check is skipped. Only ever turns true (tombstones are
    /// never removed), set before the tombstone row is written.
    tombstones_exist: bool,
    /// Identities and active slots already in the database.
    known: Known,
    /// What is kept of rejected messages.
    dead_letter_limits: DeadLetterLimits,
    /// Whether events stored before sources were recorded (source '')
    /// may still exist: while they may, an event is a duplicate of such
    /// an event with its id or business key too, so a batch resent across
    /// the upgrade is not counted twice. Read at open; only ever turns
    /// false on a later open.
    legacy_events: bool,
}

/// Most entries [`Known`] holds before it starts over: about 20 MB.
const KNOWN_CAPACITY: usize = 200_000;

/// What the writer knows is stored, so a batch skips the identity lookup
/// and the active-slot insert it would repeat: a device sends many
/// batches per slot. Identity ids never change; an entry may be stale only
/// if its transaction did not commit, so the writer forgets everything
/// when a batch is rolled back or a commit fails, the slots when a
/// deletion removes some, and each slot a retention chunk removes.
#[derive(Debug, Default)]
struct Known {
    idents: HashMap<(String, String, String), i64>,
    slots: HashSet<(i64, i64)>,
}

impl Known {
    fn clear(&mut self) {
        self.idents.clear();
        self.slots.clear();
    }
}

/// One open transaction shared by several callers.
#[derive(Debug)]
struct Group {
    commit: Arc<CommitCell>,
    events: usize,
    started: Instant,
}

/// Where the committer leaves the group's result for the others.
#[derive(Debug, Default)]
struct CommitCell {
    result: Mutex<Option<Result<(), String>>>,
    done: Condvar,
}

impl CommitCell {
    fn set(&self, result: Result<(), String>) {
        let mut slot = self.result.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(result);
        self.done.notify_all();
    }

    fn wait(&self) -> Result<(), StoreError> {
        let mut slot = self.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match slot.as_ref() {
                Some(Ok(())) => return Ok(()),
                Some(Err(m)) => return Err(StoreError::Backend(m.clone())),
                None => slot = self.done.wait(slot).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}

impl Writer {
    fn lock(&self) -> Result<MutexGuard<'_, WriterState>, StoreError> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let guard = self.state.lock();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        guard.map_err(|_| StoreError::Backend("SQLite writer poisoned by a panic".into()))
    }

    /// Runs `work` in the current group (opening one if needed) and
    /// returns once the group committed. `size` counts toward
    /// [`MAX_GROUP_EVENTS`].
    fn run<T>(
        &self,
        size: usize,
        work: impl FnOnce(&mut WriterState) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut state = self.lock()?;
        if state.group.is_none() {
            state
                .conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(db_error)?;
            state.group = Some(Group {
                commit: Arc::new(CommitCell::default()),
                events: 0,
                started: Instant::now(),
            });
        }
        let outcome = match state
            .conn
            .execute_batch("SAVEPOINT batch")
            .map_err(db_error)
        {
            // A panic in `work` would leave the group's other callers
            // waiting for a commit that never comes and the writer
            // poisoned: it becomes this caller's error instead, its rows
            // rolled back like any failure.
            Ok(()) => {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut state)))
                    .unwrap_or_else(|_| {
                        Err(StoreError::Backend(
                            "the SQLite writer panicked on a batch".into(),
                        ))
                    }) {
                    Ok(v) => state
                        .conn
                        .execute_batch("RELEASE batch")
                        .map(|()| v)
                        .map_err(db_error),
                    Err(e) => {
                        // Undo this caller's rows only; the group goes on.
                        let _ = state.conn.execute_batch("ROLLBACK TO batch; RELEASE batch");
                        state.known.clear();
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        };
        let Some(group) = state.group.as_mut() else {
            return Err(StoreError::Backend(
                "SQLite writer lost its transaction".into(),
            ));
        };
        if outcome.is_ok() {
            group.events += size;
        }
        let cell = Arc::clone(&group.commit);
        let commit_now = self.queued.load(Ordering::SeqCst) == 0
            || group.events >= MAX_GROUP_EVENTS
            || group.started.elapsed() >= self.max_group_age;
        if commit_now {
            state.group = None;
            let committed = state.conn.execute_batch("COMMIT").map_err(db_error);
            if committed.is_err() {
                state.known.clear();
                if !state.conn.is_autocommit() {
                    let _ = state.conn.execute_batch("ROLLBACK");
                }
            }
            drop(state);
            cell.set(committed.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            committed?;
            return outcome;
        }
        drop(state);
        // A failed caller's rows were rolled back: it has nothing to wait for.
        let value = outcome?;
        cell.wait()?;
        Ok(value)
    }
}

/// Copies the WAL into the database file on its own connection and
/// thread, every [`CHECKPOINT_INTERVAL`], so the writer's commits rarely
/// pay for it. A passive checkpoint never blocks the writer; the writer's
/// own auto-checkpoint ([`WAL_AUTOCHECKPOINT_PAGES`]) stays as the
/// backstop that lets the WAL restart from its beginning, and finds most
/// pages already copied.
#[derive(Debug)]
struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the background checkpoint runs: at full ingest about 15 MB
/// of WAL accumulate in this time.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path).map_err(|e| opening_error(path, e))?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tally-sqlite-checkpoint".into())
            .spawn(move || {
                let (lock, wake) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !*stopped {
                    stopped = wake
                        .wait_timeout(stopped, CHECKPOINT_INTERVAL)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                    // A failed or busy checkpoint is retried next time;
                    // the writer's auto-checkpoint covers a lasting failure.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Read connections, reused.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(db_error)?;
                c.busy_timeout(self.busy_timeout).map_err(db_error)?;
                // Queries' DISTINCT and GROUP BY b-trees stay in memory: they
                // are bounded by a window's people and buckets, and a temp
                // file would cost I/O (and fail on a full disk).
                c.execute_batch("PRAGMA query_only = 1; PRAGMA temp_store = MEMORY")
                    .map_err(db_error)?;
                c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                c
            }
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        out
    }
}

fn kind_str(event: &NewEvent) -> &str {
    event.kind.as_str()
}

fn priority_str(p: Priority) -> &'static str {
    match p {
        Priority::Normal => "normal",
        Priority::Critical => "critical",
    }
}

/// A seq that fits the signed column, else none (see [`MAX_TRACKED_SEQ`]).
fn tracked(seq: Option<u64>) -> Option<i64> {
    seq.filter(|s| *s <= MAX_TRACKED_SEQ)
        .and_then(|s| i64::try_from(s).ok())
}

const INSERT_EVENT: &str = "INSERT INTO events (message_id, dedup_key, kind, event, user_id, \
    anonymous_id, group_id, previous_id, install_id, seq, session_id, session_index, priority, \
    timestamp, sent_at, received_at, ts_corrected, clamped, raw, ident, source) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
    ?20, ?21) ON CONFLICT DO NOTHING";

/// Whether an event stored before sources were recorded has this id or
/// business key (see `WriterState::legacy_events`).
const LEGACY_DUPLICATE: &str = "SELECT EXISTS (SELECT 1 FROM events WHERE source = '' \
    AND message_id = ?1) OR (?2 IS NOT NULL AND EXISTS (SELECT 1 FROM events \
    WHERE source = '' AND dedup_key = ?2))";

const INSERT_DEAD_LETTER: &str = "INSERT INTO dead_letters (message_id, reason, detail, \
    received_at, raw, source, user_id, anonymous_id, install_id, size) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// The earliest corrected time wins, then the smaller user id (see the
/// `identity` module).
const UPSERT_LINK: &str =
    "INSERT INTO links (kind, id, target, linked_at) VALUES (?1, ?2, ?3, ?4) \
    ON CONFLICT (kind, id) DO UPDATE SET target = excluded.target, linked_at = excluded.linked_at \
    WHERE (excluded.linked_at, excluded.target) < (links.linked_at, links.target)";

/// Counts of one batch.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    accepted: i64,
    duplicate: i64,
    rejected: i64,
}

fn tombstoned(conn: &Connection, user: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM tombstones WHERE user_id = ?1)")
        .and_then(|mut s| s.query_row([user], |r| r.get(0)))
        .map_err(db_error)
}

/// Whether the event belongs to a deleted person (`identity::refused_sql`).
fn refused(conn: &Connection, e: &NewEvent) -> Result<bool, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {}",
        identity::refused_sql("?1", "?2", "?3")
    ))
    .and_then(|mut s| {
        s.query_row(params![e.user_id, e.anonymous_id, e.install_id], |r| {
            r.get(0)
        })
    })
    .map_err(db_error)
}

/// Writes `d` as far as the budget allows (see [`DeadLetterLimits`]); the
/// budget is read from the counters on first use in a transaction.
fn write_dead_letter(
    conn: &Connection,
    budget: &mut Option<DeadLetterBudget>,
    limits: DeadLetterLimits,
    d: &DeadLetter,
) -> Result<(), StoreError> {
    let budget = match budget {
        Some(budget) => budget,
        None => budget.insert(
            conn.prepare_cached(
                "SELECT dead_letter_rows, dead_letter_bytes FROM counters WHERE id = 0",
            )
            .and_then(|mut s| {
                s.query_row([], |r| {
                    Ok(DeadLetterBudget::new(limits, r.get(0)?, r.get(1)?))
                })
            })
            .map_err(db_error)?,
        ),
    };
    let Some(raw) = budget.keep(&d.raw) else {
        return Ok(());
    };
    conn.prepare_cached(INSERT_DEAD_LETTER)
        .and_then(|mut s| {
            s.execute(params![
                d.message_id,
                d.reason.as_str(),
                d.detail,
                d.received_at,
                raw,
                d.source,
                d.user_id,
                d.anonymous_id,
                d.install_id,
                d.raw.len() as i64
            ])
        })
        .map(|_| ())
        .map_err(db_error)
}

/// Whether `e` is an alias whose `previousId` is a user id with events of
/// its own (an identity keyed by that user id exists; see
/// `identity::merged_user`).
fn alias_of_identified_user(conn: &Connection, e: &NewEvent) -> Result<bool, StoreError> {
    let Some(previous) = identity::merged_user(e) else {
        return Ok(false);
    };
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM idents WHERE user_id = ?1 AND anonymous_id = '' \
         AND install_id = '')",
    )
    .and_then(|mut s| s.query_row([previous], |r| r.get(0)))
    .map_err(db_error)
}

/// The stored owner of each install of `events` (`None`: not seen yet).
fn install_owners<'e>(
    conn: &Connection,
    events: &'e [NewEvent],
) -> Result<HashMap<&'e str, Option<String>>, StoreError> {
    let mut owners = HashMap::new();
    for install in events.iter().filter_map(|e| e.install_id.as_deref()) {
        if owners.contains_key(install) {
            continue;
        }
        let owner: Option<String> = conn
            .prepare_cached("SELECT source FROM installs WHERE install_id = ?1")
            .and_then(|mut s| s.query_row([install], |r| r.get(0)).optional())
            .map_err(db_error)?;
        owners.insert(install, owner);
    }
    Ok(owners)
}

/// Writes the links and re-resolves the persons of the identities they
/// affect (see `identity::repoint_sql`).
fn write_links(conn: &Connection, links: &[Link<'_>]) -> Result<(), StoreError> {
    for link in links {
        conn.prepare_cached(UPSERT_LINK)
            .and_then(|mut s| s.execute(params![link.kind, link.id, link.target, link.linked_at]))
            .map_err(db_error)?;
        conn.prepare_cached(&identity::repoint_sql(link.kind, "?1"))
            .and_then(|mut s| s.execute([link.id]))
            .map_err(db_error)?;
    }
    Ok(())
}

/// The id of the identity `key` (see `identity::ident_key`), created with
/// its person resolved from the current links if new.
fn ident_id(conn: &Connection, key: (&str, &str, &str)) -> Result<i64, StoreError> {
    let found: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM idents WHERE user_id = ?1 AND anonymous_id = ?2 AND install_id = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![key.0, key.1, key.2], |r| r.get(0))
                .optional()
        })
        .map_err(db_error)?;
    if let Some(id) = found {
        return Ok(id);
    }
    conn.prepare_cached(&format!(
        "INSERT INTO idents (user_id, anonymous_id, install_id, person) \
         SELECT k.user_id, k.anonymous_id, k.install_id, {} \
         FROM (SELECT ?1 AS user_id, ?2 AS anonymous_id, ?3 AS install_id) k RETURNING id",
        identity::IDENT_PERSON_SQL
    ))
    .and_then(|mut s| s.query_row(params![key.0, key.1, key.2], |r| r.get(0)))
    .map_err(db_error)
}

/// Per-install work of one batch: seen seqs and reported drops, for an
/// install of the events' own source.
#[derive(Debug, Default)]
struct InstallWork<'a> {
    source: &'a str,
    seqs: Vec<u64>,
    drops: Vec<(u64, u64, &'a str)>,
}

fn write_events(
    state: &mut WriterState,
    events: &[NewEvent],
    dead_letters: &[DeadLetter],
) -> Result<Vec<WriteOutcome>, StoreError> {
    let conn = &state.conn;
    let known = &mut state.known;
    if known.idents.len() + known.slots.len() > KNOWN_CAPACITY {
        known.clear();
    }
    let check_tombstones = state.tombstones_exist;
    let legacy_events = state.legacy_events;
    let limits = state.dead_letter_limits;
    let mut budget: Option<DeadLetterBudget> = None;
    let mut tally = Tally::default();
    let mut outcomes = Vec::with_capacity(events.len());
    let mut installs: HashMap<&str, InstallWork<'_>> = HashMap::new();
    let mut idents: HashMap<(&str, &str, &str), i64> = HashMap::new();
    let mut activity = query::Activity::default();
    let owners = install_owners(conn, events)?;
    let mut insert = conn.prepare_cached(INSERT_EVENT).map_err(db_error)?;
    for e in events {
        // An install's completeness is its own source's: another source's
        // events for it are stored, but neither mark its seqs seen nor
        // report its drops.
        let own_install = e
            .install_id
            .as_deref()
            .filter(|i| super::owns(owners.get(i).and_then(Option::as_deref), &e.source));
        if let Some(install) = own_install {
            let work = installs.entry(install).or_default();
            work.source = &e.source;
            if let Some(seq) = tracked(e.seq) {
                work.seqs.push(seq as u64);
            }
        }
        let refusal = if check_tombstones && refused(conn, e)? {
            Some(RejectReason::DeletedUser)
        } else if e.install_id.is_some() && own_install.is_none() && e.is_drop_report() {
            Some(RejectReason::InvalidDropReport)
        } else if alias_of_identified_user(conn, e)? {
            Some(RejectReason::AliasOfIdentifiedUser)
        } else {
            None
        };
        if let Some(reason) = refusal {
            write_dead_letter(conn, &mut budget, limits, &DeadLetter::refused(e, reason))?;
            tally.rejected += 1;
            outcomes.push(WriteOutcome::Rejected(reason));
            continue;
        }
        let legacy_duplicate = legacy_events
            && conn
                .prepare_cached(LEGACY_DUPLICATE)
                .and_then(|mut s| s.query_row(params![e.message_id, e.dedup_key], |r| r.get(0)))
                .map_err(db_error)?;
        if legacy_duplicate {
            tally.duplicate += 1;
            outcomes.push(WriteOutcome::Duplicate);
            continue;
        }
        let key = identity::ident_key(e);
        let ident = match idents.get(&key) {
            Some(id) => *id,
            None => {
                let owned = (key.0.to_owned(), key.1.to_owned(), key.2.to_owned());
                let id = match known.idents.get(&owned) {
                    Some(id) => *id,
                    None => {
                        let id = ident_id(conn, key)?;
                        known.idents.insert(owned, id);
                        id
                    }
                };
                idents.insert(key, id);
                id
            }
        };
        let inserted = insert
            .execute(params![
                e.message_id,
                e.dedup_key,
                kind_str(e),
                e.event,
                e.user_id,
                e.anonymous_id,
                e.group_id,
                e.previous_id,
                e.install_id,
                tracked(e.seq),
                e.session_id,
                e.session_index.and_then(|i| i64::try_from(i).ok()),
                priority_str(e.priority),
                e.timestamp,
                e.sent_at,
                e.received_at,
                e.ts_corrected,
                e.clamped,
                e.raw,
                ident,
                e.source,
            ])
            .map_err(db_error)?;
        if inserted == 0 {
            tally.duplicate += 1;
            outcomes.push(WriteOutcome::Duplicate);
            continue;
        }
        tally.accepted += 1;
        outcomes.push(WriteOutcome::Accepted);
        activity.add(e, ident);
        write_links(conn, &identity::links_of(e))?;
        if let Some(install) = own_install {
            let work = installs.entry(install).or_default();
            for d in &e.drops {
                if d.from >= 1 && d.from <= d.to && d.to <= MAX_TRACKED_SEQ {
                    work.drops.push((d.from, d.to, d.reason.as_str()));
                }
            }
        }
    }
    drop(insert);
    for d in dead_letters {
        write_dead_letter(conn, &mut budget, limits, d)?;
        tally.rejected += 1;
    }
    for (install, work) in installs.iter_mut() {
        write_install(conn, install, work)?;
    }
    for name in &activity.names {
        conn.prepare_cached("INSERT INTO event_names (name) VALUES (?1) ON CONFLICT DO NOTHING")
            .and_then(|mut s| s.execute([name]))
            .map_err(db_error)?;
    }
    for (slot, ident) in &activity.slots {
        if !known.slots.insert((*slot, *ident)) {
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO active_slots (slot, ident) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| s.execute([slot, ident]))
        .map_err(db_error)?;
    }
    conn.prepare_cached(
        "UPDATE counters SET accepted = accepted + ?1, duplicate = duplicate + ?2, \
         rejected = rejected + ?3, stored = stored + ?1 WHERE id = 0",
    )
    .and_then(|mut s| s.execute(params![tally.accepted, tally.duplicate, tally.rejected]))
    .map_err(db_error)?;
    if let Some(b) = budget {
        conn.prepare_cached(
            "UPDATE counters SET dead_letter_rows = dead_letter_rows + ?1, \
             dead_letter_bytes = dead_letter_bytes + ?2, \
             dead_letters_not_kept = dead_letters_not_kept + ?3, \
             dead_letters_truncated = dead_letters_truncated + ?4 WHERE id = 0",
        )
        .and_then(|mut s| s.execute(params![b.kept_rows, b.kept_bytes, b.not_kept, b.truncated]))
        .map_err(db_error)?;
    }
    let own = |e: &NewEvent| {
        e.install_id
            .as_deref()
            .is_some_and(|i| super::owns(owners.get(i).and_then(Option::as_deref), &e.source))
    };
    write_health(conn, &BatchHealth::of(events, &outcomes, dead_letters, own))?;
    Ok(outcomes)
}

/// Merges one batch's seqs and drops of one install into its stored ranges,
/// claiming the install for the batch's source if no source had it.
fn write_install(
    conn: &Connection,
    install: &str,
    work: &mut InstallWork<'_>,
) -> Result<(), StoreError> {
    let new = ranges::ranges_from_seqs(&mut work.seqs);
    let mut max_seq = new.last().map_or(0, |r| r.1);
    for &(from, to, reason) in &work.drops {
        max_seq = max_seq.max(to);
        conn.prepare_cached(
            "INSERT INTO install_drops (install_id, from_seq, to_seq, reason) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![install, from as i64, to as i64, reason]))
        .map_err(db_error)?;
    }
    conn.prepare_cached(
        "INSERT INTO installs (install_id, max_seq, source) VALUES (?1, ?2, ?3) \
         ON CONFLICT (install_id) DO UPDATE SET max_seq = max(max_seq, excluded.max_seq), \
         source = excluded.source",
    )
    .and_then(|mut s| s.execute(params![install, max_seq as i64, work.source]))
    .map_err(db_error)?;
    let (Some(first), Some(last)) = (new.first(), new.last()) else {
        return Ok(());
    };
    // Stored ranges touching the span of the new ones: they merge.
    let lo = first.0.saturating_sub(1) as i64;
    let hi = last.1.saturating_add(1).min(MAX_TRACKED_SEQ) as i64;
    let old: Vec<SeqRange> = conn
        .prepare_cached(
            "SELECT from_seq, to_seq FROM install_seen WHERE install_id = ?1 \
             AND from_seq <= ?3 AND to_seq >= ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![install, lo, hi], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })?
            .collect()
        })
        .map_err(db_error)?;
    let merged = ranges::merge(&old, &new);
    if merged == old {
        return Ok(());
    }
    for (from, _) in &old {
        conn.prepare_cached("DELETE FROM install_seen WHERE install_id = ?1 AND from_seq = ?2")
            .and_then(|mut s| s.execute(params![install, *from as i64]))
            .map_err(db_error)?;
    }
    for (from, to) in merged {
        conn.prepare_cached(
            "INSERT INTO install_seen (install_id, from_seq, to_seq) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| s.execute(params![install, from as i64, to as i64]))
        .map_err(db_error)?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn write_batch(
        &self,
        events: &[NewEvent],
        dead_letters: &[DeadLetter],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        self.writer.run(events.len() + dead_letters.len(), |state| {
            write_events(state, events, dead_letters)
        })
    }

    fn stats(&self) -> Result<Stats, StoreError> {
        self.readers.with(|c| {
            c.query_row(
                "SELECT accepted, duplicate, rejected, stored FROM counters WHERE id = 0",
                [],
                |r| {
                    Ok(Stats {
                        accepted: r.get::<_, i64>(0)? as u64,
                        duplicate: r.get::<_, i64>(1)? as u64,
                        rejected: r.get::<_, i64>(2)? as u64,
                        events: r.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .map_err(db_error)
        })
    }

    fn count_events(
        &self,
        event: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<EventCount, StoreError> {
        let sql = identity::count_sql("?2", "?3", "?1");
        self.readers.with(|c| {
            c.prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_row(
                        params![event, from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX)],
                        |r| {
                            Ok(EventCount {
                                count: r.get::<_, i64>(0)? as u64,
                                users: r.get::<_, i64>(1)? as u64,
                            })
                        },
                    )
                })
                .map_err(db_error)
        })
    }

    fn install(&self, install_id: &str) -> Result<Option<InstallReport>, StoreError> {
        self.readers.with(|c| {
            // One read transaction: the three reads see the same commit.
            c.execute_batch("BEGIN").map_err(db_error)?;
            let report = read_install(c, install_id);
            let _ = c.execute_batch("COMMIT");
            report
        })
    }

    fn delete_user(&self, user_id: &str, requested_at: i64) -> Result<DeletionReport, StoreError> {
        let sql = identity::DeletionSql::new("?1", "length(CAST(raw AS BLOB))");
        let report = self.writer.run(0, |state| {
            // Set first: from now on this connection checks every event,
            // and it sees the tombstone below within the same transaction.
            state.tombstones_exist = true;
            // Identities and slots of the person are deleted below.
            state.known.clear();
            let conn = &state.conn;
            let run = |sql: &str| {
                conn.prepare_cached(sql)
                    .and_then(|mut s| s.execute([user_id]))
                    .map_err(db_error)
            };
            conn.prepare_cached(
                "INSERT INTO tombstones (user_id, requested_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![user_id, requested_at]))
            .map_err(db_error)?;
            let aliased: Vec<String> = conn
                .prepare_cached(&sql.aliased)
                .and_then(|mut s| s.query_map([user_id], |r| r.get(0))?.collect())
                .map_err(db_error)?;
            let deleted = run(&sql.events)? as i64;
            let letters: Vec<i64> = conn
                .prepare_cached(&sql.dead_letters)
                .and_then(|mut s| s.query_map([user_id], |r| r.get(0))?.collect())
                .map_err(db_error)?;
            run(&sql.activity)?;
            run(&sql.idents)?;
            for statement in &sql.unlink {
                run(statement)?;
            }
            for alias in &aliased {
                conn.prepare_cached(&identity::repoint_sql("u", "?1"))
                    .and_then(|mut s| s.execute([alias]))
                    .map_err(db_error)?;
            }
            conn.prepare_cached(
                "UPDATE counters SET stored = stored - ?1, dead_letter_rows = dead_letter_rows - ?2, \
                 dead_letter_bytes = dead_letter_bytes - ?3 WHERE id = 0",
            )
            .and_then(|mut s| {
                s.execute(params![
                    deleted,
                    letters.len() as i64,
                    letters.iter().sum::<i64>()
                ])
            })
            .map_err(db_error)?;
            conn.prepare_cached(
                "INSERT INTO deletions (user_id, requested_at, status, deleted_events) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    user_id,
                    requested_at,
                    DeletionStatus::Done.as_str(),
                    deleted
                ])
            })
            .map_err(db_error)?;
            Ok(DeletionReport {
                deleted_events: deleted as u64,
                deleted_dead_letters: letters.len() as u64,
                aliased_user_ids: aliased,
            })
        })?;
        self.erase_wal();
        Ok(report)
    }

    fn is_deleted(&self, user_id: &str) -> Result<bool, StoreError> {
        self.readers.with(|c| tombstoned(c, user_id))
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.readers
            .with(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_error))
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.readers.with(|c| {
            c.prepare_cached(
                "SELECT message_id, reason, detail, received_at, raw FROM dead_letters \
                 ORDER BY row_id DESC LIMIT ?1",
            )
            .and_then(|mut s| {
                s.query_map([limit], |r| {
                    Ok(StoredDeadLetter {
                        message_id: r.get(0)?,
                        reason: r.get(1)?,
                        detail: r.get(2)?,
                        received_at: r.get(3)?,
                        raw: r.get(4)?,
                    })
                })?
                .collect()
            })
            .map_err(db_error)
        })
    }

    fn add_batches(&self, at: i64, batches: u64, succeeded: u64) -> Result<(), StoreError> {
        if batches == 0 {
            return Ok(());
        }
        let (batches, succeeded) = (batches as i64, succeeded as i64);
        self.writer.run(0, |state| {
            let conn = &state.conn;
            conn.prepare_cached(
                "UPDATE counters SET batches = batches + ?1, batches_ok = batches_ok + ?2 WHERE id = 0",
            )
            .and_then(|mut s| s.execute(params![batches, succeeded]))
            .map_err(db_error)?;
            add_health_hour(conn, health::hour_of(at), batches, succeeded, [0, 0, 0])
        })
    }

    fn pipeline_health(&self, from: i64, to: i64, now: i64) -> Result<PipelineFigures, StoreError> {
        self.readers.with(|c| {
            // One read transaction: every figure sees the same commit.
            c.execute_batch("BEGIN").map_err(db_error)?;
            let figures = read_pipeline_health(c, from, to, now);
            let _ = c.execute_batch("COMMIT");
            figures
        })
    }

    fn prune_health(&self, before: i64) -> Result<u64, StoreError> {
        self.writer.run(0, |state| {
            let mut deleted = 0;
            for sql in health::PRUNE_SQL {
                deleted += state
                    .conn
                    .prepare_cached(&health::sqlite_sql(sql))
                    .and_then(|mut s| s.execute([before]))
                    .map_err(db_error)? as u64;
            }
            Ok(deleted)
        })
    }

    fn expire_events(
        &self,
        scope: ExpiryScope<'_>,
        before: i64,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The row ids first (an index range: by name and time, or by time),
        // then those rows; the writer holds them for one chunk only.
        let (sql, left, names) = match scope {
            ExpiryScope::Event(name) => (EXPIRE_EVENT, EXPIRED_EVENT_LEFT, name.to_owned()),
            ExpiryScope::AllExcept(names) => (
                EXPIRE_ALL_EXCEPT,
                EXPIRED_ALL_EXCEPT_LEFT,
                serde_json::to_string(names).map_err(|e| StoreError::Backend(e.to_string()))?,
            ),
        };
        self.writer.run(0, |state| {
            let conn = &state.conn;
            let mut expired = query::Expired::default();
            let deleted = conn
                .prepare_cached(sql)
                .and_then(|mut s| {
                    let mut rows = s.query(params![names, before, limit])?;
                    let mut deleted = 0_u64;
                    while let Some(row) = rows.next()? {
                        expired.add(row.get(0)?, row.get(1)?, row.get(2)?);
                        deleted += 1;
                    }
                    Ok(deleted)
                })
                .map_err(db_error)?;
            if deleted > 0 {
                conn.prepare_cached("UPDATE counters SET stored = stored - ?1 WHERE id = 0")
                    .and_then(|mut s| s.execute([deleted as i64]))
                    .map_err(db_error)?;
            }
            // Only a full chunk can have stopped inside a slot.
            let more_in_last = match expired.rest_of_last_slot(before) {
                Some((from, to)) if deleted == limit as u64 => conn
                    .prepare_cached(left)
                    .and_then(|mut s| s.exists(params![names, from, to]))
                    .map_err(db_error)?,
                _ => false,
            };
            for pair in drop_emptied_rollups(conn, &expired, more_in_last)? {
                state.known.slots.remove(&pair);
            }
            Ok(deleted)
        })
    }

    fn expire_dead_letters(&self, before: i64, limit: usize) -> Result<u64, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.writer.run(0, |state| {
            let conn = &state.conn;
            let bytes: Vec<i64> = conn
                .prepare_cached(
                    "DELETE FROM dead_letters WHERE row_id IN (SELECT row_id FROM dead_letters \
                     WHERE received_at < ?1 LIMIT ?2) RETURNING length(CAST(raw AS BLOB))",
                )
                .and_then(|mut s| s.query_map(params![before, limit], |r| r.get(0))?.collect())
                .map_err(db_error)?;
            if !bytes.is_empty() {
                conn.prepare_cached(
                    "UPDATE counters SET dead_letter_rows = dead_letter_rows - ?1, \
                     dead_letter_bytes = dead_letter_bytes - ?2 WHERE id = 0",
                )
                .and_then(|mut s| s.execute(params![bytes.len() as i64, bytes.iter().sum::<i64>()]))
                .map_err(db_error)?;
            }
            Ok(bytes.len() as u64)
        })
    }

    fn dead_letter_totals(&self) -> Result<DeadLetterTotals, StoreError> {
        self.readers.with(|c| {
            c.query_row(
                "SELECT dead_letter_rows, dead_letter_bytes, dead_letters_not_kept, \
                 dead_letters_truncated FROM counters WHERE id = 0",
                [],
                |r| {
                    let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                    Ok(DeadLetterTotals {
                        kept: n(0)?,
                        bytes: n(1)?,
                        not_kept: n(2)?,
                        truncated: n(3)?,
                    })
                },
            )
            .map_err(db_error)
        })
    }

    fn deletions(&self, limit: usize) -> Result<Vec<DeletionRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String, i64, String, i64)> = self.readers.with(|c| {
            c.prepare_cached(
                "SELECT user_id, requested_at, status, deleted_events FROM deletions \
                 ORDER BY row_id DESC LIMIT ?1",
            )
            .and_then(|mut s| {
                s.query_map([limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect()
            })
            .map_err(db_error)
        })?;
        rows.into_iter()
            .map(|(user_id, requested_at, status, deleted)| {
                Ok(DeletionRecord {
                    user_id,
                    requested_at,
                    status: DeletionStatus::from_stored(&status)?,
                    deleted_events: deleted.max(0) as u64,
                })
            })
            .collect()
    }

    fn export_page(
        &self,
        from: i64,
        to: i64,
        after: Option<&ExportCursor>,
        limit: usize,
    ) -> Result<Vec<ExportedEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Row ids start at 1: (from, 0) is before every event of the window.
        let (ts, row) = match after {
            None => (from, 0),
            Some(ExportCursor {
                ts_corrected,
                tie: CursorTie::Row(row),
            }) => (*ts_corrected, *row),
            Some(_) => {
                return Err(StoreError::Backend(
                    "an export cursor of another store kind".into(),
                ))
            }
        };
        self.readers.with(|c| {
            c.prepare_cached(
                "SELECT row_id, ts_corrected, received_at, raw FROM events \
                 WHERE (ts_corrected, row_id) > (?1, ?2) AND ts_corrected < ?3 \
                 ORDER BY ts_corrected, row_id LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(params![ts, row, to, limit], |r| {
                    let ts_corrected = r.get(1)?;
                    Ok(ExportedEvent {
                        ts_corrected,
                        received_at: r.get(2)?,
                        raw: r.get(3)?,
                        cursor: ExportCursor {
                            ts_corrected,
                            tie: CursorTie::Row(r.get(0)?),
                        },
                    })
                })?
                .collect()
            })
            .map_err(db_error)
        })
    }

    fn count_stored(&self, from: i64, to: i64) -> Result<u64, StoreError> {
        self.readers.with(|c| {
            c.prepare_cached(
                "SELECT count(*) FROM events WHERE ts_corrected >= ?1 AND ts_corrected < ?2",
            )
            .and_then(|mut s| s.query_row([from, to], |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
            .map_err(db_error)
        })
    }

    fn install_events(
        &self,
        install_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<InstallEvent>, StoreError> {
        let sql = identity::install_events_sql("?1", "?2", "?3");
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.readers.with(|c| {
            c.prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_map(params![install_id, after, limit], |r| {
                        Ok(InstallEvent {
                            seq: r.get::<_, i64>(0)? as u64,
                            kind: r.get(1)?,
                            event: r.get(2)?,
                            person: r.get(3)?,
                        })
                    })?
                    .collect()
                })
                .map_err(db_error)
        })
    }
}

/// Adds to the `health_hours` row of (`hour`, shard 0).
fn add_health_hour(
    conn: &Connection,
    hour: i64,
    batches: i64,
    succeeded: i64,
    [accepted, duplicate, rejected]: [i64; 3],
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO health_hours (hour, shard, batches, batches_ok, accepted, duplicate, rejected) \
         VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (hour, shard) DO UPDATE SET \
         batches = batches + excluded.batches, batches_ok = batches_ok + excluded.batches_ok, \
         accepted = accepted + excluded.accepted, duplicate = duplicate + excluded.duplicate, \
         rejected = rejected + excluded.rejected",
    )
    .and_then(|mut s| {
        s.execute(params![hour, batches, succeeded, accepted, duplicate, rejected])
    })
    .map(|_| ())
    .map_err(db_error)
}

/// One request's health figures, in its transaction (see [`super::health`]).
fn write_health(conn: &Connection, h: &BatchHealth) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE counters SET batches = batches + 1, batches_ok = batches_ok + 1 WHERE id = 0",
    )
    .and_then(|mut s| s.execute([]))
    .map_err(db_error)?;
    add_health_hour(conn, h.hour, 1, 1, [h.accepted, h.duplicate, h.rejected])?;
    for (reason, n) in &h.rejections {
        conn.prepare_cached(
            "INSERT INTO health_rejections (hour, shard, reason, n) VALUES (?1, 0, ?2, ?3) \
             ON CONFLICT (hour, shard, reason) DO UPDATE SET n = n + excluded.n",
        )
        .and_then(|mut s| s.execute(params![h.hour, reason, n]))
        .map_err(db_error)?;
    }
    for ((metric, le), n) in &h.histograms {
        conn.prepare_cached(
            "INSERT INTO health_histograms (metric, hour, shard, le, n) VALUES (?1, ?2, 0, ?3, ?4) \
             ON CONFLICT (metric, hour, shard, le) DO UPDATE SET n = n + excluded.n",
        )
        .and_then(|mut s| s.execute(params![metric, h.hour, le, n]))
        .map_err(db_error)?;
    }
    for b in h.beacons.values() {
        conn.prepare_cached(
            "INSERT INTO install_health (install_id, at, received_at, pending, pending_bytes, \
             oldest_pending_age_s, consecutive_failures, backoff_ms, persistence_errors, \
             sync_p50_ms, sync_p99_ms, clock_offset_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
             ON CONFLICT (install_id) DO UPDATE SET at = excluded.at, \
             received_at = excluded.received_at, pending = excluded.pending, \
             pending_bytes = excluded.pending_bytes, \
             oldest_pending_age_s = excluded.oldest_pending_age_s, \
             consecutive_failures = excluded.consecutive_failures, \
             backoff_ms = excluded.backoff_ms, persistence_errors = excluded.persistence_errors, \
             sync_p50_ms = excluded.sync_p50_ms, sync_p99_ms = excluded.sync_p99_ms, \
             clock_offset_ms = excluded.clock_offset_ms WHERE excluded.at >= install_health.at",
        )
        .and_then(|mut s| {
            s.execute(params![
                b.install_id,
                b.at,
                b.received_at,
                b.pending,
                b.pending_bytes,
                b.oldest_pending_age_s,
                b.consecutive_failures,
                b.backoff_ms,
                b.persistence_errors,
                b.sync_latency_p50_ms,
                b.sync_latency_p99_ms,
                b.clock_offset_ms,
            ])
        })
        .map_err(db_error)?;
    }
    Ok(())
}

fn read_pipeline_health(
    c: &Connection,
    from: i64,
    to: i64,
    now: i64,
) -> Result<PipelineFigures, StoreError> {
    let u = |v: i64| v.max(0) as u64;
    let mut figures = PipelineFigures::default();
    let (start, end) = health::window_hours(from, to);
    figures.window.from = start;
    figures.window.to = end;
    let five = |r: &rusqlite::Row<'_>| -> rusqlite::Result<[i64; 5]> {
        Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
    };
    let t = c
        .prepare_cached(&health::sqlite_sql(health::TOTALS_SQL))
        .and_then(|mut s| s.query_row([], five))
        .map_err(db_error)?;
    figures.totals = health::HealthTotals {
        batches: u(t[0]),
        batches_ok: u(t[1]),
        accepted: u(t[2]),
        duplicate: u(t[3]),
        rejected: u(t[4]),
    };
    let w = c
        .prepare_cached(&health::sqlite_sql(health::WINDOW_SQL))
        .and_then(|mut s| s.query_row(params![start, end], five))
        .map_err(db_error)?;
    let window = &mut figures.window;
    [
        window.batches,
        window.batches_ok,
        window.accepted,
        window.duplicate,
        window.rejected,
    ] = w.map(u);
    let reasons: Vec<(String, i64)> = c
        .prepare_cached(&health::sqlite_sql(health::REJECTIONS_SQL))
        .and_then(|mut s| {
            s.query_map(params![start, end], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(db_error)?;
    window.rejections = reasons.into_iter().map(|(k, n)| (k, u(n))).collect();
    let rows: Vec<(String, i64, i64)> = c
        .prepare_cached(&health::sqlite_sql(health::HISTOGRAMS_SQL))
        .and_then(|mut s| {
            s.query_map(params![start, end], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect()
        })
        .map_err(db_error)?;
    for (metric, le, n) in rows {
        health::add_histogram_row(window, &metric, le, n);
    }
    let k = c
        .prepare_cached(health::COMPLETENESS_SQL)
        .and_then(|mut s| s.query_row([], |r| Ok([r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?])))
        .map_err(db_error)?;
    figures.completeness = health::Completeness {
        installs: u(k[0]),
        installs_with_gaps: u(k[1]),
        missing: u(k[2]),
    };
    figures.fleet = c
        .prepare_cached(&health::sqlite_sql(health::FLEET_SQL))
        .and_then(|mut s| {
            s.query_row(
                params![
                    now.saturating_sub(health::FLEET_MAX_AGE_MS),
                    health::STALE_QUEUE_AGE_S
                ],
                |r| {
                    Ok(health::Fleet {
                        installs_reporting: u(r.get(0)?),
                        pending_events: u(r.get(1)?),
                        oldest_pending_age_s: r.get(2)?,
                        installs_with_persistence_errors: u(r.get(3)?),
                        installs_in_backoff: u(r.get(4)?),
                        installs_oldest_pending_over_24h: u(r.get(5)?),
                    })
                },
            )
        })
        .map_err(db_error)?;
    Ok(figures)
}

/// One chunk of one event name's expired events (`?1` the name, `?2` the
/// cutoff, `?3` the chunk size), oldest first, by the name-and-time
/// index. Returns the time, identity and name of each (see
/// `drop_emptied_rollups`).
const EXPIRE_EVENT: &str = "DELETE FROM events WHERE row_id IN (SELECT row_id FROM events \
    WHERE event = ?1 AND ts_corrected < ?2 ORDER BY ts_corrected LIMIT ?3) \
    RETURNING ts_corrected, ident, event";

/// One chunk of expired events of every name but those in the JSON array
/// `?1`, oldest first, by the time index.
const EXPIRE_ALL_EXCEPT: &str = "DELETE FROM events WHERE row_id IN (SELECT row_id FROM events \
    WHERE ts_corrected < ?2 AND (event IS NULL OR event NOT IN (SELECT value FROM json_each(?1))) \
    ORDER BY ts_corrected LIMIT ?3) RETURNING ts_corrected, ident, event";

/// Whether an event named `?1` is left in `[?2, ?3)` (the rest of a
/// chunk's last slot, before the cutoff).
const EXPIRED_EVENT_LEFT: &str =
    "SELECT 1 FROM events WHERE event = ?1 AND ts_corrected >= ?2 AND ts_corrected < ?3 LIMIT 1";

/// The same for every name but those in the JSON array `?1`.
const EXPIRED_ALL_EXCEPT_LEFT: &str = "SELECT 1 FROM events \
    WHERE ts_corrected >= ?2 AND ts_corrected < ?3 \
    AND (event IS NULL OR event NOT IN (SELECT value FROM json_each(?1))) LIMIT 1";

/// After a retention chunk, in its transaction: settles the `active_slots`
/// rows of the slots the chunk finished with ([`query::Expired::finished_slots`]):
/// a slot's rows whose identity has no product event left in it are
/// deleted, whichever chunk deleted their events. Deletes the
/// `event_names` rows of names with no event left (one probe of the name
/// index each). Returns the slot rows deleted. The writer is the only one
/// writing, so what it reads here cannot change before it commits.
fn drop_emptied_rollups(
    conn: &Connection,
    expired: &query::Expired,
    more_in_last: bool,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut emptied = Vec::new();
    for slot in expired.finished_slots(more_in_last) {
        let (from, to) = query::slot_span(slot);
        let survivors: HashSet<i64> = conn
            .prepare_cached(query::SLOT_SURVIVORS_SQL)
            .and_then(|mut s| s.query_map([from, to], |r| r.get(0))?.collect())
            .map_err(db_error)?;
        let held: Vec<i64> = conn
            .prepare_cached("SELECT ident FROM active_slots WHERE slot = ?1")
            .and_then(|mut s| s.query_map([slot], |r| r.get(0))?.collect())
            .map_err(db_error)?;
        emptied.extend(
            held.into_iter()
                .filter(|ident| !survivors.contains(ident))
                .map(|ident| (slot, ident)),
        );
    }
    for (slot, ident) in &emptied {
        conn.prepare_cached("DELETE FROM active_slots WHERE slot = ?1 AND ident = ?2")
            .and_then(|mut s| s.execute([slot, ident]))
            .map_err(db_error)?;
    }
    for name in &expired.names {
        conn.prepare_cached(
            "DELETE FROM event_names WHERE name = ?1 \
             AND NOT EXISTS (SELECT 1 FROM events WHERE event = ?1)",
        )
        .and_then(|mut s| s.execute([name]))
        .map_err(db_error)?;
    }
    Ok(emptied)
}

fn read_install(c: &Connection, install_id: &str) -> Result<Option<InstallReport>, StoreError> {
    let max_seq: Option<i64> = c
        .prepare_cached("SELECT max_seq FROM installs WHERE install_id = ?1")
        .and_then(|mut s| s.query_row([install_id], |r| r.get(0)).optional())
        .map_err(db_error)?;
    let Some(max_seq) = max_seq else {
        return Ok(None);
    };
    let seen: Vec<SeqRange> = c
        .prepare_cached(
            "SELECT from_seq, to_seq FROM install_seen WHERE install_id = ?1 ORDER BY from_seq",
        )
        .and_then(|mut s| {
            s.query_map([install_id], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })?
            .collect()
        })
        .map_err(db_error)?;
    let drops: Vec<(u64, u64, String)> = c
        .prepare_cached("SELECT from_seq, to_seq, reason FROM install_drops WHERE install_id = ?1")
        .and_then(|mut s| {
            s.query_map([install_id], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get(2)?,
                ))
            })?
            .collect()
        })
        .map_err(db_error)?;
    Ok(Some(ranges::report(max_seq as u64, &seen, drops)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

    use super::*;
    use std::sync::atomic::AtomicBool;

    fn bump(state: &mut WriterState) -> Result<(), StoreError> {
        state
            .conn
            .execute(
                "UPDATE counters SET accepted = accepted + 1 WHERE id = 0",
                [],
            )
            .map(|_| ())
            .map_err(db_error)
    }

    #[test]
    fn a_caller_queued_behind_the_group_joins_it_and_both_return_after_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        // The first caller holds the group longer than the age bound.
        store.writer.max_group_age = Duration::from_secs(60);
        let store = store;
        // Returned: the first caller's row is committed, and so is the
        // second caller's, committed in the same transaction.
        assert_eq!(overlapping_callers(&store, Duration::from_millis(150)), 2);
        assert_eq!(store.stats().unwrap().accepted, 2);
    }

    /// Two writers whose work overlaps: the second joins while the first
    /// is still inside its group, each holding it for `hold`. Returns the
    /// accepted count the first caller sees right after its call returned.
    fn overlapping_callers(store: &SqliteStore, hold: Duration) -> u64 {
        let in_work = AtomicBool::new(false);
        std::thread::scope(|s| {
            let first = s.spawn(|| {
                store
                    .writer
                    .run(1, |state| {
                        bump(state)?;
                        in_work.store(true, Ordering::SeqCst);
                        std::thread::sleep(hold);
                        Ok(())
                    })
                    .unwrap();
                store.stats().unwrap().accepted
            });
            while !in_work.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let second = s.spawn(|| {
                store
                    .writer
                    .run(1, |state| {
                        bump(state)?;
                        std::thread::sleep(hold);
                        Ok(())
                    })
                    .unwrap();
            });
            let seen = first.join().unwrap();
            second.join().unwrap();
            seen
        })
    }

    #[test]
    fn a_group_past_its_age_bound_commits_without_waiting_for_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        // Committed alone: the second caller's row is not in it.
        assert_eq!(overlapping_callers(&store, MAX_GROUP_AGE * 30), 1);
        assert_eq!(store.stats().unwrap().accepted, 2);
    }

    #[test]
    fn a_panicking_batch_is_an_error_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let failed: Result<(), StoreError> = store.writer.run(1, |state| {
            bump(state)?;
            panic!("a bug in the write path")
        });
        match failed {
            Err(StoreError::Backend(m)) => assert!(m.contains("panicked"), "{m}"),
            other => panic!("expected a backend error, got {other:?}"),
        }
        // Its row was rolled back; the next write commits normally.
        assert_eq!(store.stats().unwrap().accepted, 0);
        store.writer.run(1, bump).unwrap();
        assert_eq!(store.stats().unwrap().accepted, 1);
    }
}
