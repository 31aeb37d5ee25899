//! `tally inspect log DIR` on a real log: the JSON report, and that it
//! changes nothing in the directory.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tally_proto::Priority;
use tally_sdk::log::{Disposition, Entry, Log, LogConfig};

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tally-inspect-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            );
        }
    }
    out
}

fn inspect(dir: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["inspect", "log"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn reports_pending_acknowledged_dropped_and_corrupt_without_writing() {
    let dir = scratch_dir("report");
    let log = Log::open(LogConfig::new(&dir)).unwrap();
    for seq in 1..=10 {
        let priority = if seq <= 2 {
            Priority::Critical
        } else {
            Priority::Normal
        };
        log.append(Entry {
            seq,
            priority,
            payload: br#"{"event":"x"}"#.to_vec(),
        })
        .unwrap();
    }
    log.flush().unwrap();
    let records = log.read_pending(4, usize::MAX).unwrap();
    log.ack(&[
        (records[0].id, Disposition::Delivered),
        (records[1].id, Disposition::Delivered),
        (records[2].id, Disposition::Dropped("quarantined".into())),
    ])
    .unwrap();
    // A torn tail of a live log: inspect reports it but must not repair it.
    log.close().unwrap();
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-n.seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // The first 10 bytes of a frame: a write cut short by a crash.
    let torn: Vec<u8> = bytes[32..42].to_vec();
    bytes.extend_from_slice(&torn);
    std::fs::write(&seg, bytes).unwrap();

    let before = snapshot(&dir);
    let report = inspect(&dir);
    assert_eq!(snapshot(&dir), before, "inspect wrote to the directory");

    assert_eq!(report["records"], 10);
    assert_eq!(report["pending"], 7);
    assert_eq!(report["pending_critical"], 0);
    assert_eq!(report["acknowledged"], 2);
    assert_eq!(report["corrupt"], 0);
    assert_eq!(report["dropped"]["quarantined"], 1);
    assert_eq!(report["torn_bytes"], 10);
    assert_eq!(report["segments"], 2);
    assert!(report["bytes"].as_u64().unwrap() > 10 * 61);
    let age = report["oldest_pending_age_s"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The tool run on `dir`: its exit status, stdout and stderr.
fn inspect_raw(dir: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["inspect", "log"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_directory_with_no_log_is_refused_with_a_hint() {
    let scratch = scratch_dir("missing");
    for dir in [scratch.join("nothing-here"), scratch.clone()] {
        let (ok, stdout, stderr) = inspect_raw(&dir);
        assert!(!ok, "{} was reported as a log: {stdout}", dir.display());
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains("holds no Tally log"), "{stderr}");
        assert!(stderr.contains("data directory"), "{stderr}");
    }
    assert!(!scratch.join("nothing-here").exists());
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn the_data_directory_of_an_app_reports_its_log() {
    let dir = scratch_dir("data-dir");
    let tracker = tally_sdk::Tracker::builder("wk", "http://127.0.0.1:9", &dir)
        .consent(tally_sdk::Consent::Granted)
        .auto_upload(false)
        .build()
        .unwrap();
    for _ in 0..3 {
        tracker.track("E", tally_sdk::Props::new()).unwrap();
    }
    tracker.flush().unwrap();
    tracker.shutdown(std::time::Duration::from_secs(5)).unwrap();
    let mut from_data_dir = inspect(&dir);
    assert_eq!(from_data_dir["pending"], 3);
    assert_eq!(from_data_dir["records"], 3);
    let mut from_log_dir = inspect(&dir.join("log"));
    // The same report, but for the time between the two runs.
    for report in [&mut from_data_dir, &mut from_log_dir] {
        report
            .as_object_mut()
            .unwrap()
            .remove("oldest_pending_age_s");
    }
    assert_eq!(from_log_dir, from_data_dir);
    std::fs::remove_dir_all(&dir).unwrap();
}
