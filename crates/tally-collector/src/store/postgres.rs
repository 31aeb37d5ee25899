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

mod pool;

pub use pool::{CHECKOUT_TIMEOUT, CONNECT_TIMEOUT, MAX_CONNECTIONS};

use super::health::{self, BatchHealth, PipelineFigures};
use super::identity::{self, Link};
use super::outbox::{AlertOutbox, Attempt, QueuedNotification, RuleNotice};
use super::query;
use super::ranges::{self, SeqRange, MAX_TRACKED_SEQ};
use super::InstallEvent;
use super::{
    CursorTie, DeadLetter, DeadLetterBudget, DeadLetterLimits, DeadLetterTotals, DeletionRecord,
    DeletionReport, DeletionStatus, EventCount, ExpiryScope, ExportCursor, ExportedEvent,
    InstallReport, NewEvent, Stats, Store, StoreError, StoredDeadLetter, WriteOutcome,
};
use ::postgres::error::SqlState;
use ::postgres::{Client, Config, IsolationLevel, SimpleQueryMessage, Statement};
use pool::{Conn, Pool};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tally_proto::{Priority, RejectReason};

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

/// Schema migrations, applied in order; index + 1 is the version. Never
/// edit a released entry: add a new one.
///
/// Every text column uses the "C" collation: ids and names are compared
/// byte-wise, never by a locale (locale-aware comparison tripled the cost
/// of the unique-key checks and of sorting a batch), and no query here
/// needs a linguistic order.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    message_id    text COLLATE "C" PRIMARY KEY,
    dedup_key     text COLLATE "C",
    kind          text COLLATE "C" NOT NULL,
    event         text COLLATE "C",
    user_id       text COLLATE "C",
    anonymous_id  text COLLATE "C",
    group_id      text COLLATE "C",
    previous_id   text COLLATE "C",
    install_id    text COLLATE "C",
    seq           bigint,
    session_id    text COLLATE "C",
    session_index bigint,
    priority      text COLLATE "C" NOT NULL,
    timestamp     bigint,
    sent_at       bigint,
    received_at   bigint NOT NULL,
    ts_corrected  bigint NOT NULL,
    clamped       boolean NOT NULL,
    raw           text COLLATE "C" NOT NULL
);
-- Partial: most events have no dedup key and cost no entry here.
CREATE UNIQUE INDEX events_by_dedup_key ON events (dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX events_by_name_time ON events (event, ts_corrected);
CREATE TABLE dead_letters (
    row_id      bigserial PRIMARY KEY,
    message_id  text COLLATE "C",
    reason      text COLLATE "C" NOT NULL,
    detail      text COLLATE "C" NOT NULL,
    received_at bigint NOT NULL,
    raw         text COLLATE "C" NOT NULL
);
CREATE TABLE counters (
    shard     integer PRIMARY KEY,
    accepted  bigint NOT NULL DEFAULT 0,
    duplicate bigint NOT NULL DEFAULT 0,
    rejected  bigint NOT NULL DEFAULT 0,
    stored    bigint NOT NULL DEFAULT 0
);
INSERT INTO counters (shard) SELECT generate_series(0, 31);
CREATE TABLE links (
    kind      text COLLATE "C" NOT NULL,
    id        text COLLATE "C" NOT NULL,
    target    text COLLATE "C" NOT NULL,
    linked_at bigint NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX links_by_target ON links (target);
CREATE TABLE tombstones (
    user_id      text COLLATE "C" PRIMARY KEY,
    requested_at bigint NOT NULL
);
CREATE TABLE installs (
    install_id text COLLATE "C" PRIMARY KEY,
    max_seq    bigint NOT NULL
);
CREATE TABLE install_seen (
    install_id text COLLATE "C" NOT NULL,
    from_seq   bigint NOT NULL,
    to_seq     bigint NOT NULL,
    PRIMARY KEY (install_id, from_seq)
);
CREATE TABLE install_drops (
    install_id text COLLATE "C" NOT NULL,
    from_seq   bigint NOT NULL,
    to_seq     bigint NOT NULL,
    reason     text COLLATE "C" NOT NULL,
    PRIMARY KEY (install_id, from_seq, to_seq, reason)
);
"#,
    r#"
-- Pipeline health (see store/health.rs).
ALTER TABLE counters ADD COLUMN batches bigint NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN batches_ok bigint NOT NULL DEFAULT 0;
CREATE TABLE health_hours (
    hour       bigint NOT NULL,
    shard      integer NOT NULL,
    batches    bigint NOT NULL,
    batches_ok bigint NOT NULL,
    accepted   bigint NOT NULL,
    duplicate  bigint NOT NULL,
    rejected   bigint NOT NULL,
    PRIMARY KEY (hour, shard)
);
CREATE TABLE health_rejections (
    hour   bigint NOT NULL,
    shard  integer NOT NULL,
    reason text COLLATE "C" NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (hour, shard, reason)
);
CREATE TABLE health_histograms (
    metric text COLLATE "C" NOT NULL,
    hour   bigint NOT NULL,
    shard  integer NOT NULL,
    le     bigint NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (metric, hour, shard, le)
);
CREATE TABLE install_health (
    install_id           text COLLATE "C" PRIMARY KEY,
    at                   bigint NOT NULL,
    received_at          bigint NOT NULL,
    pending              bigint NOT NULL,
    pending_bytes        bigint NOT NULL,
    oldest_pending_age_s double precision NOT NULL,
    consecutive_failures bigint NOT NULL,
    backoff_ms           bigint NOT NULL,
    persistence_errors   bigint NOT NULL,
    sync_p50_ms          double precision,
    sync_p99_ms          double precision,
    clock_offset_ms      bigint NOT NULL
);
CREATE INDEX install_health_by_at ON install_health (at);
-- Retention (expired events by corrected time) and export (keyset pages
-- in (corrected time, message id) order) scan by time.
CREATE INDEX events_by_time ON events (ts_corrected, message_id);
CREATE TABLE deletions (
    row_id         bigserial PRIMARY KEY,
    user_id        text COLLATE "C" NOT NULL,
    requested_at   bigint NOT NULL,
    status         text COLLATE "C" NOT NULL,
    deleted_events bigint NOT NULL
);
"#,
    // 3: product queries (see `store::query`): identities, the covering
    // index, event names and active slots, backfilled from stored events.
    r#"
CREATE TABLE idents (
    id           bigserial PRIMARY KEY,
    user_id      text COLLATE "C" NOT NULL,
    anonymous_id text COLLATE "C" NOT NULL,
    install_id   text COLLATE "C" NOT NULL,
    person       text COLLATE "C",
    UNIQUE (user_id, anonymous_id, install_id)
);
CREATE INDEX idents_by_anonymous_id ON idents (anonymous_id) WHERE user_id = '';
CREATE INDEX idents_by_install_id ON idents (install_id) WHERE user_id = '';
ALTER TABLE events ADD COLUMN ident bigint;
INSERT INTO idents (user_id, anonymous_id, install_id)
    SELECT DISTINCT COALESCE(user_id, ''),
        CASE WHEN user_id IS NULL THEN COALESCE(anonymous_id, '') ELSE '' END,
        CASE WHEN user_id IS NULL THEN COALESCE(install_id, '') ELSE '' END
    FROM events;
UPDATE idents AS k SET person = {IDENT_PERSON_SQL};
UPDATE events AS e SET ident = k.id FROM idents k WHERE k.user_id = COALESCE(e.user_id, '')
    AND k.anonymous_id = CASE WHEN e.user_id IS NULL THEN COALESCE(e.anonymous_id, '') ELSE '' END
    AND k.install_id = CASE WHEN e.user_id IS NULL THEN COALESCE(e.install_id, '') ELSE '' END;
CREATE INDEX events_by_name_time_ident ON events (event, ts_corrected, ident);
DROP INDEX events_by_name_time;
CREATE TABLE event_names (name text COLLATE "C" PRIMARY KEY);
INSERT INTO event_names SELECT DISTINCT event FROM events WHERE event IS NOT NULL;
CREATE TABLE active_slots (
    slot  bigint NOT NULL,
    ident bigint NOT NULL,
    PRIMARY KEY (slot, ident)
);
INSERT INTO active_slots SELECT DISTINCT ts_corrected / 900000, ident FROM events
    WHERE event IS NOT NULL AND substr(event, 1, 6) <> 'tally.';
"#,
    // 4: retention of dead letters finds the expired ones by receipt time.
    r#"
CREATE INDEX dead_letters_by_received ON dead_letters (received_at);
"#,
    // 5: alert notifications sent once across collectors (see
    // `crate::alerts`): the sender lease, the last state queued per rule,
    // and the outbox. Times are the server's clock, in ms.
    r#"
CREATE TABLE alert_sender (
    id         integer PRIMARY KEY CHECK (id = 1),
    holder     text COLLATE "C" NOT NULL,
    expires_at bigint NOT NULL
);
CREATE TABLE alert_states (
    rule  text COLLATE "C" PRIMARY KEY,
    state text COLLATE "C" NOT NULL
);
CREATE TABLE alert_outbox (
    id        bigserial PRIMARY KEY,
    rule      text COLLATE "C" NOT NULL,
    body      text COLLATE "C" NOT NULL,
    queued_at bigint NOT NULL,
    attempts  integer NOT NULL DEFAULT 0,
    done_at   bigint,
    delivered boolean NOT NULL DEFAULT false
);
CREATE INDEX alert_outbox_pending ON alert_outbox (id) WHERE done_at IS NULL;
"#,
    // 6: each identity records the transaction that last set its person,
    // so a collector's cache of persons (see `query::postgres`) catches up
    // by reading only what changed since it last looked. Adding the column
    // rewrites the table once.
    r#"
ALTER TABLE idents ADD COLUMN changed xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE FUNCTION idents_person_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed := pg_current_xact_id();
    RETURN NEW;
END
$$;
CREATE TRIGGER idents_person_changed BEFORE UPDATE OF person ON idents
    FOR EACH ROW WHEN (OLD.person IS DISTINCT FROM NEW.person)
    EXECUTE FUNCTION idents_person_changed();
CREATE INDEX idents_by_changed ON idents (changed);
"#,
    // 7: sources. Each event records the source (write key) that sent it,
    // and dedup is exact per source: the key becomes (source, message_id),
    // the business key (source, dedup_key), and export pages follow
    // (ts_corrected, source, message_id). Rows stored before have the
    // source '' (unknown); while any is left, a new event is also checked
    // against them (see `PostgresStore::legacy_events`). An install
    // belongs to the first source that sends for it; '' marks one not yet
    // claimed.
    r#"
ALTER TABLE events ADD COLUMN source text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE events ALTER COLUMN source DROP DEFAULT;
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ADD PRIMARY KEY (source, message_id);
DROP INDEX events_by_dedup_key;
CREATE UNIQUE INDEX events_by_dedup_key ON events (source, dedup_key) WHERE dedup_key IS NOT NULL;
DROP INDEX events_by_time;
CREATE INDEX events_by_time ON events (ts_corrected, source, message_id);
ALTER TABLE dead_letters ADD COLUMN source text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE installs ADD COLUMN source text COLLATE "C" NOT NULL DEFAULT '';
"#,
    // 8: deletion reaches dead letters and links. A dead letter records
    // the ids of its message (read leniently: it was rejected; a row whose
    // text PostgreSQL's JSON cannot read keeps none) and its size as
    // received; the links to a deleted user move into the tombstone
    // (`tombstone_links`), and the aliases naming it go. The counters of
    // kept dead letters let ingest cap them by rows and bytes.
    r#"
ALTER TABLE dead_letters ADD COLUMN user_id text COLLATE "C";
ALTER TABLE dead_letters ADD COLUMN anonymous_id text COLLATE "C";
ALTER TABLE dead_letters ADD COLUMN install_id text COLLATE "C";
ALTER TABLE dead_letters ADD COLUMN size bigint NOT NULL DEFAULT 0;
UPDATE dead_letters SET size = octet_length(raw);
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT row_id, raw FROM dead_letters LOOP
        BEGIN
            UPDATE dead_letters SET
                user_id = CASE WHEN json_typeof(r.raw::json -> 'userId') = 'string'
                    THEN nullif(r.raw::json ->> 'userId', '') END,
                anonymous_id = CASE WHEN json_typeof(r.raw::json -> 'anonymousId') = 'string'
                    THEN nullif(r.raw::json ->> 'anonymousId', '') END,
                install_id = CASE WHEN json_typeof(r.raw::json #> '{context,tally,install_id}') = 'string'
                    THEN nullif(r.raw::json #>> '{context,tally,install_id}', '') END
            WHERE row_id = r.row_id;
        EXCEPTION WHEN others THEN
            NULL;
        END;
    END LOOP;
END
$$;
CREATE TABLE tombstone_links (
    kind    text COLLATE "C" NOT NULL,
    id      text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (kind, id)
);
INSERT INTO tombstone_links (kind, id, user_id) SELECT kind, id, target FROM links
    WHERE kind IN ('a', 'i') AND target IN (SELECT user_id FROM tombstones);
DELETE FROM links WHERE target IN (SELECT user_id FROM tombstones)
    OR (kind = 'u' AND id IN (SELECT user_id FROM tombstones));
ALTER TABLE counters ADD COLUMN dead_letter_rows bigint NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN dead_letter_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN dead_letters_not_kept bigint NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN dead_letters_truncated bigint NOT NULL DEFAULT 0;
UPDATE counters SET dead_letter_rows = (SELECT count(*) FROM dead_letters),
    dead_letter_bytes = (SELECT coalesce(sum(octet_length(raw)), 0) FROM dead_letters)
    WHERE shard = 0;
"#,
];

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

/// The positions (from 1) of the events of a batch that belong to a
/// deleted person (`identity::refused_sql`), given their user, anonymous
/// and install ids as arrays.
fn refused_sql() -> String {
    format!(
        "SELECT t.n FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS t(u, a, i, n) \
         WHERE {}",
        identity::refused_sql("t.u", "t.a", "t.i")
    )
}

/// The batch's rows in one statement: events (in the arrays' order,
/// sorted by id by the caller), dead
/// letters, and the counters, whose `accepted` is what the insert
/// returned. `$20` counts the events not refused, `$21` the rejected.
const INSERT_EVENTS_SQL: &str =
    "WITH ins AS (INSERT INTO events (message_id, dedup_key, kind, event, \
    user_id, anonymous_id, group_id, previous_id, install_id, seq, session_id, session_index, \
    priority, timestamp, sent_at, received_at, ts_corrected, clamped, raw, ident, source) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
    $7::text[], $8::text[], $9::text[], $10::int8[], $11::text[], $12::int8[], $13::text[], \
    $14::int8[], $15::int8[], $16::int8[], $17::int8[], $18::bool[], $19::text[], $28::int8[], \
    $29::text[]) \
    ON CONFLICT DO NOTHING RETURNING source, message_id), \
    dl AS (INSERT INTO dead_letters (message_id, reason, detail, received_at, raw, source, \
    user_id, anonymous_id, install_id, size) \
    SELECT * FROM unnest($23::text[], $24::text[], $25::text[], $26::int8[], $27::text[], \
    $30::text[], $31::text[], $32::text[], $33::text[], $34::int8[])), \
    n AS (SELECT count(*) AS stored_now FROM ins), \
    c AS (UPDATE counters SET accepted = accepted + n.stored_now, \
    duplicate = duplicate + $20 - n.stored_now, rejected = rejected + $21, \
    stored = stored + n.stored_now, dead_letter_rows = dead_letter_rows + ($35::int8[])[1], \
    dead_letter_bytes = dead_letter_bytes + ($35::int8[])[2], \
    dead_letters_not_kept = dead_letters_not_kept + ($35::int8[])[3], \
    dead_letters_truncated = dead_letters_truncated + ($35::int8[])[4] FROM n WHERE shard = $22) \
    SELECT source, message_id FROM ins";

/// The dead-letter counters summed over the shards.
const DEAD_LETTER_TOTALS_SQL: &str = "SELECT coalesce(sum(dead_letter_rows), 0)::int8, \
    coalesce(sum(dead_letter_bytes), 0)::int8, coalesce(sum(dead_letters_not_kept), 0)::int8, \
    coalesce(sum(dead_letters_truncated), 0)::int8 FROM counters";

/// The user ids among `$1` that have an identity of their own: some event
/// carried them as its `userId`.
const IDENTIFIED_USERS_SQL: &str = "SELECT user_id FROM idents WHERE user_id = ANY($1::text[]) \
    AND anonymous_id = '' AND install_id = ''";

/// The owner of each install (see `super::owns`).
const INSTALL_OWNERS_SQL: &str =
    "SELECT install_id, source FROM installs WHERE install_id = ANY($1::text[])";

/// Ids and business keys already stored by events recorded before sources
/// were (see `PostgresStore::legacy_events`).
const LEGACY_DUPLICATES_SQL: &str = "SELECT message_id FROM events WHERE source = '' \
    AND message_id = ANY($1::text[]) UNION ALL SELECT dedup_key FROM events \
    WHERE source = '' AND dedup_key = ANY($2::text[])";

/// The earliest corrected time wins, then the smaller user id (see the
/// `identity` module). Rows arrive sorted and unique per key.
const UPSERT_LINKS_SQL: &str = "INSERT INTO links (kind, id, target, linked_at) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) \
    ON CONFLICT (kind, id) DO UPDATE SET target = excluded.target, linked_at = excluded.linked_at \
    WHERE (excluded.linked_at, excluded.target) < (links.linked_at, links.target)";

const SELECT_SEEN_SQL: &str = "SELECT s.install_id, s.from_seq, s.to_seq FROM install_seen s \
    JOIN unnest($1::text[], $2::int8[], $3::int8[]) AS b(i, lo, hi) \
    ON s.install_id = b.i AND s.from_seq <= b.hi AND s.to_seq >= b.lo";

/// Rewrites merged ranges: ranges absorbed into another are deleted, the
/// others are upserted by their start (usually one range grows).
const WRITE_SEEN_SQL: &str =
    "WITH d AS (DELETE FROM install_seen s USING unnest($1::text[], $2::int8[]) AS d(i, f) \
    WHERE s.install_id = d.i AND s.from_seq = d.f) \
    INSERT INTO install_seen (install_id, from_seq, to_seq) \
    SELECT * FROM unnest($3::text[], $4::int8[], $5::int8[]) \
    ON CONFLICT (install_id, from_seq) DO UPDATE SET to_seq = excluded.to_seq";

/// Upserting the install rows (sorted) locks them, so one transaction at
/// a time merges an install's ranges; the drops reported in the batch
/// are recorded in the same statement.
///
/// An install is claimed by the batch's source if no source had it; one
/// another source claimed between the owner check and this statement
/// keeps its owner and its figures (`WHERE`), and the batch then merges
/// no seen ranges into it (`RETURNING` tells which rows it wrote).
const UPSERT_INSTALLS_SQL: &str = "INSERT INTO installs AS t (install_id, max_seq, source) \
    SELECT * FROM unnest($1::text[], $2::int8[], $3::text[]) \
    ON CONFLICT (install_id) DO UPDATE SET max_seq = GREATEST(t.max_seq, excluded.max_seq), \
    source = excluded.source WHERE t.source IN ('', excluded.source) \
    RETURNING install_id";

const INSERT_DROPS_SQL: &str = "INSERT INTO install_drops (install_id, from_seq, to_seq, reason) \
    SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[]) ON CONFLICT DO NOTHING";

/// One request's health figures (see [`super::health`]), in one round
/// trip: the shard's request counter and hour row, rejections by reason,
/// histogram buckets, and the latest beacon of each install (rows unique
/// and sorted by the caller). A beacon replaces the stored one unless the
/// stored one was captured later.
const WRITE_HEALTH_SQL: &str = "WITH c AS (UPDATE counters SET batches = batches + 1, \
    batches_ok = batches_ok + 1 WHERE shard = $1), \
    h AS (INSERT INTO health_hours AS t (hour, shard, batches, batches_ok, accepted, duplicate, rejected) \
    VALUES ($2, $1, 1, 1, $3, $4, $5) ON CONFLICT (hour, shard) DO UPDATE SET \
    batches = t.batches + 1, batches_ok = t.batches_ok + 1, accepted = t.accepted + excluded.accepted, \
    duplicate = t.duplicate + excluded.duplicate, rejected = t.rejected + excluded.rejected), \
    r AS (INSERT INTO health_rejections AS t (hour, shard, reason, n) \
    SELECT $2, $1, x.reason, x.n FROM unnest($6::text[], $7::int8[]) AS x(reason, n) \
    ON CONFLICT (hour, shard, reason) DO UPDATE SET n = t.n + excluded.n), \
    g AS (INSERT INTO health_histograms AS t (metric, hour, shard, le, n) \
    SELECT x.metric, $2, $1, x.le, x.n FROM unnest($8::text[], $9::int8[], $10::int8[]) AS x(metric, le, n) \
    ON CONFLICT (metric, hour, shard, le) DO UPDATE SET n = t.n + excluded.n) \
    INSERT INTO install_health AS t (install_id, at, received_at, pending, pending_bytes, \
    oldest_pending_age_s, consecutive_failures, backoff_ms, persistence_errors, sync_p50_ms, \
    sync_p99_ms, clock_offset_ms) \
    SELECT * FROM unnest($11::text[], $12::int8[], $13::int8[], $14::int8[], $15::int8[], \
    $16::float8[], $17::int8[], $18::int8[], $19::int8[], $20::float8[], $21::float8[], $22::int8[]) \
    ON CONFLICT (install_id) DO UPDATE SET at = excluded.at, received_at = excluded.received_at, \
    pending = excluded.pending, pending_bytes = excluded.pending_bytes, \
    oldest_pending_age_s = excluded.oldest_pending_age_s, \
    consecutive_failures = excluded.consecutive_failures, backoff_ms = excluded.backoff_ms, \
    persistence_errors = excluded.persistence_errors, sync_p50_ms = excluded.sync_p50_ms, \
    sync_p99_ms = excluded.sync_p99_ms, clock_offset_ms = excluded.clock_offset_ms \
    WHERE excluded.at >= t.at";

/// Requests that reached no write transaction (see [`Store::add_batches`]).
const ADD_BATCHES_SQL: &str = "WITH c AS (UPDATE counters SET batches = batches + $3, \
    batches_ok = batches_ok + $4 WHERE shard = $1) \
    INSERT INTO health_hours AS t (hour, shard, batches, batches_ok, accepted, duplicate, rejected) \
    VALUES ($2, $1, $3, $4, 0, 0, 0) ON CONFLICT (hour, shard) DO UPDATE SET \
    batches = t.batches + excluded.batches, batches_ok = t.batches_ok + excluded.batches_ok";
const SELECT_IDENTS_SQL: &str =
    "SELECT i.id, i.user_id, i.anonymous_id, i.install_id FROM idents i \
    JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(user_id, anonymous_id, install_id) \
    USING (user_id, anonymous_id, install_id)";

/// Event names and active slots of the accepted events (sorted, so
/// concurrent batches meet the keys in one order).
///
/// A slot row that exists is locked, not rewritten (`DO UPDATE ... WHERE
/// false` locks the conflicting row and updates nothing): a retention
/// chunk that would delete it as emptied waits for this batch to commit
/// and then sees its event (see [`LOCK_EXPIRED_SLOTS_SQL`]). A row that a
/// chunk is deleting makes the upsert wait for that chunk and then insert
/// it again. `DO NOTHING` locks nothing, and the chunk could delete the
/// row this batch's event needs.
const ADD_ACTIVITY_SQL: &str = "WITH n AS (INSERT INTO event_names (name) \
    SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING) \
    INSERT INTO active_slots (slot, ident) SELECT * FROM unnest($2::int8[], $3::int8[]) \
    ON CONFLICT (slot, ident) DO UPDATE SET slot = excluded.slot WHERE false";

/// The write path's statements, prepared once per connection so a batch
/// costs no parse round trips.
pub(crate) struct Prepared {
    refused: Statement,
    insert_events: Statement,
    install_owners: Statement,
    identified_users: Statement,
    legacy_duplicates: Statement,
    upsert_links: Statement,
    upsert_installs: Statement,
    insert_drops: Statement,
    select_seen: Statement,
    write_seen: Statement,
    write_health: Statement,
    select_idents: Statement,
    insert_idents: Statement,
    add_activity: Statement,
}

impl Prepared {
    pub(crate) fn new(client: &mut Client) -> Result<Prepared, StoreError> {
        let mut p = |sql: &str| client.prepare(sql).map_err(pg_error);
        Ok(Prepared {
            refused: p(&refused_sql())?,
            insert_events: p(INSERT_EVENTS_SQL)?,
            install_owners: p(INSTALL_OWNERS_SQL)?,
            identified_users: p(IDENTIFIED_USERS_SQL)?,
            legacy_duplicates: p(LEGACY_DUPLICATES_SQL)?,
            upsert_links: p(UPSERT_LINKS_SQL)?,
            upsert_installs: p(UPSERT_INSTALLS_SQL)?,
            insert_drops: p(INSERT_DROPS_SQL)?,
            select_seen: p(SELECT_SEEN_SQL)?,
            write_seen: p(WRITE_SEEN_SQL)?,
            write_health: p(WRITE_HEALTH_SQL)?,
            select_idents: p(SELECT_IDENTS_SQL)?,
            insert_idents: p(&format!(
                "INSERT INTO idents (user_id, anonymous_id, install_id, person) \
                 SELECT k.user_id, k.anonymous_id, k.install_id, {} \
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS k(user_id, anonymous_id, install_id) \
                 ON CONFLICT (user_id, anonymous_id, install_id) DO UPDATE SET person = idents.person \
                 RETURNING id, user_id, anonymous_id, install_id",
                identity::IDENT_PERSON_SQL
            ))?,
            add_activity: p(ADD_ACTIVITY_SQL)?,
        })
    }
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
    /// [`query::postgres`]).
    pub(crate) persons: std::sync::Mutex<query::postgres::PersonCache>,
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
        migrate(&mut client)?;
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
    pub(crate) fn client(&self) -> Result<pool::Pooled<'_>, StoreError> {
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
        // exists (read after the lock, so a deletion that committed
        // before is seen); without one the per-event check is skipped.
        let begin = format!(
            "BEGIN; SELECT {lock}({DELETION_LOCK}); SELECT EXISTS (SELECT 1 FROM tombstones)::text"
        );
        let mut attempt = 0;
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
                        if attempt < MAX_ATTEMPTS {
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

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let fail = |e: ::postgres::Error| match pg_error(e) {
        StoreError::Backend(m) => StoreError::Migration(m),
        other => other,
    };
    let mut tx = client.transaction().map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(fail)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        .map_err(fail)?;
    let current: Option<i32> = tx
        .query_opt("SELECT version FROM schema_version", &[])
        .map_err(fail)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(fail)?;
    let current = current.unwrap_or(0).max(0) as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Migration(format!(
            "PostgreSQL schema version {current} is newer than this binary's {}",
            MIGRATIONS.len()
        )));
    }
    for migration in &MIGRATIONS[current..] {
        tx.batch_execute(&identity::expand_migration(migration))
            .map_err(fail)?;
    }
    tx.execute("DELETE FROM schema_version", &[])
        .map_err(fail)?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&(MIGRATIONS.len() as i32)],
    )
    .map_err(fail)?;
    tx.commit().map_err(fail)
}

