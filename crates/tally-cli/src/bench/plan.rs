//! The enforcement phases of `tally bench collector --plan FILE`: full
//! load alternately from a source the plan is not checked for and from
//! one it is enforced for, in the same run and on the same collector.
//!
//! The collector's plan is `FILE` with mode `off` for every source but
//! [`PLAN_WRITE_KEY`]'s, which is `enforce`: a request from the bench's
//! usual key takes the path without a plan, one from the plan's key has
//! every track event judged (its properties parsed and validated against
//! its version's schema) and a violation rejected. Each segment sends a
//! workload of its own (its own message, install and person ids, the
//! same shape and size), so no message of one segment repeats one of
//! another whose source differs (dedup is per source). Segments run
//! A B B A A B, so a drift over the run (a growing store, the load of
//! other processes) weighs on both sides alike.
//!
//! The figure is the rate with enforcement over the rate without it. A
//! plan that covers the bench's events rejects nothing, so the figure is
//! the cost of the check; the rejections are reported, and a plan that
//! rejects measures the rejections too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tally_collector::ingest::auth::source_id;
use tally_collector::plan::{Mode, PlanCheck, PlanSettings, Plans};
use tally_proto::EncodedBatch;

use super::load::{load_as, workload_of, Workload, WRITE_KEY};

/// The write key whose source the plan is enforced for.
pub(super) const PLAN_WRITE_KEY: &str = "bench-plan-write-key";

/// Segments with (`true`) and without enforcement.
const PLAN_SEGMENTS: [bool; 6] = [false, true, true, false, false, true];

/// The plan in force for the bench: `file`, enforced for
/// [`PLAN_WRITE_KEY`]'s source only.
pub(super) fn bench_plans(file: &Path) -> anyhow::Result<Arc<Plans>> {
    let settings = PlanSettings {
        file: Some(file.to_owned()),
        mode: Some(Mode::Off),
        sources: Some([(source_id(PLAN_WRITE_KEY), Mode::Enforce)].into()),
    };
    let plans = Plans::start(&settings, tally_collector::clock::now_ms())
        .with_context(|| format!("cannot load the plan {}", file.display()))?
        .context("no plan file")?;
    Ok(Arc::new(plans))
}

/// The check of the plan's source, for the single-thread baseline.
pub(super) fn enforced_check(plans: &Plans) -> Option<PlanCheck> {
    PlanCheck::for_source(plans, &source_id(PLAN_WRITE_KEY))
}

/// The workloads of the segments, built up front: `batches` batches each.
pub(super) fn plan_workloads(
    batches: usize,
    size: usize,
    dup_percent: usize,
) -> anyhow::Result<Vec<Workload>> {
    if batches == 0 {
        bail!("too few batches for the plan phases: raise --events");
    }
    // Ids of their own per segment: the process id (at most 2^22 on
    // Linux) and the segment, above every process id.
    let pid = std::process::id();
    Ok((0..PLAN_SEGMENTS.len() as u32)
        .map(|i| workload_of((1 << 30) | (pid << 3) | i, batches, size, dup_percent))
        .collect())
}

/// The figures of the plan phases.
pub(super) struct PlanRun {
    /// The plan file.
    pub(super) file: PathBuf,
    /// Full-load events/s of the segments without the check.
    pub(super) without: f64,
    /// Full-load events/s of the segments enforcing the plan.
    pub(super) with_plan: f64,
    /// Messages sent from the enforced source.
    pub(super) checked: u64,
    /// Of those, rejected (`plan_violation`).
    pub(super) rejected: u64,
}

impl PlanRun {
    /// Throughput with enforcement over throughput without it.
    pub(super) fn ratio(&self) -> f64 {
        self.with_plan / self.without
    }
}

/// Runs full load over `workloads` (one per segment of [`PLAN_SEGMENTS`]).
pub(super) fn plan_phases(
    base: &str,
    file: &Path,
    workloads: &[Workload],
    (batch, connections): (usize, usize),
) -> anyhow::Result<PlanRun> {
    let (mut with, mut without) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
    let (mut checked, mut rejected) = (0u64, 0u64);
    for (work, enforced) in workloads.iter().zip(PLAN_SEGMENTS) {
        let key = if enforced { PLAN_WRITE_KEY } else { WRITE_KEY };
        let batches: &[EncodedBatch] = &work.batches;
        let run = load_as(base, key, batches, batch, connections, None)?;
        if enforced {
            checked += run.messages;
            rejected += run.rejected;
        } else if run.rejected != 0 {
            bail!("{} messages were rejected without a plan", run.rejected);
        }
        let side = if enforced { &mut with } else { &mut without };
        side.0 += run.messages;
        side.1 += run.wall;
    }
    Ok(PlanRun {
        file: file.to_owned(),
        without: without.0 as f64 / without.1.as_secs_f64(),
        with_plan: with.0 as f64 / with.1.as_secs_f64(),
        checked,
        rejected,
    })
}
