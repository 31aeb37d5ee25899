//! The embedded store: one SQLite file in WAL mode.
//!
//! # Writes: one connection, group commit
//!
//! SQLite allows one writer at a time, so the store keeps one writer
//! connection behind a mutex and merges concurrent [`IngestStore::write_batch`](crate::store::IngestStore::write_batch)
//! calls into one transaction (group commit): the first caller opens the
//! transaction and runs its batch directly in it, each caller that joins
//! runs its own batch inside a `SAVEPOINT` (a failure rolls back that batch
//! alone; the opener's failure rolls back the transaction, which holds no
//! other batch yet), and the caller that finds nobody
//! queued behind it commits for the whole group. Every caller returns only
//! after the commit that holds its rows, so `accepted` is never answered
//! for uncommitted data. A group is also committed once it holds
//! [`MAX_GROUP_EVENTS`] events or is [`MAX_GROUP_AGE`] old, bounding
//! latency under sustained load.
//!
//! Reads (totals, counts, queries, completeness, dead letters, export) use
//! a small pool of separate connections: in WAL mode readers see the last
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
//! Numbered migrations (`migrations/NNNN_*.sql`, [`MIGRATIONS`]) run at
//! open inside one `BEGIN IMMEDIATE` transaction; `schema_version` holds
//! the number applied. A database newer than this binary is refused
//! ([`StoreError::Migration`]).
//!
//! | table | holds |
//! |---|---|
//! | `events` | accepted messages; `(source, message_id)` unique, `(source, dedup_key)` unique when present |
//! | `dead_letters` | rejected messages with reason, detail and raw JSON; expired by receipt time |
//! | `counters` | one row: accepted, duplicate, rejected, stored, requests, dead letters kept and not |
//! | `links` | identity links (see the [store module](super)) |
//! | `idents` | identities and their current person (see [`super::query`]) |
//! | `event_names`, `active_slots` | rollups of the product queries (see [`super::query`]) |
//! | `tombstones`, `tombstone_links` | deleted users, and the device links they had |
//! | `installs`, `install_seen`, `install_drops` | completeness: max seq, seen seq ranges (merged), dropped ranges with reasons |
//! | `health_hours`, `health_rejections`, `health_histograms`, `install_health` | pipeline health (see [`super::health`]) |
//! | `deletions` | every deletion request: user, time, status, events removed |
//! | `audit_log` | every read and admin action, and windows of refused authentications (see [`crate::audit`]) |
//! | `api_keys`, `api_key_secrets`, `key_versions` | keys managed live, their secrets' digests, the version collectors poll (see [`super::keys`]) |
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
//!
//! # Concerns
//!
//! | file | holds |
//! |---|---|
//! | `schema` | the migrations, applied at open by the shared runner (`store/migrations.rs`) |
//! | `writer` | the group-commit writer, the background checkpointer, the reader pool |
//! | `write` | one batch's write: refusals, dedup, identities, links, rollups, counters (what to write: `store/plan.rs`) |
//! | `rows` | multi-row statements: a batch's rows bound 64 to a statement |
//! | `installs` | completeness: seen and dropped seq ranges of an install, written and read |
//! | `dead_letters` | what is kept of rejected messages, within its limits, and read back |
//! | `deletion` | deletion requests: tombstone, the person's rows, the WAL erased |
//! | `expiry` | retention: expired events and dead letters, in chunks |
//! | `export` | keyset pages of stored events |
//! | `health` | totals, liveness, pipeline-health figures: written with each batch, read, pruned |
//! | `queries` | event counts and the product queries, on the reader connections |
//! | `keys` | keys managed live: created, rotated, revoked through the writer |
//! | `audit` | the audit log: appended and expired through the writer, read in pages |

mod audit;
mod dead_letters;
mod deletion;
mod expiry;
mod export;
mod health;
mod installs;
mod keys;
mod quality;
mod queries;
mod rows;
mod schema;
mod write;
mod writer;

pub use schema::MIGRATIONS;
pub use writer::{MAX_GROUP_AGE, MAX_GROUP_EVENTS};

use super::{DeadLetterLimits, StoreError};
use rusqlite::{Connection, ErrorCode};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;
use std::time::Duration;
use writer::{Checkpointer, Known, Readers, Writer, WriterState};

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
        schema::migrate(&mut conn, path)?;
        let tombstones_exist = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM tombstones) OR EXISTS (SELECT 1 FROM tombstone_links)",
                [],
                |r| r.get(0),
            )
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

admin_store_by_concern!(SqliteStore);
