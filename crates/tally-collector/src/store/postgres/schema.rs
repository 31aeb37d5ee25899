//! The PostgreSQL schema: versioned migrations ([`MIGRATIONS`]), applied
//! at connect in one transaction holding the advisory lock
//! [`MIGRATION_LOCK`], so collectors starting
//! together apply each one once. `schema_version` holds the number
//! applied (one row). A schema newer than this binary is refused
//! ([`StoreError::Migration`]).
//!
//! A released migration is never edited: a change of schema is a new
//! entry, so a database created by any release upgrades through the same
//! steps as one created by this binary.

use super::{pg_error, MIGRATION_LOCK};
use crate::store::identity;
use crate::store::StoreError;
use ::postgres::Client;

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
    // so a collector's cache of persons (see `postgres::queries`) catches up
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

pub(super) fn migrate(client: &mut Client) -> Result<(), StoreError> {
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
