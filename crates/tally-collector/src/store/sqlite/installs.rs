//! Completeness on SQLite: each install's highest seq (`installs`), the
//! seqs seen as merged ranges (`install_seen`), and the drops its device
//! reported (`install_drops`), written by the batch that saw them and
//! read back as an [`InstallReport`].
//!
//! Seen seqs are merged into the stored ranges that touch them, so an
//! install costs a few rows whatever its number of events. An install
//! belongs to the first source that sends for it; only that source's
//! events mark its seqs seen.

use super::rows;
use super::{db_error, SqliteStore};
use crate::store::identity;
use crate::store::plan::InstallDelta;
use crate::store::ranges::{self, SeqRange};
use crate::store::{InstallEvent, InstallReport, StoreError};
use rusqlite::{params, Connection, OptionalExtension, ToSql};
use std::collections::{BTreeMap, HashMap};

/// Merges one batch's completeness ([`InstallDelta`] of each install)
/// into the stored ranges, claiming each install for the batch's source
/// if no source had it.
///
/// A batch may carry hundreds of installs (a server-side source forwards
/// many devices' events), so each step is a multi-row statement per 64
/// installs (see [`super::rows`]): the installs upserted, the stored
/// ranges that touch the new ones read, and the merged ranges written
/// (each install usually grows one range, updated in place). Drops are
/// rare and written row by row.
pub(super) fn write_installs(
    conn: &Connection,
    deltas: &BTreeMap<&str, InstallDelta<'_>>,
) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    for (install, delta) in deltas {
        for &(from, to, reason) in &delta.drops {
            conn.prepare_cached(
                "INSERT INTO install_drops (install_id, from_seq, to_seq, reason) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![install, from as i64, to as i64, reason]))
            .map_err(db_error)?;
        }
    }
    let maxima: Vec<(&str, i64, &str)> = deltas
        .iter()
        .map(|(install, d)| (*install, d.max_seq as i64, d.source))
        .collect();
    let upsert = format!(
        "INSERT INTO installs (install_id, max_seq, source) \
         SELECT column1, column2, column3 FROM (VALUES {}) WHERE column1 IS NOT NULL \
         ON CONFLICT (install_id) DO UPDATE SET max_seq = max(max_seq, excluded.max_seq), \
         source = excluded.source",
        rows::placeholders(3)
    );
    let params: Vec<[&dyn ToSql; 3]> = maxima
        .iter()
        .map(|(i, m, s)| [i as _, m as _, s as _])
        .collect();
    rows::for_chunks(&params, |p| {
        conn.prepare_cached(&upsert)?.execute(p).map(|_| ())
    })
    .map_err(db_error)?;
    // Stored ranges touching the span of the new ones: they merge.
    let spans: Vec<(&str, i64, i64)> = deltas
        .iter()
        .filter_map(|(install, d)| d.span().map(|(lo, hi)| (*install, lo as i64, hi as i64)))
        .collect();
    if spans.is_empty() {
        return Ok(());
    }
    let mut old: HashMap<String, Vec<SeqRange>> = HashMap::new();
    let touching = format!(
        "SELECT s.install_id, s.from_seq, s.to_seq FROM (VALUES {}) AS j \
         CROSS JOIN install_seen AS s ON s.install_id = j.column1 \
         AND s.from_seq <= j.column3 AND s.to_seq >= j.column2",
        rows::placeholders(3)
    );
    let params: Vec<[&dyn ToSql; 3]> = spans
        .iter()
        .map(|(i, lo, hi)| [i as _, lo as _, hi as _])
        .collect();
    rows::for_chunks(&params, |p| {
        let mut statement = conn.prepare_cached(&touching)?;
        let mut found = statement.query(p)?;
        while let Some(r) = found.next()? {
            old.entry(r.get(0)?)
                .or_default()
                .push((r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64));
        }
        Ok(())
    })
    .map_err(db_error)?;
    // Ranges deleted (install, start), and written (install, start, end).
    let mut gone: Vec<(&str, i64)> = Vec::new();
    let mut written: Vec<(&str, i64, i64)> = Vec::new();
    for (install, delta) in deltas {
        let mut stored = old.remove(*install).unwrap_or_default();
        stored.sort_unstable();
        let merged = ranges::merge(&stored, &delta.seen);
        // The stored ranges become the merged ones: a range whose start is
        // kept is updated in place, the others deleted.
        for &(from, _) in &stored {
            if !merged.iter().any(|m| m.0 == from) {
                gone.push((install, from as i64));
            }
        }
        for &(from, to) in &merged {
            if !stored.contains(&(from, to)) {
                written.push((install, from as i64, to as i64));
            }
        }
    }
    let delete = format!(
        "DELETE FROM install_seen WHERE (install_id, from_seq) IN (VALUES {})",
        rows::placeholders(2)
    );
    let params: Vec<[&dyn ToSql; 2]> = gone.iter().map(|(i, f)| [i as _, f as _]).collect();
    rows::for_chunks(&params, |p| {
        conn.prepare_cached(&delete)?.execute(p).map(|_| ())
    })
    .map_err(db_error)?;
    let write = format!(
        "INSERT INTO install_seen (install_id, from_seq, to_seq) \
         SELECT column1, column2, column3 FROM (VALUES {}) WHERE column1 IS NOT NULL \
         ON CONFLICT (install_id, from_seq) DO UPDATE SET to_seq = excluded.to_seq",
        rows::placeholders(3)
    );
    let params: Vec<[&dyn ToSql; 3]> = written
        .iter()
        .map(|(i, f, t)| [i as _, f as _, t as _])
        .collect();
    rows::for_chunks(&params, |p| {
        conn.prepare_cached(&write)?.execute(p).map(|_| ())
    })
    .map_err(db_error)?;
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
