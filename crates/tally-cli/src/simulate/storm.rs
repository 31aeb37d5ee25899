//! The reconnect storm: every device tracks its script while offline, into
//! its real durable log; then the whole fleet comes back online at one
//! moment. The collector must shed the load with 429 + `Retry-After`
//! instead of collapsing, and the fleet must drain without a retry storm.
//!
//! # Design
//!
//! Every device is a real `Tracker` (its own data directory, log, pipeline
//! and uploader) from start to end. A tracker runs three threads and holds
//! a few files and a socket, so ten thousand at once would need 30,000
//! threads and more file descriptors than a process usually may open.
//! Devices therefore take turns, sharing nothing but the process:
//!
//! 1. **offline**: [`CAPTURE_WORKERS`] threads open one device after
//!    another with its network down, play its script, and shut it down (a
//!    flush: the events are durable and pending).
//! 2. **online**: at one moment the network comes up. `--concurrency`
//!    workers each reopen a device from its directory and ask it to sync
//!    (`wait_until_synced`, as an app does when connectivity returns; the
//!    background upload is off so that request is the device's first
//!    attempt, and its backoff and `Retry-After` waits are the uploader's
//!    own from then on), shut it down once nothing is pending, and take the
//!    next. The collector sees `--concurrency` devices sending at all times
//!    until the fleet has drained; the drain time runs from the moment the
//!    network came up until the last device synced.
//! 3. **accounting**: once the clock has stopped, each device's log is
//!    read for what it still holds, dropped or found corrupt.
//!
//! # Figures
//!
//! - requests/s (peak) and 429s: counted by each device's transport.
//! - collector events/s (peak): `/v1/stats` `accepted` sampled every
//!   [`SAMPLE_EVERY`], the steepest rise over any window of at least 1 s.
//! - retries per event: failed attempts (429, 5xx, no answer), each of
//!   which the device sends again, over events counted.
//! - SDK CPU per event: this process's CPU time (user + system, all
//!   threads: `CLOCK_PROCESS_CPUTIME_ID`, what `getrusage(RUSAGE_SELF)`
//!   adds up) over each phase, divided by the events of the phase. The
//!   collector runs in another process and is not in it; the simulator's
//!   own bookkeeping is, and is small against the SDK's work.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tally_sdk::upload::transport::{Request, Response, Transport, TransportError};
use tally_sdk::WhenFull;

use super::faults::FaultTransport;
use super::ledger::Ledger;
use super::observe::Client;
use super::scenario::{DevicePlan, Step};
use super::{device_dir, perform, read_log, Fleet, Outcome, SHUTDOWN_TIMEOUT};

/// Devices online at once by default: twice the collector's default ingest
/// slots (64), so the collector is always saturated and sheds load, while
/// the devices' own threads (three per tracker, each polling while it
/// syncs) stay few enough not to starve a collector on the same machine.
/// On 2 cores the 10,000 × 100 storm drained in the same time with 500
/// devices at once, with 1.7 times the SDK CPU per uploaded event and 8
/// times the retries.
pub const DEFAULT_CONCURRENCY: usize = 128;

/// Threads opening devices in the offline phase: the work is the SDK's
/// pipeline and fsyncs, which more threads than this only contend for.
const CAPTURE_WORKERS: usize = 16;

/// How long a device that synced may take to stop during the storm: its
/// threads compete with the whole fleet's for the CPU.
const ONLINE_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the collector's `accepted` total is sampled during the drain.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// How long a device may block in `track()` for room in its hand-off
/// channel: the offline phase tracks a whole script without think times.
const BLOCK_WHEN_FULL_MS: u64 = 60_000;

/// The storm's own figures (the request counters are the fleet's).
#[derive(Debug, Clone)]
pub struct Profile {
    pub concurrency: usize,
    /// Wall time of the offline phase.
    pub capture: Duration,
    /// CPU time of this process over the offline phase.
    pub capture_cpu: Duration,
    /// CPU time of this process over the online phase.
    pub drain_cpu: Duration,
    /// The collector's steepest rise of `accepted`, per second.
    pub peak_events_per_s: f64,
    /// Devices that synced before the drain deadline.
    pub drained_devices: usize,
}

/// A device's link: down until the fleet comes back online.
#[derive(Debug)]
struct Gate {
    online: Arc<AtomicBool>,
    inner: Arc<FaultTransport>,
}

impl Transport for Gate {
    fn send(&self, request: &Request) -> Result<Response, TransportError> {
        if !self.online.load(Ordering::SeqCst) {
            return Err(TransportError::Connect(
                "network unreachable (offline before the storm)".into(),
            ));
        }
        self.inner.send(request)
    }
}

/// CPU time of this process so far (all threads, user and system).
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Runs `work(i)` for every `i` in `0..n` on `workers` threads, in order of
/// `i`; stops at the first error.
fn pool<T: Send>(
    n: usize,
    workers: usize,
    work: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n || failed.load(Ordering::SeqCst) {
                    return;
                }
                match work(i) {
                    Ok(v) => results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(v),
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|v| v.context("a device was skipped"))
        .collect()
}

