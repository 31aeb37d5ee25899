//! The migration runner both stores share. Each store's schema is a list
//! of numbered `.sql` files (`sqlite/migrations/`, `postgres/migrations/`)
//! compiled into the binary; version N is the first N of them applied.
//! A store's `schema_version` table holds its version, one row.
//!
//! [`upgrade`] runs inside the transaction the store opened for it (and
//! under whatever lock the store takes), so a failed migration leaves the
//! database at the version it had: it applies the files past the stored
//! version in order, with `{IDENT_PERSON_SQL}` expanded (see
//! `identity::expand_migration`), then records the new version. A
//! database whose version is newer than this binary's files is refused,
//! untouched.
//!
//! A released file is never edited: a change of schema is a new file, so
//! a database created by any release upgrades through the steps that
//! release took. `tests/store_suite.rs` upgrades a fixture of each
//! released version (`tests/fixtures/`) to prove it.

use super::identity;
use super::StoreError;

/// One store's view of its schema, inside the migration's transaction.
pub(crate) trait Schema {
    /// The stored version (0 for an empty database), creating the
    /// `schema_version` table if missing.
    fn version(&mut self) -> Result<usize, StoreError>;
    /// Runs one migration's statements.
    fn apply(&mut self, sql: &str) -> Result<(), StoreError>;
    /// Records `version` as the stored version.
    fn set_version(&mut self, version: usize) -> Result<(), StoreError>;
}

/// Brings `schema` to the version of `migrations` (see the module doc).
/// `newer` words the refusal of a database newer than the binary, from
/// its version and the binary's.
pub(crate) fn upgrade(
    schema: &mut impl Schema,
    migrations: &[&str],
    newer: impl FnOnce(usize, usize) -> String,
) -> Result<(), StoreError> {
    let current = schema.version()?;
    if current > migrations.len() {
        return Err(StoreError::Migration(newer(current, migrations.len())));
    }
    for migration in &migrations[current..] {
        schema.apply(&identity::expand_migration(migration))?;
    }
    schema.set_version(migrations.len())
}
