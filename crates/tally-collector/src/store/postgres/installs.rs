//! Completeness on PostgreSQL: each install's highest seq (`installs`),
//! the seqs seen as merged ranges (`install_seen`), and the drops its
//! device reported (`install_drops`), written by the batch that saw them
//! and read back from one snapshot as an [`InstallReport`].
//!
//! The install rows are upserted (locked, in sorted order) before their
//! seen ranges are read and merged, so one transaction at a time merges an
//! install's ranges, across collectors. An install belongs to the first
//! source that sends for it; only that source's events mark its seqs seen.

use super::statements::Prepared;
use super::{pg_error, PostgresStore};
use crate::store::identity;
use crate::store::plan::InstallDelta;
use crate::store::ranges::{self, SeqRange};
use crate::store::{InstallEvent, InstallReport, StoreError};
use ::postgres::{Client, IsolationLevel};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Each install's completeness gained in the batch ([`InstallDelta`])
/// merged into its stored ranges; an install another source claimed
/// meanwhile is left alone.
pub(super) fn write_installs(
    client: &mut Client,
    prepared: &Prepared,
    deltas: &BTreeMap<&str, InstallDelta<'_>>,
) -> Result<(), ::postgres::Error> {
    if deltas.is_empty() {
        return Ok(());
    }
    let install_ids: Vec<&str> = deltas.keys().copied().collect();
    let maxes: Vec<i64> = deltas.values().map(|d| d.max_seq as i64).collect();
    let owner_ids: Vec<&str> = deltas.values().map(|d| d.source).collect();
    let written: HashSet<String> = client
        .query(
            &prepared.upsert_installs,
            &[&install_ids, &maxes, &owner_ids],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let drops: Vec<(&str, i64, i64, &str)> = deltas
        .iter()
        .filter(|(i, _)| written.contains(**i))
        .flat_map(|(i, d)| {
            d.drops
                .iter()
                .map(move |&(from, to, reason)| (*i, from as i64, to as i64, reason))
        })
        .collect();
    if !drops.is_empty() {
        let drop_ids: Vec<&str> = drops.iter().map(|d| d.0).collect();
        let drop_froms: Vec<i64> = drops.iter().map(|d| d.1).collect();
        let drop_tos: Vec<i64> = drops.iter().map(|d| d.2).collect();
        let drop_reasons: Vec<&str> = drops.iter().map(|d| d.3).collect();
        client.execute(
            &prepared.insert_drops,
            &[&drop_ids, &drop_froms, &drop_tos, &drop_reasons],
        )?;
    }

    // Read after the lock above (a new statement, a new snapshot): the
    // ranges another collector committed meanwhile are seen.
    let spans: Vec<(&str, i64, i64)> = deltas
        .iter()
        .filter(|(i, _)| written.contains(**i))
        .filter_map(|(i, d)| {
            let (lo, hi) = d.span()?;
            Some((*i, lo as i64, hi as i64))
        })
        .collect();
    if spans.is_empty() {
        return Ok(());
    }
    let span_ids: Vec<&str> = spans.iter().map(|s| s.0).collect();
    let los: Vec<i64> = spans.iter().map(|s| s.1).collect();
    let his: Vec<i64> = spans.iter().map(|s| s.2).collect();
    let mut old: HashMap<String, Vec<SeqRange>> = HashMap::new();
    for row in client.query(&prepared.select_seen, &[&span_ids, &los, &his])? {
        old.entry(row.try_get(0)?).or_default().push((
            row.try_get::<_, i64>(1)? as u64,
            row.try_get::<_, i64>(2)? as u64,
        ));
    }
    let (mut del_ids, mut del_froms) = (Vec::new(), Vec::new());
    let (mut up_ids, mut up_froms, mut up_tos) = (Vec::new(), Vec::new(), Vec::new());
    for (install, delta) in deltas.iter().filter(|(i, _)| written.contains(**i)) {
        let mut stored = old.remove(*install).unwrap_or_default();
        stored.sort_unstable();
        let merged = ranges::merge(&stored, &delta.seen);
        if merged == stored {
            continue;
        }
        let starts: HashSet<u64> = merged.iter().map(|r| r.0).collect();
        for (from, _) in stored.iter().filter(|r| !starts.contains(&r.0)) {
            del_ids.push(*install);
            del_froms.push(*from as i64);
        }
        for range in merged.iter().filter(|r| !stored.contains(r)) {
            up_ids.push(*install);
            up_froms.push(range.0 as i64);
            up_tos.push(range.1 as i64);
        }
    }
    if !del_ids.is_empty() || !up_ids.is_empty() {
        client.execute(
            &prepared.write_seen,
            &[&del_ids, &del_froms, &up_ids, &up_froms, &up_tos],
        )?;
    }
    Ok(())
}

pub(super) fn install(
    store: &PostgresStore,
    install_id: &str,
) -> Result<Option<InstallReport>, StoreError> {
    let mut conn = store.pool.get()?;
    // One snapshot for the three reads.
    let mut tx = conn
        .client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(pg_error)?;
    let Some(max_seq) = tx
        .query_opt(
            "SELECT max_seq FROM installs WHERE install_id = $1",
            &[&install_id],
        )
        .map_err(pg_error)?
        .map(|r| r.try_get::<_, i64>(0))
        .transpose()
        .map_err(pg_error)?
    else {
        return Ok(None);
    };
    let seen: Vec<SeqRange> = tx
        .query(
            "SELECT from_seq, to_seq FROM install_seen WHERE install_id = $1 ORDER BY from_seq",
            &[&install_id],
        )
        .map_err(pg_error)?
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<_, i64>(0)? as u64,
                r.try_get::<_, i64>(1)? as u64,
            ))
        })
        .collect::<Result<_, ::postgres::Error>>()
        .map_err(pg_error)?;
    let drops: Vec<(u64, u64, String)> = tx
        .query(
            "SELECT from_seq, to_seq, reason FROM install_drops WHERE install_id = $1",
            &[&install_id],
        )
        .map_err(pg_error)?
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<_, i64>(0)? as u64,
                r.try_get::<_, i64>(1)? as u64,
                r.try_get(2)?,
            ))
        })
        .collect::<Result<_, ::postgres::Error>>()
        .map_err(pg_error)?;
    tx.commit().map_err(pg_error)?;
    Ok(Some(ranges::report(max_seq as u64, &seen, drops)))
}

pub(super) fn install_events(
    store: &PostgresStore,
    install_id: &str,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<InstallEvent>, StoreError> {
    let sql = identity::install_events_sql("$1", "$2", "$3");
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut conn = store.pool.get()?;
    let rows = conn
        .client
        .query(&sql, &[&install_id, &after, &limit])
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            Ok(InstallEvent {
                seq: r.try_get::<_, i64>(0)? as u64,
                kind: r.try_get(1)?,
                event: r.try_get(2)?,
                person: r.try_get(3)?,
            })
        })
        .collect::<Result<_, ::postgres::Error>>()
        .map_err(pg_error)
}
