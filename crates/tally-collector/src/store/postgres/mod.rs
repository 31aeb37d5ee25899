//! The shared store: PostgreSQL, for several collectors behind a load
//! balancer.
//!
//! # Exactness across collectors
//!
//! - **Dedup**: `(source, message_id)` is the primary key and
//!   `(source, dedup_key)` is unique; a batch is inserted with one `INSERT
//!   ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING RETURNING source,
//!   message_id`, rows sorted by that key. Two
//!   collectors inserting the same id at once: the second waits for the
//!   first to commit and then skips the row, so exactly one counts it.
//!   Sorting by id gives every transaction the same lock order; the rare
//!   deadlock left (two `dedup_key`s met in opposite orders) is detected by
//!   the server and the batch is retried ([`MAX_ATTEMPTS`]).
//! - **Counters** live in [`COUNTER_SHARDS`] rows; each transaction adds
//!   its counts to one shard picked round-robin, so concurrent writers
//!   rarely wait on one another, and `stats` sums the shards. The counts
//!   are updated in the same transaction as the rows, so they stay exact.
//! - **Deletion vs. ingest**: every write transaction holds a shared
//!   advisory lock ([`DELETION_LOCK`]); a deletion takes it exclusively, so
//!   it waits for the batches in flight, and the batches after it see the
//!   tombstone. No event of a deleted user slips in between.
//! - **Completeness**: the per-install row in `installs` is upserted
//!   (locked) before its seen ranges are merged, serializing the updates
//!   of one install; installs are locked in sorted order.
//! - **Alert notifications**: one collector at a time holds the sender
//!   lease (`alert_sender`, server clock); it queues state changes in
//!   `alert_outbox` in the transaction that renews the lease, and records
//!   every attempt there (see [`crate::alerts`]).
//! - **Migrations** run under a transaction-level advisory lock
//!   ([`MIGRATION_LOCK`]), so collectors starting together apply each one
//!   once; a schema newer than the binary is refused.
//!
//! Durability is PostgreSQL's: a commit returns after the WAL is flushed
//! (`synchronous_commit = on`, the server default), so an accepted event
//! survives a crash of the collector and of the database server.
//!
//! Retention chunks (`DELETE ... FOR UPDATE SKIP LOCKED`, with the counter
//! in the same statement) take no lock ingest takes on events: ingest
//! does not wait for them beyond one counter shard's row. In the same
//! transaction a chunk deletes the `active_slots` rows it emptied (no
//! product event of that identity left in that slot). Chunks of several
//! collectors take turns ([`RETENTION_LOCK`]), so each one's check sees
//! what the others deleted.
//!
//! A batch adding an event to a slot whose row a chunk is emptying must
//! not lose the row: the batch's slot upsert locks the rows that exist
//! (`ON CONFLICT DO UPDATE ... WHERE false`, no new row version), and the
//! chunk locks the rows of its deleted events (in key order, as batches
//! do) *before* it reads which still have events. Under READ COMMITTED
//! each statement reads a fresh snapshot, so either the chunk waits for
//! the batch and then sees its event (the row stays), or the batch waits
//! for the chunk and inserts the row again. Only a batch adding to the
//! (slot, person) of an event being expired ever waits, for one chunk
//! (milliseconds); concurrent batches of one person and 15 minutes wait
//! for each other's commit on that row.
//!
//! Export pages follow the `(ts_corrected, source, message_id)` keyset of
//! the `events_by_time` index.
//!
//! Identity rules (stitching, conflicts, deletion) are those of the
//! [store module](super), from SQL shared with the SQLite store. A deletion
//! scans `events` while it holds the exclusive lock: ingest waits for it.