fn priority_str(p: Priority) -> &'static str {
    match p {
        Priority::Normal => "normal",
        Priority::Critical => "critical",
    }
}

fn tracked(seq: Option<u64>) -> Option<i64> {
    seq.filter(|s| *s <= MAX_TRACKED_SEQ)
        .and_then(|s| i64::try_from(s).ok())
}

/// The dead letters a batch keeps, as the insert's arrays.
#[derive(Default)]
struct DeadLetterColumns<'a> {
    sources: Vec<&'a str>,
    ids: Vec<Option<&'a str>>,
    reasons: Vec<&'a str>,
    details: Vec<&'a str>,
    received: Vec<i64>,
    raws: Vec<&'a str>,
    user_ids: Vec<Option<&'a str>>,
    anonymous_ids: Vec<Option<&'a str>>,
    install_ids: Vec<Option<&'a str>>,
    sizes: Vec<i64>,
}

impl<'a> DeadLetterColumns<'a> {
    /// Adds `d`, keeping `raw` of its text.
    fn push(&mut self, d: &'a DeadLetter, raw: &'a str) {
        self.sources.push(&d.source);
        self.ids.push(d.message_id.as_deref());
        self.reasons.push(d.reason.as_str());
        self.details.push(d.detail);
        self.received.push(d.received_at);
        self.raws.push(raw);
        self.user_ids.push(d.user_id.as_deref());
        self.anonymous_ids.push(d.anonymous_id.as_deref());
        self.install_ids.push(d.install_id.as_deref());
        self.sizes.push(d.raw.len() as i64);
    }
}

