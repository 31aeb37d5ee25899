//! The PostgreSQL schema: numbered migrations (`migrations/NNNN_*.sql`,
//! [`MIGRATIONS`]), applied at connect by the shared runner
//! ([`crate::store::migrations`]) in one transaction holding the advisory
//! lock [`MIGRATION_LOCK`], so collectors starting together apply each one
//! once. A schema newer than this binary is refused
//! ([`StoreError::Migration`]).

use super::{pg_error, MIGRATION_LOCK};
use crate::store::migrations::{upgrade, Schema};
use crate::store::StoreError;
use ::postgres::{Client, Transaction};

/// Schema migrations (`migrations/NNNN_*.sql`), applied in order; index
/// + 1 is the version. Never edit a released file: add a new one.
///
/// Every text column uses the "C" collation: ids and names are compared
/// byte-wise, never by a locale (locale-aware comparison tripled the cost
/// of the unique-key checks and of sorting a batch), and no query here
/// needs a linguistic order.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_health.sql"),
    include_str!("migrations/0003_product_queries.sql"),
    include_str!("migrations/0004_dead_letters_by_received.sql"),
    include_str!("migrations/0005_alert_outbox.sql"),
    include_str!("migrations/0006_idents_changed.sql"),
    include_str!("migrations/0007_sources.sql"),
    include_str!("migrations/0008_deletion_reach.sql"),
    include_str!("migrations/0009_keys.sql"),
    include_str!("migrations/0010_audit.sql"),
    include_str!("migrations/0011_deletion_kinds.sql"),
    include_str!("migrations/0012_scoped_deletions.sql"),
    include_str!("migrations/0013_quality.sql"),
    include_str!("migrations/0014_plan_violations.sql"),
];

/// The migration's transaction.
struct Migrating<'c> {
    tx: Transaction<'c>,
}

fn fail(e: ::postgres::Error) -> StoreError {
    match pg_error(e) {
        StoreError::Backend(m) => StoreError::Migration(m),
        other => other,
    }
}

impl Schema for Migrating<'_> {
    fn version(&mut self) -> Result<usize, StoreError> {
        self.tx
            .batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            .map_err(fail)?;
        let current: Option<i32> = self
            .tx
            .query_opt("SELECT version FROM schema_version", &[])
            .map_err(fail)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(fail)?;
        Ok(current.unwrap_or(0).max(0) as usize)
    }

    fn apply(&mut self, sql: &str) -> Result<(), StoreError> {
        self.tx.batch_execute(sql).map_err(fail)
    }

    fn set_version(&mut self, version: usize) -> Result<(), StoreError> {
        self.tx
            .execute("DELETE FROM schema_version", &[])
            .map_err(fail)?;
        self.tx
            .execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&(version as i32)],
            )
            .map(|_| ())
            .map_err(fail)
    }
}

/// Applies the pending migrations in one transaction holding
/// [`MIGRATION_LOCK`].
pub(super) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(fail)?;
    let mut schema = Migrating { tx };
    upgrade(&mut schema, MIGRATIONS, |current, binary| {
        format!("PostgreSQL schema version {current} is newer than this binary's {binary}")
    })?;
    schema.tx.commit().map_err(fail)
}
