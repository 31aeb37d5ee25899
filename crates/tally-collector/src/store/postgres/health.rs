//! Pipeline health on PostgreSQL (see [`crate::store::health`]): each
//! batch's figures in one statement of its transaction, on the counter
//! shard the batch picked; request counts of requests that wrote nothing;
//! the figures read from one snapshot, summed over the shards; past hours
//! (and notifications done with) pruned.

use super::statements::Prepared;
use super::{pg_error, PostgresStore};
use crate::store::health::{self, BatchHealth, Beacon, PipelineFigures};
use crate::store::outbox::AlertOutbox;
use crate::store::{HealthStore, Stats, StoreError};
use ::postgres::{Client, IsolationLevel};

/// Requests that reached no write transaction (see [`HealthStore::add_batches`]).
const ADD_BATCHES_SQL: &str = "WITH c AS (UPDATE counters SET batches = batches + $3, \
    batches_ok = batches_ok + $4 WHERE shard = $1) \
    INSERT INTO health_hours AS t (hour, shard, batches, batches_ok, accepted, duplicate, rejected) \
    VALUES ($2, $1, $3, $4, 0, 0, 0) ON CONFLICT (hour, shard) DO UPDATE SET \
    batches = t.batches + excluded.batches, batches_ok = t.batches_ok + excluded.batches_ok";

impl HealthStore for PostgresStore {
    fn stats(&self) -> Result<Stats, StoreError> {
        let mut conn = self.pool.get()?;
        let row = conn
            .client
            .query_one(
                "SELECT sum(accepted)::int8, sum(duplicate)::int8, sum(rejected)::int8, sum(stored)::int8 \
                 FROM counters",
                &[],
            )
            .map_err(pg_error)?;
        // An empty sum is NULL; a shard can go negative after a deletion,
        // the sum cannot.
        let get = |i: usize| -> Result<u64, StoreError> {
            Ok(row
                .try_get::<_, Option<i64>>(i)
                .map_err(pg_error)?
                .unwrap_or(0)
                .max(0) as u64)
        };
        Ok(Stats {
            accepted: get(0)?,
            duplicate: get(1)?,
            rejected: get(2)?,
            events: get(3)?,
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        conn.client
            .simple_query("SELECT 1")
            .map(|_| ())
            .map_err(pg_error)
    }

    fn alert_outbox(&self) -> Option<&dyn AlertOutbox> {
        Some(self)
    }

    fn add_batches(&self, at: i64, batches: u64, succeeded: u64) -> Result<(), StoreError> {
        if batches == 0 {
            return Ok(());
        }
        let shard = self.shard();
        let hour = health::hour_of(at);
        let (batches, succeeded) = (batches as i64, succeeded as i64);
        let mut conn = self.pool.get()?;
        conn.client
            .execute(ADD_BATCHES_SQL, &[&shard, &hour, &batches, &succeeded])
            .map(|_| ())
            .map_err(pg_error)
    }

    fn pipeline_health(&self, from: i64, to: i64, now: i64) -> Result<PipelineFigures, StoreError> {
        let mut conn = self.pool.get()?;
        // One snapshot for every figure.
        let mut tx = conn
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg_error)?;
        let figures = read_pipeline_health(&mut tx, from, to, now).map_err(pg_error)?;
        tx.commit().map_err(pg_error)?;
        Ok(figures)
    }

    fn stalled_installs(&self, older_than_s: f64, limit: usize) -> Result<Vec<Beacon>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.pool.get()?;
        let rows = conn
            .client
            .query(health::STALLED_SQL, &[&older_than_s, &limit])
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                Ok(Beacon {
                    install_id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    received_at: r.try_get(2)?,
                    pending: r.try_get(3)?,
                    pending_bytes: r.try_get(4)?,
                    oldest_pending_age_s: r.try_get(5)?,
                    consecutive_failures: r.try_get(6)?,
                    backoff_ms: r.try_get(7)?,
                    persistence_errors: r.try_get(8)?,
                    sync_latency_p50_ms: r.try_get(9)?,
                    sync_latency_p99_ms: r.try_get(10)?,
                    clock_offset_ms: r.try_get(11)?,
                })
            })
            .collect::<Result<_, ::postgres::Error>>()
            .map_err(pg_error)
    }

    fn prune_health(&self, before: i64) -> Result<u64, StoreError> {
        let mut conn = self.pool.get()?;
        // One statement per table, each its own transaction: they touch
        // only past hours, which no batch writes any more.
        let mut deleted = 0;
        for sql in health::PRUNE_SQL {
            deleted += conn.client.execute(sql, &[&before]).map_err(pg_error)?;
        }
        // Notifications done with (delivered or given up) as long ago.
        deleted += conn
            .client
            .execute(
                "DELETE FROM alert_outbox WHERE done_at IS NOT NULL AND done_at < $1",
                &[&before],
            )
            .map_err(pg_error)?;
        Ok(deleted)
    }
}

