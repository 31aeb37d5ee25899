//! The audit log on PostgreSQL (see [`crate::store::audit`]).

use super::{pg_error, PostgresStore};
use crate::store::audit::{self, AuditFilter, AuditRecord, AuditRow, AuditStore};
use crate::store::StoreError;

impl AuditStore for PostgresStore {
    fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.get()?;
        let mut tx = conn.client.transaction().map_err(pg_error)?;
        let insert = tx
            .prepare(
                "INSERT INTO audit_log (at, key_id, role, action, params, client, status, \
                 outcome, count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .map_err(pg_error)?;
        for r in records {
            tx.execute(
                &insert,
                &[
                    &r.at,
                    &r.key_id,
                    &r.role,
                    &r.action,
                    &r.params,
                    &r.client,
                    &i32::from(r.status),
                    &r.outcome.as_str(),
                    &i64::try_from(r.count).unwrap_or(i64::MAX),
                ],
            )
            .map_err(pg_error)?;
        }
        tx.commit().map_err(pg_error)
    }

    fn audit_page(&self, filter: &AuditFilter, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let sql = audit::page_sql(|n| match n {
            1 | 2 | 6 | 7 => format!("${n}::int8"),
            _ => format!("${n}::text"),
        });
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let outcome = filter.outcome.map(|o| o.as_str());
        let mut conn = self.pool.get()?;
        let rows = conn
            .client
            .query(
                &sql,
                &[
                    &filter.from,
                    &filter.to,
                    &filter.key_id,
                    &outcome,
                    &filter.action,
                    &filter.before_id,
                    &limit,
                ],
            )
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                let status: i32 = r.try_get(7).map_err(pg_error)?;
                let columns: audit::AuditColumns = (
                    r.try_get(0).map_err(pg_error)?,
                    r.try_get(1).map_err(pg_error)?,
                    r.try_get(2).map_err(pg_error)?,
                    r.try_get(3).map_err(pg_error)?,
                    r.try_get(4).map_err(pg_error)?,
                    r.try_get(5).map_err(pg_error)?,
                    r.try_get(6).map_err(pg_error)?,
                    i64::from(status),
                    r.try_get(8).map_err(pg_error)?,
                    r.try_get(9).map_err(pg_error)?,
                );
                audit::row(columns)
            })
            .collect()
    }

    fn expire_audit(&self, before: i64, limit: usize) -> Result<u64, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.pool.get()?;
        conn.client
            .execute(
                "DELETE FROM audit_log WHERE row_id IN (SELECT row_id FROM audit_log \
                 WHERE at < $1 ORDER BY at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&before, &limit],
            )
            .map_err(pg_error)
    }
}
