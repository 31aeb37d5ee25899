//! Export on PostgreSQL: stored events in corrected-time order, read in
//! pages by the `(ts_corrected, source, message_id)` keyset of the
//! `events_by_time` index, so each page costs one index range scan however
//! deep into the window it is.

use super::{pg_error, PostgresStore};
use crate::store::{identity, CursorTie, ExportCursor, ExportedEvent, PersonKind, StoreError};

pub(super) fn export_page(
    store: &PostgresStore,
    from: i64,
    to: i64,
    source: Option<&str>,
    after: Option<&ExportCursor>,
    limit: usize,
) -> Result<Vec<ExportedEvent>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut conn = store.pool.get()?;
    let rows = match after {
        None => conn.client.query(
            "SELECT source, message_id, ts_corrected, received_at, raw FROM events \
             WHERE ts_corrected >= $1 AND ts_corrected < $2 \
             AND ($4::text IS NULL OR source = $4::text) \
             ORDER BY ts_corrected, source, message_id LIMIT $3",
            &[&from, &to, &limit, &source],
        ),
        Some(ExportCursor {
            ts_corrected,
            tie:
                CursorTie::MessageId {
                    source: after_source,
                    id,
                },
        }) => conn.client.query(
            "SELECT source, message_id, ts_corrected, received_at, raw FROM events \
             WHERE (ts_corrected, source, message_id) > ($1, $2, $3) AND ts_corrected < $4 \
             AND ($6::text IS NULL OR source = $6::text) \
             ORDER BY ts_corrected, source, message_id LIMIT $5",
            &[ts_corrected, after_source, id, &to, &limit, &source],
        ),
        Some(_) => {
            return Err(StoreError::Backend(
                "an export cursor of another store kind".into(),
            ))
        }
    }
    .map_err(pg_error)?;
    rows.iter()
        .map(exported)
        .collect::<Result<_, ::postgres::Error>>()
        .map_err(pg_error)
}

pub(super) fn count_stored(
    store: &PostgresStore,
    from: i64,
    to: i64,
    source: Option<&str>,
) -> Result<u64, StoreError> {
    let mut conn = store.pool.get()?;
    let row = conn
        .client
        .query_one(
            "SELECT count(*) FROM events WHERE ts_corrected >= $1 AND ts_corrected < $2 \
             AND ($3::text IS NULL OR source = $3::text)",
            &[&from, &to, &source],
        )
        .map_err(pg_error)?;
    Ok(row.try_get::<_, i64>(0).map_err(pg_error)?.max(0) as u64)
}

pub(super) fn person_page(
    store: &PostgresStore,
    kind: PersonKind,
    id: &str,
    source: Option<&str>,
    after: Option<&ExportCursor>,
    limit: usize,
) -> Result<Vec<ExportedEvent>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (ts, after_source, message_id) = match after {
        None => (i64::MIN, String::new(), String::new()),
        Some(ExportCursor {
            ts_corrected,
            tie: CursorTie::MessageId { source, id },
        }) => (*ts_corrected, source.clone(), id.clone()),
        Some(_) => {
            return Err(StoreError::Backend(
                "an export cursor of another store kind".into(),
            ))
        }
    };
    let person = match source {
        None => format!(
            "{} AND $6::text IS NULL",
            identity::person_predicate(kind, "$1::text")
        ),
        Some(_) => identity::source_person_predicate(kind, "$1::text", "$6::text"),
    };
    let sql = format!(
        "SELECT e.source, e.message_id, e.ts_corrected, e.received_at, e.raw FROM events e \
         WHERE {person} AND (e.ts_corrected, e.source, e.message_id) > ($2, $3, $4) \
         ORDER BY e.ts_corrected, e.source, e.message_id LIMIT $5"
    );
    let mut conn = store.pool.get()?;
    let rows = conn
        .client
        .query(
            &sql,
            &[&id, &ts, &after_source, &message_id, &limit, &source],
        )
        .map_err(pg_error)?;
    rows.iter()
        .map(exported)
        .collect::<Result<_, ::postgres::Error>>()
        .map_err(pg_error)
}

/// An exported event from a row of `source, message_id, ts_corrected,
/// received_at, raw`.
fn exported(r: &::postgres::Row) -> Result<ExportedEvent, ::postgres::Error> {
    let ts_corrected = r.try_get(2)?;
    Ok(ExportedEvent {
        ts_corrected,
        received_at: r.try_get(3)?,
        raw: r.try_get(4)?,
        cursor: ExportCursor {
            ts_corrected,
            tie: CursorTie::MessageId {
                source: r.try_get(0)?,
                id: r.try_get(1)?,
            },
        },
    })
}