//!
//! # Concerns
//!
//! | file | holds |
//! |---|---|
//! | `schema` | the migrations, applied at connect by the shared runner (`store/migrations.rs`) under [`MIGRATION_LOCK`] |
//! | `pool` | the connection pool, each connection with the write path's statements prepared |
//! | `statements` | the write path's statements (`Prepared`) |
//! | `write` | one batch's write: refusals, dedup, identities, links, rollups, counters (what to write: `store/plan.rs`) |
//! | `installs` | completeness: seen and dropped seq ranges of an install, written and read |
//! | `dead_letters` | rejected messages read back, and the totals of what was kept |
//! | `deletion` | deletion requests: tombstone and the person's rows, under the exclusive lock |
//! | `expiry` | retention: expired events and dead letters, in chunks |
//! | `export` | keyset pages of stored events |
//! | `health` | totals, liveness, pipeline-health figures: written with each batch, read, pruned |
//! | `outbox` | the alert sender lease and notification outbox |
//! | `queries` | event counts and the product queries, with the cache of persons |
//! | `keys` | keys managed live: each change under the lock of the key version row |
//! | `audit` | the audit log: appended, read in pages, expired in chunks |

mod audit;
mod dead_letters;
mod deletion;
mod expiry;
mod export;
mod health;
mod installs;
mod keys;
mod outbox;
mod pool;
mod quality;
mod queries;
mod schema;
mod statements;
mod write;

pub use pool::{CHECKOUT_TIMEOUT, CONNECT_TIMEOUT, MAX_CONNECTIONS};
pub use schema::MIGRATIONS;

use super::{DeadLetterLimits, StoreError};
use ::postgres::error::SqlState;
use ::postgres::{Config, SimpleQueryMessage};
use pool::{Conn, Pool};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Advisory lock key held while migrating ("tally" + 1 in ASCII, to stay
/// clear of keys other applications on the same database might pick).
pub const MIGRATION_LOCK: i64 = 0x7461_6c6c_7901;

/// Advisory lock key: shared by write transactions, exclusive for a
/// deletion.
pub const DELETION_LOCK: i64 = 0x7461_6c6c_7902;

/// Advisory lock key: shared while a batch creates identities, exclusive
/// while a batch writes identity links (see `write`).
pub const IDENT_LOCK: i64 = 0x7461_6c6c_7903;

/// Advisory lock key: held by one retention chunk at a time across the
/// collectors sharing the database (see `expire_events`).
pub const RETENTION_LOCK: i64 = 0x7461_6c6c_7904;

/// Counter rows. More shards than connections of two collectors
/// ([`MAX_CONNECTIONS`] each), so concurrent writers seldom pick the same.
pub const COUNTER_SHARDS: i32 = 32;

/// Attempts for a batch whose transaction was aborted by a deadlock or a
/// serialization failure (both resolve on retry).
pub const MAX_ATTEMPTS: usize = 3;

/// Maps a client error: a lost or refused connection, a server shutting
/// down or out of connections is [`StoreError::Unavailable`] (503, the
/// pool reconnects later); anything else is [`StoreError::Backend`].
pub(crate) fn pg_error(e: ::postgres::Error) -> StoreError {
    let unavailable = e.is_closed()
        || match e.code() {
            None => e.as_db_error().is_none(),
            Some(code) => {
                code.code().starts_with("08")
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::CRASH_SHUTDOWN
                    || *code == SqlState::CANNOT_CONNECT_NOW
                    || *code == SqlState::TOO_MANY_CONNECTIONS
                    || *code == SqlState::QUERY_CANCELED
                    || *code == SqlState::LOCK_NOT_AVAILABLE
            }
        };
    // The server's message and code, never its detail (which can quote
    // row values, i.e. event data).
    let text = match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None => format!("PostgreSQL: {e}"),
    };
    if unavailable {
        StoreError::Unavailable(text)
    } else {
        StoreError::Backend(text)
    }
}

