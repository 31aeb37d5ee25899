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
//! Two modes:
//!
//! - **chaos** (default): every device runs its script on a thread of its
//!   own under the chosen faults; then the fleet drains.
//! - **storm**: the reconnect storm. Every device tracks its script
//!   offline into its durable log, then the whole fleet comes back online
//!   at one moment and must drain through a collector that sheds load with
//!   429 + `Retry-After` (see `storm.rs`).
//!
//! Without `--endpoint` (or with `--spawn-collector`) the simulator runs
//! `tally serve` itself on a directory of the run; only then can the
//! `restart` fault stop and start the collector mid-run.
//!
//! | piece | file |
//! |---|---|
//! | seeded scenario: users, devices, sessions, funnels, faults | `scenario.rs` |
//! | the fault-injecting transport, storm counters | `faults.rs` |
//! | the ground-truth ledger | `ledger.rs` |
//! | a collector run by the simulator, restarts | `collector.rs` |
//! | devices in child processes, killed with SIGKILL | `child.rs` |
//! | the reconnect storm | `storm.rs` |
//! | server queries, checks, the report | `report.rs` |

mod child;
mod collector;
mod faults;
mod identity;
mod ledger;
mod observe;
mod report;
pub(crate) mod scenario;
mod storm;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use tally_proto::Priority;
use tally_sdk::clock::SystemClock;
use tally_sdk::upload::transport::{HttpTransport, Transport};
use tally_sdk::{Consent, Props, TrackOptions, TrackResult, Tracker};

use collector::{Collector, Stop};
use faults::{FaultTransport, Traffic};
use ledger::Ledger;
use scenario::{DevicePlan, Faults, Rng, Step};

/// Log capacity of a device under the `queue_full` fault: small enough
/// that an offline period overflows it and the drop-oldest policy runs.
const TINY_LOG_EVENTS: u64 = 40;
/// Share of purchases tapped twice with the same order id.
const DOUBLE_TAP: f64 = 0.1;
/// How long a device's tracker may take to stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between collector restarts under the `restart` fault, drawn from
/// this range (ms): several restarts land inside a run of a few seconds.
const RESTART_EVERY_MS: (u64, u64) = (200, 900);
/// Restarts the `restart` fault makes at least (the scripts wait for them):
/// one SIGKILL and one SIGTERM.
const MIN_RESTARTS: usize = 2;

/// What the simulator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Devices run their scripts concurrently under the chosen faults.
    Chaos,
    /// The reconnect storm: all devices track offline, then come back
    /// online at one moment.
    Storm,
}

/// Arguments of `tally simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Collector base URL; repeat it to spread devices over several
    /// collectors round-robin. Without it the simulator runs `tally serve`
    /// itself.
    #[arg(long)]
    endpoint: Vec<String>,
    /// Run `tally serve` from this binary on a directory of the run (the
    /// default without --endpoint).
    #[arg(long, conflicts_with = "endpoint")]
    spawn_collector: bool,
    /// The collector the simulator runs uses PostgreSQL at this URL instead
    /// of SQLite.
    #[arg(long, conflicts_with = "endpoint", hide_env_values = true)]
    database_url: Option<String>,
    /// Ingest slots of the collector the simulator runs (its
    /// `--max-in-flight`).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Write key the devices send with (generated for a collector the
    /// simulator runs).
    #[arg(long, env = "TALLY_WRITE_KEY", hide_env_values = true)]
    write_key: Option<String>,
    /// Admin token, to read the collector's counts at the end (generated
    /// for a collector the simulator runs).
    #[arg(long, env = "TALLY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// chaos, or storm (the reconnect storm).
    #[arg(long, value_enum, default_value_t = Mode::Chaos)]
    mode: Mode,
    /// Simulated devices.
    #[arg(long, default_value_t = 20)]
    devices: usize,
    /// Messages each device tracks.
    #[arg(long, default_value_t = 100)]
    events_per_device: usize,
    /// Scenario seed: the same seed gives the same scenario.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Faults to inject (chaos mode): `all`, or a comma-separated list of
    /// offline, drop, reset, 5xx, 429, slow, skew, kill, kill9, queue_full,
    /// reinstall, duplicate, restart (restart needs a collector the
    /// simulator runs; `all` includes it only then).
    #[arg(long, default_value = "")]
    faults: String,
    /// Storm mode: devices online at once. Each tracker runs three threads
    /// and holds a few files and a socket, so the process's thread and
    /// file limits bound this, not the fleet size.
    #[arg(long, default_value_t = storm::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Chaos mode: stretch (or shrink) every device's think times and
    /// offline periods so they add up to this, so the scenario plays out
    /// over about this much wall time (a soak run): `90s`, `10m`, `2h`, or
    /// seconds.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// How long the fleet may take to drain at the end, in seconds.
    #[arg(long, default_value_t = 120)]
    drain_timeout: u64,
    /// Where the devices (and a collector the simulator runs) keep their
    /// data (default: a temporary directory, removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also write the JSON report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Internal: run one device of the scenario in this process from step
    /// N (a device of the `kill9` fault, which the parent kills).
    #[arg(long, hide = true, value_names = ["DEVICE", "STEP", "DIR"], num_args = 3)]
    child_device: Vec<String>,
    /// Internal: the run a device child belongs to (its order ids).
    #[arg(long, hide = true)]
    run_id: Option<String>,
    /// Accept plain http:// endpoints on hosts other than loopback (events
    /// and the write key then travel unencrypted)
    #[arg(long)]
    allow_insecure_http: bool,
}

