//! The statements of the PostgreSQL write path, each one round trip for a
//! whole batch (arrays bound with `unnest`), and [`Prepared`]: all of
//! them prepared once per pooled connection, so a batch costs no parse
//! round trips.
//!
//! Rows reach them sorted by key (ids, installs, slots), so concurrent
//! transactions meet the unique keys and locks in one order and wait on
//! one another rather than deadlock.

use super::pg_error;
use crate::store::identity;
use crate::store::quality;
use crate::store::StoreError;
use ::postgres::{Client, Statement};

/// The positions (from 1) of the events of a batch that belong to a
/// deleted person (`identity::refused_sql`), given their user, anonymous
/// and install ids and their sources as arrays.
pub(super) fn refused_sql() -> String {
    format!(
        "SELECT t.n FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
         WITH ORDINALITY AS t(u, a, i, s, n) WHERE {}",
        identity::refused_sql("t.u", "t.a", "t.i", "t.s")
    )
}

/// The batch's rows in one statement: events (in the arrays' order,
/// sorted by id by the caller), dead
/// letters, and the counters, whose `accepted` is what the insert
/// returned. `$20` counts the events not refused, `$21` the rejected.
pub(super) const INSERT_EVENTS_SQL: &str =
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

/// Adds `$2` plan violations to shard `$1`'s counters (the row the batch
/// already holds; see [`crate::store::quality`]).
pub(super) const ADD_VIOLATIONS_SQL: &str =
    "UPDATE counters SET plan_violations = plan_violations + $2 WHERE shard = $1";

/// The dead-letter counters summed over the shards.
pub(super) const DEAD_LETTER_TOTALS_SQL: &str = "SELECT coalesce(sum(dead_letter_rows), 0)::int8, \
    coalesce(sum(dead_letter_bytes), 0)::int8, coalesce(sum(dead_letters_not_kept), 0)::int8, \
    coalesce(sum(dead_letters_truncated), 0)::int8 FROM counters";

/// The user ids among `$1` that have an identity of their own: some event
/// carried them as its `userId`.
pub(super) const IDENTIFIED_USERS_SQL: &str =
    "SELECT user_id FROM idents WHERE user_id = ANY($1::text[]) \
    AND anonymous_id = '' AND install_id = ''";

/// The owner of each install (see `super::owns`).
pub(super) const INSTALL_OWNERS_SQL: &str =
    "SELECT install_id, source FROM installs WHERE install_id = ANY($1::text[])";

/// Ids and business keys already stored by events recorded before sources
/// were (see `PostgresStore::legacy_events`).
pub(super) const LEGACY_DUPLICATES_SQL: &str = "SELECT message_id FROM events WHERE source = '' \
    AND message_id = ANY($1::text[]) UNION ALL SELECT dedup_key FROM events \
    WHERE source = '' AND dedup_key = ANY($2::text[])";

/// The earliest corrected time wins, then the smaller user id (see the
/// `identity` module). Rows arrive sorted and unique per key.
pub(super) const UPSERT_LINKS_SQL: &str = "INSERT INTO links (kind, id, target, linked_at) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) \
    ON CONFLICT (kind, id) DO UPDATE SET target = excluded.target, linked_at = excluded.linked_at \
    WHERE (excluded.linked_at, excluded.target) < (links.linked_at, links.target)";

pub(super) const SELECT_SEEN_SQL: &str =
    "SELECT s.install_id, s.from_seq, s.to_seq FROM install_seen s \
    JOIN unnest($1::text[], $2::int8[], $3::int8[]) AS b(i, lo, hi) \
    ON s.install_id = b.i AND s.from_seq <= b.hi AND s.to_seq >= b.lo";

/// Rewrites merged ranges: ranges absorbed into another are deleted, the
/// others are upserted by their start (usually one range grows).
pub(super) const WRITE_SEEN_SQL: &str =
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
pub(super) const UPSERT_INSTALLS_SQL: &str =
    "INSERT INTO installs AS t (install_id, max_seq, source) \
    SELECT * FROM unnest($1::text[], $2::int8[], $3::text[]) \
    ON CONFLICT (install_id) DO UPDATE SET max_seq = GREATEST(t.max_seq, excluded.max_seq), \
    source = excluded.source WHERE t.source IN ('', excluded.source) \
    RETURNING install_id";

pub(super) const INSERT_DROPS_SQL: &str =
    "INSERT INTO install_drops (install_id, from_seq, to_seq, reason) \
    SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[]) ON CONFLICT DO NOTHING";

/// One request's health figures (see [`super::health`]), in one round
/// trip: the shard's request counter and hour row, rejections by reason,
/// histogram buckets, and the latest beacon of each install (rows unique
/// and sorted by the caller). A beacon replaces the stored one unless the
/// stored one was captured later.
pub(super) const WRITE_HEALTH_SQL: &str = "WITH c AS (UPDATE counters SET batches = batches + 1, \
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

pub(super) const SELECT_IDENTS_SQL: &str =
    "SELECT i.id, i.user_id, i.anonymous_id, i.install_id FROM idents i \
    JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(user_id, anonymous_id, install_id) \
    USING (user_id, anonymous_id, install_id)";

/// Event names and active slots of the accepted events (sorted, so
/// concurrent batches meet the keys in one order).
///
/// A slot row that exists is locked, not rewritten (`DO UPDATE ... WHERE
/// false` locks the conflicting row and updates nothing): a retention
/// chunk that would delete it as emptied waits for this batch to commit
/// and then sees its event (see `LOCK_EXPIRED_SLOTS_SQL` in [`super::expiry`]). A row that a
/// chunk is deleting makes the upsert wait for that chunk and then insert
/// it again. `DO NOTHING` locks nothing, and the chunk could delete the
/// row this batch's event needs.
pub(super) const ADD_ACTIVITY_SQL: &str = "WITH n AS (INSERT INTO event_names (name) \
    SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING) \
    INSERT INTO active_slots (slot, ident) SELECT * FROM unnest($2::int8[], $3::int8[]) \
    ON CONFLICT (slot, ident) DO UPDATE SET slot = excluded.slot WHERE false";

/// The write path's statements, prepared once per connection so a batch
/// costs no parse round trips.
pub(crate) struct Prepared {
    pub(super) refused: Statement,
    pub(super) insert_events: Statement,
    pub(super) install_owners: Statement,
    pub(super) identified_users: Statement,
    pub(super) legacy_duplicates: Statement,
    pub(super) upsert_links: Statement,
    pub(super) upsert_installs: Statement,
    pub(super) insert_drops: Statement,
    pub(super) select_seen: Statement,
    pub(super) write_seen: Statement,
    pub(super) write_health: Statement,
    pub(super) select_idents: Statement,
    pub(super) insert_idents: Statement,
    pub(super) add_activity: Statement,
    pub(super) quality_count: Statement,
    pub(super) quality_example: Statement,
    pub(super) quality_prune: Statement,
    pub(super) add_violations: Statement,
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
            quality_count: p(quality::UPSERT_COUNT_SQL)?,
            quality_example: p(quality::INSERT_EXAMPLE_SQL)?,
            quality_prune: p(quality::PRUNE_EXAMPLES_SQL)?,
            add_violations: p(ADD_VIOLATIONS_SQL)?,
        })
    }
}
