//! Data quality on SQLite ([`crate::store::quality`]): a batch's findings
//! counted on the writer connection, in the batch's transaction, and read
//! back on a reader.

use super::{db_error, SqliteStore};
use crate::store::health::sqlite_sql;
use crate::store::quality::{
    self, QualityExample, QualityFinding, QualityQuery, QualityRow, QualityStore, MAX_EXAMPLES,
};
use crate::store::{StoreError, WriteOutcome};
use rusqlite::{params, Connection};

/// Counts the findings the store keeps of one batch (see
/// [`quality::counted`]), keeps each as an example, and adds its plan
/// violations to the counters.
pub(super) fn write_quality(
    conn: &Connection,
    findings: &[QualityFinding],
    outcomes: &[WriteOutcome],
) -> Result<(), StoreError> {
    let counted = quality::counted(findings, outcomes);
    let violations = quality::violations(&counted);
    if violations > 0 {
        conn.prepare_cached(
            "UPDATE counters SET plan_violations = plan_violations + ?1 WHERE id = 0",
        )
        .and_then(|mut s| s.execute([violations]))
        .map_err(db_error)?;
    }
    for f in counted {
        let rejected = f.rejected();
        let version = i64::from(f.version);
        conn.prepare_cached(&sqlite_sql(quality::UPSERT_COUNT_SQL))
            .and_then(|mut s| {
                s.execute(params![
                    f.hour(),
                    f.source,
                    f.event,
                    version,
                    f.finding,
                    f.rule,
                    f.path,
                    i64::from(!rejected),
                    i64::from(rejected),
                    f.received_at
                ])
            })
            .map_err(db_error)?;
        conn.prepare_cached(&sqlite_sql(quality::INSERT_EXAMPLE_SQL))
            .and_then(|mut s| {
                s.execute(params![
                    f.source,
                    f.event,
                    version,
                    f.finding,
                    f.rule,
                    f.path,
                    f.message_id,
                    f.received_at,
                    f.detail,
                    rejected
                ])
            })
            .map_err(db_error)?;
        conn.prepare_cached(&sqlite_sql(quality::PRUNE_EXAMPLES_SQL))
            .and_then(|mut s| {
                s.execute(params![
                    f.source,
                    f.event,
                    version,
                    f.finding,
                    f.rule,
                    f.path,
                    MAX_EXAMPLES
                ])
            })
            .map_err(db_error)?;
    }
    Ok(())
}

impl QualityStore for SqliteStore {
    fn quality(&self, q: &QualityQuery) -> Result<Vec<QualityRow>, StoreError> {
        self.read(|c| {
            let mut rows = c
                .prepare_cached(&sqlite_sql(quality::COUNTS_SQL))
                .and_then(|mut s| {
                    s.query_map(
                        params![q.start_hour(), q.end_hour(), q.source, q.event],
                        |r| {
                            let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                            Ok(QualityRow {
                                event: r.get(0)?,
                                version: r.get::<_, i64>(1)?.clamp(0, u32::MAX as i64) as u32,
                                finding: r.get(2)?,
                                rule: r.get(3)?,
                                path: r.get(4)?,
                                flagged: n(5)?,
                                rejected: n(6)?,
                                first_seen: r.get(7)?,
                                last_seen: r.get(8)?,
                                examples: Vec::new(),
                            })
                        },
                    )?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_error)?;
            for row in &mut rows {
                row.examples = c
                    .prepare_cached(&sqlite_sql(quality::EXAMPLES_SQL))
                    .and_then(|mut s| {
                        s.query_map(
                            params![
                                row.event,
                                i64::from(row.version),
                                row.finding,
                                row.rule,
                                row.path,
                                q.from,
                                q.to,
                                q.source,
                                MAX_EXAMPLES
                            ],
                            |r| {
                                Ok(QualityExample {
                                    message_id: r.get(0)?,
                                    source: r.get(1)?,
                                    received_at: r.get(2)?,
                                    detail: r.get(3)?,
                                    rejected: r.get(4)?,
                                })
                            },
                        )?
                        .collect()
                    })
                    .map_err(db_error)?;
            }
            Ok(rows)
        })
    }
}
