//! Completeness on SQLite: each install's highest seq (`installs`), the
//! seqs seen as merged ranges (`install_seen`), and the drops its device
//! reported (`install_drops`), written by the batch that saw them and
//! read back as an [`InstallReport`].
//!
//! Seen seqs are merged into the stored ranges that touch them, so an
//! install costs a few rows whatever its number of events. An install
//! belongs to the first source that sends for it; only that source's
//! events mark its seqs seen.

use super::{db_error, SqliteStore};
use crate::store::identity;
use crate::store::plan::InstallDelta;
use crate::store::ranges::{self, SeqRange};
use crate::store::{InstallEvent, InstallReport, StoreError};
use rusqlite::{params, Connection, OptionalExtension};

/// Merges one batch's completeness of one install ([`InstallDelta`]) into
/// its stored ranges, claiming the install for the batch's source if no
/// source had it.
pub(super) fn write_install(
    conn: &Connection,
    install: &str,
    delta: &InstallDelta<'_>,
) -> Result<(), StoreError> {
    for &(from, to, reason) in &delta.drops {
        conn.prepare_cached(
            "INSERT INTO install_drops (install_id, from_seq, to_seq, reason) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![install, from as i64, to as i64, reason]))
        .map_err(db_error)?;
    }
    conn.prepare_cached(
        "INSERT INTO installs (install_id, max_seq, source) VALUES (?1, ?2, ?3) \
         ON CONFLICT (install_id) DO UPDATE SET max_seq = max(max_seq, excluded.max_seq), \
         source = excluded.source",
    )
    .and_then(|mut s| s.execute(params![install, delta.max_seq as i64, delta.source]))
    .map_err(db_error)?;
    // Stored ranges touching the span of the new ones: they merge.
    let Some((lo, hi)) = delta.span() else {
        return Ok(());
    };
    let old: Vec<SeqRange> = conn
        .prepare_cached(
            "SELECT from_seq, to_seq FROM install_seen WHERE install_id = ?1 \
             AND from_seq <= ?3 AND to_seq >= ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![install, lo as i64, hi as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })?
            .collect()
        })
        .map_err(db_error)?;
    let merged = ranges::merge(&old, &delta.seen);
    if merged == old {
        return Ok(());
    }
    for (from, _) in &old {
        conn.prepare_cached("DELETE FROM install_seen WHERE install_id = ?1 AND from_seq = ?2")
            .and_then(|mut s| s.execute(params![install, *from as i64]))
            .map_err(db_error)?;
    }
    for (from, to) in merged {
        conn.prepare_cached(
            "INSERT INTO install_seen (install_id, from_seq, to_seq) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| s.execute(params![install, from as i64, to as i64]))
        .map_err(db_error)?;
    }
    Ok(())
}

pub(super) fn install(
    store: &SqliteStore,
    install_id: &str,
) -> Result<Option<InstallReport>, StoreError> {
    store.readers.with(|c| {
        // One read transaction: the three reads see the same commit.
        c.execute_batch("BEGIN").map_err(db_error)?;
        let report = read_install(c, install_id);
        let _ = c.execute_batch("COMMIT");
        report
    })
}

pub(super) fn install_events(
    store: &SqliteStore,
    install_id: &str,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<InstallEvent>, StoreError> {
    let sql = identity::install_events_sql("?1", "?2", "?3");
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    store.readers.with(|c| {
        c.prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_map(params![install_id, after, limit], |r| {
                    Ok(InstallEvent {
                        seq: r.get::<_, i64>(0)? as u64,
                        kind: r.get(1)?,
                        event: r.get(2)?,
                        person: r.get(3)?,
                    })
                })?
                .collect()
            })
            .map_err(db_error)
    })
}

fn read_install(c: &Connection, install_id: &str) -> Result<Option<InstallReport>, StoreError> {
    let max_seq: Option<i64> = c
        .prepare_cached("SELECT max_seq FROM installs WHERE install_id = ?1")
        .and_then(|mut s| s.query_row([install_id], |r| r.get(0)).optional())
        .map_err(db_error)?;
    let Some(max_seq) = max_seq else {
        return Ok(None);
    };
    let seen: Vec<SeqRange> = c
        .prepare_cached(
            "SELECT from_seq, to_seq FROM install_seen WHERE install_id = ?1 ORDER BY from_seq",
        )
        .and_then(|mut s| {
            s.query_map([install_id], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })?
            .collect()
        })
        .map_err(db_error)?;
    let drops: Vec<(u64, u64, String)> = c
        .prepare_cached("SELECT from_seq, to_seq, reason FROM install_drops WHERE install_id = ?1")
        .and_then(|mut s| {
            s.query_map([install_id], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get(2)?,
                ))
            })?
            .collect()
        })
        .map_err(db_error)?;
    Ok(Some(ranges::report(max_seq as u64, &seen, drops)))
}
