//! Deletion on PostgreSQL: a user's tombstone, events, dead letters,
//! identities and links go in one transaction holding the deletion lock
//! exclusively, recorded in `deletions` (see the [store
//! module](crate::store) for what a deletion reaches). The batches in
//! flight finish first; the batches after it see the tombstone, so no
//! event of a deleted user slips in between.

use super::{pg_error, PostgresStore};
use crate::store::{identity, query};
use crate::store::{DeletionRecord, DeletionReport, DeletionStatus, PersonKind, StoreError};
use std::collections::HashSet;

pub(super) fn delete_user(
    store: &PostgresStore,
    user_id: &str,
    requested_at: i64,
) -> Result<DeletionReport, StoreError> {
    let sql = identity::DeletionSql::new("$1", "octet_length(raw)");
    let shard = store.shard();
    store.transaction(false, |conn, _| {
        let client = &mut conn.client;
        client.execute(
            "INSERT INTO tombstones (user_id, requested_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&user_id, &requested_at],
        )?;
        let aliased: Vec<String> = client
            .query(&sql.aliased, &[&user_id])?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let deleted = client.execute(&sql.events, &[&user_id])? as i64;
        let letters: Vec<i32> = client
            .query(&sql.dead_letters, &[&user_id])?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        client.execute(&sql.activity, &[&user_id])?;
        client.execute(&sql.idents, &[&user_id])?;
        for statement in &sql.unlink {
            client.execute(statement, &[&user_id])?;
        }
        for alias in &aliased {
            client.execute(&identity::repoint_sql("u", "$1"), &[alias])?;
        }
        settle(
            client,
            shard,
            user_id,
            PersonKind::User,
            "",
            requested_at,
            deleted,
            &letters,
        )?;
        Ok(DeletionReport {
            deleted_events: deleted as u64,
            deleted_dead_letters: letters.len() as u64,
            aliased_user_ids: aliased,
            linked_user_ids: Vec::new(),
            source: None,
        })
    })
}

pub(super) fn delete_device(
    store: &PostgresStore,
    kind: PersonKind,
    id: &str,
    requested_at: i64,
) -> Result<DeletionReport, StoreError> {
    let Some(link) = kind.link_kind() else {
        return delete_user(store, id, requested_at);
    };
    let sql = identity::DeviceDeletionSql::new(link, "$1", "octet_length(raw)");
    let shard = store.shard();
    // Under the deletion lock, exclusively, like a user's: the batches in
    // flight finish first, and the ones after see the tombstone.
    store.transaction(false, |conn, _| {
        let client = &mut conn.client;
        let linked: Vec<String> = client
            .query(&sql.linked, &[&id])?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let deleted = client.execute(&sql.events, &[&id])? as i64;
        let letters: Vec<i32> = client
            .query(&sql.dead_letters, &[&id])?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        client.execute(&sql.activity, &[&id])?;
        client.execute(&sql.idents, &[&id])?;
        client.execute(&sql.tombstone, &[&id])?;
        client.execute(&sql.unlink, &[&id])?;
        settle(client, shard, id, kind, "", requested_at, deleted, &letters)?;
        Ok(DeletionReport {
            deleted_events: deleted as u64,
            deleted_dead_letters: letters.len() as u64,
            aliased_user_ids: Vec::new(),
            linked_user_ids: linked,
            source: None,
        })
    })
}