/// What a batch's write may skip.
#[derive(Debug, Clone, Copy)]
struct Flags {
    /// Any tombstone exists: check each event's person.
    tombstones_exist: bool,
    /// See [`PostgresStore::legacy_events`].
    legacy_events: bool,
    /// What is kept of rejected messages.
    dead_letters: DeadLetterLimits,
}

/// One batch's write, inside the transaction.
fn write(
    conn: &mut Conn,
    events: &[NewEvent],
    dead_letters: &[DeadLetter],
    shard: i32,
    flags: Flags,
) -> Result<Vec<WriteOutcome>, ::postgres::Error> {
    let tombstones_exist = flags.tombstones_exist;
    let Conn { client, prepared } = conn;

    // A batch that links identities re-resolves identities' persons: it
    // waits for the batches creating identities (and they for it), so no
    // identity is created from links older than a committed link.
    if events.iter().any(|e| !identity::links_of(e).is_empty()) {
        client.execute("SELECT pg_advisory_xact_lock($1)", &[&IDENT_LOCK])?;
    }

    // Deleted people.
    let refused: HashSet<usize> = if tombstones_exist {
        let users: Vec<Option<&str>> = events.iter().map(|e| e.user_id.as_deref()).collect();
        let anons: Vec<Option<&str>> = events.iter().map(|e| e.anonymous_id.as_deref()).collect();
        let installs: Vec<Option<&str>> = events.iter().map(|e| e.install_id.as_deref()).collect();
        client
            .query(&prepared.refused, &[&users, &anons, &installs])?
            .iter()
            .map(|r| r.try_get::<_, i64>(0).map(|n| (n - 1) as usize))
            .collect::<Result<_, _>>()?
    } else {
        HashSet::new()
    };

    // The owners of the batch's installs: another source's drop report
    // for an install is refused, and its events touch no completeness.
    let batch_installs: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e.install_id.as_deref())
        .collect();
    let mut owners: HashMap<String, String> = HashMap::new();
    if !batch_installs.is_empty() {
        let list: Vec<&str> = batch_installs.iter().copied().collect();
        for row in client.query(&prepared.install_owners, &[&list])? {
            owners.insert(row.try_get(0)?, row.try_get(1)?);
        }
    }
    let own_install = |e: &NewEvent| {
        e.install_id
            .as_deref()
            .is_some_and(|i| super::owns(owners.get(i).map(String::as_str), &e.source))
    };

    // Aliases of a user id that already has events of its own are refused
    // (see `identity::merged_user`): stored before this batch, or carried
    // as an event's own user id earlier in it.
    let merged: Vec<&str> = events.iter().filter_map(identity::merged_user).collect();
    let identified: HashSet<String> = if merged.is_empty() {
        HashSet::new()
    } else {
        client
            .query(&prepared.identified_users, &[&merged])?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?
    };
    let mut users_so_far: HashSet<&str> = HashSet::new();

    // Events recorded before sources were: their ids and keys still count.
    let legacy: HashSet<String> = if flags.legacy_events {
        let ids: Vec<&str> = events.iter().map(|e| e.message_id.as_str()).collect();
        let keys: Vec<&str> = events
            .iter()
            .filter_map(|e| e.dedup_key.as_deref())
            .collect();
        client
            .query(&prepared.legacy_duplicates, &[&ids, &keys])?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?
    } else {
        HashSet::new()
    };

    // In-batch dedup: a later message with an id or key already taken by
    // an earlier candidate of the same source is a duplicate without
    // asking.
    let mut outcomes = vec![WriteOutcome::Duplicate; events.len()];
    let mut ids: HashSet<(&str, &str)> = HashSet::with_capacity(events.len());
    let mut keys: HashSet<(&str, &str)> = HashSet::new();
    let mut candidates: Vec<&NewEvent> = Vec::with_capacity(events.len());
    let mut candidate_index: Vec<usize> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if refused.contains(&i) {
            outcomes[i] = WriteOutcome::Rejected(RejectReason::DeletedUser);
            continue;
        }
        if e.is_drop_report() && e.install_id.is_some() && !own_install(e) {
            outcomes[i] = WriteOutcome::Rejected(RejectReason::InvalidDropReport);
            continue;
        }
        if identity::merged_user(e)
            .is_some_and(|p| identified.contains(p) || users_so_far.contains(p))
        {
            outcomes[i] = WriteOutcome::Rejected(RejectReason::AliasOfIdentifiedUser);
            continue;
        }
        if let Some(user) = e.user_id.as_deref() {
            users_so_far.insert(user);
        }
        let source = e.source.as_str();
        let key = e.dedup_key.as_deref();
        if ids.contains(&(source, e.message_id.as_str()))
            || key.is_some_and(|k| keys.contains(&(source, k)))
            || legacy.contains(&e.message_id)
            || key.is_some_and(|k| legacy.contains(k))
        {
            continue;
        }
        ids.insert((source, &e.message_id));
        if let Some(k) = key {
            keys.insert((source, k));
        }
        candidates.push(e);
        candidate_index.push(i);
    }

    // Dead letters: refused events and the batch's rejected messages.
    let refused_letters: Vec<DeadLetter> = events
        .iter()
        .zip(&outcomes)
        .filter_map(|(e, outcome)| match outcome {
            WriteOutcome::Rejected(reason) => Some(DeadLetter::refused(e, *reason)),
            _ => None,
        })
        .collect();
    let rejected = (refused_letters.len() + dead_letters.len()) as i64;
    let mut budget = if rejected > 0 {
        let totals = client.query_one(DEAD_LETTER_TOTALS_SQL, &[])?;
        DeadLetterBudget::new(flags.dead_letters, totals.try_get(0)?, totals.try_get(1)?)
    } else {
        DeadLetterBudget::new(flags.dead_letters, 0, 0)
    };
    let mut dl = DeadLetterColumns::default();
    for d in refused_letters.iter().chain(dead_letters) {
        if let Some(raw) = budget.keep(&d.raw) {
            dl.push(d, raw);
        }
    }
    // Sorted by id here rather than by an ORDER BY in the statement (which
    // sorted whole rows on the server, ~30% of the insert's cost): every
    // transaction meets the unique keys in the same order, so concurrent
    // batches wait on one another instead of deadlocking. PostgreSQL's
    // unnest yields the arrays' order; were it ever not to, a deadlock is
    // still detected and retried.
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (candidates[a], candidates[b]);
        (&a.source, &a.message_id).cmp(&(&b.source, &b.message_id))
    });
    let candidates: Vec<&NewEvent> = order.iter().map(|&k| candidates[k]).collect();
    let candidate_index: Vec<usize> = order.iter().map(|&k| candidate_index[k]).collect();
    let not_refused = (events.len() - refused_letters.len()) as i64;

    let text = |f: &dyn Fn(&NewEvent) -> Option<&str>| -> Vec<Option<&str>> {
        candidates.iter().map(|e| f(e)).collect()
    };
    let int = |f: &dyn Fn(&NewEvent) -> Option<i64>| -> Vec<Option<i64>> {
        candidates.iter().map(|e| f(e)).collect()
    };
    let message_ids: Vec<&str> = candidates.iter().map(|e| e.message_id.as_str()).collect();
    let dedup_keys = text(&|e| e.dedup_key.as_deref());
    let kinds: Vec<&str> = candidates.iter().map(|e| e.kind.as_str()).collect();
    let names = text(&|e| e.event.as_deref());
    let user_ids = text(&|e| e.user_id.as_deref());
    let anonymous_ids = text(&|e| e.anonymous_id.as_deref());
    let group_ids = text(&|e| e.group_id.as_deref());
    let previous_ids = text(&|e| e.previous_id.as_deref());
    let install_ids = text(&|e| e.install_id.as_deref());
    let session_ids = text(&|e| e.session_id.as_deref());
    let priorities: Vec<&str> = candidates
        .iter()
        .map(|e| priority_str(e.priority))
        .collect();
    let raws: Vec<&str> = candidates.iter().map(|e| e.raw.as_str()).collect();
    let seqs = int(&|e| tracked(e.seq));
    let session_indexes = int(&|e| e.session_index.and_then(|s| i64::try_from(s).ok()));
    let timestamps = int(&|e| e.timestamp);
    let sent_ats = int(&|e| e.sent_at);
    let received_ats: Vec<i64> = candidates.iter().map(|e| e.received_at).collect();
    let corrected: Vec<i64> = candidates.iter().map(|e| e.ts_corrected).collect();
    let clamped: Vec<bool> = candidates.iter().map(|e| e.clamped).collect();
    let sources: Vec<&str> = candidates.iter().map(|e| e.source.as_str()).collect();
    let ident_ids = ident_ids(client, prepared, &candidates)?;
    let dead_letter_counts: Vec<i64> = vec![
        budget.kept_rows,
        budget.kept_bytes,
        budget.not_kept,
        budget.truncated,
    ];
    let inserted: HashSet<(String, String)> = client
        .query(
            &prepared.insert_events,
            &[
                &message_ids,
                &dedup_keys,
                &kinds,
                &names,
                &user_ids,
                &anonymous_ids,
                &group_ids,
                &previous_ids,
                &install_ids,
                &seqs,
                &session_ids,
                &session_indexes,
                &priorities,
                &timestamps,
                &sent_ats,
                &received_ats,
                &corrected,
                &clamped,
                &raws,
                &not_refused,
                &rejected,
                &shard,
                &dl.ids,
                &dl.reasons,
                &dl.details,
                &dl.received,
                &dl.raws,
                &ident_ids,
                &sources,
                &dl.sources,
                &dl.user_ids,
                &dl.anonymous_ids,
                &dl.install_ids,
                &dl.sizes,
                &dead_letter_counts,
            ],
        )?
        .into_iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, ::postgres::Error>>()?;
    let mut activity = query::Activity::default();
    for ((e, &i), ident) in candidates.iter().zip(&candidate_index).zip(&ident_ids) {
        if inserted.contains(&(e.source.clone(), e.message_id.clone())) {
            outcomes[i] = WriteOutcome::Accepted;
            if let Some(ident) = ident {
                activity.add(e, *ident);
            }
        }
    }
    if !activity.names.is_empty() {
        let names: Vec<&str> = activity.names.iter().copied().collect();
        let slots: Vec<i64> = activity.slots.iter().map(|s| s.0).collect();
        let slot_idents: Vec<i64> = activity.slots.iter().map(|s| s.1).collect();
        client.execute(&prepared.add_activity, &[&names, &slots, &slot_idents])?;
    }

    // Identity links of accepted identify and alias calls; one row per
    // key (the winner under the conflict rule), sorted.
    let mut links: BTreeMap<(&str, &str), Link<'_>> = BTreeMap::new();
    for (e, o) in events.iter().zip(&outcomes) {
        if *o != WriteOutcome::Accepted {
            continue;
        }
        for link in identity::links_of(e) {
            links
                .entry((link.kind, link.id))
                .and_modify(|old| {
                    if (link.linked_at, link.target) < (old.linked_at, old.target) {
                        *old = link.clone();
                    }
                })
                .or_insert(link);
        }
    }
    if !links.is_empty() {
        let kinds: Vec<&str> = links.values().map(|l| l.kind).collect();
        let ids: Vec<&str> = links.values().map(|l| l.id).collect();
        let targets: Vec<&str> = links.values().map(|l| l.target).collect();
        let ats: Vec<i64> = links.values().map(|l| l.linked_at).collect();
        client.execute(&prepared.upsert_links, &[&kinds, &ids, &targets, &ats])?;
        for link in links.values() {
            client.execute(&identity::repoint_sql(link.kind, "$1"), &[&link.id])?;
        }
    }

    write_installs(client, prepared, events, &outcomes, &own_install)?;
    write_health(
        client,
        prepared,
        shard,
        &BatchHealth::of(events, &outcomes, dead_letters, own_install),
    )?;
    Ok(outcomes)
}

