//! Keys on PostgreSQL (see [`crate::store::keys`]): each change runs in a
//! transaction that first locks the `key_versions` row, so changes made
//! by several collectors take turns (the last-admin rule reads a settled
//! table), and bumps the version before it commits.

use super::{pg_error, PostgresStore};
use crate::store::keys::{self, KeyChange, KeyStore, NewKey, SecretDigest, StoredKey};
use crate::store::StoreError;
use ::postgres::GenericClient;

/// Every key with its secrets, read on `client`.
fn load(client: &mut impl GenericClient) -> Result<Vec<StoredKey>, StoreError> {
    let rows = client
        .query(
            "SELECT key_id, kind, name, origin, created_at, revoked_at FROM api_keys \
             ORDER BY created_at, key_id",
            &[],
        )
        .map_err(pg_error)?;
    let rows = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
            ))
        })
        .collect::<Result<Vec<_>, ::postgres::Error>>()
        .map_err(pg_error)?;
    let secrets = client
        .query(
            "SELECT digest, key_id, configured, created_at, expires_at FROM api_key_secrets \
             ORDER BY created_at, digest",
            &[],
        )
        .map_err(pg_error)?;
    let secrets = secrets
        .iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            ))
        })
        .collect::<Result<Vec<_>, ::postgres::Error>>()
        .map_err(pg_error)?;
    keys::group(rows, secrets)
}

/// Locks the version row: changes take turns.
fn lock(tx: &mut ::postgres::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        "SELECT version FROM key_versions WHERE id = 0 FOR UPDATE",
        &[],
    )
    .map(|_| ())
    .map_err(pg_error)
}

fn bump(tx: &mut ::postgres::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE key_versions SET version = version + 1 WHERE id = 0",
        &[],
    )
    .map(|_| ())
    .map_err(pg_error)
}

/// Inserts `key` and its secret; whether anything was new. A key made
/// through the API must be new: an id already taken is an error.
fn insert(
    tx: &mut ::postgres::Transaction<'_>,
    key: &NewKey,
    configured: bool,
) -> Result<bool, StoreError> {
    let keys = tx
        .execute(
            "INSERT INTO api_keys (key_id, kind, name, origin, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                &key.id,
                &key.kind.as_str(),
                &key.name,
                &key.origin.as_str(),
                &key.created_at,
            ],
        )
        .map_err(pg_error)?;
    if !configured && keys == 0 {
        return Err(StoreError::Backend(format!(
            "key id {} is already taken",
            key.id
        )));
    }
    let secrets = tx
        .execute(
            "INSERT INTO api_key_secrets (digest, key_id, configured, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&&key.digest[..], &key.id, &configured, &key.created_at],
        )
        .map_err(pg_error)?;
    Ok(keys + secrets > 0)
}

impl PostgresStore {
    /// Runs `work` in a transaction holding the version row's lock.
    fn key_change<T>(
        &self,
        work: impl FnOnce(&mut ::postgres::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.client.transaction().map_err(pg_error)?;
        lock(&mut tx)?;
        let out = work(&mut tx)?;
        tx.commit().map_err(pg_error)?;
        Ok(out)
    }
}

impl KeyStore for PostgresStore {
    fn key_version(&self) -> Result<i64, StoreError> {
        let mut conn = self.pool.get()?;
        conn.client
            .query_one("SELECT version FROM key_versions WHERE id = 0", &[])
            .and_then(|r| r.try_get(0))
            .map_err(pg_error)
    }

    fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut conn = self.pool.get()?;
        load(&mut conn.client)
    }

    fn record_configured_keys(&self, keys: &[NewKey]) -> Result<(), StoreError> {
        self.key_change(|tx| {
            let mut changed = false;
            for key in keys {
                changed |= insert(tx, key, true)?;
            }
            if changed {
                bump(tx)?;
            }
            Ok(())
        })
    }

    fn create_key(&self, key: &NewKey) -> Result<(), StoreError> {
        self.key_change(|tx| {
            insert(tx, key, false)?;
            bump(tx)
        })
    }

    fn rotate_key(
        &self,
        id: &str,
        digest: &SecretDigest,
        at: i64,
        old_expire_at: i64,
    ) -> Result<KeyChange, StoreError> {
        self.key_change(|tx| {
            let Some(key) = load(tx)?.into_iter().find(|k| k.id == id) else {
                return Ok(KeyChange::NotFound);
            };
            if key.revoked_at.is_some() {
                return Ok(KeyChange::AlreadyRevoked);
            }
            tx.execute(
                "UPDATE api_key_secrets SET expires_at = $2 WHERE key_id = $1 \
                 AND (expires_at IS NULL OR expires_at > $2)",
                &[&id, &old_expire_at],
            )
            .map_err(pg_error)?;
            tx.execute(
                "INSERT INTO api_key_secrets (digest, key_id, configured, created_at) \
                 VALUES ($1, $2, false, $3)",
                &[&&digest[..], &id, &at],
            )
            .map_err(pg_error)?;
            bump(tx)?;
            let key = load(tx)?.into_iter().find(|k| k.id == id);
            Ok(key.map_or(KeyChange::NotFound, KeyChange::Done))
        })
    }

    fn revoke_key(&self, id: &str, at: i64) -> Result<KeyChange, StoreError> {
        self.key_change(|tx| {
            let all = load(tx)?;
            let Some(key) = all.iter().find(|k| k.id == id) else {
                return Ok(KeyChange::NotFound);
            };
            if key.revoked_at.is_some() {
                return Ok(KeyChange::AlreadyRevoked);
            }
            if keys::last_admin(&all, key, at) {
                return Ok(KeyChange::LastAdmin);
            }
            tx.execute(
                "UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1",
                &[&id, &at],
            )
            .map_err(pg_error)?;
            bump(tx)?;
            let key = load(tx)?.into_iter().find(|k| k.id == id);
            Ok(key.map_or(KeyChange::NotFound, KeyChange::Done))
        })
    }
}
