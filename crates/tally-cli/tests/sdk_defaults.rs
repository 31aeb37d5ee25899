//! What the SDK leaves on the device and where it agrees to send, with the
//! real `tally emit` and the SDK against a real `tally serve`: the state
//! file is private and holds no user id in clear (a file of the earlier
//! format is read and sealed), and plain HTTP to a remote host is refused.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use serve_support::*;
use tally_sdk::{Consent, Props, Tracker};

fn emit(endpoint: &str, data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["emit", "--endpoint", endpoint, "--write-key", WRITE_KEY])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("TALLY_WRITE_KEY")
        .output()
        .unwrap()
}

fn emitted(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_holding(&path, needle));
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            out.push(path.display().to_string());
        }
    }
    out
}

/// The exported events named `event`.
fn exported(agent: &ureq::Agent, server: &Server, event: &str) -> Vec<Value> {
    let (status, body) = admin_get(agent, &server.url("/v1/export?format=ndjson"));
    assert_eq!(status, 200);
    body.as_str()
        .map_or_else(
            || vec![body.clone()],
            |text| {
                text.lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect()
            },
        )
        .into_iter()
        .filter(|e| e["event"] == event)
        .collect()
}

#[test]
fn the_state_file_is_private_and_holds_no_user_id_in_clear() {
    let dir = temp_dir("sdk-state");
    let server = Server::start(&dir.path().join("collector"), None, &[]);
    let agent = agent();
    let device = dir.path().join("device");
    let user = "alice-4c1e9b2f@example.com";
    emitted(&emit(
        &server.base,
        &device,
        &["--event", "Signed In", "--user", user, "--count", "2"],
    ));
    assert_eq!(mode(&device), 0o700);
    assert_eq!(mode(&device.join("tally-state.json")), 0o600);
    assert_eq!(files_holding(&device, user), Vec::<String>::new());
    assert_eq!(files_holding(&device, "alice"), Vec::<String>::new());
    // A later run without --user still knows who it is.
    emitted(&emit(
        &server.base,
        &device,
        &["--event", "Later", "--count", "1"],
    ));
    let later = exported(&agent, &server, "Later");
    assert_eq!(later.len(), 1);
    assert_eq!(later[0]["userId"], user);
}

#[test]
fn a_state_file_of_the_earlier_format_keeps_its_user_and_is_sealed() {
    let dir = temp_dir("sdk-migrate");
    let server = Server::start(&dir.path().join("collector"), None, &[]);
    let agent = agent();
    let device = dir.path().join("device");
    std::fs::create_dir_all(&device).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tally-sdk/tests/fixtures/state/v1-tally-state.json");
    let state = device.join("tally-state.json");
    std::fs::copy(fixture, &state).unwrap();
    std::fs::set_permissions(&device, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
    emitted(&emit(
        &server.base,
        &device,
        &["--event", "Migrated", "--count", "1"],
    ));
    let migrated = exported(&agent, &server, "Migrated");
    assert_eq!(migrated.len(), 1);
    assert_eq!(migrated[0]["userId"], "fixture-user-1");
    assert_eq!(
        migrated[0]["context"]["tally"]["install_id"],
        "0f9b6f4e-2f6a-4a53-9d3e-5a8c1f7e2b10"
    );
    assert_eq!(migrated[0]["context"]["tally"]["seq"], 45);
    assert_eq!(
        files_holding(&device, "fixture-user-1"),
        Vec::<String>::new()
    );
    assert_eq!((mode(&device), mode(&state)), (0o700, 0o600));
}

/// After key rotations, with every record acknowledged and the old keys
/// deleted, a restarted tracker still knows its user.
#[test]
fn the_user_id_survives_key_rotations_and_restarts() {
    let dir = temp_dir("sdk-rotate");
    let server = Server::start(&dir.path().join("collector"), None, &[]);
    let agent = agent();
    let device = dir.path().join("device");
    let tracker = || {
        Tracker::builder(WRITE_KEY, &server.base, &device)
            .consent(Consent::Granted)
            .build()
            .unwrap()
    };
    let t = tracker();
    t.identify("rotating-user", Props::new()).unwrap();
    t.track("Before", Props::new()).unwrap();
    assert!(t.wait_until_synced(Duration::from_secs(20)));
    for _ in 0..2 {
        t.rotate_key().unwrap();
        t.track("Between", Props::new()).unwrap();
        assert!(t.wait_until_synced(Duration::from_secs(20)));
    }
    t.shutdown(Duration::from_secs(5)).unwrap();
    let keys: Vec<String> = std::fs::read_dir(device.join("log/keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(keys, ["key-3"], "the older keys were deleted");
    let t = tracker();
    t.track("After", Props::new()).unwrap();
    assert!(t.wait_until_synced(Duration::from_secs(20)));
    t.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(
        exported(&agent, &server, "After")[0]["userId"],
        "rotating-user"
    );
    assert_eq!(
        files_holding(&device, "rotating-user"),
        Vec::<String>::new()
    );
}

#[test]
fn emit_refuses_plain_http_to_a_remote_host_unless_allowed() {
    let dir = temp_dir("sdk-insecure");
    let started = Instant::now();
    let refused = emit("http://192.0.2.1:8080", dir.path(), &["--event", "E"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refusing plain http:// to 192.0.2.1"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Allowed: the tracker starts (nothing to send, so no connection).
    let allowed = emit(
        "http://192.0.2.1:8080",
        dir.path(),
        &["--event", "E", "--count", "0", "--allow-insecure-http"],
    );
    emitted(&allowed);
}
