//! `tally simulate` against real `tally serve` processes on loopback: with
//! every fault on, the numbers must add up exactly (nothing unexplained,
//! nothing counted twice), on SQLite and on PostgreSQL behind two
//! collectors, and with a collector the simulator runs and restarts itself;
//! a collector with broken dedup must be caught.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod serve_support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use serve_support::{Server, TestDb, ADMIN_TOKEN, WRITE_KEY};

/// Runs `tally simulate` against `endpoints` (none: the simulator runs its
/// own collector); returns whether it exited 0 and its report (stdout's
/// last line, checked equal to `--report`).
fn simulate(endpoints: &[&str], work: &Path, args: &[&str]) -> (bool, Value) {
    let report_file = work.join("report.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.arg("simulate");
    for e in endpoints {
        cmd.args(["--endpoint", e]);
    }
    if !endpoints.is_empty() {
        cmd.args(["--write-key", WRITE_KEY, "--admin-token", ADMIN_TOKEN]);
    }
    let output = cmd
        .env_remove("TALLY_WRITE_KEY")
        .env_remove("TALLY_ADMIN_TOKEN")
        .arg("--work-dir")
        .arg(work.join("devices"))
        .arg("--report")
        .arg(&report_file)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {stdout} stderr {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let from_file: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(report, from_file, "stdout's last line and --report agree");
    (output.status.success(), report)
}

fn total(v: &Value) -> u64 {
    v.as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

/// The chaos run's assertions, shared by both stores.
fn assert_adds_up(ok: bool, report: &Value, devices: u64, events: u64) {
    assert_eq!(report["unexplained"], 0, "{report:#}");
    assert_eq!(report["double_counted"], 0, "{report:#}");
    assert_eq!(report["pending"], 0, "{report:#}");
    assert_eq!(report["checks"]["ok"], true, "{report:#}");
    assert_eq!(report["checks"]["order"]["ok"], true, "{report:#}");
    assert_eq!(report["checks"]["attribution"]["ok"], true, "{report:#}");
    assert_eq!(
        report["checks"]["attribution"]["misattributed"], 0,
        "{report:#}"
    );
    assert!(
        report["checks"]["order"]["events_checked"]
            .as_u64()
            .unwrap()
            > 0,
        "{report:#}"
    );
    assert!(ok, "{report:#}");
    assert_identity(report);
    let tracked = report["tracked"].as_u64().unwrap();
    // Every scripted call was accepted, refused with a reason, or made by
    // a device killed before its flush confirmed it (in doubt).
    let refused = total(&report["refused"]);
    let in_doubt = report["in_doubt"].as_u64().unwrap();
    assert!(
        tracked + refused + in_doubt >= devices * events,
        "{report:#}"
    );
    // The faults really happened: resends were answered duplicate, and
    // requests failed or were refused on the way.
    assert!(
        report["duplicates_suppressed"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    let storm = &report["storm"];
    let faulted = ["rate_limited", "server_errors", "failed"]
        .iter()
        .map(|k| storm[*k].as_u64().unwrap())
        .sum::<u64>();
    assert!(faulted > 0, "{report:#}");
    let counted = report["counted"].as_u64().unwrap();
    let dropped = total(&report["dropped"]);
    let rejected = total(&report["rejected"]);
    let business = report["business_duplicates"].as_u64().unwrap();
    assert!(
        counted + dropped + rejected + business >= tracked,
        "{report:#}"
    );
    assert!(
        counted + business + rejected <= tracked + in_doubt,
        "{report:#}"
    );
}

/// The report's identity, checked term by term: `tracked` equals the sum
/// of its terms exactly, and the run's verdict agrees.
fn assert_identity(report: &Value) -> &Value {
    let id = &report["checks"]["identity"];
    let n = |k: &str| id[k].as_u64().unwrap_or_else(|| panic!("{k}: {report:#}"));
    assert_eq!(id["ok"], true, "{report:#}");
    assert_eq!(n("tracked"), report["tracked"].as_u64().unwrap());
    assert_eq!(
        n("tracked"),
        n("counted")
            + n("dropped_not_stored")
            + n("rejected")
            + n("business_duplicates")
            + n("pending"),
        "{report:#}"
    );
    // What the collector counted over the run is the tracked calls it
    // stores and the calls in doubt it stores, nothing else.
    assert_eq!(
        n("counted") + n("counted_in_doubt"),
        report["counted"].as_u64().unwrap(),
        "{report:#}"
    );
    assert!(n("counted_in_doubt") <= n("in_doubt"), "{report:#}");
    assert_eq!(
        n("neither_stored_nor_dropped"),
        n("rejected") + n("pending")
    );
    id
}

#[test]
fn a_stored_seq_dropped_from_a_full_log_is_explained_once() {
    // A tiny log, answers lost after the collector stored the batch, and
    // offline periods: devices drop records they had sent, and report
    // their seqs dropped although the collector stores them.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("collector"), None, &[]);
    let (ok, report) = simulate(
        &[&server.base],
        dir.path(),
        &[
            "--devices",
            "10",
            "--events-per-device",
            "80",
            "--seed",
            "13",
            "--faults",
            "queue_full,reset,offline,drop,5xx",
        ],
    );
    assert!(ok, "{report:#}");
    assert_eq!(report["unexplained"], 0, "{report:#}");
    let id = assert_identity(&report);
    let overlap = id["stored_and_dropped"].as_u64().unwrap();
    assert!(overlap > 0, "no stored seq was dropped: {report:#}");
    // The device's drop counts include those stored seqs: adding them to
    // the count explains more events than were tracked.
    let naive = report["counted"].as_u64().unwrap()
        + total(&report["dropped"])
        + report["business_duplicates"].as_u64().unwrap()
        + total(&report["rejected"])
        + report["pending"].as_u64().unwrap();
    assert!(naive > report["tracked"].as_u64().unwrap(), "{report:#}");
    // The collector's figures agree: its dropped leaves the stored seqs
    // out, its ranges keep them.
    assert!(
        report["checks"]["completeness"]["reported_dropped_but_stored"]
            .as_u64()
            .unwrap()
            >= overlap,
        "{report:#}"
    );
}

#[test]
fn seeded_chaos_with_every_fault_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("collector"), None, &[]);
    let (ok, report) = simulate(
        &[&server.base],
        dir.path(),
        &[
            "--devices",
            "24",
            "--events-per-device",
            "60",
            "--seed",
            "42",
            "--faults",
            "all",
        ],
    );
    assert_adds_up(ok, &report, 24, 60);
}

#[test]
fn seeded_chaos_on_postgresql_behind_two_collectors_adds_up() {
    let db = TestDb::named("simulate");
    let dir = tempfile::tempdir().unwrap();
    let pg = ["--database-url", db.url.as_str()];
    let a = Server::start(&dir.path().join("a"), None, &pg);
    let b = Server::start(&dir.path().join("b"), None, &pg);
    let (ok, report) = simulate(
        &[&a.base, &b.base],
        dir.path(),
        &[
            "--devices",
            "16",
            "--events-per-device",
            "60",
            "--seed",
            "42",
            "--faults",
            "all",
        ],
    );
    assert_adds_up(ok, &report, 16, 60);
    drop((a, b));
}

#[test]
fn a_clean_run_counts_every_event_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("collector"), None, &[]);
    let (ok, report) = simulate(
        &[&server.base],
        dir.path(),
        &["--devices", "8", "--events-per-device", "40", "--seed", "7"],
    );
    assert!(ok, "{report:#}");
    let tracked = report["tracked"].as_u64().unwrap();
    let business = report["business_duplicates"].as_u64().unwrap();
    assert_eq!(
        report["counted"].as_u64().unwrap(),
        tracked - business,
        "{report:#}"
    );
    assert_eq!(report["dropped"], serde_json::json!({}), "{report:#}");
    assert_eq!(report["checks"]["ok"], true, "{report:#}");
    let id = assert_identity(&report);
    assert_eq!(id["counted"].as_u64().unwrap(), tracked - business);
    assert_eq!(id["stored_and_dropped"], 0, "{report:#}");
}

#[test]
fn a_duration_stretches_the_scenario_over_that_much_wall_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("collector"), None, &[]);
    let (ok, report) = simulate(
        &[&server.base],
        dir.path(),
        &[
            "--devices",
            "4",
            "--events-per-device",
            "20",
            "--seed",
            "7",
            "--faults",
            "offline,kill9",
            "--duration",
            "3s",
        ],
    );
    assert!(ok, "{report:#}");
    // Every device with a pause waits 3 s in all; the devices run at once.
    let scripted = report["scripted_s"].as_f64().unwrap();
    assert!((3.0..20.0).contains(&scripted), "scripted for {scripted} s");
    assert_eq!(report["unexplained"], 0, "{report:#}");
    assert_eq!(report["double_counted"], 0, "{report:#}");
}

