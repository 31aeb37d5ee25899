//! `tally simulate`: a fleet of simulated devices, each a real `Tracker`
//! with its own data directory, driven through a seeded scenario with
//! faults, then checked against the collector.
//!
//! The answer it gives is the one question teams ask of an offline SDK:
//! are the numbers right? Every message a tracker accepted must be counted
//! on the collector exactly once, or be explained: dropped on the device by
//! a named policy, rejected by the collector with a reason, or still
//! pending. `unexplained` and `double_counted` must be 0.
//!
//! | piece | file |
//! |---|---|
//! | seeded scenario: users, devices, sessions, funnels, faults | `scenario.rs` |
//! | the fault-injecting transport, storm counters | `faults.rs` |
//! | the ground-truth ledger | `ledger.rs` |
//! | server queries, checks, the report | `report.rs` |

mod faults;
mod ledger;
mod report;
pub(crate) mod scenario;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tally_proto::Priority;
use tally_sdk::upload::clock::SystemClock;
use tally_sdk::upload::transport::HttpTransport;
use tally_sdk::{Consent, Props, TrackOptions, Tracker};

use faults::{FaultTransport, Traffic};
use ledger::Ledger;
use scenario::{DevicePlan, Faults, Rng, Step};

/// Log capacity of a device under the `queue_full` fault: small enough
/// that an offline period overflows it and the drop-oldest policy runs.
const TINY_LOG_EVENTS: u64 = 40;
/// Share of purchases tapped twice with the same order id.
const DOUBLE_TAP: f64 = 0.1;

/// Arguments of `tally simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Collector base URL; repeat it to spread devices over several
    /// collectors round-robin.
    #[arg(long, required = true)]
    endpoint: Vec<String>,
    /// Write key the devices send with.
    #[arg(long, env = "TALLY_WRITE_KEY")]
    write_key: String,
    /// Admin token, to read the collector's counts at the end.
    #[arg(long, env = "TALLY_ADMIN_TOKEN")]
    admin_token: String,
    /// Simulated devices.
    #[arg(long, default_value_t = 20)]
    devices: usize,
    /// Messages each device tracks.
    #[arg(long, default_value_t = 100)]
    events_per_device: usize,
    /// Scenario seed: the same seed gives the same scenario.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Faults to inject: `all`, or a comma-separated list of offline, drop,
    /// reset, 5xx, 429, slow, skew, kill, queue_full, reinstall, duplicate.
    #[arg(long, default_value = "")]
    faults: String,
    /// How long the fleet may take to drain at the end, in seconds.
    #[arg(long, default_value_t = 120)]
    drain_timeout: u64,
    /// Where the devices keep their data (default: a temporary directory,
    /// removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also write the JSON report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// What every device shares.
struct Fleet {
    args: SimulateArgs,
    /// Distinguishes this run's business keys (order ids) from those of
    /// earlier runs on the same collector, which would otherwise be
    /// duplicates of them.
    run_id: String,
    faults: Faults,
    traffic: Arc<Traffic>,
    calm: Arc<AtomicBool>,
    root: PathBuf,
    progress: ProgressBar,
}

/// A device between its script and the drain.
struct Device {
    tracker: Tracker,
    ledger: Ledger,
    dir: PathBuf,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let faults = Faults::parse(&args.faults).map_err(anyhow::Error::msg)?;
    let temp = match &args.work_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a work directory")?),
    };
    let root = match (&args.work_dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("a temporary directory exists when no work dir was given"),
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;

    let plans = scenario::plan(args.seed, args.devices, args.events_per_device, faults);
    let client = report::Client::new(&args.endpoint, &args.admin_token);
    let names = report::event_names();
    let before = client
        .snapshot(&names)
        .context("reading the collector's counts before the run")?;

    let total_steps: u64 = plans.iter().map(|p| p.steps.len() as u64).sum();
    let progress = ProgressBar::new(total_steps);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg:12} [{bar:40}] {pos}/{len} steps ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message("devices");
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let fleet = Fleet {
        run_id,
        args,
        faults,
        traffic: Arc::new(Traffic::default()),
        calm: Arc::new(AtomicBool::new(false)),
        root,
        progress,
    };

    let started = Instant::now();
    let devices = run_devices(&fleet, &plans)?;
    let scripted = started.elapsed();

    // Drain: faults stop, every device syncs what it holds.
    fleet.calm.store(true, Ordering::SeqCst);
    fleet.progress.set_message("draining");
    let drain_started = Instant::now();
    let deadline = Duration::from_secs(fleet.args.drain_timeout);
    let mut ledger = Ledger::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .into_iter()
            .map(|device| {
                s.spawn(move || {
                    let Device {
                        tracker,
                        mut ledger,
                        dir,
                    } = device;
                    tracker.wait_until_synced(deadline);
                    let _ = tracker.shutdown(Duration::from_secs(10));
                    read_log(&dir, &mut ledger, false)?;
                    Ok::<_, anyhow::Error>(ledger)
                })
            })
            .collect();
        for handle in handles {
            let device_ledger = handle
                .join()
                .map_err(|_| anyhow::anyhow!("a device thread panicked"))??;
            ledger.merge(&device_ledger);
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let drain = drain_started.elapsed();
    fleet.progress.finish_and_clear();

    let after = client
        .snapshot(&names)
        .context("reading the collector's counts after the run")?;
    let installs = client.installs(&ledger.installs);
    let report = report::build(report::Inputs {
        run_id: &fleet.run_id,
        seed: fleet.args.seed,
        devices: fleet.args.devices,
        events_per_device: fleet.args.events_per_device,
        faults: &fleet.args.faults,
        ledger: &ledger,
        before: &before,
        after: &after,
        installs: &installs,
        traffic: &fleet.traffic,
        scripted,
        drain,
    });
    let json = serde_json::to_string(&report.json)?;
    eprintln!("{}", report.summary);
    if let Some(path) = &fleet.args.report {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{json}");
    drop(temp);
    if !report.ok {
        anyhow::bail!("the numbers do not add up: see the report");
    }
    Ok(())
}

fn run_devices(fleet: &Fleet, plans: &[DevicePlan]) -> anyhow::Result<Vec<Device>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .map(|plan| s.spawn(move || run_device(fleet, plan)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a device thread panicked"))?
            })
            .collect()
    })
}

