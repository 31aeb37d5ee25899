//! Dead letters on PostgreSQL, read back: the newest rejected messages,
//! and the totals of what was kept and not kept, summed over the counter
//! shards. They are written by the batch's own statement (see
//! [`super::statements`]).

use super::statements::DEAD_LETTER_TOTALS_SQL;
use super::{pg_error, PostgresStore};
use crate::store::{dead_letters, DeadLetterQuery, DeadLetterTotals, StoreError, StoredDeadLetter};

pub(super) fn dead_letters(
    store: &PostgresStore,
    q: &DeadLetterQuery,
) -> Result<Vec<StoredDeadLetter>, StoreError> {
    let mut conn = store.pool.get()?;
    let rows = conn
        .client
        .query(
            dead_letters::PAGE_SQL,
            &[
                &q.reason,
                &q.since,
                &q.until,
                &q.before,
                &dead_letters::sql_limit(q.limit),
            ],
        )
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            Ok(StoredDeadLetter {
                id: r.try_get(0)?,
                message_id: r.try_get(1)?,
                reason: r.try_get(2)?,
                detail: r.try_get(3)?,
                received_at: r.try_get(4)?,
                raw: r.try_get(5)?,
            })
        })
        .collect::<Result<_, ::postgres::Error>>()
        .map_err(pg_error)
}

pub(super) fn dead_letter_totals(store: &PostgresStore) -> Result<DeadLetterTotals, StoreError> {
    let mut conn = store.pool.get()?;
    let row = conn
        .client
        .query_one(DEAD_LETTER_TOTALS_SQL, &[])
        .map_err(pg_error)?;
    let n = |i: usize| -> Result<u64, StoreError> {
        Ok(row.try_get::<_, i64>(i).map_err(pg_error)?.max(0) as u64)
    };
    Ok(DeadLetterTotals {
        kept: n(0)?,
        bytes: n(1)?,
        not_kept: n(2)?,
        truncated: n(3)?,
    })
}