pub(super) fn run(fleet: &Fleet, plans: &[DevicePlan], client: &Client) -> anyhow::Result<Outcome> {
    let online = Arc::new(AtomicBool::new(false));
    let gate = |plan: &DevicePlan| -> Arc<dyn Transport> {
        Arc::new(Gate {
            online: Arc::clone(&online),
            inner: fleet.transport(plan),
        })
    };

    // Offline: every device tracks its script into its log.
    fleet.progress.set_length(plans.len() as u64);
    fleet.progress.set_message("offline");
    let started = Instant::now();
    let cpu_started = cpu_time();
    let captured = pool(plans.len(), CAPTURE_WORKERS, |i| {
        let plan = &plans[i];
        let dir = device_dir(&fleet.root, plan, 0);
        let tracker = tally_sdk::Tracker::builder(&fleet.write_key, fleet.endpoint(plan), &dir)
            .consent(if plan.refuses_consent {
                tally_sdk::Consent::Denied
            } else {
                tally_sdk::Consent::Granted
            })
            .transport(gate(plan))
            .when_full(WhenFull::Block(BLOCK_WHEN_FULL_MS))
            .jitter_seed(fleet.args.seed ^ plan.index as u64)
            .allow_insecure_http(fleet.args.allow_insecure_http)
            .build()
            .with_context(|| format!("starting device {}", plan.index))?;
        let mut ledger = Ledger::default();
        let install_id = tracker.install_id().to_owned();
        ledger.installs.push(install_id.clone());
        for (index, step) in plan.steps.iter().enumerate() {
            if matches!(step, Step::Think(_)) {
                continue;
            }
            for call in perform(&tracker, &fleet.run_id, fleet.args.seed, plan, index, step) {
                if call.second_tap && call.result.is_ok() {
                    ledger.business_duplicates += 1;
                }
                ledger.record(&install_id, call.name, &call.result);
            }
        }
        tracker
            .shutdown(SHUTDOWN_TIMEOUT)
            .with_context(|| format!("stopping device {} offline", plan.index))?;
        // Nothing here reads per-seq captures: a million of them would
        // only cost memory.
        ledger.captures.clear();
        fleet.progress.inc(1);
        Ok(ledger)
    })?;
    let capture = started.elapsed();
    let capture_cpu = cpu_time().saturating_sub(cpu_started);

    // Online: the whole fleet at one moment.
    fleet.progress.set_position(0);
    fleet.progress.set_message("storm");
    let concurrency = fleet.args.concurrency.max(1);
    let drain_started = Instant::now();
    let deadline = drain_started + Duration::from_secs(fleet.args.drain_timeout);
    let cpu_started = cpu_time();
    online.store(true, Ordering::SeqCst);
    let draining = AtomicBool::new(true);
    let (drained, peak) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_peak(client, &draining));
        let drained = pool(plans.len(), concurrency, |i| {
            let plan = &plans[i];
            let dir = device_dir(&fleet.root, plan, 0);
            let tracker = tally_sdk::Tracker::builder(&fleet.write_key, fleet.endpoint(plan), &dir)
                .transport(gate(plan))
                .auto_upload(false)
                .jitter_seed(fleet.args.seed ^ plan.index as u64)
                .allow_insecure_http(fleet.args.allow_insecure_http)
                .build()
                .with_context(|| format!("reopening device {}", plan.index))?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let synced = tracker.wait_until_synced(remaining);
            tracker
                .shutdown(ONLINE_SHUTDOWN_TIMEOUT)
                .with_context(|| format!("stopping device {} online", plan.index))?;
            fleet.progress.inc(1);
            Ok(synced)
        });
        draining.store(false, Ordering::SeqCst);
        let peak = sampler.join().unwrap_or(0.0);
        (drained, peak)
    });
    let drained = drained?;
    let drain = drain_started.elapsed();
    let drain_cpu = cpu_time().saturating_sub(cpu_started);

    // The simulator's own bookkeeping, after the clock stopped: what each
    // device's log still holds, dropped or found corrupt.
    let logs = pool(plans.len(), CAPTURE_WORKERS, |i| {
        let mut ledger = Ledger::default();
        read_log(&device_dir(&fleet.root, &plans[i], 0), &mut ledger, false)?;
        Ok(ledger)
    })?;

    let mut ledger = Ledger::default();
    let mut users = Vec::with_capacity(plans.len());
    let mut drained_devices = 0;
    for (((plan, mut device), synced), log) in plans.iter().zip(captured).zip(drained).zip(logs) {
        drained_devices += usize::from(synced);
        device.merge(&log);
        ledger.merge(&device);
        users.push((plan.user.clone(), device));
    }
    Ok(Outcome {
        ledger,
        users,
        scripted: capture,
        drain,
        restarts: Vec::new(),
        storm: Some(Profile {
            concurrency,
            capture,
            capture_cpu,
            drain_cpu,
            peak_events_per_s: peak,
            drained_devices,
        }),
    })
}

/// Samples the collector's `accepted` total until `running` goes false and
/// returns the steepest rise per second over any window of at least 1 s.
fn sample_peak(client: &Client, running: &AtomicBool) -> f64 {
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    while running.load(Ordering::SeqCst) {
        if let Ok(accepted) = client.accepted() {
            samples.push((Instant::now(), accepted));
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    if let Ok(accepted) = client.accepted() {
        samples.push((Instant::now(), accepted));
    }
    let mut peak = 0.0f64;
    let mut j = 0;
    for i in 0..samples.len() {
        // The latest start at least 1 s before sample i.
        while j + 1 < i && samples[i].0.duration_since(samples[j + 1].0) >= Duration::from_secs(1) {
            j += 1;
        }
        let span = samples[i].0.duration_since(samples[j].0);
        if span >= Duration::from_secs(1) {
            let rise = samples[i].1.saturating_sub(samples[j].1) as f64;
            peak = peak.max(rise / span.as_secs_f64());
        }
    }
    peak
}
