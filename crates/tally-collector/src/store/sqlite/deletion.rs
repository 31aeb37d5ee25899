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
use crate::store::{identity, query};
use crate::store::{DeletionRecord, DeletionReport, DeletionStatus, PersonKind, StoreError};
use rusqlite::{params, Connection};
use std::collections::HashSet;

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
        settle(
            conn,
            user_id,
            PersonKind::User,
            "",
            requested_at,
            deleted,
            &letters,
        )?;
        Ok(DeletionReport {
            deleted_events: deleted as u64,
            deleted_dead_letters: letters.len() as u64,
            aliased_user_ids: aliased,
            linked_user_ids: Vec::new(),
            source: None,
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
        settle(conn, id, kind, "", requested_at, deleted, &letters)?;
        Ok(DeletionReport {
            deleted_events: deleted as u64,
            deleted_dead_letters: letters.len() as u64,
            aliased_user_ids: Vec::new(),
            linked_user_ids: linked,
            source: None,
        })
    })?;
    erase_wal(store);
    Ok(report)
}

/// A deletion scoped to `source`: that source's events and dead letters of
/// the person, the reach computed within it, and a tombstone refusing that
/// source's later events only (see `identity::ScopedDeletionSql`); the
/// active slots the deleted events leave without a product event of
/// their identity are deleted too.
pub(super) fn delete_scoped(
    store: &SqliteStore,
    kind: PersonKind,
    id: &str,
    source: &str,
    requested_at: i64,
) -> Result<DeletionReport, StoreError> {
    let sql = identity::ScopedDeletionSql::new(kind, "?1", "?2", "length(CAST(raw AS BLOB))");
    let report_sql = match kind.link_kind() {
        None => identity::DeletionSql::new("?1", "0").aliased,
        Some(link) => identity::DeviceDeletionSql::new(link, "?1", "0").linked,
    };
    let report = store.writer.run(0, |state| {
        state.tombstones_exist = true;
        state.known.clear();
        let conn = &state.conn;
        if kind == PersonKind::User {
            conn.prepare_cached(
                "INSERT INTO tombstones (user_id, source, requested_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![id, source, requested_at]))
            .map_err(db_error)?;
        }
        let named: Vec<String> = conn
            .prepare_cached(&report_sql)
            .and_then(|mut s| s.query_map([id], |r| r.get(0))?.collect())
            .map_err(db_error)?;
        conn.prepare_cached(&sql.reach)
            .and_then(|mut s| s.execute([id, source]))
            .map_err(db_error)?;
        let mut expired = query::Expired::default();
        let deleted = conn
            .prepare_cached(&sql.events)
            .and_then(|mut s| {
                let mut rows = s.query([id, source])?;
                let mut deleted = 0_i64;
                while let Some(row) = rows.next()? {
                    expired.add(row.get(0)?, row.get(1)?, row.get(2)?);
                    deleted += 1;
                }
                Ok(deleted)
            })
            .map_err(db_error)?;
        let letters: Vec<i64> = conn
            .prepare_cached(&sql.dead_letters)
            .and_then(|mut s| s.query_map([id, source], |r| r.get(0))?.collect())
            .map_err(db_error)?;
        drop_emptied_slots(conn, &expired)?;
        settle(conn, id, kind, source, requested_at, deleted, &letters)?;
        let (aliased_user_ids, linked_user_ids) = match kind {
            PersonKind::User => (named, Vec::new()),
            _ => (Vec::new(), named),
        };
        Ok(DeletionReport {
            deleted_events: deleted as u64,
            deleted_dead_letters: letters.len() as u64,
            aliased_user_ids,
            linked_user_ids,
            source: Some(source.to_owned()),
        })
    })?;
    erase_wal(store);
    Ok(report)
}

/// Deletes the `active_slots` rows a scoped deletion left without a
/// product event of their identity in their slot (identities are shared
/// by the sources, so another source's events may still hold them).
fn drop_emptied_slots(conn: &Connection, expired: &query::Expired) -> Result<(), StoreError> {
    for slot in expired.slots.keys() {
        let (from, to) = query::slot_span(*slot);
        let survivors: HashSet<i64> = conn
            .prepare_cached(query::SLOT_SURVIVORS_SQL)
            .and_then(|mut s| s.query_map([from, to], |r| r.get(0))?.collect())
            .map_err(db_error)?;
        for (slot, ident) in expired.emptied(*slot, &survivors) {
            conn.prepare_cached("DELETE FROM active_slots WHERE slot = ?1 AND ident = ?2")
                .and_then(|mut s| s.execute([slot, ident]))
                .map_err(db_error)?;
        }
    }
    Ok(())
}

pub(super) fn is_deleted(store: &SqliteStore, user_id: &str) -> Result<bool, StoreError> {
    store.readers.with(|c| tombstoned(c, user_id))
}

pub(super) fn deletions(
    store: &SqliteStore,
    limit: usize,
) -> Result<Vec<DeletionRecord>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    type Row = (String, i64, String, i64, String, String);
    let rows: Vec<Row> = store.readers.with(|c| {
        c.prepare_cached(
            "SELECT user_id, requested_at, status, deleted_events, kind, source FROM deletions \
             ORDER BY row_id DESC LIMIT ?1",
        )
        .and_then(|mut s| {
            s.query_map([limit], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect()
        })
        .map_err(db_error)
    })?;
    rows.into_iter()
        .map(|(user_id, requested_at, status, deleted, kind, source)| {
            Ok(DeletionRecord {
                kind: PersonKind::from_stored(&kind)?,
                user_id,
                requested_at,
                status: DeletionStatus::from_stored(&status)?,
                deleted_events: deleted.max(0) as u64,
                source: Some(source).filter(|s| !s.is_empty()),
            })
        })
        .collect()
}

/// Lowers the totals by what a deletion removed (`deleted` events, and
/// dead letters of the sizes in `letters`) and records the request: `id`
/// of `kind`, in `source` (`''`: every source).
fn settle(
    conn: &Connection,
    id: &str,
    kind: PersonKind,
    source: &str,
    requested_at: i64,
    deleted: i64,
    letters: &[i64],
) -> Result<(), StoreError> {
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
        "INSERT INTO deletions (user_id, requested_at, status, deleted_events, kind, source) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            requested_at,
            DeletionStatus::Done.as_str(),
            deleted,
            kind.as_str(),
            source
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