fn device_dir(fleet: &Fleet, plan: &DevicePlan, install: u32) -> PathBuf {
    fleet
        .root
        .join(format!("device-{:05}-install-{install}", plan.index))
}

fn build_tracker(
    fleet: &Fleet,
    plan: &DevicePlan,
    dir: &Path,
    transport: &Arc<FaultTransport>,
) -> anyhow::Result<Tracker> {
    let endpoint = &fleet.args.endpoint[plan.index % fleet.args.endpoint.len()];
    let consent = if plan.refuses_consent {
        Consent::Denied
    } else {
        Consent::Granted
    };
    let mut builder = Tracker::builder(fleet.args.write_key.clone(), endpoint.clone(), dir)
        .consent(consent)
        .transport(Arc::clone(transport) as Arc<dyn tally_sdk::upload::transport::Transport>)
        .clock(Arc::new(SystemClock::with_offset(plan.clock_skew_ms)))
        .jitter_seed(fleet.args.seed ^ plan.index as u64);
    if fleet.faults.queue_full {
        builder = builder.log_capacity(u64::MAX, TINY_LOG_EVENTS);
    }
    builder
        .build()
        .with_context(|| format!("starting device {}", plan.index))
}

fn run_device(fleet: &Fleet, plan: &DevicePlan) -> anyhow::Result<Device> {
    let endpoint = &fleet.args.endpoint[plan.index % fleet.args.endpoint.len()];
    let transport = Arc::new(FaultTransport::new(
        Arc::new(HttpTransport::new(endpoint)),
        fleet.faults,
        Rng::new(fleet.args.seed, 1_000_000 + plan.index as u64),
        Arc::clone(&fleet.traffic),
        Arc::clone(&fleet.calm),
    ));
    let mut rng = Rng::new(fleet.args.seed, 2_000_000 + plan.index as u64);
    let mut install = 0u32;
    let mut dir = device_dir(fleet, plan, install);
    let mut tracker = build_tracker(fleet, plan, &dir, &transport)?;
    let mut ledger = Ledger::default();
    ledger.installs.push(tracker.install_id().to_owned());
    for step in &plan.steps {
        fleet.progress.inc(1);
        let install_id = tracker.install_id().to_owned();
        match step {
            Step::Track { name, item, order } => {
                let props = Props::new()
                    .with("item", format!("item-{item}"))
                    .with("screen", "Item")
                    .with("variant", if item % 2 == 0 { "a" } else { "b" });
                let options = match order {
                    Some(n) => TrackOptions {
                        priority: Priority::Critical,
                        dedup_key: Some(format!(
                            "order-{}-{}-{}-{n}",
                            fleet.run_id, plan.user, plan.index
                        )),
                    },
                    None => TrackOptions::default(),
                };
                let taps = if order.is_some() && rng.chance(DOUBLE_TAP) {
                    2
                } else {
                    1
                };
                for tap in 0..taps {
                    let result = tracker.track_with(name, props.clone(), options.clone());
                    if tap == 1 && result.is_ok() {
                        ledger.business_duplicates += 1;
                    }
                    ledger.record(&install_id, Some(name), &result);
                }
            }
            Step::Screen(name) => {
                let result = tracker.screen(name, Props::new().with("from", "nav"));
                ledger.record(&install_id, Some(name), &result);
            }
            Step::Identify => {
                let traits = Props::new().with("plan", "free");
                let result = tracker.identify(&plan.user, traits);
                ledger.record(&install_id, None, &result);
            }
            Step::Think(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            Step::Offline(ms) => transport.go_offline(*ms),
            Step::Kill => {
                drop(tracker);
                tracker = build_tracker(fleet, plan, &dir, &transport)?;
            }
            Step::Reinstall => {
                // What an uninstall takes with it is explained, not lost:
                // the device syncs first (faults paused), and whatever is
                // still pending is counted as dropped by the uninstall.
                transport.set_calm(true);
                tracker.wait_until_synced(Duration::from_secs(10));
                transport.set_calm(false);
                let old_install = tracker.install_id().to_owned();
                let _ = tracker.shutdown(Duration::from_secs(10));
                if read_log(&dir, &mut ledger, true)? > 0 {
                    // Its last sequence numbers left with the app: the
                    // collector can never see them, and the ledger says why.
                    ledger.max_seq.remove(&old_install);
                }
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("uninstalling {}", dir.display()))?;
                install += 1;
                dir = device_dir(fleet, plan, install);
                tracker = build_tracker(fleet, plan, &dir, &transport)?;
                ledger.installs.push(tracker.install_id().to_owned());
            }
        }
    }
    Ok(Device {
        tracker,
        ledger,
        dir,
    })
}

/// Adds the persisted counters of the (closed) log of the install in
/// `dir` to the ledger; returns what it still holds.
fn read_log(dir: &Path, ledger: &mut Ledger, uninstalled: bool) -> anyhow::Result<u64> {
    let log = tally_sdk::log::inspect(&dir.join("log"), Arc::new(tally_sdk::log::StdFs))
        .with_context(|| format!("reading the log in {}", dir.display()))?;
    ledger.absorb_log(&log, uninstalled);
    Ok(log.pending)
}
