//! The SQLite schema: versioned migrations ([`MIGRATIONS`]), applied at
//! open inside one `BEGIN IMMEDIATE` transaction. `schema_version` holds
//! the number applied (one row). A database newer than this binary is
//! refused ([`StoreError::Migration`]), never written to.
//!
//! A released migration is never edited: a change of schema is a new
//! entry, so a database created by any release upgrades through the same
//! steps as one created by this binary.

use super::db_error;
use crate::store::identity;
use crate::store::StoreError;
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;

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

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
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