#[test]
fn a_collector_with_broken_dedup_is_caught_double_counting() {
    // The test build of the collector has a switch that gives every message
    // a fresh id: resends after lost answers and duplicate deliveries are
    // then counted again. The simulator must say so and fail.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("collector"),
        None,
        &[],
        &[("TALLY_BROKEN_DEDUP_FOR_TESTS", "1")],
    );
    let (ok, report) = simulate(
        &[&server.base],
        dir.path(),
        &[
            "--devices",
            "24",
            "--events-per-device",
            "60",
            "--seed",
            "5",
            "--faults",
            "reset,duplicate",
        ],
    );
    assert!(!ok, "{report:#}");
    assert!(report["double_counted"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(report["duplicates_suppressed"], 0, "{report:#}");
    assert_eq!(report["checks"]["ok"], false, "{report:#}");
    // The extra counts were never tracked or in doubt: the identity fails.
    assert_eq!(report["checks"]["identity"]["ok"], false, "{report:#}");
}

#[test]
fn chaos_with_a_collector_the_simulator_kills_and_restarts() {
    // No --endpoint: the simulator runs `tally serve` itself, so `all`
    // includes the restart fault (SIGKILL and SIGTERM in turn), and the
    // kill9 fault runs some devices in child processes it kills.
    let dir = tempfile::tempdir().unwrap();
    let (ok, report) = simulate(
        &[],
        dir.path(),
        &[
            "--devices",
            "16",
            "--events-per-device",
            "60",
            "--seed",
            "9",
            "--faults",
            "all",
        ],
    );
    assert_adds_up(ok, &report, 16, 60);
    let restarts: Vec<&str> = report["collector_restarts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(restarts.contains(&"sigkill"), "{report:#}");
    assert!(restarts.contains(&"sigterm"), "{report:#}");
}

#[test]
fn a_reconnect_storm_is_shed_with_429s_and_drains_exactly() {
    // 500 devices track 20 events each offline, then all come online at
    // once against a collector with 2 ingest slots: it must answer 429 +
    // Retry-After, every device must wait as told, and every event must be
    // counted exactly once.
    let dir = tempfile::tempdir().unwrap();
    let (ok, report) = simulate(
        &[],
        dir.path(),
        &[
            "--mode",
            "storm",
            "--devices",
            "500",
            "--events-per-device",
            "20",
            "--seed",
            "3",
            "--max-in-flight",
            "2",
            "--concurrency",
            "500",
        ],
    );
    assert!(ok, "{report:#}");
    let tracked = report["tracked"].as_u64().unwrap();
    let business = report["business_duplicates"].as_u64().unwrap();
    let refused = total(&report["refused"]);
    // Every scripted call was accepted, or refused for the devices whose
    // users refused consent (double-tapped orders are extra calls).
    assert!(tracked + refused >= 500 * 20, "{report:#}");
    assert_eq!(
        report["counted"].as_u64().unwrap(),
        tracked - business,
        "{report:#}"
    );
    assert_eq!(report["unexplained"], 0, "{report:#}");
    assert_eq!(report["double_counted"], 0, "{report:#}");
    assert_eq!(report["pending"], 0, "{report:#}");
    assert_eq!(report["dropped"], serde_json::json!({}), "{report:#}");
    let storm = &report["storm"];
    assert_eq!(storm["profile"]["drained_devices"], 500, "{report:#}");
    // The collector shed load, and every device honoured Retry-After.
    let rate_limited = storm["rate_limited"].as_u64().unwrap();
    assert!(rate_limited > 0, "{report:#}");
    assert_eq!(storm["early_retries"], 0, "{report:#}");
    assert_eq!(storm["server_errors"], 0, "{report:#}");
    assert_eq!(storm["failed"], 0, "{report:#}");
    // No retry storm: every retry is a 429 the device then waited out.
    assert_eq!(
        storm["retries"].as_u64().unwrap(),
        rate_limited,
        "{report:#}"
    );
}