/// A deletion scoped to `source`: that source's events and dead letters of
/// the person, the reach computed within it, and a tombstone refusing that
/// source's later events only (see `identity::ScopedDeletionSql`); the
/// active slots the deleted events leave without a product event of
/// their identity are deleted too. Under the deletion lock, exclusively,
/// like an unscoped one.
pub(super) fn delete_scoped(
    store: &PostgresStore,
    kind: PersonKind,
    id: &str,
    source: &str,
    requested_at: i64,
) -> Result<DeletionReport, StoreError> {
    let sql = identity::ScopedDeletionSql::new(kind, "$1::text", "$2::text", "octet_length(raw)");
    let report_sql = match kind.link_kind() {
        None => identity::DeletionSql::new("$1", "0").aliased,
        Some(link) => identity::DeviceDeletionSql::new(link, "$1", "0").linked,
    };
    let shard = store.shard();
    store.transaction(false, |conn, _| {
        let client = &mut conn.client;
        if kind == PersonKind::User {
            client.execute(
                "INSERT INTO tombstones (user_id, source, requested_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&id, &source, &requested_at],
            )?;
        }
        let named: Vec<String> = client
            .query(&report_sql, &[&id])?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        client.execute(&sql.reach, &[&id, &source])?;
        let mut expired = query::Expired::default();
        let rows = client.query(&sql.events, &[&id, &source])?;
        for row in &rows {
            expired.add(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        }
        let deleted = rows.len() as i64;
        let letters: Vec<i32> = client
            .query(&sql.dead_letters, &[&id, &source])?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        for slot in expired.slots.keys() {
            let (from, to) = query::slot_span(*slot);
            let survivors: HashSet<i64> = client
                .query(query::SLOT_SURVIVORS_SQL, &[&from, &to])?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            for (slot, ident) in expired.emptied(*slot, &survivors) {
                client.execute(
                    "DELETE FROM active_slots WHERE slot = $1 AND ident = $2",
                    &[&slot, &ident],
                )?;
            }
        }
        settle(
            client,
            shard,
            id,
            kind,
            source,
            requested_at,
            deleted,
            &letters,
        )?;
        let (aliased_user_ids, linked_user_ids) = match kind {
            PersonKind::User => (named, Vec::new()),
            _ => (Vec::new(), named),
        };
        Ok(DeletionReport {
            deleted_events: deleted as u64,
            deleted_dead_letters: letters.len() as u64,
            aliased_user_ids,
            linked_user_ids,
            source: Some(source.to_owned()),
        })
    })
}

pub(super) fn is_deleted(store: &PostgresStore, user_id: &str) -> Result<bool, StoreError> {
    let mut conn = store.pool.get()?;
    let row = conn
        .client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM tombstones WHERE user_id = $1)",
            &[&user_id],
        )
        .map_err(pg_error)?;
    row.try_get(0).map_err(pg_error)
}

pub(super) fn deletions(
    store: &PostgresStore,
    limit: usize,
) -> Result<Vec<DeletionRecord>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut conn = store.pool.get()?;
    let rows = conn
        .client
        .query(
            "SELECT user_id, requested_at, status, deleted_events, kind, source FROM deletions \
             ORDER BY row_id DESC LIMIT $1",
            &[&limit],
        )
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            let status: &str = r.try_get(2).map_err(pg_error)?;
            let kind: &str = r.try_get(4).map_err(pg_error)?;
            Ok(DeletionRecord {
                kind: PersonKind::from_stored(kind)?,
                user_id: r.try_get(0).map_err(pg_error)?,
                requested_at: r.try_get(1).map_err(pg_error)?,
                status: DeletionStatus::from_stored(status)?,
                deleted_events: r.try_get::<_, i64>(3).map_err(pg_error)?.max(0) as u64,
                source: Some(r.try_get::<_, String>(5).map_err(pg_error)?)
                    .filter(|s| !s.is_empty()),
            })
        })
        .collect()
}

/// Lowers this shard's totals by what a deletion removed (`deleted`
/// events, and dead letters of the sizes in `letters`) and records the
/// request: `id` of `kind`, in `source` (`''`: every source).
#[allow(clippy::too_many_arguments)]
fn settle(
    client: &mut ::postgres::Client,
    shard: i32,
    id: &str,
    kind: PersonKind,
    source: &str,
    requested_at: i64,
    deleted: i64,
    letters: &[i32],
) -> Result<(), ::postgres::Error> {
    let letter_bytes: i64 = letters.iter().map(|&b| i64::from(b)).sum();
    client.execute(
        "UPDATE counters SET stored = stored - $1, dead_letter_rows = dead_letter_rows - $2, \
         dead_letter_bytes = dead_letter_bytes - $3 WHERE shard = $4",
        &[&deleted, &(letters.len() as i64), &letter_bytes, &shard],
    )?;
    client.execute(
        "INSERT INTO deletions (user_id, requested_at, status, deleted_events, kind, source) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &id,
            &requested_at,
            &DeletionStatus::Done.as_str(),
            &deleted,
            &kind.as_str(),
            &source,
        ],
    )?;
    Ok(())
}
