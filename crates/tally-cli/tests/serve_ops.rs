//! What an operator runs around `tally serve`, against the real binary:
//! its logs as JSON lines, its metrics by route, and a backup taken while
//! it runs, restored.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::time::Duration;

use serde_json::Value;
use serve_support::*;

#[test]
fn json_logs_are_one_object_a_line_with_a_level_and_a_message() {
    let dir = temp_dir("json-logs");
    let server = Server::start(dir.path(), None, &["--log-format", "json"]);
    let agent = agent();
    let (status, _) = post_batch(&agent, &server.base, &batches("json-log", 1, 3)[0]).unwrap();
    assert_eq!(status, 200);
    let log = server.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        let level = line["level"].as_str().unwrap();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{line}"
        );
        assert!(line["message"].is_string(), "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
    }
    // The event's fields stand beside the message.
    let listening = lines
        .iter()
        .find(|l| l["message"] == format!("listening on {}", server.base))
        .unwrap_or_else(|| panic!("no listening line in {log}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["store"], "sqlite");
    assert_eq!(listening["target"], "tally::serve");
    let exit = server.terminate(Duration::from_secs(20));
    assert!(exit.success());
}

#[test]
fn an_unknown_log_format_is_refused_before_anything_starts() {
    let dir = temp_dir("log-format");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "serve",
            "--write-key",
            "k",
            "--log-format",
            "xml",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[possible values: text, json]"), "{stderr}");
    assert!(!dir.path().join("data").exists());
}

/// `tally backup ARGS`: (exit code, stdout, stderr).
fn backup(args: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("backup")
        .args(args)
        .env_remove("TALLY_DATA_DIR")
        .output()
        .unwrap();
    (
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_backup_taken_while_serving_restores_to_exactly_what_was_stored() {
    let dir = temp_dir("backup");
    let live = dir.path().join("live");
    let server = Server::start(&live, None, &[]);
    let agent = agent();
    let sent = batches("backup", 7, 20);
    for batch in &sent[..5] {
        let (status, answer) = post_batch(&agent, &server.base, batch).unwrap();
        assert_eq!((status, answer["accepted"].as_u64()), (200, Some(20)));
    }
    assert_eq!(stats(&agent, &server), (100, 0, 0, 100));

    // Taken while the collector runs, its last commits still in the WAL.
    let copy = dir.path().join("tally-backup.db");
    let (code, stdout, stderr) = backup(&[
        "--data-dir",
        live.to_str().unwrap(),
        "--out",
        copy.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.starts_with("backed up "), "{stderr}");
    assert!(!dir.path().join("tally-backup.db.partial").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // One self-contained file.
    assert!(!dir.path().join("tally-backup.db-wal").exists());

    // Events after the backup are not in it.
    for batch in &sent[5..] {
        let (status, _) = post_batch(&agent, &server.base, batch).unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(stats(&agent, &server), (140, 0, 0, 140));

    // `--out -`: the same database on stdout.
    let (code, streamed, stderr) = backup(&["--data-dir", live.to_str().unwrap(), "--out", "-"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(streamed.starts_with(b"SQLite format 3\0"));
    assert!(stderr.contains(" to stdout "), "{stderr}");

    // The restore procedure of docs/operating.md: the copy becomes the
    // tally.db of a data directory with no -wal or -shm, and a collector
    // starts on it.
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::copy(&copy, restored.join("tally.db")).unwrap();
    let second = Server::start(&restored, None, &[]);
    assert_eq!(stats(&agent, &second), (100, 0, 0, 100));
    let (status, count) = admin_get(&agent, &second.url("/v1/events/count?event=Item%20Added"));
    assert_eq!(status, 200, "{count}");
    assert_eq!(count["count"], 100, "{count}");
    // A device resending a batch the backup holds is answered duplicate.
    let (status, answer) = post_batch(&agent, &second.base, &sent[0]).unwrap();
    assert_eq!(status, 200);
    assert_eq!(answer["duplicate"], 20, "{answer}");
    // One sent after the backup is new to the restored store.
    let (status, answer) = post_batch(&agent, &second.base, &sent[6]).unwrap();
    assert_eq!(status, 200);
    assert_eq!(answer["accepted"], 20, "{answer}");
    assert_eq!(stats(&agent, &second), (120, 20, 0, 120));

    // The stdout copy restores the state after the later batches.
    let streamed_dir = dir.path().join("streamed");
    std::fs::create_dir(&streamed_dir).unwrap();
    std::fs::write(streamed_dir.join("tally.db"), &streamed).unwrap();
    let third = Server::start(&streamed_dir, None, &[]);
    assert_eq!(stats(&agent, &third), (140, 0, 0, 140));

    assert!(server.terminate(Duration::from_secs(20)).success());
    assert!(second.terminate(Duration::from_secs(20)).success());
    assert!(third.terminate(Duration::from_secs(20)).success());
}

#[test]
fn a_backup_without_a_store_is_refused_and_writes_nothing() {
    let dir = temp_dir("backup-none");
    let out = dir.path().join("copy.db");
    let (code, stdout, stderr) = backup(&[
        "--data-dir",
        dir.path().join("missing").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty());
    assert!(stderr.contains("no store at "), "{stderr}");
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(!out.exists());
    assert!(!dir.path().join("missing").exists());
}

/// `/metrics` with the admin token.
fn scrape(agent: &ureq::Agent, server: &Server) -> String {
    let mut response = agent
        .get(server.url("/metrics"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    response.body_mut().read_to_string().unwrap()
}

fn assert_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            text.lines().any(|l| l == *line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn metrics_count_requests_by_route_and_describe_the_build_and_process() {
    let dir = temp_dir("metrics");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    for batch in &batches("metrics", 3, 5) {
        let (status, _) = post_batch(&agent, &server.base, batch).unwrap();
        assert_eq!(status, 200);
    }
    for _ in 0..2 {
        let (status, _) = read(agent.get(server.url("/healthz")).call().unwrap());
        assert_eq!(status, 200);
    }
    assert_eq!(admin_get(&agent, &server.url("/v1/stats")).0, 200);
    let (status, _) = read(agent.get(server.url("/v1/stats")).call().unwrap());
    assert_eq!(status, 401);
    // Two installs, one route: ids never become label values.
    for (id, want) in [("metrics-install", 200), ("unknown-install", 404)] {
        let (status, body) = admin_get(&agent, &server.url(&format!("/v1/installs/{id}")));
        assert_eq!(status, want, "{body}");
    }
    let (status, _) = read(agent.get(server.url("/no/such/path")).call().unwrap());
    assert_eq!(status, 404);

    let text = scrape(&agent, &server);
    assert_lines(
        &text,
        &[
            "tally_http_requests_total{route=\"/v1/batch\",status=\"200\"} 3",
            "tally_http_requests_total{route=\"/healthz\",status=\"200\"} 2",
            "tally_http_requests_total{route=\"/v1/stats\",status=\"200\"} 1",
            "tally_http_requests_total{route=\"/v1/stats\",status=\"401\"} 1",
            "tally_http_requests_total{route=\"/v1/installs/{install_id}\",status=\"200\"} 1",
            "tally_http_requests_total{route=\"/v1/installs/{install_id}\",status=\"404\"} 1",
            "tally_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
            "tally_http_request_duration_seconds_count{route=\"/v1/batch\",status_class=\"2xx\"} 3",
            "tally_http_request_duration_seconds_count{route=\"/v1/stats\",status_class=\"4xx\"} 1",
            "tally_events_total{outcome=\"accepted\"} 15",
            "# TYPE tally_http_requests counter",
            "# TYPE tally_http_request_duration_seconds histogram",
            "# TYPE tally_pipeline_batches counter",
            "# TYPE process_cpu_seconds counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_open_fds gauge",
            "# TYPE process_start_time_seconds gauge",
            concat!(
                "tally_build_info{version=\"",
                env!("CARGO_PKG_VERSION"),
                "\",commit=\"unknown\"} 1"
            ),
        ],
    );
    // No label holds an install id.
    assert!(!text.contains("metrics-install"), "{text}");
    assert!(!text.contains("unknown-install"), "{text}");
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    // The collector's own figures, read from /proc/PID of the server.
    let rss = value(&text, "process_resident_memory_bytes");
    let vm_rss = server.memory_kib("VmRSS") as f64 * 1024.0;
    assert!((rss - vm_rss).abs() < vm_rss * 0.5, "{rss} vs {vm_rss}");
    assert!(value(&text, "process_open_fds") >= 3.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value(&text, "process_start_time_seconds");
    assert!(
        start > now - 120.0 && start <= now + 1.0,
        "{start} vs {now}"
    );

    // The first scrape is counted by the second; the start time is fixed.
    let again = scrape(&agent, &server);
    assert_lines(
        &again,
        &["tally_http_requests_total{route=\"/metrics\",status=\"200\"} 1"],
    );
    assert_eq!(value(&again, "process_start_time_seconds"), start);
    assert!(server.terminate(Duration::from_secs(20)).success());
}