/// The identity id of each event (see `identity::ident_key`), creating
/// the missing identities with their persons resolved from the links.
fn ident_ids(
    client: &mut Client,
    prepared: &Prepared,
    events: &[&NewEvent],
) -> Result<Vec<Option<i64>>, ::postgres::Error> {
    let keys: Vec<(&str, &str, &str)> = events.iter().map(|e| identity::ident_key(e)).collect();
    let distinct: BTreeSet<(&str, &str, &str)> = keys.iter().copied().collect();
    let mut found: HashMap<(String, String, String), i64> = HashMap::new();
    let collect = |found: &mut HashMap<(String, String, String), i64>,
                   rows: Vec<::postgres::Row>|
     -> Result<(), ::postgres::Error> {
        for row in rows {
            found.insert(
                (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?),
                row.try_get(0)?,
            );
        }
        Ok(())
    };
    let (u, a, i) = columns(&distinct);
    collect(
        &mut found,
        client.query(&prepared.select_idents, &[&u, &a, &i])?,
    )?;
    let missing: BTreeSet<(&str, &str, &str)> = distinct
        .iter()
        .filter(|k| !found.contains_key(&owned(k)))
        .copied()
        .collect();
    if !missing.is_empty() {
        client.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&IDENT_LOCK])?;
        let (u, a, i) = columns(&missing);
        collect(
            &mut found,
            client.query(&prepared.insert_idents, &[&u, &a, &i])?,
        )?;
    }
    // Every key is found: the upsert returns the rows it inserted and
    // those another transaction inserted first.
    Ok(keys.iter().map(|k| found.get(&owned(k)).copied()).collect())
}

