//! Export on SQLite: stored events in corrected-time order, read in pages
//! on the reader connections by the `(ts_corrected, row_id)` keyset of
//! the `events_by_time` index, so each page costs one index range scan
//! however deep into the window it is.

use super::{db_error, SqliteStore};
use crate::store::{identity, CursorTie, ExportCursor, ExportedEvent, PersonKind, StoreError};
use rusqlite::params;

pub(super) fn export_page(
    store: &SqliteStore,
    from: i64,
    to: i64,
    source: Option<&str>,
    after: Option<&ExportCursor>,
    limit: usize,
) -> Result<Vec<ExportedEvent>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Row ids start at 1: (from, 0) is before every event of the window.
    let (ts, row) = match after {
        None => (from, 0),
        Some(ExportCursor {
            ts_corrected,
            tie: CursorTie::Row(row),
        }) => (*ts_corrected, *row),
        Some(_) => {
            return Err(StoreError::Backend(
                "an export cursor of another store kind".into(),
            ))
        }
    };
    store.readers.with(|c| {
        c.prepare_cached(
            "SELECT row_id, ts_corrected, received_at, raw FROM events \
             WHERE (ts_corrected, row_id) > (?1, ?2) AND ts_corrected < ?3 \
             AND (?5 IS NULL OR source = ?5) ORDER BY ts_corrected, row_id LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![ts, row, to, limit, source], exported)?
                .collect()
        })
        .map_err(db_error)
    })
}

pub(super) fn count_stored(
    store: &SqliteStore,
    from: i64,
    to: i64,
    source: Option<&str>,
) -> Result<u64, StoreError> {
    store.readers.with(|c| {
        c.prepare_cached(
            "SELECT count(*) FROM events WHERE ts_corrected >= ?1 AND ts_corrected < ?2 \
             AND (?3 IS NULL OR source = ?3)",
        )
        .and_then(|mut s| s.query_row(params![from, to, source], |r| r.get::<_, i64>(0)))
        .map(|n| n.max(0) as u64)
        .map_err(db_error)
    })
}

pub(super) fn person_page(
    store: &SqliteStore,
    kind: PersonKind,
    id: &str,
    source: Option<&str>,
    after: Option<&ExportCursor>,
    limit: usize,
) -> Result<Vec<ExportedEvent>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (ts, row) = match after {
        None => (i64::MIN, 0),
        Some(ExportCursor {
            ts_corrected,
            tie: CursorTie::Row(row),
        }) => (*ts_corrected, *row),
        Some(_) => {
            return Err(StoreError::Backend(
                "an export cursor of another store kind".into(),
            ))
        }
    };
    let person = match source {
        None => format!("{} AND ?5 IS NULL", identity::person_predicate(kind, "?1")),
        Some(_) => identity::source_person_predicate(kind, "?1", "?5"),
    };
    let sql = format!(
        "SELECT e.row_id, e.ts_corrected, e.received_at, e.raw FROM events e \
         WHERE {person} AND (e.ts_corrected, e.row_id) > (?2, ?3) \
         ORDER BY e.ts_corrected, e.row_id LIMIT ?4"
    );
    store.readers.with(|c| {
        c.prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_map(params![id, ts, row, limit, source], exported)?
                    .collect()
            })
            .map_err(db_error)
    })
}

/// An exported event from a row of `row_id, ts_corrected, received_at,
/// raw`.
fn exported(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExportedEvent> {
    let ts_corrected = r.get(1)?;
    Ok(ExportedEvent {
        ts_corrected,
        received_at: r.get(2)?,
        raw: r.get(3)?,
        cursor: ExportCursor {
            ts_corrected,
            tie: CursorTie::Row(r.get(0)?),
        },
    })
}