/// What every device shares.
pub(crate) struct Fleet {
    args: SimulateArgs,
    /// Where devices send (round-robin by device index).
    endpoints: Vec<String>,
    write_key: String,
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

impl Fleet {
    fn endpoint(&self, plan: &DevicePlan) -> &str {
        &self.endpoints[plan.index % self.endpoints.len()]
    }

    fn transport(&self, plan: &DevicePlan) -> Arc<FaultTransport> {
        Arc::new(FaultTransport::new(
            Arc::new(HttpTransport::new(self.endpoint(plan))),
            self.faults,
            Rng::new(self.args.seed, 1_000_000 + plan.index as u64),
            Arc::clone(&self.traffic),
            Arc::clone(&self.calm),
        ))
    }
}

/// A device between its script and the drain.
struct Device {
    tracker: Tracker,
    ledger: Ledger,
    dir: PathBuf,
}

/// The collector the simulator runs, if it runs one.
type Spawned = Arc<Mutex<Option<Collector>>>;

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if !args.child_device.is_empty() {
        return child::run(args);
    }
    let spawn = args.spawn_collector || args.endpoint.is_empty();
    let mut faults = Faults::parse(&args.faults).map_err(anyhow::Error::msg)?;
    if args.faults.split(',').any(|f| f.trim() == "all") && !spawn {
        faults.restart = false;
    }
    if faults.restart && !spawn {
        bail!("the restart fault needs a collector the simulator runs (omit --endpoint)");
    }
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
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );

    let spawned: Spawned = Arc::new(Mutex::new(None));
    let (endpoints, write_key, admin_token) = if spawn {
        let write_key = args
            .write_key
            .clone()
            .unwrap_or_else(|| format!("sim-write-{run_id}"));
        let admin_token = args
            .admin_token
            .clone()
            .unwrap_or_else(|| format!("sim-admin-{run_id}"));
        let collector = Collector::start(collector::Settings {
            data_dir: root.join("collector"),
            write_key: write_key.clone(),
            admin_token: admin_token.clone(),
            database_url: args.database_url.clone(),
            max_in_flight: args.max_in_flight,
        })?;
        let base = collector.base.clone();
        *spawned.lock().unwrap_or_else(|p| p.into_inner()) = Some(collector);
        (vec![base], write_key, admin_token)
    } else {
        let write_key = args
            .write_key
            .clone()
            .context("--write-key (or TALLY_WRITE_KEY) is needed with --endpoint")?;
        let admin_token = args
            .admin_token
            .clone()
            .context("--admin-token (or TALLY_ADMIN_TOKEN) is needed with --endpoint")?;
        (args.endpoint.clone(), write_key, admin_token)
    };
    let stepping_faults = if args.mode == Mode::Storm {
        Faults::default()
    } else {
        faults
    };
    let plans = scenario::plan_stretched(
        args.seed,
        args.devices,
        args.events_per_device,
        stepping_faults,
        args.duration,
    );
    let client = observe::Client::new(&endpoints, &admin_token);
    let names = observe::event_names();
    let before = client
        .snapshot(&names)
        .context("reading the collector's counts before the run")?;

    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg:12} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let fleet = Fleet {
        endpoints,
        write_key,
        run_id,
        args,
        faults: stepping_faults,
        traffic: Arc::new(Traffic::default()),
        calm: Arc::new(AtomicBool::new(false)),
        root,
        progress,
    };

    let outcome = match fleet.args.mode {
        Mode::Chaos => chaos(&fleet, &plans, &spawned)?,
        Mode::Storm => storm::run(&fleet, &plans, &client)?,
    };
    fleet.progress.finish_and_clear();

    let after = client
        .snapshot(&names)
        .context("reading the collector's counts after the run")?;
    let installs = client.installs(&outcome.ledger.installs);
    let install_events = if outcome.ledger.captures.is_empty() {
        None
    } else {
        Some(
            client
                .install_events(&outcome.ledger.installs)
                .context("reading each install's events")?,
        )
    };
    let report = report::build(report::Inputs {
        run_id: &fleet.run_id,
        mode: fleet.args.mode,
        seed: fleet.args.seed,
        devices: fleet.args.devices,
        events_per_device: fleet.args.events_per_device,
        faults: &fleet.args.faults,
        ledger: &outcome.ledger,
        users: &outcome.users,
        before: &before,
        after: &after,
        installs: &installs,
        install_events: install_events.as_ref(),
        traffic: &fleet.traffic,
        scripted: outcome.scripted,
        drain: outcome.drain,
        restarts: &outcome.restarts,
        storm: outcome.storm.as_ref(),
    });
    let json = serde_json::to_string(&report.json)?;
    eprintln!("{}", report.summary);
    if let Some(path) = &fleet.args.report {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{json}");
    drop(spawned.lock().unwrap_or_else(|p| p.into_inner()).take());
    drop(temp);
    if !report.ok {
        bail!("the numbers do not add up: see the report");
    }
    Ok(())
}

