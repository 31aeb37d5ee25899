//! Dead letters on SQLite: rejected messages kept within their limits
//! ([`crate::store::DeadLetterLimits`]), with the counters of what was
//! kept and what was not in the same transaction as the rows, and read
//! back newest first.

use super::{db_error, SqliteStore};
use crate::store::dead_letters;
use crate::store::health::sqlite_sql;
use crate::store::{
    DeadLetter, DeadLetterBudget, DeadLetterLimits, DeadLetterQuery, DeadLetterTotals, StoreError,
    StoredDeadLetter,
};
use rusqlite::{params, Connection};

const INSERT_DEAD_LETTER: &str = "INSERT INTO dead_letters (message_id, reason, detail, \
    received_at, raw, source, user_id, anonymous_id, install_id, size) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Writes `d` as far as the budget allows (see [`DeadLetterLimits`]); the
/// budget is read from the counters on first use in a transaction.
pub(super) fn write_dead_letter(
    conn: &Connection,
    budget: &mut Option<DeadLetterBudget>,
    limits: DeadLetterLimits,
    d: &DeadLetter,
) -> Result<(), StoreError> {
    let budget = match budget {
        Some(budget) => budget,
        None => budget.insert(
            conn.prepare_cached(
                "SELECT dead_letter_rows, dead_letter_bytes FROM counters WHERE id = 0",
            )
            .and_then(|mut s| {
                s.query_row([], |r| {
                    Ok(DeadLetterBudget::new(limits, r.get(0)?, r.get(1)?))
                })
            })
            .map_err(db_error)?,
        ),
    };
    let Some(raw) = budget.keep(&d.raw) else {
        return Ok(());
    };
    conn.prepare_cached(INSERT_DEAD_LETTER)
        .and_then(|mut s| {
            s.execute(params![
                d.message_id,
                d.reason.as_str(),
                d.detail.as_ref(),
                d.received_at,
                raw,
                d.source,
                d.user_id,
                d.anonymous_id,
                d.install_id,
                d.raw.len() as i64
            ])
        })
        .map(|_| ())
        .map_err(db_error)
}

pub(super) fn dead_letters(
    store: &SqliteStore,
    q: &DeadLetterQuery,
) -> Result<Vec<StoredDeadLetter>, StoreError> {
    store.readers.with(|c| {
        c.prepare_cached(&sqlite_sql(dead_letters::PAGE_SQL))
            .and_then(|mut s| {
                s.query_map(
                    params![
                        q.reason,
                        q.since,
                        q.until,
                        q.before,
                        dead_letters::sql_limit(q.limit)
                    ],
                    |r| {
                        Ok(StoredDeadLetter {
                            id: r.get(0)?,
                            message_id: r.get(1)?,
                            reason: r.get(2)?,
                            detail: r.get(3)?,
                            received_at: r.get(4)?,
                            raw: r.get(5)?,
                        })
                    },
                )?
                .collect()
            })
            .map_err(db_error)
    })
}

pub(super) fn dead_letter_totals(store: &SqliteStore) -> Result<DeadLetterTotals, StoreError> {
    store.readers.with(|c| {
        c.query_row(
            "SELECT dead_letter_rows, dead_letter_bytes, dead_letters_not_kept, \
             dead_letters_truncated FROM counters WHERE id = 0",
            [],
            |r| {
                let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok(DeadLetterTotals {
                    kept: n(0)?,
                    bytes: n(1)?,
                    not_kept: n(2)?,
                    truncated: n(3)?,
                })
            },
        )
        .map_err(db_error)
    })
}
