//! The `kill9` fault: a device that runs in a child process (`tally
//! simulate --child-device ...`, the same binary) and is killed with
//! SIGKILL at random moments, then started again from its data directory.
//!
//! The ledger may only count what the device's `flush()` confirmed: the
//! child says on stdout what it does, one line per fact, each written
//! before the next call, so whatever the kill interrupts, the parent reads
//! every line the child wrote:
//!
//! | line | written |
//! |---|---|
//! | `install ID` | once the tracker is open |
//! | `call STEP` | before the calls of script step STEP |
//! | `ok STEP SEQ` / `refused STEP CODE` | after each call |
//! | `durable STEP` | after a flush returned: every call up to STEP is on disk |
//! | `done` | after the last step's flush and the tracker's shutdown |
//!
//! A call without a `durable` line after it is *in doubt*: the kill may
//! have come before or after the log made it durable. The SDK sends only
//! durable records and takes a lost record's seq again, so an in-doubt
//! call is counted at most once, and possibly not at all. The next run
//! starts after the last step that was called, as an app relaunched after
//! a crash does not redo what its user already did.
//!
//! The child injects the run's link faults itself; its request counters
//! stay in the child. Kills and reinstalls of the script are not played in
//! a child (the kill is the fault).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tally_sdk::upload::transport::{HttpTransport, Transport};

use super::faults::{FaultTransport, Traffic};
use super::ledger::Ledger;
use super::scenario::{self, DevicePlan, Faults, Rng, Step};
use super::{build_tracker, device_dir, fleet_tracker, perform, taps, Device, Fleet, SimulateArgs};

/// The first kill lands within this many ms of the child's start; the
/// window then follows how long an uninterrupted run lasted, so kills keep
/// landing inside runs whatever the build and the machine.
const FIRST_KILL_WINDOW_MS: u64 = 400;

/// Script steps with calls between two flushes in a child: the kill then
/// lands sometimes before and sometimes after a confirmation.
const FLUSH_EVERY: usize = 3;

/// Most child processes per device: far more than a script of a few
/// hundred steps needs, so reaching it means the child makes no progress.
const MAX_RUNS: u32 = 200;

/// One run's facts, as the child wrote them.
#[derive(Debug, Default)]
struct RunFacts {
    install: Option<String>,
    /// Results not yet confirmed durable: (step, seq or refusal code).
    results: Vec<(usize, Result<u64, String>)>,
    /// The last step whose `call` line was written.
    last_called: Option<usize>,
    /// Every call up to this step is durable.
    durable_through: Option<usize>,
    done: bool,
}

/// Drives `plan` in child processes until its script is done, killing
/// them at random moments; then opens the device in this process for the
/// drain.
pub(super) fn drive(fleet: &Fleet, plan: &DevicePlan) -> anyhow::Result<Device> {
    let dir = device_dir(&fleet.root, plan, 0);
    let mut ledger = Ledger::default();
    let mut rng = Rng::new(fleet.args.seed, 5_000_000 + plan.index as u64);
    let mut window = FIRST_KILL_WINDOW_MS;
    let mut next = 0usize;
    let mut install: Option<String> = None;
    for _ in 0..MAX_RUNS {
        let kill_after = Duration::from_millis(rng.between(1, window));
        let started = Instant::now();
        let (facts, killed) = run_child(fleet, plan, next, &dir, kill_after)?;
        if !killed {
            window = (started.elapsed().as_millis() as u64).max(2);
        } else if facts.last_called.is_none() {
            // Killed before its first call: give the next run longer.
            window = window.saturating_mul(2);
        }
        if install.is_none() {
            install.clone_from(&facts.install);
            if let Some(id) = &install {
                ledger.installs.push(id.clone());
            }
        }
        account(
            &mut ledger,
            plan,
            fleet.args.seed,
            install.as_deref(),
            &facts,
        );
        let resumed_at = facts.last_called.map_or(next, |s| s + 1);
        fleet.progress.inc(resumed_at.saturating_sub(next) as u64);
        next = resumed_at;
        if facts.done && !killed {
            let transport = fleet.transport(plan);
            let tracker = fleet_tracker(fleet, plan, &dir, &transport)?;
            return Ok(Device {
                tracker,
                ledger,
                dir,
            });
        }
    }
    bail!(
        "device {} made no progress in {MAX_RUNS} child processes",
        plan.index
    )
}