fn owned(k: &(&str, &str, &str)) -> (String, String, String) {
    (k.0.to_owned(), k.1.to_owned(), k.2.to_owned())
}

fn columns<'a>(
    keys: &BTreeSet<(&'a str, &'a str, &'a str)>,
) -> (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>) {
    (
        keys.iter().map(|k| k.0).collect(),
        keys.iter().map(|k| k.1).collect(),
        keys.iter().map(|k| k.2).collect(),
    )
}

/// Seen seqs (of every event, whatever its outcome: the server saw it)
/// and drops (of accepted events) merged into each install's ranges, for
/// the installs of the events' own source (`own_install`).
fn write_installs(
    client: &mut Client,
    prepared: &Prepared,
    events: &[NewEvent],
    outcomes: &[WriteOutcome],
    own_install: &dyn Fn(&NewEvent) -> bool,
) -> Result<(), ::postgres::Error> {
    let mut seqs: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut sources: BTreeMap<&str, &str> = BTreeMap::new();
    let mut drops: Vec<(&str, i64, i64, &str)> = Vec::new();
    for (e, o) in events.iter().zip(outcomes) {
        let Some(install) = e.install_id.as_deref().filter(|_| own_install(e)) else {
            continue;
        };
        sources.insert(install, &e.source);
        let entry = seqs.entry(install).or_default();
        if let Some(seq) = tracked(e.seq) {
            entry.push(seq as u64);
        }
        if *o == WriteOutcome::Accepted {
            for d in &e.drops {
                if d.from >= 1 && d.from <= d.to && d.to <= MAX_TRACKED_SEQ {
                    drops.push((install, d.from as i64, d.to as i64, d.reason.as_str()));
                }
            }
        }
    }
    if seqs.is_empty() {
        return Ok(());
    }
    let new: BTreeMap<&str, Vec<SeqRange>> = seqs
        .into_iter()
        .map(|(i, mut s)| (i, ranges::ranges_from_seqs(&mut s)))
        .collect();
    let mut max_by_install: BTreeMap<&str, i64> = new
        .iter()
        .map(|(i, r)| (*i, r.last().map_or(0, |l| l.1 as i64)))
        .collect();
    for (install, _, to, _) in &drops {
        let max = max_by_install.entry(install).or_default();
        *max = (*max).max(*to);
    }
    let install_ids: Vec<&str> = max_by_install.keys().copied().collect();
    let maxes: Vec<i64> = max_by_install.values().copied().collect();
    let owner_ids: Vec<&str> = install_ids.iter().map(|i| sources[i]).collect();
    let written: HashSet<String> = client
        .query(
            &prepared.upsert_installs,
            &[&install_ids, &maxes, &owner_ids],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    drops.retain(|d| written.contains(d.0));
    if !drops.is_empty() {
        let drop_ids: Vec<&str> = drops.iter().map(|d| d.0).collect();
        let drop_froms: Vec<i64> = drops.iter().map(|d| d.1).collect();
        let drop_tos: Vec<i64> = drops.iter().map(|d| d.2).collect();
        let drop_reasons: Vec<&str> = drops.iter().map(|d| d.3).collect();
        client.execute(
            &prepared.insert_drops,
            &[&drop_ids, &drop_froms, &drop_tos, &drop_reasons],
        )?;
    }

    // Read after the lock above (a new statement, a new snapshot): the
    // ranges another collector committed meanwhile are seen.
    let spans: Vec<(&str, i64, i64)> = new
        .iter()
        .filter(|(i, _)| written.contains(**i))
        .filter_map(|(i, r)| {
            let (first, last) = (r.first()?, r.last()?);
            let lo = first.0.saturating_sub(1) as i64;
            let hi = last.1.saturating_add(1).min(MAX_TRACKED_SEQ) as i64;
            Some((*i, lo, hi))
        })
        .collect();
    if spans.is_empty() {
        return Ok(());
    }
    let span_ids: Vec<&str> = spans.iter().map(|s| s.0).collect();
    let los: Vec<i64> = spans.iter().map(|s| s.1).collect();
    let his: Vec<i64> = spans.iter().map(|s| s.2).collect();
    let mut old: HashMap<String, Vec<SeqRange>> = HashMap::new();
    for row in client.query(&prepared.select_seen, &[&span_ids, &los, &his])? {
        old.entry(row.try_get(0)?).or_default().push((
            row.try_get::<_, i64>(1)? as u64,
            row.try_get::<_, i64>(2)? as u64,
        ));
    }
    let (mut del_ids, mut del_froms) = (Vec::new(), Vec::new());
    let (mut up_ids, mut up_froms, mut up_tos) = (Vec::new(), Vec::new(), Vec::new());
    for (install, fresh) in new.iter().filter(|(i, _)| written.contains(**i)) {
        let mut stored = old.remove(*install).unwrap_or_default();
        stored.sort_unstable();
        let merged = ranges::merge(&stored, fresh);
        if merged == stored {
            continue;
        }
        let starts: HashSet<u64> = merged.iter().map(|r| r.0).collect();
        for (from, _) in stored.iter().filter(|r| !starts.contains(&r.0)) {
            del_ids.push(*install);
            del_froms.push(*from as i64);
        }
        for range in merged.iter().filter(|r| !stored.contains(r)) {
            up_ids.push(*install);
            up_froms.push(range.0 as i64);
            up_tos.push(range.1 as i64);
        }
    }
    if !del_ids.is_empty() || !up_ids.is_empty() {
        client.execute(
            &prepared.write_seen,
            &[&del_ids, &del_froms, &up_ids, &up_froms, &up_tos],
        )?;
    }
    Ok(())
}

fn write_health(
    client: &mut Client,
    prepared: &Prepared,
    shard: i32,
    h: &BatchHealth,
) -> Result<(), ::postgres::Error> {
    let reasons: Vec<&str> = h.rejections.keys().copied().collect();
    let reason_counts: Vec<i64> = h.rejections.values().copied().collect();
    let metrics: Vec<&str> = h.histograms.keys().map(|k| k.0).collect();
    let bounds: Vec<i64> = h.histograms.keys().map(|k| k.1).collect();
    let bucket_counts: Vec<i64> = h.histograms.values().copied().collect();
    let b: Vec<&health::Beacon> = h.beacons.values().collect();
    let ids: Vec<&str> = b.iter().map(|b| b.install_id.as_str()).collect();
    let int = |f: fn(&health::Beacon) -> i64| -> Vec<i64> { b.iter().map(|b| f(b)).collect() };
    let ats = int(|b| b.at);
    let received = int(|b| b.received_at);
    let pending = int(|b| b.pending);
    let pending_bytes = int(|b| b.pending_bytes);
    let ages: Vec<f64> = b.iter().map(|b| b.oldest_pending_age_s).collect();
    let failures = int(|b| b.consecutive_failures);
    let backoffs = int(|b| b.backoff_ms);
    let persistence = int(|b| b.persistence_errors);
    let p50: Vec<Option<f64>> = b.iter().map(|b| b.sync_latency_p50_ms).collect();
    let p99: Vec<Option<f64>> = b.iter().map(|b| b.sync_latency_p99_ms).collect();
    let offsets = int(|b| b.clock_offset_ms);
    client.execute(
        &prepared.write_health,
        &[
            &shard,
            &h.hour,
            &h.accepted,
            &h.duplicate,
            &h.rejected,
            &reasons,
            &reason_counts,
            &metrics,
            &bounds,
            &bucket_counts,
            &ids,
            &ats,
            &received,
            &pending,
            &pending_bytes,
            &ages,
            &failures,
            &backoffs,
            &persistence,
            &p50,
            &p99,
            &offsets,
        ],
    )?;
    Ok(())
}

fn read_pipeline_health(
    tx: &mut ::postgres::Transaction<'_>,
    from: i64,
    to: i64,
    now: i64,
) -> Result<PipelineFigures, ::postgres::Error> {
    let u = |v: i64| v.max(0) as u64;
    let mut figures = PipelineFigures::default();
    let (start, end) = health::window_hours(from, to);
    figures.window.from = start;
    figures.window.to = end;
    let five = |r: &::postgres::Row| -> Result<[u64; 5], ::postgres::Error> {
        Ok([
            u(r.try_get(0)?),
            u(r.try_get(1)?),
            u(r.try_get(2)?),
            u(r.try_get(3)?),
            u(r.try_get(4)?),
        ])
    };
    let t = five(&tx.query_one(health::TOTALS_SQL, &[])?)?;
    figures.totals = health::HealthTotals {
        batches: t[0],
        batches_ok: t[1],
        accepted: t[2],
        duplicate: t[3],
        rejected: t[4],
    };
    let window = &mut figures.window;
    [
        window.batches,
        window.batches_ok,
        window.accepted,
        window.duplicate,
        window.rejected,
    ] = five(&tx.query_one(health::WINDOW_SQL, &[&start, &end])?)?;
    for r in tx.query(health::REJECTIONS_SQL, &[&start, &end])? {
        window.rejections.insert(r.try_get(0)?, u(r.try_get(1)?));
    }
    for r in tx.query(health::HISTOGRAMS_SQL, &[&start, &end])? {
        let metric: String = r.try_get(0)?;
        health::add_histogram_row(window, &metric, r.try_get(1)?, r.try_get(2)?);
    }
    let k = tx.query_one(health::COMPLETENESS_SQL, &[])?;
    figures.completeness = health::Completeness {
        installs: u(k.try_get(0)?),
        installs_with_gaps: u(k.try_get(1)?),
        missing: u(k.try_get(2)?),
    };
    let f = tx.query_one(
        health::FLEET_SQL,
        &[
            &now.saturating_sub(health::FLEET_MAX_AGE_MS),
            &health::STALE_QUEUE_AGE_S,
        ],
    )?;
    figures.fleet = health::Fleet {
        installs_reporting: u(f.try_get(0)?),
        pending_events: u(f.try_get(1)?),
        oldest_pending_age_s: f.try_get(2)?,
        installs_with_persistence_errors: u(f.try_get(3)?),
        installs_in_backoff: u(f.try_get(4)?),
        installs_oldest_pending_over_24h: u(f.try_get(5)?),
    };
    Ok(figures)
}

impl Store for PostgresStore {
    fn alert_outbox(&self) -> Option<&dyn AlertOutbox> {
        Some(self)
    }

    fn write_batch(
        &self,
        events: &[NewEvent],
        dead_letters: &[DeadLetter],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let shard = self.shard();
        self.transaction(true, |conn, tombstones_exist| {
            let flags = Flags {
                tombstones_exist,
                legacy_events: self.legacy_events,
                dead_letters: self.dead_letter_limits,
            };
            write(conn, events, dead_letters, shard, flags)
        })
    }

    fn stats(&self) -> Result<Stats, StoreError> {
        let mut conn = self.pool.get()?;
        let row = conn
            .client
            .query_one(
                "SELECT sum(accepted)::int8, sum(duplicate)::int8, sum(rejected)::int8, sum(stored)::int8 \
                 FROM counters",
                &[],
            )
            .map_err(pg_error)?;
        // An empty sum is NULL; a shard can go negative after a deletion,
        // the sum cannot.
        let get = |i: usize| -> Result<u64, StoreError> {
            Ok(row
                .try_get::<_, Option<i64>>(i)
                .map_err(pg_error)?
                .unwrap_or(0)
                .max(0) as u64)
        };
        Ok(Stats {
            accepted: get(0)?,
            duplicate: get(1)?,
            rejected: get(2)?,
            events: get(3)?,
        })
    }

    fn count_events(
        &self,
        event: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<EventCount, StoreError> {
        let sql = identity::count_sql("$2", "$3", "$1");
        let mut conn = self.pool.get()?;
        let row = conn
            .client
            .query_one(
                &sql,
                &[&event, &from.unwrap_or(i64::MIN), &to.unwrap_or(i64::MAX)],
            )
            .map_err(pg_error)?;
        Ok(EventCount {
            count: row.try_get::<_, i64>(0).map_err(pg_error)? as u64,
            users: row.try_get::<_, i64>(1).map_err(pg_error)? as u64,
        })
    }

    fn install(&self, install_id: &str) -> Result<Option<InstallReport>, StoreError> {
        let mut conn = self.pool.get()?;
        // One snapshot for the three reads.
        let mut tx = conn
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg_error)?;
        let Some(max_seq) = tx
            .query_opt(
                "SELECT max_seq FROM installs WHERE install_id = $1",
                &[&install_id],
            )
            .map_err(pg_error)?
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()
            .map_err(pg_error)?
        else {
            return Ok(None);
        };
        let seen: Vec<SeqRange> = tx
            .query(
                "SELECT from_seq, to_seq FROM install_seen WHERE install_id = $1 ORDER BY from_seq",
                &[&install_id],
            )
            .map_err(pg_error)?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<_, i64>(0)? as u64,
                    r.try_get::<_, i64>(1)? as u64,
                ))
            })
            .collect::<Result<_, ::postgres::Error>>()
            .map_err(pg_error)?;
        let drops: Vec<(u64, u64, String)> = tx
            .query(
                "SELECT from_seq, to_seq, reason FROM install_drops WHERE install_id = $1",
                &[&install_id],
            )
            .map_err(pg_error)?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<_, i64>(0)? as u64,
                    r.try_get::<_, i64>(1)? as u64,
                    r.try_get(2)?,
                ))
            })
            .collect::<Result<_, ::postgres::Error>>()
            .map_err(pg_error)?;
        tx.commit().map_err(pg_error)?;
        Ok(Some(ranges::report(max_seq as u64, &seen, drops)))
    }

    fn delete_user(&self, user_id: &str, requested_at: i64) -> Result<DeletionReport, StoreError> {
        let sql = identity::DeletionSql::new("$1", "octet_length(raw)");
        let shard = self.shard();
        self.transaction(false, |conn, _| {
            let client = &mut conn.client;
            client.execute(
                "INSERT INTO tombstones (user_id, requested_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&user_id, &requested_at],
            )?;
            let aliased: Vec<String> = client
                .query(&sql.aliased, &[&user_id])?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            let deleted = client.execute(&sql.events, &[&user_id])? as i64;
            let letters: Vec<i32> = client
                .query(&sql.dead_letters, &[&user_id])?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            client.execute(&sql.activity, &[&user_id])?;
            client.execute(&sql.idents, &[&user_id])?;
            for statement in &sql.unlink {
                client.execute(statement, &[&user_id])?;
            }
            for alias in &aliased {
                client.execute(&identity::repoint_sql("u", "$1"), &[alias])?;
            }
            let letter_bytes: i64 = letters.iter().map(|&b| i64::from(b)).sum();
            client.execute(
                "UPDATE counters SET stored = stored - $1, dead_letter_rows = dead_letter_rows - $2, \
                 dead_letter_bytes = dead_letter_bytes - $3 WHERE shard = $4",
                &[&deleted, &(letters.len() as i64), &letter_bytes, &shard],
            )?;
            client.execute(
                "INSERT INTO deletions (user_id, requested_at, status, deleted_events) \
                 VALUES ($1, $2, $3, $4)",
                &[
                    &user_id,
                    &requested_at,
                    &DeletionStatus::Done.as_str(),
                    &deleted,
                ],
            )?;
            Ok(DeletionReport {
                deleted_events: deleted as u64,
                deleted_dead_letters: letters.len() as u64,
                aliased_user_ids: aliased,
            })
        })
    }

    fn is_deleted(&self, user_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.get()?;
        let row = conn
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM tombstones WHERE user_id = $1)",
                &[&user_id],
            )
            .map_err(pg_error)?;
        row.try_get(0).map_err(pg_error)
    }

    fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        conn.client
            .simple_query("SELECT 1")
            .map(|_| ())
            .map_err(pg_error)
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.pool.get()?;
        let rows = conn
            .client
            .query(
                "SELECT message_id, reason, detail, received_at, raw FROM dead_letters \
                 ORDER BY row_id DESC LIMIT $1",
                &[&limit],
            )
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                Ok(StoredDeadLetter {
                    message_id: r.try_get(0)?,
                    reason: r.try_get(1)?,
                    detail: r.try_get(2)?,
                    received_at: r.try_get(3)?,
                    raw: r.try_get(4)?,
                })
            })
            .collect::<Result<_, ::postgres::Error>>()
            .map_err(pg_error)
    }

    fn add_batches(&self, at: i64, batches: u64, succeeded: u64) -> Result<(), StoreError> {
        if batches == 0 {
            return Ok(());
        }
        let shard = self.shard();
        let hour = health::hour_of(at);
        let (batches, succeeded) = (batches as i64, succeeded as i64);
        let mut conn = self.pool.get()?;
        conn.client
            .execute(ADD_BATCHES_SQL, &[&shard, &hour, &batches, &succeeded])
            .map(|_| ())
            .map_err(pg_error)
    }

    fn pipeline_health(&self, from: i64, to: i64, now: i64) -> Result<PipelineFigures, StoreError> {
        let mut conn = self.pool.get()?;
        // One snapshot for every figure.
        let mut tx = conn
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg_error)?;
        let figures = read_pipeline_health(&mut tx, from, to, now).map_err(pg_error)?;
        tx.commit().map_err(pg_error)?;
        Ok(figures)
    }

    fn prune_health(&self, before: i64) -> Result<u64, StoreError> {
        let mut conn = self.pool.get()?;
        // One statement per table, each its own transaction: they touch
        // only past hours, which no batch writes any more.
        let mut deleted = 0;
        for sql in health::PRUNE_SQL {
            deleted += conn.client.execute(sql, &[&before]).map_err(pg_error)?;
        }
        // Notifications done with (delivered or given up) as long ago.
        deleted += conn
            .client
            .execute(
                "DELETE FROM alert_outbox WHERE done_at IS NOT NULL AND done_at < $1",
                &[&before],
            )
            .map_err(pg_error)?;
        Ok(deleted)
    }

    fn expire_events(
        &self,
        scope: ExpiryScope<'_>,
        before: i64,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let shard = self.shard();
        let mut conn = self.pool.get()?;
        let mut tx = conn.client.transaction().map_err(pg_error)?;
        // Chunks of collectors sharing the database take turns: each must
        // see what the others deleted to tell an emptied slot (below).
        // Ingest never takes this lock.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RETENTION_LOCK])
            .map_err(pg_error)?;
        let rows = match scope {
            ExpiryScope::Event(name) => {
                tx.query(EXPIRE_EVENT_SQL, &[&name, &before, &limit, &shard])
            }
            ExpiryScope::AllExcept(names) => {
                tx.query(EXPIRE_ALL_EXCEPT_SQL, &[&names, &before, &limit, &shard])
            }
        }
        .map_err(pg_error)?;
        let mut expired = query::Expired::default();
        for row in &rows {
            expired.add(
                row.try_get(0).map_err(pg_error)?,
                row.try_get(1).map_err(pg_error)?,
                row.try_get(2).map_err(pg_error)?,
            );
        }
        let candidates: Vec<(i64, i64)> = expired
            .slots
            .iter()
            .flat_map(|(slot, idents)| idents.iter().map(move |ident| (*slot, *ident)))
            .collect();
        if !candidates.is_empty() {
            // Locked before the survivors are read: a batch that upserted
            // one of these rows is waited for, and the reads below (each
            // statement its own snapshot) see its events.
            let (slots, idents): (Vec<i64>, Vec<i64>) = candidates.into_iter().unzip();
            tx.execute(LOCK_EXPIRED_SLOTS_SQL, &[&slots, &idents])
                .map_err(pg_error)?;
        }
        let mut emptied = Vec::new();
        for slot in expired.slots.keys() {
            let (from, to) = query::slot_span(*slot);
            let survivors: HashSet<i64> = tx
                .query(query::SLOT_SURVIVORS_SQL, &[&from, &to])
                .map_err(pg_error)?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(pg_error)?;
            emptied.extend(expired.emptied(*slot, &survivors));
        }
        if !emptied.is_empty() {
            let (slots, idents): (Vec<i64>, Vec<i64>) = emptied.into_iter().unzip();
            tx.execute(DELETE_EMPTIED_SLOTS_SQL, &[&slots, &idents])
                .map_err(pg_error)?;
        }
        tx.commit().map_err(pg_error)?;
        Ok(rows.len() as u64)
    }

    fn expire_dead_letters(&self, before: i64, limit: usize) -> Result<u64, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.pool.get()?;
        // One statement, its own transaction, with the counters of one
        // shard. `SKIP LOCKED`: collectors sharing the database delete
        // different rows at once.
        let row = conn
            .client
            .query_one(
                "WITH gone AS (DELETE FROM dead_letters WHERE row_id IN (SELECT row_id \
                 FROM dead_letters WHERE received_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING octet_length(raw) AS bytes), \
                 n AS (SELECT count(*) AS rows, coalesce(sum(bytes), 0)::int8 AS bytes FROM gone), \
                 c AS (UPDATE counters SET dead_letter_rows = dead_letter_rows - n.rows, \
                 dead_letter_bytes = dead_letter_bytes - n.bytes FROM n WHERE shard = $3 \
                 AND n.rows > 0) SELECT rows FROM n",
                &[&before, &limit, &self.shard()],
            )
            .map_err(pg_error)?;
        Ok(row.try_get::<_, i64>(0).map_err(pg_error)?.max(0) as u64)
    }

    fn dead_letter_totals(&self) -> Result<DeadLetterTotals, StoreError> {
        let mut conn = self.pool.get()?;
        let row = conn
            .client
            .query_one(DEAD_LETTER_TOTALS_SQL, &[])
            .map_err(pg_error)?;
        let n = |i: usize| -> Result<u64, StoreError> {
            Ok(row.try_get::<_, i64>(i).map_err(pg_error)?.max(0) as u64)
        };
        Ok(DeadLetterTotals {
            kept: n(0)?,
            bytes: n(1)?,
            not_kept: n(2)?,
            truncated: n(3)?,
        })
    }

    fn deletions(&self, limit: usize) -> Result<Vec<DeletionRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.pool.get()?;
        let rows = conn
            .client
            .query(
                "SELECT user_id, requested_at, status, deleted_events FROM deletions \
                 ORDER BY row_id DESC LIMIT $1",
                &[&limit],
            )
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                let status: &str = r.try_get(2).map_err(pg_error)?;
                Ok(DeletionRecord {
                    user_id: r.try_get(0).map_err(pg_error)?,
                    requested_at: r.try_get(1).map_err(pg_error)?,
                    status: DeletionStatus::from_stored(status)?,
                    deleted_events: r.try_get::<_, i64>(3).map_err(pg_error)?.max(0) as u64,
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
        let mut conn = self.pool.get()?;
        let rows = match after {
            None => conn.client.query(
                "SELECT source, message_id, ts_corrected, received_at, raw FROM events \
                 WHERE ts_corrected >= $1 AND ts_corrected < $2 \
                 ORDER BY ts_corrected, source, message_id LIMIT $3",
                &[&from, &to, &limit],
            ),
            Some(ExportCursor {
                ts_corrected,
                tie: CursorTie::MessageId { source, id },
            }) => conn.client.query(
                "SELECT source, message_id, ts_corrected, received_at, raw FROM events \
                 WHERE (ts_corrected, source, message_id) > ($1, $2, $3) AND ts_corrected < $4 \
                 ORDER BY ts_corrected, source, message_id LIMIT $5",
                &[ts_corrected, source, id, &to, &limit],
            ),
            Some(_) => {
                return Err(StoreError::Backend(
                    "an export cursor of another store kind".into(),
                ))
            }
        }
        .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                let ts_corrected = r.try_get(2)?;
                Ok(ExportedEvent {
                    ts_corrected,
                    received_at: r.try_get(3)?,
                    raw: r.try_get(4)?,
                    cursor: ExportCursor {
                        ts_corrected,
                        tie: CursorTie::MessageId {
                            source: r.try_get(0)?,
                            id: r.try_get(1)?,
                        },
                    },
                })
            })
            .collect::<Result<_, ::postgres::Error>>()
            .map_err(pg_error)
    }

    fn count_stored(&self, from: i64, to: i64) -> Result<u64, StoreError> {
        let mut conn = self.pool.get()?;
        let row = conn
            .client
            .query_one(
                "SELECT count(*) FROM events WHERE ts_corrected >= $1 AND ts_corrected < $2",
                &[&from, &to],
            )
            .map_err(pg_error)?;
        Ok(row.try_get::<_, i64>(0).map_err(pg_error)?.max(0) as u64)
    }

    fn install_events(
        &self,
        install_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<InstallEvent>, StoreError> {
        let sql = identity::install_events_sql("$1", "$2", "$3");
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.pool.get()?;
        let rows = conn
            .client
            .query(&sql, &[&install_id, &after, &limit])
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                Ok(InstallEvent {
                    seq: r.try_get::<_, i64>(0)? as u64,
                    kind: r.try_get(1)?,
                    event: r.try_get(2)?,
                    person: r.try_get(3)?,
                })
            })
            .collect::<Result<_, ::postgres::Error>>()
            .map_err(pg_error)
    }
}

