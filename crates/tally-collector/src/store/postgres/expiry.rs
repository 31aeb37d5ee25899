//! Retention on PostgreSQL: expired events and dead letters deleted in
//! chunks (`DELETE ... FOR UPDATE SKIP LOCKED`, the counter in the same
//! statement), taking no lock ingest takes on events.
//!
//! A chunk of events also deletes, in its transaction, the `active_slots`
//! rows it emptied. Chunks of several collectors take turns
//! ([`RETENTION_LOCK`]), so each one's check sees what the others deleted;
//! the slot rows are locked before the survivors are read, so a batch
//! adding to one of them is waited for and its event seen (see the
//! [module doc](super) for the full argument).

use super::{pg_error, PostgresStore, RETENTION_LOCK};
use crate::store::query;
use crate::store::{ExpiryScope, RetentionStore, StoreError};
use std::collections::HashSet;

impl RetentionStore for PostgresStore {
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
/// batches lock them in, [`ADD_ACTIVITY_SQL`](super::statements::ADD_ACTIVITY_SQL)), before the chunk reads
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