/// Adds one run's facts to the ledger: refusals at once, results the
/// child confirmed durable as tracked, the rest as in doubt.
fn account(
    ledger: &mut Ledger,
    plan: &DevicePlan,
    seed: u64,
    install: Option<&str>,
    facts: &RunFacts,
) {
    let install = install.unwrap_or_default();
    let mut seen_per_step = std::collections::BTreeMap::<usize, usize>::new();
    for (step, result) in &facts.results {
        let tap = seen_per_step.entry(*step).or_default();
        *tap += 1;
        let name = step_name(&plan.steps[*step]);
        match result {
            Err(code) => ledger.refuse(code),
            Ok(seq) if facts.durable_through.is_some_and(|d| *step <= d) => {
                ledger.tracked += 1;
                if let Some(name) = name {
                    *ledger.tracked_by_name.entry(name.to_owned()).or_default() += 1;
                }
                if *tap == 2 {
                    ledger.business_duplicate(install, *seq);
                }
                ledger.capture(install, name, *seq);
            }
            Ok(seq) => {
                ledger.in_doubt += 1;
                if let Some(name) = name {
                    *ledger.tracked_by_name.entry(name.to_owned()).or_default() += 1;
                }
                ledger.capture_in_doubt(install, name, *seq);
            }
        }
    }
    // A call the kill interrupted before its result line: it may have been
    // accepted (and even made durable) without the child saying so.
    if let Some(step) = facts.last_called {
        let made = seen_per_step.get(&step).copied().unwrap_or(0);
        let planned = taps(seed, plan, step, &plan.steps[step]);
        for _ in made..planned {
            ledger.interrupt(install, step_name(&plan.steps[step]));
        }
    }
}

fn step_name(step: &Step) -> Option<&'static str> {
    match step {
        Step::Track { name, .. } => Some(name),
        Step::Screen(name) => Some(name),
        _ => None,
    }
}

/// Runs one child from step `from`; kills it with SIGKILL once
/// `kill_after` passed if it has not exited. Returns what it wrote and
/// whether it was killed.
fn run_child(
    fleet: &Fleet,
    plan: &DevicePlan,
    from: usize,
    dir: &Path,
    kill_after: Duration,
) -> anyhow::Result<(RunFacts, bool)> {
    let exe = std::env::current_exe().context("finding the tally binary")?;
    let mut child = Command::new(exe)
        .arg("simulate")
        .arg("--child-device")
        .arg(plan.index.to_string())
        .arg(from.to_string())
        .arg(dir)
        .args(["--run-id", &fleet.run_id])
        .args(["--endpoint", fleet.endpoint(plan)])
        .args(["--seed", &fleet.args.seed.to_string()])
        .args(["--devices", &fleet.args.devices.to_string()])
        .args([
            "--events-per-device",
            &fleet.args.events_per_device.to_string(),
        ])
        .args(["--faults", &fleet.args.faults])
        .args(
            fleet
                .args
                .allow_insecure_http
                .then_some("--allow-insecure-http"),
        )
        .args(
            fleet
                .args
                .duration
                .map(|d| ["--duration".to_owned(), format!("{}ms", d.as_millis())])
                .into_iter()
                .flatten(),
        )
        .env("TALLY_WRITE_KEY", &fleet.write_key)
        .env("TALLY_ADMIN_TOKEN", "unused-by-a-device")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting a device child process")?;
    let stdout = child.stdout.take().context("reading the child's stdout")?;
    let stderr = child.stderr.take().context("reading the child's stderr")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let deadline = Instant::now() + kill_after;
    let mut killed = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            child.kill().context("killing a device child process")?;
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = child.wait().context("waiting for a device child process")?;
    let _ = reader.join();
    let stderr_text = errors.join().unwrap_or_default();
    let mut facts = RunFacts::default();
    for line in rx.try_iter() {
        parse_line(&line, &mut facts);
    }
    if !killed && !status.success() {
        bail!(
            "device {} child failed ({status}): {}",
            plan.index,
            stderr_text.trim()
        );
    }
    Ok((facts, killed))
}

