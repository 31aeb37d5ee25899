//! Keys on SQLite (see [`crate::store::keys`]): changes go through the
//! writer, so they take turns with each other and with ingest; each bumps
//! `key_versions` in its transaction.

use super::{db_error, SqliteStore};
use crate::store::keys::{self, KeyChange, KeyStore, NewKey, SecretDigest, StoredKey};
use crate::store::StoreError;
use rusqlite::{params, Connection};

fn load(conn: &Connection) -> Result<Vec<StoredKey>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT key_id, kind, name, origin, created_at, revoked_at FROM api_keys \
             ORDER BY created_at, key_id",
        )
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect()
        })
        .map_err(db_error)?;
    let secrets = conn
        .prepare_cached(
            "SELECT digest, key_id, configured, created_at, expires_at FROM api_key_secrets \
             ORDER BY created_at, digest",
        )
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .map_err(db_error)?;
    keys::group(rows, secrets)
}

fn bump(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE key_versions SET version = version + 1 WHERE id = 0")
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(db_error)
}

/// Inserts `key` and its secret; whether anything was new. A key made
/// through the API must be new: an id already taken is an error.
fn insert(conn: &Connection, key: &NewKey, configured: bool) -> Result<bool, StoreError> {
    let keys = conn
        .prepare_cached(
            "INSERT INTO api_keys (key_id, kind, name, origin, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                key.id,
                key.kind.as_str(),
                key.name,
                key.origin.as_str(),
                key.created_at
            ])
        })
        .map_err(db_error)?;
    if !configured && keys == 0 {
        return Err(StoreError::Backend(format!(
            "key id {} is already taken",
            key.id
        )));
    }
    let secrets = conn
        .prepare_cached(
            "INSERT INTO api_key_secrets (digest, key_id, configured, created_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![&key.digest[..], key.id, configured, key.created_at]))
        .map_err(db_error)?;
    Ok(keys + secrets > 0)
}

impl KeyStore for SqliteStore {
    fn key_version(&self) -> Result<i64, StoreError> {
        self.readers.with(|c| {
            c.prepare_cached("SELECT version FROM key_versions WHERE id = 0")
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(db_error)
        })
    }

    fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.readers.with(load)
    }

    fn record_configured_keys(&self, keys: &[NewKey]) -> Result<(), StoreError> {
        self.writer.run(0, |state| {
            let mut changed = false;
            for key in keys {
                changed |= insert(&state.conn, key, true)?;
            }
            if changed {
                bump(&state.conn)?;
            }
            Ok(())
        })
    }

    fn create_key(&self, key: &NewKey) -> Result<(), StoreError> {
        self.writer.run(0, |state| {
            insert(&state.conn, key, false)?;
            bump(&state.conn)
        })
    }

    fn rotate_key(
        &self,
        id: &str,
        digest: &SecretDigest,
        at: i64,
        old_expire_at: i64,
    ) -> Result<KeyChange, StoreError> {
        self.writer.run(0, |state| {
            let conn = &state.conn;
            let Some(key) = load(conn)?.into_iter().find(|k| k.id == id) else {
                return Ok(KeyChange::NotFound);
            };
            if key.revoked_at.is_some() {
                return Ok(KeyChange::AlreadyRevoked);
            }
            conn.prepare_cached(
                "UPDATE api_key_secrets SET expires_at = ?2 WHERE key_id = ?1 \
                 AND (expires_at IS NULL OR expires_at > ?2)",
            )
            .and_then(|mut s| s.execute(params![id, old_expire_at]))
            .map_err(db_error)?;
            conn.prepare_cached(
                "INSERT INTO api_key_secrets (digest, key_id, configured, created_at) \
                 VALUES (?1, ?2, 0, ?3)",
            )
            .and_then(|mut s| s.execute(params![&digest[..], id, at]))
            .map_err(db_error)?;
            bump(conn)?;
            let key = load(conn)?.into_iter().find(|k| k.id == id);
            Ok(key.map_or(KeyChange::NotFound, KeyChange::Done))
        })
    }

    fn revoke_key(&self, id: &str, at: i64) -> Result<KeyChange, StoreError> {
        self.writer.run(0, |state| {
            let conn = &state.conn;
            let all = load(conn)?;
            let Some(key) = all.iter().find(|k| k.id == id) else {
                return Ok(KeyChange::NotFound);
            };
            if key.revoked_at.is_some() {
                return Ok(KeyChange::AlreadyRevoked);
            }
            if keys::last_admin(&all, key, at) {
                return Ok(KeyChange::LastAdmin);
            }
            conn.prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1")
                .and_then(|mut s| s.execute(params![id, at]))
                .map_err(db_error)?;
            bump(conn)?;
            let key = load(conn)?.into_iter().find(|k| k.id == id);
            Ok(key.map_or(KeyChange::NotFound, KeyChange::Done))
        })
    }
}