/// The server's clock in Unix ms: leases compare times of one clock,
/// whatever the collectors' clocks say.
const SERVER_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::int8";

impl AlertOutbox for PostgresStore {
    fn release_alert_lease(&self, holder: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.get()?;
        conn.client
            .execute(
                "UPDATE alert_sender SET expires_at = 0 WHERE holder = $1",
                &[&holder],
            )
            .map(|n| n > 0)
            .map_err(pg_error)
    }

    fn alert_round(
        &self,
        holder: &str,
        lease: Duration,
        rules: &[RuleNotice<'_>],
    ) -> Result<bool, StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.pool.get()?;
        let mut tx = conn.client.transaction().map_err(pg_error)?;
        // The lease row stays locked until the commit, held or not: the
        // rounds of all collectors take turns, so the holder's check and
        // its writes below are one step.
        let held = tx
            .query_opt(
                &format!(
                    "INSERT INTO alert_sender AS s (id, holder, expires_at) \
                     VALUES (1, $1, {SERVER_NOW_MS} + $2) ON CONFLICT (id) DO UPDATE \
                     SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE s.holder = excluded.holder OR s.expires_at <= {SERVER_NOW_MS} \
                     RETURNING holder"
                ),
                &[&holder, &lease_ms],
            )
            .map_err(pg_error)?
            .is_some();
        if held {
            let queued: HashMap<String, String> = tx
                .query("SELECT rule, state FROM alert_states", &[])
                .map_err(pg_error)?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, ::postgres::Error>>()
                .map_err(pg_error)?;
            for notice in rules {
                let last = queued.get(notice.rule).map_or("ok", String::as_str);
                if last == notice.state {
                    continue;
                }
                tx.execute(
                    &format!(
                        "INSERT INTO alert_outbox (rule, body, queued_at) \
                         VALUES ($1, $2, {SERVER_NOW_MS})"
                    ),
                    &[&notice.rule, &notice.body],
                )
                .map_err(pg_error)?;
                tx.execute(
                    "INSERT INTO alert_states (rule, state) VALUES ($1, $2) \
                     ON CONFLICT (rule) DO UPDATE SET state = excluded.state",
                    &[&notice.rule, &notice.state],
                )
                .map_err(pg_error)?;
            }
        }
        tx.commit().map_err(pg_error)?;
        Ok(held)
    }