fn parse_line(line: &str, facts: &mut RunFacts) {
    let mut words = line.split_whitespace();
    let (Some(tag), a, b) = (words.next(), words.next(), words.next()) else {
        return;
    };
    let step = a.and_then(|s| s.parse::<usize>().ok());
    match (tag, step) {
        ("install", _) => facts.install = a.map(str::to_owned),
        ("call", Some(step)) => facts.last_called = Some(step),
        ("ok", Some(step)) => {
            if let Some(seq) = b.and_then(|s| s.parse().ok()) {
                facts.results.push((step, Ok(seq)));
            }
        }
        ("refused", Some(step)) => facts
            .results
            .push((step, Err(b.unwrap_or("unknown").to_owned()))),
        ("durable", Some(step)) => facts.durable_through = Some(step),
        ("done", _) => facts.done = true,
        _ => {}
    }
}

/// The child's side: plays `plan`'s script from a step, confirming what
/// is durable, and writes the facts on stdout.
pub(super) fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let [device, from, dir] = <[String; 3]>::try_from(args.child_device.clone())
        .map_err(|_| anyhow::anyhow!("--child-device takes DEVICE STEP DIR"))?;
    let device: usize = device.parse().context("--child-device DEVICE")?;
    let from: usize = from.parse().context("--child-device STEP")?;
    let dir = PathBuf::from(dir);
    let endpoint = args
        .endpoint
        .first()
        .context("a device child needs --endpoint")?
        .clone();
    let write_key = args
        .write_key
        .clone()
        .context("a device child needs its write key")?;
    let run_id = args.run_id.clone().unwrap_or_default();
    let fleet_faults = Faults::parse(&args.faults).map_err(anyhow::Error::msg)?;
    let plan = scenario::plan_stretched(
        args.seed,
        args.devices,
        args.events_per_device,
        fleet_faults,
        args.duration,
    )
    .into_iter()
    .nth(device)
    .context("no such device in the scenario")?;
    // The child's own link faults; kills and restarts are the parent's.
    let faults = Faults {
        kill: false,
        kill9: false,
        reinstall: false,
        restart: false,
        ..fleet_faults
    };
    let transport = Arc::new(FaultTransport::new(
        Arc::new(HttpTransport::new(&endpoint)),
        faults,
        Rng::new(args.seed ^ from as u64, 6_000_000 + device as u64),
        Arc::new(Traffic::default()),
        Arc::new(AtomicBool::new(false)),
    ));
    let tracker = build_tracker(
        &args,
        &write_key,
        &endpoint,
        faults,
        &plan,
        &dir,
        Arc::clone(&transport) as Arc<dyn Transport>,
    )?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "install {}", tracker.install_id())?;
    out.flush()?;
    let mut since_flush = 0usize;
    for (index, step) in plan.steps.iter().enumerate().skip(from) {
        match step {
            Step::Track { .. } | Step::Screen(_) | Step::Identify => {
                writeln!(out, "call {index}")?;
                out.flush()?;
                for call in perform(&tracker, &run_id, args.seed, &plan, index, step) {
                    match &call.result {
                        Ok(accepted) => writeln!(out, "ok {index} {}", accepted.seq)?,
                        Err(refusal) => writeln!(out, "refused {index} {}", refusal.code())?,
                    }
                    out.flush()?;
                }
                since_flush += 1;
                if since_flush >= FLUSH_EVERY {
                    tracker.flush().context("flushing the device's log")?;
                    writeln!(out, "durable {index}")?;
                    out.flush()?;
                    since_flush = 0;
                }
            }
            Step::Think(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            Step::Offline(ms) => transport.go_offline(*ms),
            Step::Kill | Step::Reinstall => {}
        }
    }
    tracker.flush().context("flushing the device's log")?;
    writeln!(out, "durable {}", plan.steps.len())?;
    out.flush()?;
    tracker
        .shutdown(super::SHUTDOWN_TIMEOUT)
        .context("stopping the device's tracker")?;
    writeln!(out, "done")?;
    out.flush()?;
    Ok(())
}