pub(super) fn write_health(
    client: &mut Client,
    prepared: &Prepared,
    shard: i32,
    h: &BatchHealth,
) -> Result<(), ::postgres::Error> {
    let reasons: Vec<&str> = h.rejections.keys().copied().collect();
    let reason_counts: Vec<i64> = h.rejections.values().copied().collect();
    let metrics: Vec<&str> = h.histograms.keys().map(|k| k.0).collect();
    let bounds: Vec<i64> = h.histograms.keys().map(|k| k.1).collect();
    let bucket_counts: Vec<i64> = h.histograms.values().copied().collect();
    let b: Vec<&health::Beacon> = h.beacons.values().collect();
    let ids: Vec<&str> = b.iter().map(|b| b.install_id.as_str()).collect();
    let int = |f: fn(&health::Beacon) -> i64| -> Vec<i64> { b.iter().map(|b| f(b)).collect() };
    let ats = int(|b| b.at);
    let received = int(|b| b.received_at);
    let pending = int(|b| b.pending);
    let pending_bytes = int(|b| b.pending_bytes);
    let ages: Vec<f64> = b.iter().map(|b| b.oldest_pending_age_s).collect();
    let failures = int(|b| b.consecutive_failures);
    let backoffs = int(|b| b.backoff_ms);
    let persistence = int(|b| b.persistence_errors);
    let p50: Vec<Option<f64>> = b.iter().map(|b| b.sync_latency_p50_ms).collect();
    let p99: Vec<Option<f64>> = b.iter().map(|b| b.sync_latency_p99_ms).collect();
    let offsets = int(|b| b.clock_offset_ms);
    client.execute(
        &prepared.write_health,
        &[
            &shard,
            &h.hour,
            &h.accepted,
            &h.duplicate,
            &h.rejected,
            &reasons,
            &reason_counts,
            &metrics,
            &bounds,
            &bucket_counts,
            &ids,
            &ats,
            &received,
            &pending,
            &pending_bytes,
            &ages,
            &failures,
            &backoffs,
            &persistence,
            &p50,
            &p99,
            &offsets,
        ],
    )?;
    Ok(())
}

fn read_pipeline_health(
    tx: &mut ::postgres::Transaction<'_>,
    from: i64,
    to: i64,
    now: i64,
) -> Result<PipelineFigures, ::postgres::Error> {
    let u = |v: i64| v.max(0) as u64;
    let mut figures = PipelineFigures::default();
    let (start, end) = health::window_hours(from, to);
    figures.window.from = start;
    figures.window.to = end;
    let five = |r: &::postgres::Row| -> Result<[u64; 5], ::postgres::Error> {
        Ok([
            u(r.try_get(0)?),
            u(r.try_get(1)?),
            u(r.try_get(2)?),
            u(r.try_get(3)?),
            u(r.try_get(4)?),
        ])
    };
    let totals = tx.query_one(health::TOTALS_SQL, &[])?;
    let t = five(&totals)?;
    figures.totals = health::HealthTotals {
        batches: t[0],
        batches_ok: t[1],
        accepted: t[2],
        duplicate: t[3],
        rejected: t[4],
        plan_violations: u(totals.try_get(5)?),
    };
    let window = &mut figures.window;
    [
        window.batches,
        window.batches_ok,
        window.accepted,
        window.duplicate,
        window.rejected,
    ] = five(&tx.query_one(health::WINDOW_SQL, &[&start, &end])?)?;
    for r in tx.query(health::REJECTIONS_SQL, &[&start, &end])? {
        window.rejections.insert(r.try_get(0)?, u(r.try_get(1)?));
    }
    for r in tx.query(health::HISTOGRAMS_SQL, &[&start, &end])? {
        let metric: String = r.try_get(0)?;
        health::add_histogram_row(window, &metric, r.try_get(1)?, r.try_get(2)?);
    }
    let k = tx.query_one(health::COMPLETENESS_SQL, &[])?;
    figures.completeness = health::Completeness {
        installs: u(k.try_get(0)?),
        installs_with_gaps: u(k.try_get(1)?),
        missing: u(k.try_get(2)?),
    };
    let f = tx.query_one(
        health::FLEET_SQL,
        &[
            &now.saturating_sub(health::FLEET_MAX_AGE_MS),
            &health::STALE_QUEUE_AGE_S,
        ],
    )?;
    figures.fleet = health::Fleet {
        installs_reporting: u(f.try_get(0)?),
        pending_events: u(f.try_get(1)?),
        oldest_pending_age_s: f.try_get(2)?,
        installs_with_persistence_errors: u(f.try_get(3)?),
        installs_in_backoff: u(f.try_get(4)?),
        installs_oldest_pending_over_24h: u(f.try_get(5)?),
    };
    Ok(figures)
}
