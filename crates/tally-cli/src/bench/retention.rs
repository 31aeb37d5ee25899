//! The retention phases of `tally bench collector`: a backlog of expired
//! events, then full load with and without the retention job deleting it.

use std::sync::Arc;
use std::time::Duration;

use super::load::{load, message, WRITE_KEY};
use anyhow::bail;
use tally_collector::ingest::auth::source_id;
use tally_collector::store;
use tally_proto::EncodedBatch;

/// The figures of the retention phases.
pub(super) struct RetentionRun {
    pub(super) backlog: u64,
    /// Full-load events/s of the segments without the job.
    pub(super) without: f64,
    /// Full-load events/s of the segments with the job deleting.
    pub(super) with_job: f64,
    /// Wall time of the segments with the job.
    pub(super) with_job_wall: Duration,
    /// Deleted by the job in all.
    pub(super) expired: u64,
}

impl RetentionRun {
    /// Throughput with the job over throughput without it.
    pub(super) fn ratio(&self) -> f64 {
        self.with_job / self.without
    }
}

/// Days the bench's retention policy keeps events; the backlog is older.
const BENCH_RETENTION_DAYS: u32 = 365;
const BACKLOG_AGE_DAYS: i64 = 400;

/// Segments of the retention phases, with (`true`) and without the job:
/// A B B A A B, so that a drift over the run (a growing table, the load of
/// other processes) weighs on both sides alike.
const RETENTION_SEGMENTS: [bool; 6] = [false, true, true, false, false, true];

/// Seeds the backlog, then runs full load in [`RETENTION_SEGMENTS`], the
/// retention job (started afresh, so deleting from its first moment)
/// running during the segments marked `true`.
pub(super) fn retention_phases(
    base: &str,
    store: &Arc<dyn store::Store>,
    metrics: &Arc<tally_collector::metrics::Metrics>,
    batches: &[EncodedBatch],
    backlog_events: usize,
    (batch, connections): (usize, usize),
) -> anyhow::Result<RetentionRun> {
    use tally_collector::governance::retention::{RetentionJob, RetentionPolicy};
    let backlog = backlog_events as u64;
    eprintln!("seeding {backlog} events {BACKLOG_AGE_DAYS} days old");
    seed_backlog(store.as_ref(), backlog_events)?;
    let segment = batches.len() / RETENTION_SEGMENTS.len();
    if segment == 0 {
        bail!("too few batches for the retention phases: raise --events");
    }
    let (mut with, mut without) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
    for (i, job_on) in RETENTION_SEGMENTS.into_iter().enumerate() {
        let work = &batches[i * segment..(i + 1) * segment];
        let job = if job_on {
            Some(RetentionJob::start(
                store.clone(),
                metrics.clone(),
                RetentionPolicy {
                    default_days: Some(BENCH_RETENTION_DAYS),
                    ..RetentionPolicy::default()
                },
            )?)
        } else {
            None
        };
        let expired_before = expired_total(metrics);
        let run = load(base, work, batch, connections, None)?;
        if job.is_some() && expired_total(metrics) == expired_before {
            bail!("the retention job deleted nothing during segment {i}");
        }
        drop(job);
        let side = if job_on { &mut with } else { &mut without };
        side.0 += run.messages;
        side.1 += run.wall;
    }
    let expired = expired_total(metrics);
    if expired >= backlog {
        bail!(
            "the job deleted the whole backlog ({backlog}) before its segments ended: \
             use a larger --retention-backlog"
        );
    }
    Ok(RetentionRun {
        backlog,
        without: without.0 as f64 / without.1.as_secs_f64(),
        with_job: with.0 as f64 / with.1.as_secs_f64(),
        with_job_wall: with.1,
        expired,
    })
}

/// `tally_retention_expired_events_total` of the in-process collector.
fn expired_total(metrics: &tally_collector::metrics::Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix("tally_retention_expired_events_total ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Writes `n` SDK-shaped events whose corrected time is
/// [`BACKLOG_AGE_DAYS`] old straight into the store, through the
/// collector's own event building (the HTTP path is not what is measured
/// here).
fn seed_backlog(store: &dyn store::Store, n: usize) -> anyhow::Result<()> {
    use tally_collector::{
        clock,
        ingest::{clock as times, events},
    };
    const DAY_MS: i64 = 24 * 60 * 60 * 1000;
    let run = std::process::id();
    let received_at = clock::now_ms();
    let old = received_at - BACKLOG_AGE_DAYS * DAY_MS;
    let mut batch = Vec::with_capacity(500);
    for i in 0..n {
        let mut msg = message(run, i as u64, old + i as i64);
        msg.message_id = Some(format!("backlog-{run}-{i:012}"));
        let raw = msg.to_json();
        let checked = tally_proto::validate(&msg, &raw)
            .map_err(|r| anyhow::anyhow!("a backlog message is invalid: {}", r.detail))?;
        // No sentAt: the corrected time is the message's own.
        let times = times::message_times(&checked, None, received_at);
        batch.push(events::new_event(
            &source_id(WRITE_KEY),
            &msg,
            checked,
            times,
            received_at,
            &raw,
        ));
        if batch.len() == 500 || i + 1 == n {
            store.write_batch(&batch, &[])?;
            batch.clear();
        }
    }
    Ok(())
}
