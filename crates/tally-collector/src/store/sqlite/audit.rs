//! The audit log on SQLite (see [`crate::store::audit`]): appends and
//! expiry go through the writer; pages are read on the reader
//! connections.

use super::{db_error, SqliteStore};
use crate::store::audit::{self, AuditFilter, AuditRecord, AuditRow, AuditStore};
use crate::store::StoreError;
use rusqlite::params;

impl AuditStore for SqliteStore {
    fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.writer.run(0, |state| {
            let mut insert = state
                .conn
                .prepare_cached(
                    "INSERT INTO audit_log (at, key_id, role, action, params, client, status, \
                     outcome, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(db_error)?;
            for r in records {
                insert
                    .execute(params![
                        r.at,
                        r.key_id,
                        r.role,
                        r.action,
                        r.params,
                        r.client,
                        r.status,
                        r.outcome.as_str(),
                        i64::try_from(r.count).unwrap_or(i64::MAX)
                    ])
                    .map_err(db_error)?;
            }
            Ok(())
        })
    }

    fn audit_page(&self, filter: &AuditFilter, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let sql = audit::page_sql(|n| format!("?{n}"));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<audit::AuditColumns> = self.readers.with(|c| {
            c.prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_map(
                        params![
                            filter.from,
                            filter.to,
                            filter.key_id,
                            filter.outcome.map(|o| o.as_str()),
                            filter.action,
                            filter.before_id,
                            limit
                        ],
                        |r| {
                            Ok((
                                r.get(0)?,
                                r.get(1)?,
                                r.get(2)?,
                                r.get(3)?,
                                r.get(4)?,
                                r.get(5)?,
                                r.get(6)?,
                                r.get(7)?,
                                r.get(8)?,
                                r.get(9)?,
                            ))
                        },
                    )?
                    .collect()
                })
                .map_err(db_error)
        })?;
        rows.into_iter().map(audit::row).collect()
    }

    fn expire_audit(&self, before: i64, limit: usize) -> Result<u64, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.writer.run(0, |state| {
            state
                .conn
                .prepare_cached(
                    "DELETE FROM audit_log WHERE row_id IN (SELECT row_id FROM audit_log \
                     WHERE at < ?1 ORDER BY at LIMIT ?2)",
                )
                .and_then(|mut s| s.execute(params![before, limit]))
                .map(|n| n as u64)
                .map_err(db_error)
        })
    }
}
