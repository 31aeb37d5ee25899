//! `tally simulate` against a real `tally serve` on loopback, every fault
//! on: the numbers must add up exactly (nothing unexplained, nothing
//! counted twice).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WRITE_KEY: &str = "sim-write-key";
const ADMIN: &str = "sim-admin-token";

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(data_dir: &Path) -> Server {
    serve_with(data_dir, &[])
}

fn serve_with(data_dir: &Path, env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .envs(env.iter().copied())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .args(["--write-key", WRITE_KEY, "--admin-token", ADMIN])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("{url}/healthz")).call().is_err() {
        assert!(Instant::now() < deadline, "collector did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, url }
}

fn simulate(url: &str, work: &Path, extra: &[&str]) -> (bool, serde_json::Value) {
    let report_file = work.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["simulate", "--endpoint", url, "--write-key", WRITE_KEY])
        .args(["--admin-token", ADMIN, "--work-dir"])
        .arg(work.join("devices"))
        .arg("--report")
        .arg(&report_file)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {stdout} stderr {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let from_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(report, from_file, "stdout's last line and --report agree");
    (output.status.success(), report)
}

#[test]
fn seeded_chaos_with_every_fault_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("collector"));
    let (ok, report) = simulate(
        &server.url,
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
    assert_eq!(report["unexplained"], 0, "{report:#}");
    assert_eq!(report["double_counted"], 0, "{report:#}");
    assert_eq!(report["pending"], 0, "{report:#}");
    assert!(ok, "{report:#}");
    let tracked = report["tracked"].as_u64().unwrap();
    assert!(tracked >= 24 * 60 * 9 / 10, "{report:#}");
    // The faults really happened: resends were answered duplicate, and
    // the storm counters saw injected 5xx and 429 answers.
    assert!(
        report["duplicates_suppressed"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert!(
        report["storm"]["server_errors"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert!(
        report["storm"]["rate_limited"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    let counted = report["counted"].as_u64().unwrap();
    let dropped: u64 = report["dropped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let rejected: u64 = report["rejected"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let business = report["business_duplicates"].as_u64().unwrap();
    assert!(
        counted + dropped + rejected + business >= tracked,
        "{report:#}"
    );
    assert!(counted + business + rejected <= tracked, "{report:#}");
}

#[test]
fn a_clean_run_counts_every_event_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("collector"));
    let (ok, report) = simulate(
        &server.url,
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
    let server = serve_with(
        &dir.path().join("collector"),
        &[("TALLY_BROKEN_DEDUP_FOR_TESTS", "1")],
    );
    let (ok, report) = simulate(
        &server.url,
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
