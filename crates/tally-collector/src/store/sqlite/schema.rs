//! The SQLite schema: numbered migrations (`migrations/NNNN_*.sql`,
//! [`MIGRATIONS`]), applied at open by the shared runner
//! ([`crate::store::migrations`]) inside one `BEGIN IMMEDIATE`
//! transaction, so a second process opening the same file waits and then
//! finds them applied. A database newer than this binary is refused
//! ([`StoreError::Migration`]), never written to.

use super::db_error;
use crate::store::migrations::{upgrade, Schema};
use crate::store::StoreError;
use rusqlite::{Connection, OptionalExtension, Transaction};
use std::path::Path;

/// Schema migrations (`migrations/NNNN_*.sql`), applied in order; index
/// + 1 is the version. Never edit a released file: add a new one.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_health.sql"),
    include_str!("migrations/0003_product_queries.sql"),
    include_str!("migrations/0004_dead_letters_by_received.sql"),
    include_str!("migrations/0005_sources.sql"),
    include_str!("migrations/0006_deletion_reach.sql"),
    include_str!("migrations/0007_keys.sql"),
    include_str!("migrations/0008_audit.sql"),
    include_str!("migrations/0009_deletion_kinds.sql"),
    include_str!("migrations/0010_scoped_deletions.sql"),
    include_str!("migrations/0011_quality.sql"),
    include_str!("migrations/0012_plan_violations.sql"),
];

/// The migration's transaction on the writer connection.
struct Migrating<'c, F> {
    tx: Transaction<'c>,
    fail: F,
}

impl<F: Fn(rusqlite::Error) -> StoreError> Schema for Migrating<'_, F> {
    fn version(&mut self) -> Result<usize, StoreError> {
        self.tx
            .execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .map_err(&self.fail)?;
        let current: Option<u32> = self
            .tx
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()
            .map_err(&self.fail)?;
        Ok(current.unwrap_or(0) as usize)
    }

    fn apply(&mut self, sql: &str) -> Result<(), StoreError> {
        self.tx.execute_batch(sql).map_err(&self.fail)
    }

    fn set_version(&mut self, version: usize) -> Result<(), StoreError> {
        self.tx
            .execute("DELETE FROM schema_version", [])
            .map_err(&self.fail)?;
        self.tx
            .execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [version as i64],
            )
            .map(|_| ())
            .map_err(&self.fail)
    }
}

/// Applies the pending migrations in one `BEGIN IMMEDIATE` transaction.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| match db_error(e) {
        StoreError::Backend(m) => {
            StoreError::Migration(format!("SQLite database at {}: {m}", path.display()))
        }
        other => other,
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(fail)?;
    let mut schema = Migrating { tx, fail };
    upgrade(&mut schema, MIGRATIONS, |current, binary| {
        format!(
            "SQLite database at {} has schema version {current}, newer than this binary's {binary}",
            path.display()
        )
    })?;
    let Migrating { tx, fail } = schema;
    tx.commit().map_err(fail)
}
