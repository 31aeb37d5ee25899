//! `tally simulate` against real `tally serve` processes on loopback: with
//! every fault on, the numbers must add up exactly (nothing unexplained,
//! nothing counted twice), on SQLite and on PostgreSQL behind two
//! collectors; and a collector with broken dedup must be caught.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod serve_support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use serve_support::{Server, TestDb, ADMIN_TOKEN, WRITE_KEY};

/// Runs `tally simulate` against `endpoints`; returns whether it exited 0
/// and its report (stdout's last line, checked equal to `--report`).
fn simulate(endpoints: &[&str], work: &Path, args: &[&str]) -> (bool, Value) {
    let report_file = work.join("report.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.arg("simulate");
    for e in endpoints {
        cmd.args(["--endpoint", e]);
    }
    let output = cmd
        .args(["--write-key", WRITE_KEY, "--admin-token", ADMIN_TOKEN])
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
    assert!(ok, "{report:#}");
    let tracked = report["tracked"].as_u64().unwrap();
    // Every scripted call was either accepted or refused with a reason.
    let refused = total(&report["refused"]);
    assert!(tracked + refused >= devices * events, "{report:#}");
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
    assert!(counted + business + rejected <= tracked, "{report:#}");
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
    let db = TestDb::new("simulate");
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
}
