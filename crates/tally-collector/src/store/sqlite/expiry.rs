//! Retention on SQLite: expired events and dead letters deleted in
//! chunks, each chunk one short turn of the writer (it waits like a batch
//! and holds the writer for that chunk only), so ingest never waits
//! behind a long deletion.
//!
//! A chunk of events lowers the `stored` counter and settles the rollups
//! it may have emptied in the same transaction: the `active_slots` rows of
//! the slots it finished with whose identity has no product event left
//! there, and the `event_names` rows of names with no event left. A slot
//! the chunk stopped inside is left to the chunk that finishes it.

use super::{db_error, SqliteStore};
use crate::store::query;
use crate::store::{ExpiryScope, RetentionStore, StoreError};
use rusqlite::{params, Connection};
use std::collections::HashSet;

impl RetentionStore for SqliteStore {
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