fn retryable(e: &::postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// The PostgreSQL store. Cheap to share behind an `Arc`; every method
/// blocks.
#[derive(Debug)]
pub struct PostgresStore {
    pool: Pool,
    next_shard: AtomicUsize,
    /// Whether events stored before sources were recorded (source '')
    /// may still exist: while they may, an event is a duplicate of such
    /// an event with its id or business key too, so a batch resent across
    /// the upgrade is not counted twice. Read at connect.
    legacy_events: bool,
    /// What is kept of rejected messages. Collectors sharing the database
    /// check the limits against the totals when a batch starts, so
    /// concurrent batches may pass them by what they add together.
    dead_letter_limits: DeadLetterLimits,
    /// Identity → person, caught up before each use (see
    /// `queries`).
    pub(crate) persons: std::sync::Mutex<queries::PersonCache>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`), runs pending
    /// migrations and returns the store. A server that cannot be reached
    /// is [`StoreError::Unavailable`].
    pub fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        Self::connect_with(url, DeadLetterLimits::default())
    }

    /// [`PostgresStore::connect`] with these dead-letter limits.
    pub fn connect_with(
        url: &str,
        dead_letter_limits: DeadLetterLimits,
    ) -> Result<PostgresStore, StoreError> {
        let config = Config::from_str(url)
            .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
        let pool = Pool::new(config);
        let mut client = pool.connect_raw()?;
        schema::migrate(&mut client)?;
        let legacy_events = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM events WHERE source = '')",
                &[],
            )
            .and_then(|r| r.try_get(0))
            .map_err(pg_error)?;
        drop(client);
        // Spread the processes over the shards from the start.
        let seed = std::process::id() as usize;
        Ok(PostgresStore {
            pool,
            next_shard: AtomicUsize::new(seed),
            legacy_events,
            dead_letter_limits,
            persons: std::sync::Mutex::default(),
        })
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let mut conn = self.pool.get()?;
        let row = conn
            .client
            .query_one("SELECT version FROM schema_version", &[])
            .map_err(pg_error)?;
        Ok(row.try_get::<_, i32>(0).map_err(pg_error)?.max(0) as u32)
    }

    /// A pooled connection (queries of `store::query`).
    pub(crate) fn client(&self) -> Result<pool::Pooled, StoreError> {
        self.pool.get()
    }

    fn shard(&self) -> i32 {
        (self.next_shard.fetch_add(1, Ordering::Relaxed) % COUNTER_SHARDS as usize) as i32
    }

    /// Runs `work` in one transaction holding the deletion lock (`shared`
    /// for ingest, exclusive for a deletion), retrying a deadlock.
    fn transaction<T>(
        &self,
        shared: bool,
        mut work: impl FnMut(&mut Conn, bool) -> Result<T, ::postgres::Error>,
    ) -> Result<T, StoreError> {
        let lock = if shared {
            "pg_advisory_xact_lock_shared"
        } else {
            "pg_advisory_xact_lock"
        };
        // One round trip: open, lock, and learn whether any tombstone
        // (of a user, or of an anonymous id or install) exists (read after the lock, so a deletion that committed
        // before is seen); without one the per-event check is skipped.
        let begin = format!(
            "BEGIN; SELECT {lock}({DELETION_LOCK}); \
             SELECT (EXISTS (SELECT 1 FROM tombstones) OR EXISTS (SELECT 1 FROM tombstone_links))::text"
        );
        let mut attempt = 0;
        // Idle connections found dead on their first use (after a server
        // restart every idle one is): each is replaced, nothing was written.
        let mut dead = 0;
        loop {
            attempt += 1;
            let mut conn = self.pool.get()?;
            let begun = conn.client.simple_query(&begin).map(|messages| {
                messages.iter().any(|m| match m {
                    SimpleQueryMessage::Row(row) => row.try_get(0).ok().flatten() == Some("true"),
                    _ => false,
                })
            });
            let tombstones_exist = match begun {
                Ok(exist) => exist,
                Err(e) => {
                    let error = pg_error(e);
                    if conn.client.is_closed() || matches!(error, StoreError::Unavailable(_)) {
                        // An idle connection the server dropped or is
                        // dropping: nothing was written, so a fresh
                        // connection is tried.
                        conn.discard();
                        dead += 1;
                        if dead <= MAX_CONNECTIONS {
                            attempt -= 1;
                            continue;
                        }
                    } else if conn.client.batch_execute("ROLLBACK").is_err() {
                        conn.discard();
                    }
                    return Err(error);
                }
            };
            let result = work(&mut conn, tombstones_exist)
                .and_then(|v| conn.client.batch_execute("COMMIT").map(|()| v));
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if !conn.client.is_closed() && conn.client.batch_execute("ROLLBACK").is_err() {
                        conn.discard();
                    }
                    if retryable(&e) && attempt < MAX_ATTEMPTS {
                        continue;
                    }
                    return Err(pg_error(e));
                }
            }
        }
    }
}

admin_store_by_concern!(PostgresStore);