    fn next_notification(
        &self,
        holder: &str,
        margin: Duration,
    ) -> Result<Option<QueuedNotification>, StoreError> {
        let margin_ms = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.pool.get()?;
        let row = conn
            .client
            .query_opt(
                &format!(
                    "SELECT o.id, o.rule, o.body, o.attempts FROM alert_outbox o \
                     WHERE o.done_at IS NULL AND EXISTS (SELECT 1 FROM alert_sender s \
                     WHERE s.id = 1 AND s.holder = $1 AND s.expires_at > {SERVER_NOW_MS} + $2) \
                     ORDER BY o.id LIMIT 1"
                ),
                &[&holder, &margin_ms],
            )
            .map_err(pg_error)?;
        row.map(|r| {
            Ok(QueuedNotification {
                id: r.try_get(0)?,
                rule: r.try_get(1)?,
                body: r.try_get(2)?,
                attempts: r.try_get::<_, i32>(3)?.max(0) as u32,
            })
        })
        .transpose()
        .map_err(pg_error)
    }

    fn notification_attempted(&self, id: i64, attempt: Attempt) -> Result<bool, StoreError> {
        let (delivered, max_attempts) = match attempt {
            Attempt::Delivered => (true, 0),
            Attempt::Failed { max_attempts } => {
                (false, i32::try_from(max_attempts).unwrap_or(i32::MAX))
            }
        };
        let mut conn = self.pool.get()?;
        let row = conn
            .client
            .query_opt(
                &format!(
                    "UPDATE alert_outbox SET attempts = attempts + 1, delivered = $2, \
                     done_at = CASE WHEN $2 OR attempts + 1 >= $3 THEN {SERVER_NOW_MS} END \
                     WHERE id = $1 AND done_at IS NULL RETURNING done_at IS NOT NULL"
                ),
                &[&id, &delivered, &max_attempts],
            )
            .map_err(pg_error)?;
        match row {
            Some(r) => r.try_get(0).map_err(pg_error),
            // Already done with (recorded by another collector).
            None => Ok(true),
        }
    }
}