/// What a mode hands to the report.
pub(crate) struct Outcome {
    ledger: Ledger,
    /// Each device's ledger with its user, for the per-user check.
    users: Vec<(String, Ledger)>,
    scripted: Duration,
    drain: Duration,
    /// Collector restarts the `restart` fault made, by how.
    restarts: Vec<&'static str>,
    storm: Option<storm::Profile>,
}

fn chaos(fleet: &Fleet, plans: &[DevicePlan], spawned: &Spawned) -> anyhow::Result<Outcome> {
    let total_steps: u64 = plans.iter().map(|p| p.steps.len() as u64).sum();
    fleet.progress.set_length(total_steps);
    fleet.progress.set_message("devices");
    let started = Instant::now();
    let scripted_done = AtomicBool::new(false);
    let (devices, restarts) = std::thread::scope(|s| {
        let restarter = fleet
            .faults
            .restart
            .then(|| s.spawn(|| restart_collector(fleet, spawned, &scripted_done)));
        let devices = run_devices(fleet, plans);
        scripted_done.store(true, Ordering::SeqCst);
        let restarts = match restarter {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the restart thread panicked"))??,
            None => Vec::new(),
        };
        Ok::<_, anyhow::Error>((devices?, restarts))
    })?;
    let scripted = started.elapsed();

    // Drain: faults stop, every device syncs what it holds.
    fleet.calm.store(true, Ordering::SeqCst);
    fleet.progress.set_message("draining");
    let drain_started = Instant::now();
    let deadline = Duration::from_secs(fleet.args.drain_timeout);
    let mut ledger = Ledger::default();
    let mut users = Vec::with_capacity(devices.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .into_iter()
            .zip(plans)
            .map(|(device, plan)| {
                s.spawn(move || {
                    let Device {
                        tracker,
                        mut ledger,
                        dir,
                    } = device;
                    tracker.wait_until_synced(deadline);
                    let _ = tracker.shutdown(SHUTDOWN_TIMEOUT);
                    read_log(&dir, &mut ledger, false)?;
                    Ok::<_, anyhow::Error>((plan.user.clone(), ledger))
                })
            })
            .collect();
        for handle in handles {
            let (user, device_ledger) = handle
                .join()
                .map_err(|_| anyhow::anyhow!("a device thread panicked"))??;
            ledger.merge(&device_ledger);
            users.push((user, device_ledger));
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Outcome {
        ledger,
        users,
        scripted,
        drain: drain_started.elapsed(),
        restarts,
        storm: None,
    })
}

/// The `restart` fault: while the devices run their scripts, stops the
/// collector (SIGKILL and SIGTERM in turn) and starts it again on the same
/// address and store, every few hundred milliseconds, at least
/// [`MIN_RESTARTS`] times.
fn restart_collector(
    fleet: &Fleet,
    spawned: &Spawned,
    done: &AtomicBool,
) -> anyhow::Result<Vec<&'static str>> {
    let mut rng = Rng::new(fleet.args.seed, 4_000_000);
    let mut restarts = Vec::new();
    loop {
        let pause = Instant::now()
            + Duration::from_millis(rng.between(RESTART_EVERY_MS.0, RESTART_EVERY_MS.1));
        while Instant::now() < pause {
            if done.load(Ordering::SeqCst) && restarts.len() >= MIN_RESTARTS {
                return Ok(restarts);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let how = if restarts.len() % 2 == 0 {
            Stop::Kill
        } else {
            Stop::Term
        };
        let mut guard = spawned.lock().unwrap_or_else(|p| p.into_inner());
        let collector = guard
            .as_mut()
            .context("the restart fault runs without a collector")?;
        collector
            .restart(how)
            .with_context(|| format!("restarting the collector after {}", how.as_str()))?;
        restarts.push(how.as_str());
    }
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

/// `90s`, `10m`, `2h`, `500ms`, or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 10m or 2h"))?;
    let ms = match unit {
        "" | "s" => n.checked_mul(1_000),
        "ms" => Some(n),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn device_dir(root: &Path, plan: &DevicePlan, install: u32) -> PathBuf {
    root.join(format!("device-{:05}-install-{install}", plan.index))
}

/// A device's tracker on `dir` with the run's settings.
pub(crate) fn build_tracker(
    args: &SimulateArgs,
    write_key: &str,
    endpoint: &str,
    faults: Faults,
    plan: &DevicePlan,
    dir: &Path,
    transport: Arc<dyn Transport>,
) -> anyhow::Result<Tracker> {
    let consent = if plan.refuses_consent {
        Consent::Denied
    } else {
        Consent::Granted
    };
    let mut builder = Tracker::builder(write_key, endpoint, dir)
        .consent(consent)
        .transport(transport)
        .clock(Arc::new(SystemClock::with_offset(plan.clock_skew_ms)))
        .jitter_seed(args.seed ^ plan.index as u64)
        .allow_insecure_http(args.allow_insecure_http);
    if faults.queue_full {
        builder = builder.log_capacity(u64::MAX, TINY_LOG_EVENTS);
    }
    builder
        .build()
        .with_context(|| format!("starting device {}", plan.index))
}

fn fleet_tracker(
    fleet: &Fleet,
    plan: &DevicePlan,
    dir: &Path,
    transport: &Arc<FaultTransport>,
) -> anyhow::Result<Tracker> {
    build_tracker(
        &fleet.args,
        &fleet.write_key,
        fleet.endpoint(plan),
        fleet.faults,
        plan,
        dir,
        Arc::clone(transport) as Arc<dyn Transport>,
    )
}

/// One call of a step: what `perform` did, for the ledger.
pub(crate) struct Call {
    /// Event name (None for an identify).
    pub name: Option<&'static str>,
    /// The second tap of a double-tapped order.
    pub second_tap: bool,
    pub result: TrackResult,
}

/// Runs the tracker calls of `step` (a track, screen or identify; other
/// steps make none) and returns them. Whether an order is tapped twice
/// depends only on the seed, device and step, so a device resumed from a
/// step in another process taps the same way.
pub(crate) fn perform(
    tracker: &Tracker,
    run_id: &str,
    seed: u64,
    plan: &DevicePlan,
    index: usize,
    step: &Step,
) -> Vec<Call> {
    match step {
        Step::Track { name, item, order } => {
            let props = Props::new()
                .with("item", format!("item-{item}"))
                .with("screen", "Item")
                .with("variant", if item % 2 == 0 { "a" } else { "b" });
            let options = match order {
                Some(n) => TrackOptions {
                    priority: Priority::Critical,
                    dedup_key: Some(format!("order-{run_id}-{}-{}-{n}", plan.user, plan.index)),
                    ..TrackOptions::default()
                },
                None => TrackOptions::default(),
            };
            (0..taps(seed, plan, index, step))
                .map(|tap| Call {
                    name: Some(name),
                    second_tap: tap == 1,
                    result: tracker.track_with(name, props.clone(), options.clone()),
                })
                .collect()
        }
        Step::Screen(name) => vec![Call {
            name: Some(name),
            second_tap: false,
            result: tracker.screen(name, Props::new().with("from", "nav")),
        }],
        Step::Identify => vec![Call {
            name: None,
            second_tap: false,
            result: tracker.identify(&plan.user, Props::new().with("plan", "free")),
        }],
        _ => Vec::new(),
    }
}

/// How many calls step `index` of `plan` makes: a purchase is sometimes
/// tapped twice (the same order id), drawn from the seed, device and step
/// alone.
pub(crate) fn taps(seed: u64, plan: &DevicePlan, index: usize, step: &Step) -> usize {
    match step {
        Step::Track { order: Some(_), .. } => {
            let mut rng = Rng::new(seed ^ index as u64, 2_000_000 + plan.index as u64);
            if rng.chance(DOUBLE_TAP) {
                2
            } else {
                1
            }
        }
        Step::Track { .. } | Step::Screen(_) | Step::Identify => 1,
        _ => 0,
    }
}

fn run_device(fleet: &Fleet, plan: &DevicePlan) -> anyhow::Result<Device> {
    if fleet.faults.kill9 && plan.in_child {
        return child::drive(fleet, plan);
    }
    let transport = fleet.transport(plan);
    let mut install = 0u32;
    let mut dir = device_dir(&fleet.root, plan, install);
    let mut tracker = fleet_tracker(fleet, plan, &dir, &transport)?;
    let mut ledger = Ledger::default();
    ledger.installs.push(tracker.install_id().to_owned());
    for (index, step) in plan.steps.iter().enumerate() {
        fleet.progress.inc(1);
        let install_id = tracker.install_id().to_owned();
        match step {
            Step::Track { .. } | Step::Screen(_) | Step::Identify => {
                for call in perform(&tracker, &fleet.run_id, fleet.args.seed, plan, index, step) {
                    if let (true, Ok(accepted)) = (call.second_tap, &call.result) {
                        ledger.business_duplicate(&install_id, accepted.seq);
                    }
                    ledger.record(&install_id, call.name, &call.result);
                }
            }
            Step::Think(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            Step::Offline(ms) => transport.go_offline(*ms),
            Step::Kill => {
                drop(tracker);
                tracker = fleet_tracker(fleet, plan, &dir, &transport)?;
            }
            Step::Reinstall => {
                // What an uninstall takes with it is explained, not lost:
                // the device syncs first (faults paused), and whatever is
                // still pending is counted as dropped by the uninstall.
                transport.set_calm(true);
                tracker.wait_until_synced(SHUTDOWN_TIMEOUT);
                transport.set_calm(false);
                let old_install = tracker.install_id().to_owned();
                ledger.uninstalled.insert(old_install.clone());
                let _ = tracker.shutdown(SHUTDOWN_TIMEOUT);
                if read_log(&dir, &mut ledger, true)? > 0 {
                    // Its last sequence numbers left with the app: the
                    // collector can never see them, and the ledger says why.
                    ledger.max_seq.remove(&old_install);
                }
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("uninstalling {}", dir.display()))?;
                install += 1;
                dir = device_dir(&fleet.root, plan, install);
                tracker = fleet_tracker(fleet, plan, &dir, &transport)?;
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
pub(crate) fn read_log(dir: &Path, ledger: &mut Ledger, uninstalled: bool) -> anyhow::Result<u64> {
    let log = tally_sdk::log::inspect(&dir.join("log"), Arc::new(tally_sdk::log::StdFs))
        .with_context(|| format!("reading the log in {}", dir.display()))?;
    ledger.absorb_log(&log, uninstalled);
    Ok(log.pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10 days").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    /// The simulator runs its own collector unless given an endpoint, so
    /// `--database-url` alone must be enough, and beside `--endpoint` it
    /// has no collector to configure.
    #[test]
    fn a_database_url_needs_no_other_flag_and_no_endpoint() {
        use clap::Parser as _;
        let parsed = Cli::try_parse_from(["simulate", "--database-url", "postgres://db/x"])
            .map(|cli| cli.args.database_url);
        assert_eq!(parsed.ok().flatten().as_deref(), Some("postgres://db/x"));
        let both = Cli::try_parse_from([
            "simulate",
            "--database-url",
            "postgres://db/x",
            "--endpoint",
            "http://127.0.0.1:8080",
        ]);
        assert_eq!(
            both.err().map(|e| e.kind()),
            Some(clap::error::ErrorKind::ArgumentConflict)
        );
    }
}
