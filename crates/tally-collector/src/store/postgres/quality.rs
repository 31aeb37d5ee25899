//! Data quality on PostgreSQL ([`crate::store::quality`]): a batch's
//! findings counted in the batch's transaction, in key order (so two
//! collectors' batches lock the rows they share in one order), and read
//! back on a pooled connection.

use super::statements::Prepared;
use super::{pg_error, PostgresStore};
use crate::store::quality::{
    self, QualityExample, QualityFinding, QualityQuery, QualityRow, QualityStore, MAX_EXAMPLES,
};
use crate::store::{StoreError, WriteOutcome};
use ::postgres::Client;

/// Counts the findings the store keeps of one batch (see
/// [`quality::counted`]), keeps each as an example, and adds its plan
/// violations to the counters of `shard` (the batch's).
pub(super) fn write_quality(
    client: &mut Client,
    prepared: &Prepared,
    shard: i32,
    findings: &[QualityFinding],
    outcomes: &[WriteOutcome],
) -> Result<(), ::postgres::Error> {
    let (upsert, insert, prune) = (
        &prepared.quality_count,
        &prepared.quality_example,
        &prepared.quality_prune,
    );
    let counted = quality::counted(findings, outcomes);
    let violations = quality::violations(&counted);
    if violations > 0 {
        client.execute(&prepared.add_violations, &[&shard, &violations])?;
    }
    for f in counted {
        let rejected = f.rejected();
        let version = i64::from(f.version);
        client.execute(
            upsert,
            &[
                &f.hour(),
                &f.source,
                &f.event,
                &version,
                &f.finding,
                &f.rule,
                &f.path,
                &i64::from(!rejected),
                &i64::from(rejected),
                &f.received_at,
            ],
        )?;
        client.execute(
            insert,
            &[
                &f.source,
                &f.event,
                &version,
                &f.finding,
                &f.rule,
                &f.path,
                &f.message_id,
                &f.received_at,
                &f.detail,
                &rejected,
            ],
        )?;
        client.execute(
            prune,
            &[
                &f.source,
                &f.event,
                &version,
                &f.finding,
                &f.rule,
                &f.path,
                &MAX_EXAMPLES,
            ],
        )?;
    }
    Ok(())
}

impl QualityStore for PostgresStore {
    fn quality(&self, q: &QualityQuery) -> Result<Vec<QualityRow>, StoreError> {
        let mut conn = self.client()?;
        let client = &mut conn.client;
        let counts = client
            .query(
                quality::COUNTS_SQL,
                &[&q.start_hour(), &q.end_hour(), &q.source, &q.event],
            )
            .map_err(pg_error)?;
        let mut rows = Vec::with_capacity(counts.len());
        for r in counts {
            let n = |i| -> Result<u64, StoreError> {
                Ok(r.try_get::<_, i64>(i).map_err(pg_error)?.max(0) as u64)
            };
            rows.push(QualityRow {
                event: r.try_get(0).map_err(pg_error)?,
                version: r
                    .try_get::<_, i64>(1)
                    .map_err(pg_error)?
                    .clamp(0, u32::MAX as i64) as u32,
                finding: r.try_get(2).map_err(pg_error)?,
                rule: r.try_get(3).map_err(pg_error)?,
                path: r.try_get(4).map_err(pg_error)?,
                flagged: n(5)?,
                rejected: n(6)?,
                first_seen: r.try_get(7).map_err(pg_error)?,
                last_seen: r.try_get(8).map_err(pg_error)?,
                examples: Vec::new(),
            });
        }
        for row in &mut rows {
            let version = i64::from(row.version);
            row.examples = client
                .query(
                    quality::EXAMPLES_SQL,
                    &[
                        &row.event,
                        &version,
                        &row.finding,
                        &row.rule,
                        &row.path,
                        &q.from,
                        &q.to,
                        &q.source,
                        &MAX_EXAMPLES,
                    ],
                )
                .map_err(pg_error)?
                .into_iter()
                .map(|r| {
                    Ok(QualityExample {
                        message_id: r.try_get(0)?,
                        source: r.try_get(1)?,
                        received_at: r.try_get(2)?,
                        detail: r.try_get(3)?,
                        rejected: r.try_get(4)?,
                    })
                })
                .collect::<Result<_, ::postgres::Error>>()
                .map_err(pg_error)?;
        }
        Ok(rows)
    }
}