/// One chunk of one event name's expired events and the counter, in one
/// statement (`$1` the name, `$2` the cutoff, `$3` the chunk size, `$4`
/// the counter shard), returning the time, identity and name of each
/// deleted event. `SKIP LOCKED`: a row another transaction is deleting
/// (a deletion request) is left to it, so the counter stays exact.
const EXPIRE_EVENT_SQL: &str = "WITH gone AS (DELETE FROM events WHERE (source, message_id) IN \
    (SELECT source, message_id FROM events WHERE event = $1 AND ts_corrected < $2 LIMIT $3 \
    FOR UPDATE SKIP LOCKED) RETURNING ts_corrected, ident, event), \
    n AS (SELECT count(*) AS deleted FROM gone), \
    c AS (UPDATE counters SET stored = stored - n.deleted FROM n WHERE shard = $4 AND n.deleted > 0) \
    SELECT ts_corrected, ident, event FROM gone";

/// The same for every event name but those in the array `$1`.
const EXPIRE_ALL_EXCEPT_SQL: &str = "WITH gone AS (DELETE FROM events WHERE (source, message_id) IN \
    (SELECT source, message_id FROM events WHERE ts_corrected < $2 \
    AND (event IS NULL OR event <> ALL($1::text[])) LIMIT $3 FOR UPDATE SKIP LOCKED) \
    RETURNING ts_corrected, ident, event), \
    n AS (SELECT count(*) AS deleted FROM gone), \
    c AS (UPDATE counters SET stored = stored - n.deleted FROM n WHERE shard = $4 AND n.deleted > 0) \
    SELECT ts_corrected, ident, event FROM gone";

/// Locks the `active_slots` rows (`$1` slots, `$2` identities) of the
/// product events a retention chunk deleted, in key order (the order
/// batches lock them in, [`ADD_ACTIVITY_SQL`]), before the chunk reads
/// which of them still have events: it waits for the batches that
/// upserted them, so their events are seen.
const LOCK_EXPIRED_SLOTS_SQL: &str = "SELECT 1 FROM active_slots a \
    JOIN unnest($1::int8[], $2::int8[]) AS d(slot, ident) ON a.slot = d.slot AND a.ident = d.ident \
    ORDER BY a.slot, a.ident FOR UPDATE OF a";

/// The `active_slots` rows (`$1` slots, `$2` identities) a retention chunk
/// emptied.
///
/// `event_names` is not cleaned here: ingest adds a batch's names with
/// `ON CONFLICT DO NOTHING`, which takes no lock on a row it finds, so a
/// batch in flight with the last expired name would keep its event while
/// the name went, hiding that event from the "all events" queries until
/// the next batch with that name. A name left without events is harmless
/// for answers: it costs those queries one empty index range.
const DELETE_EMPTIED_SLOTS_SQL: &str = "DELETE FROM active_slots a \
    USING unnest($1::int8[], $2::int8[]) AS d(slot, ident) \
    WHERE a.slot = d.slot AND a.ident = d.ident";
