//! Pipeline health on SQLite (see [`crate::store::health`]): each batch's
//! figures in its own transaction, request counts of requests that wrote
//! nothing, the figures read from one snapshot, and past hours pruned.
//! SQLite has one writer, so every row is shard 0.

use super::{db_error, SqliteStore};
use crate::store::health::{self, BatchHealth, Beacon, PipelineFigures};
use crate::store::{HealthStore, Stats, StoreError};
use rusqlite::{params, Connection};

impl HealthStore for SqliteStore {
    fn stats(&self) -> Result<Stats, StoreError> {
        self.readers.with(|c| {
            c.query_row(
                "SELECT accepted, duplicate, rejected, stored FROM counters WHERE id = 0",
                [],
                |r| {
                    Ok(Stats {
                        accepted: r.get::<_, i64>(0)? as u64,
                        duplicate: r.get::<_, i64>(1)? as u64,
                        rejected: r.get::<_, i64>(2)? as u64,
                        events: r.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .map_err(db_error)
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.readers
            .with(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_error))
    }

    fn add_batches(&self, at: i64, batches: u64, succeeded: u64) -> Result<(), StoreError> {
        if batches == 0 {
            return Ok(());
        }
        let (batches, succeeded) = (batches as i64, succeeded as i64);
        self.writer.run(0, |state| {
            let conn = &state.conn;
            conn.prepare_cached(
                "UPDATE counters SET batches = batches + ?1, batches_ok = batches_ok + ?2 WHERE id = 0",
            )
            .and_then(|mut s| s.execute(params![batches, succeeded]))
            .map_err(db_error)?;
            add_health_hour(conn, health::hour_of(at), batches, succeeded, [0, 0, 0])
        })
    }

    fn pipeline_health(&self, from: i64, to: i64, now: i64) -> Result<PipelineFigures, StoreError> {
        self.readers.with(|c| {
            // One read transaction: every figure sees the same commit.
            c.execute_batch("BEGIN").map_err(db_error)?;
            let figures = read_pipeline_health(c, from, to, now);
            let _ = c.execute_batch("COMMIT");
            figures
        })
    }

    fn stalled_installs(&self, older_than_s: f64, limit: usize) -> Result<Vec<Beacon>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.readers.with(|c| {
            c.prepare_cached(&health::sqlite_sql(health::STALLED_SQL))
                .and_then(|mut s| {
                    s.query_map(params![older_than_s, limit], |r| {
                        Ok(Beacon {
                            install_id: r.get(0)?,
                            at: r.get(1)?,
                            received_at: r.get(2)?,
                            pending: r.get(3)?,
                            pending_bytes: r.get(4)?,
                            oldest_pending_age_s: r.get(5)?,
                            consecutive_failures: r.get(6)?,
                            backoff_ms: r.get(7)?,
                            persistence_errors: r.get(8)?,
                            sync_latency_p50_ms: r.get(9)?,
                            sync_latency_p99_ms: r.get(10)?,
                            clock_offset_ms: r.get(11)?,
                        })
                    })?
                    .collect()
                })
                .map_err(db_error)
        })
    }

    fn prune_health(&self, before: i64) -> Result<u64, StoreError> {
        self.writer.run(0, |state| {
            let mut deleted = 0;
            for sql in health::PRUNE_SQL {
                deleted += state
                    .conn
                    .prepare_cached(&health::sqlite_sql(sql))
                    .and_then(|mut s| s.execute([before]))
                    .map_err(db_error)? as u64;
            }
            Ok(deleted)
        })
    }
}

/// Adds to the `health_hours` row of (`hour`, shard 0).
fn add_health_hour(
    conn: &Connection,
    hour: i64,
    batches: i64,
    succeeded: i64,
    [accepted, duplicate, rejected]: [i64; 3],
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO health_hours (hour, shard, batches, batches_ok, accepted, duplicate, rejected) \
         VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (hour, shard) DO UPDATE SET \
         batches = batches + excluded.batches, batches_ok = batches_ok + excluded.batches_ok, \
         accepted = accepted + excluded.accepted, duplicate = duplicate + excluded.duplicate, \
         rejected = rejected + excluded.rejected",
    )
    .and_then(|mut s| {
        s.execute(params![hour, batches, succeeded, accepted, duplicate, rejected])
    })
    .map(|_| ())
    .map_err(db_error)
}

/// One request's health figures, in its transaction (see [`super::health`]).
pub(super) fn write_health(conn: &Connection, h: &BatchHealth) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE counters SET batches = batches + 1, batches_ok = batches_ok + 1 WHERE id = 0",
    )
    .and_then(|mut s| s.execute([]))
    .map_err(db_error)?;
    add_health_hour(conn, h.hour, 1, 1, [h.accepted, h.duplicate, h.rejected])?;
    for (reason, n) in &h.rejections {
        conn.prepare_cached(
            "INSERT INTO health_rejections (hour, shard, reason, n) VALUES (?1, 0, ?2, ?3) \
             ON CONFLICT (hour, shard, reason) DO UPDATE SET n = n + excluded.n",
        )
        .and_then(|mut s| s.execute(params![h.hour, reason, n]))
        .map_err(db_error)?;
    }
    for ((metric, le), n) in &h.histograms {
        conn.prepare_cached(
            "INSERT INTO health_histograms (metric, hour, shard, le, n) VALUES (?1, ?2, 0, ?3, ?4) \
             ON CONFLICT (metric, hour, shard, le) DO UPDATE SET n = n + excluded.n",
        )
        .and_then(|mut s| s.execute(params![metric, h.hour, le, n]))
        .map_err(db_error)?;
    }
    for b in h.beacons.values() {
        conn.prepare_cached(
            "INSERT INTO install_health (install_id, at, received_at, pending, pending_bytes, \
             oldest_pending_age_s, consecutive_failures, backoff_ms, persistence_errors, \
             sync_p50_ms, sync_p99_ms, clock_offset_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
             ON CONFLICT (install_id) DO UPDATE SET at = excluded.at, \
             received_at = excluded.received_at, pending = excluded.pending, \
             pending_bytes = excluded.pending_bytes, \
             oldest_pending_age_s = excluded.oldest_pending_age_s, \
             consecutive_failures = excluded.consecutive_failures, \
             backoff_ms = excluded.backoff_ms, persistence_errors = excluded.persistence_errors, \
             sync_p50_ms = excluded.sync_p50_ms, sync_p99_ms = excluded.sync_p99_ms, \
             clock_offset_ms = excluded.clock_offset_ms WHERE excluded.at >= install_health.at",
        )
        .and_then(|mut s| {
            s.execute(params![
                b.install_id,
                b.at,
                b.received_at,
                b.pending,
                b.pending_bytes,
                b.oldest_pending_age_s,
                b.consecutive_failures,
                b.backoff_ms,
                b.persistence_errors,
                b.sync_latency_p50_ms,
                b.sync_latency_p99_ms,
                b.clock_offset_ms,
            ])
        })
        .map_err(db_error)?;
    }
    Ok(())
}

fn read_pipeline_health(
    c: &Connection,
    from: i64,
    to: i64,
    now: i64,
) -> Result<PipelineFigures, StoreError> {
    let u = |v: i64| v.max(0) as u64;
    let mut figures = PipelineFigures::default();
    let (start, end) = health::window_hours(from, to);
    figures.window.from = start;
    figures.window.to = end;
    let five = |r: &rusqlite::Row<'_>| -> rusqlite::Result<[i64; 5]> {
        Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
    };
    let (t, violations) = c
        .prepare_cached(&health::sqlite_sql(health::TOTALS_SQL))
        .and_then(|mut s| s.query_row([], |r| Ok((five(r)?, r.get::<_, i64>(5)?))))
        .map_err(db_error)?;
    figures.totals = health::HealthTotals {
        batches: u(t[0]),
        batches_ok: u(t[1]),
        accepted: u(t[2]),
        duplicate: u(t[3]),
        rejected: u(t[4]),
        plan_violations: u(violations),
    };
    let w = c
        .prepare_cached(&health::sqlite_sql(health::WINDOW_SQL))
        .and_then(|mut s| s.query_row(params![start, end], five))
        .map_err(db_error)?;
    let window = &mut figures.window;
    [
        window.batches,
        window.batches_ok,
        window.accepted,
        window.duplicate,
        window.rejected,
    ] = w.map(u);
    let reasons: Vec<(String, i64)> = c
        .prepare_cached(&health::sqlite_sql(health::REJECTIONS_SQL))
        .and_then(|mut s| {
            s.query_map(params![start, end], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(db_error)?;
    window.rejections = reasons.into_iter().map(|(k, n)| (k, u(n))).collect();
    let rows: Vec<(String, i64, i64)> = c
        .prepare_cached(&health::sqlite_sql(health::HISTOGRAMS_SQL))
        .and_then(|mut s| {
            s.query_map(params![start, end], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect()
        })
        .map_err(db_error)?;
    for (metric, le, n) in rows {
        health::add_histogram_row(window, &metric, le, n);
    }
    let k = c
        .prepare_cached(health::COMPLETENESS_SQL)
        .and_then(|mut s| s.query_row([], |r| Ok([r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?])))
        .map_err(db_error)?;
    figures.completeness = health::Completeness {
        installs: u(k[0]),
        installs_with_gaps: u(k[1]),
        missing: u(k[2]),
    };
    figures.fleet = c
        .prepare_cached(&health::sqlite_sql(health::FLEET_SQL))
        .and_then(|mut s| {
            s.query_row(
                params![
                    now.saturating_sub(health::FLEET_MAX_AGE_MS),
                    health::STALE_QUEUE_AGE_S
                ],
                |r| {
                    Ok(health::Fleet {
                        installs_reporting: u(r.get(0)?),
                        pending_events: u(r.get(1)?),
                        oldest_pending_age_s: r.get(2)?,
                        installs_with_persistence_errors: u(r.get(3)?),
                        installs_in_backoff: u(r.get(4)?),
                        installs_oldest_pending_over_24h: u(r.get(5)?),
                    })
                },
            )
        })
        .map_err(db_error)?;
    Ok(figures)
}
