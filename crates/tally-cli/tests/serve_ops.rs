//! What an operator runs around `tally serve`, against the real binary:
//! its logs as JSON lines.

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
