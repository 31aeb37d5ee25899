//! Deletion on SQLite: a user's tombstone, events, dead letters,
//! identities and links go in one writer transaction, recorded in
//! `deletions` (see the [store module](crate::store) for what a deletion
//! reaches).
//!
//! The writer sets its `tombstones_exist` flag before it writes the
//! tombstone, so from that transaction on every event is checked against
//! the tombstones. After the commit the WAL is truncated ([`erase_wal`]),
//! so the deleted values do not stay readable in old WAL frames; SQLite's
//! `secure_delete` zeroes the freed pages of the database file.

use super::{db_error, SqliteStore, ERASE_WAL_TIMEOUT};
use crate::store::identity;
use crate::store::{DeletionRecord, DeletionReport, DeletionStatus, PersonKind, StoreError};
use rusqlite::{params, Connection};

pub(super) fn delete_user(
    store: &SqliteStore,
    user_id: &str,
    requested_at: i64,
) -> Result<DeletionReport, StoreError> {
    let sql = identity::DeletionSql::new("?1", "length(CAST(raw AS BLOB))");
    let report = store.writer.run(0, |state| {
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
        lower_counters(conn, deleted, &letters)?;
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
            linked_user_ids: Vec::new(),
        })
    })?;
    erase_wal(store);
    Ok(report)
}

pub(super) fn delete_device(
    store: &SqliteStore,
    kind: PersonKind,
    id: &str,
    requested_at: i64,
) -> Result<DeletionReport, StoreError> {
    let Some(link) = kind.link_kind() else {
        return delete_user(store, id, requested_at);
    };
    let sql = identity::DeviceDeletionSql::new(link, "?1", "length(CAST(raw AS BLOB))");
    let report = store.writer.run(0, |state| {
        // As for a user: from now on every event is checked.
        state.tombstones_exist = true;
        state.known.clear();
        let conn = &state.conn;
        let run = |sql: &str| {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.execute([id]))
                .map_err(db_error)
        };
        let linked: Vec<String> = conn
            .prepare_cached(&sql.linked)
            .and_then(|mut s| s.query_map([id], |r| r.get(0))?.collect())
            .map_err(db_error)?;
        let deleted = run(&sql.events)? as i64;
        let letters: Vec<i64> = conn
            .prepare_cached(&sql.dead_letters)
            .and_then(|mut s| s.query_map([id], |r| r.get(0))?.collect())
            .map_err(db_error)?;
        run(&sql.activity)?;
        run(&sql.idents)?;
        run(&sql.tombstone)?;
        run(&sql.unlink)?;
        lower_counters(conn, deleted, &letters)?;
        conn.prepare_cached(
            "INSERT INTO deletions (user_id, requested_at, status, deleted_events, kind) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                requested_at,
                DeletionStatus::Done.as_str(),
                deleted,
                kind.as_str()
            ])
        })
        .map_err(db_error)?;
        Ok(DeletionReport {
            deleted_events: deleted as u64,
            deleted_dead_letters: letters.len() as u64,
            aliased_user_ids: Vec::new(),
            linked_user_ids: linked,
        })
    })?;
    erase_wal(store);
    Ok(report)
}

pub(super) fn is_deleted(store: &SqliteStore, user_id: &str) -> Result<bool, StoreError> {
    store.readers.with(|c| tombstoned(c, user_id))
}

pub(super) fn deletions(
    store: &SqliteStore,
    limit: usize,
) -> Result<Vec<DeletionRecord>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<(String, i64, String, i64, String)> = store.readers.with(|c| {
        c.prepare_cached(
            "SELECT user_id, requested_at, status, deleted_events, kind FROM deletions \
             ORDER BY row_id DESC LIMIT ?1",
        )
        .and_then(|mut s| {
            s.query_map([limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .map_err(db_error)
    })?;
    rows.into_iter()
        .map(|(user_id, requested_at, status, deleted, kind)| {
            Ok(DeletionRecord {
                kind: PersonKind::from_stored(&kind)?,
                user_id,
                requested_at,
                status: DeletionStatus::from_stored(&status)?,
                deleted_events: deleted.max(0) as u64,
            })
        })
        .collect()
}

/// Lowers the totals by what a deletion removed: `deleted` events, and
/// dead letters of the sizes in `letters`.
fn lower_counters(conn: &Connection, deleted: i64, letters: &[i64]) -> Result<(), StoreError> {
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
    .map(|_| ())
    .map_err(db_error)
}

fn tombstoned(conn: &Connection, user: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM tombstones WHERE user_id = ?1)")
        .and_then(|mut s| s.query_row([user], |r| r.get(0)))
        .map_err(db_error)
}

/// Copies the WAL into the database file and truncates it to zero
/// bytes, so the page images a deletion replaced (which still hold the
/// deleted values) leave the WAL now rather than when later commits
/// happen to overwrite them. Ingest waits while it runs (milliseconds
/// for a WAL of [`WAL_AUTOCHECKPOINT_PAGES`](super::WAL_AUTOCHECKPOINT_PAGES)); a reader that keeps it
/// waiting past [`ERASE_WAL_TIMEOUT`] leaves the old frames to the next
/// checkpoint, with a warning.
fn erase_wal(store: &SqliteStore) {
    let truncated = Connection::open(&store.path).and_then(|c| {
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
