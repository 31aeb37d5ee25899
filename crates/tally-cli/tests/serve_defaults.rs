//! What the real `tally serve` exposes by default: CORS per path, who may
//! read `/metrics`, and the modes of the data directory and the database
//! files.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serve_support::*;

const METRICS_TOKEN: &str = "metrics-scrape-token";

/// (status, body) of a GET with an optional Bearer token and Origin.
fn get(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    origin: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let mut response = request.call().unwrap();
    let allow_origin = response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap(),
        allow_origin,
    )
}

/// `/metrics` needs the metrics token or the admin token; on the listener
/// of `--metrics-listen` it is open, and nothing else is served there.
#[test]
fn metrics_need_a_token_unless_on_their_own_listener() {
    let dir = temp_dir("defaults-metrics");
    let server = Server::start(
        dir.path(),
        None,
        &[
            "--write-key",
            WRITE_KEY,
            "--admin-token",
            ADMIN_TOKEN,
            "--metrics-token",
            METRICS_TOKEN,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let agent = agent();
    let metrics = server.url("/metrics");
    assert_eq!(get(&agent, &metrics, None, None).0, 401);
    assert_eq!(
        get(&agent, &metrics, Some("not-the-metrics-token"), None).0,
        401
    );
    assert_eq!(get(&agent, &metrics, Some(WRITE_KEY), None).0, 403);
    for token in [METRICS_TOKEN, ADMIN_TOKEN] {
        let (status, text, _) = get(&agent, &metrics, Some(token), None);
        assert_eq!(status, 200);
        assert!(
            text.contains("tally_events_total{outcome=\"accepted\"} 0"),
            "{text}"
        );
    }
    // The metrics token opens nothing else: a known credential short of
    // the route's role.
    assert_eq!(
        get(&agent, &server.url("/v1/stats"), Some(METRICS_TOKEN), None).0,
        403
    );
    let open = metrics_listener(&server);
    let (status, text, _) = get(&agent, &format!("{open}/metrics"), None, None);
    assert_eq!(status, 200);
    assert!(text.contains("tally_events_total"), "{text}");
    assert_eq!(
        get(&agent, &format!("{open}/v1/stats"), Some(ADMIN_TOKEN), None).0,
        404
    );
}

/// The base URL the server logged for its metrics listener.
fn metrics_listener(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if let Some(at) = log.find("metrics served without a token on ") {
            let rest = &log[at + "metrics served without a token on ".len()..];
            let url = rest.split_whitespace().next().unwrap();
            return url.trim_end_matches("/metrics").to_owned();
        }
        assert!(Instant::now() < deadline, "no metrics listener in\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ingest paths answer any origin, without credentials; admin paths answer
/// only the origins of `--cors-origin`, never `null`.
#[test]
fn cors_is_open_for_ingest_and_configured_for_admin_paths() {
    let dir = temp_dir("defaults-cors");
    let server = Server::start(
        dir.path(),
        None,
        &["--cors-origin", "https://admin.example"],
    );
    let agent = agent();
    let stats = server.url("/v1/stats");
    let (status, _, allowed) = get(
        &agent,
        &stats,
        Some(ADMIN_TOKEN),
        Some("https://admin.example"),
    );
    assert_eq!(
        (status, allowed.as_deref()),
        (200, Some("https://admin.example"))
    );
    for origin in ["https://evil.example", "null"] {
        let (status, _, allowed) = get(&agent, &stats, Some(ADMIN_TOKEN), Some(origin));
        assert_eq!((status, allowed), (200, None), "{origin}");
    }
    let response = agent
        .post(server.url("/v1/t"))
        .header("origin", "null")
        .header("authorization", format!("Bearer {WRITE_KEY}"))
        .send(br#"{"type":"track","messageId":"c-1","anonymousId":"a","event":"E"}"#)
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(response
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Under a umask that would leave everything readable, the data directory
/// the server creates is 0700 and its database files 0600.
#[test]
fn a_new_data_directory_is_0700_and_the_database_files_0600() {
    let root = temp_dir("defaults-modes");
    let data = root.path().join("data");
    let server = Server::start_after(&data, "umask 000", &[]);
    let agent = agent();
    let (status, _) = post_batch(&agent, &server.base, &batches("modes", 1, 3)[0]).unwrap();
    assert_eq!(status, 200);
    assert_eq!(mode(&data), 0o700);
    for name in ["tally.db", "tally.db-wal", "tally.db-shm"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
}

/// A data directory and database of an earlier version (0755, 0644): the
/// files are narrowed to 0600, the directory is kept and the log says so.
#[test]
fn an_existing_data_directory_keeps_its_mode_with_a_warning_and_its_files_are_narrowed() {
    let root = temp_dir("defaults-existing");
    let data = root.path().join("data");
    drop(Server::start(&data, None, &[]));
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["tally.db", "tally.db-wal", "tally.db-shm"] {
        let file = data.join(name);
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let server = Server::start(&data, None, &[]);
    let agent = agent();
    assert_eq!(
        post_batch(&agent, &server.base, &batches("existing", 1, 3)[0])
            .unwrap()
            .0,
        200
    );
    assert_eq!(mode(&data), 0o755);
    for name in ["tally.db", "tally.db-wal", "tally.db-shm"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    assert!(
        server
            .log()
            .contains("the data directory may be entered by others"),
        "{}",
        server.log()
    );
}
