//! The client commands' shared conventions, against the real binary and a
//! real `tally serve`: one default endpoint and `TALLY_ENDPOINT`, closed
//! choices checked before anything is sent, one duration syntax, and
//! `--out -` for stdout.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::process::{Command, Output};

use serde_json::Value;
use serve_support::*;

/// `tally ARGS` with `env`, and nothing of the developer's environment
/// that would change which collector it talks to.
fn tally(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.args(args)
        .env_remove("TALLY_ENDPOINT")
        .env_remove("TALLY_ADMIN_TOKEN")
        .env_remove("TALLY_WRITE_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A collector holding 10 `Item Added` events.
fn server_with_events(name: &str) -> (tempfile::TempDir, Server) {
    let dir = temp_dir(name);
    let server = Server::start(dir.path(), None, &[]);
    let (status, answer) = post_batch(&agent(), &server.base, &batches(name, 1, 10)[0]).unwrap();
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(10)));
    (dir, server)
}

#[test]
fn every_client_command_has_one_default_endpoint_and_its_variable() {
    for command in ["emit", "query", "export"] {
        let help = stdout(&tally(&[command, "--help"], &[]));
        assert!(
            help.contains("[env: TALLY_ENDPOINT=]"),
            "{command}:\n{help}"
        );
        assert!(
            help.contains("[default: http://127.0.0.1:8080]"),
            "{command}:\n{help}"
        );
    }
}

#[test]
fn tally_endpoint_is_used_and_the_flag_wins_over_it() {
    let (_dir, server) = server_with_events("endpoint-env");
    let env = [
        ("TALLY_ENDPOINT", server.base.as_str()),
        ("TALLY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let answer: Value =
        serde_json::from_str(&stdout(&tally(&["query", "--json", "top-events"], &env))).unwrap();
    assert_eq!(answer["rows"][0]["event"], "Item Added");
    assert_eq!(answer["rows"][0]["count"], 10);

    // A flag beats the variable: the variable names a closed port.
    let port = free_port();
    let dead = format!("http://127.0.0.1:{port}");
    let env = [
        ("TALLY_ENDPOINT", dead.as_str()),
        ("TALLY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let flag = ["query", "--endpoint", &server.base, "--json", "top-events"];
    let answer: Value = serde_json::from_str(&stdout(&tally(&flag, &env))).unwrap();
    assert_eq!(answer["rows"][0]["count"], 10);
    let refused = tally(&["query", "top-events"], &env);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the collector at {dead}")),
        "{stderr}"
    );
}

#[test]
fn closed_choices_are_refused_before_anything_is_sent() {
    for (args, values) in [
        (
            &["query", "events", "--interval", "week"][..],
            "[possible values: hour, day]",
        ),
        (
            &["query", "sessions", "--interval", "minute"][..],
            "[possible values: hour, day]",
        ),
        (
            &["query", "active", "--window", "year"][..],
            "[possible values: day, week, month]",
        ),
    ] {
        let out = tally(args, &[("TALLY_ADMIN_TOKEN", ADMIN_TOKEN)]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(values), "{args:?}: {stderr}");
    }
}

#[test]
fn the_value_enums_reach_the_api_as_its_words() {
    let (_dir, server) = server_with_events("enums");
    let env = [
        ("TALLY_ENDPOINT", server.base.as_str()),
        ("TALLY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let json = |args: &[&str]| -> Value {
        let mut all = vec!["query", "--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&stdout(&tally(&all, &env))).unwrap()
    };
    let events = json(&["events", "--event", "Item Added", "--interval", "hour"]);
    assert_eq!(events["interval"], "hour");
    assert_eq!(events["total"]["count"], 10);
    assert_eq!(json(&["sessions", "--interval", "day"])["interval"], "day");
    assert_eq!(json(&["active", "--window", "month"])["window"], "month");
}

#[test]
fn the_funnel_window_takes_a_duration_or_the_old_seconds() {
    let (_dir, server) = server_with_events("funnel-window");
    let env = [
        ("TALLY_ENDPOINT", server.base.as_str()),
        ("TALLY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    for (flag, value, seconds) in [
        ("--window", "2h", 7_200),
        ("--window", "7d", 604_800),
        ("--window", "90", 90),
        ("--window-s", "86400", 86_400),
    ] {
        let args = [
            "query",
            "--json",
            "funnel",
            "Item Added",
            "Item Added",
            flag,
            value,
        ];
        let answer: Value = serde_json::from_str(&stdout(&tally(&args, &env))).unwrap();
        assert_eq!(answer["window_s"], seconds, "{flag} {value}");
    }
    let out = tally(&["query", "funnel", "a", "b", "--window", "1.5s"], &env);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--window must be a whole number of seconds"),
        "{stderr}"
    );
    let out = tally(&["query", "funnel", "a", "b", "--window", "1mo"], &env);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no fixed length"), "{stderr}");
}

#[test]
fn export_out_dash_writes_the_export_to_stdout() {
    let (dir, server) = server_with_events("export-stdout");
    let env = [
        ("TALLY_ENDPOINT", server.base.as_str()),
        ("TALLY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let out = tally(&["export", "--format", "ndjson", "--out", "-"], &env);
    let text = stdout(&out);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    assert!(lines.iter().all(|l| l["event"] == "Item Added"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exported 10 events"), "{stderr}");
    assert!(stderr.contains("to stdout"), "{stderr}");
    // No file named "-", nor its partial.
    assert!(!dir.path().join("-").exists());
    assert!(!std::path::Path::new("-.partial").exists());

    let out = tally(&["export", "--format", "parquet", "--out", "-"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.starts_with(b"PAR1"));
    assert!(out.stdout.ends_with(b"PAR1"));
}

#[test]
fn emit_takes_the_endpoint_from_the_variable_and_a_duration_timeout() {
    let dir = temp_dir("emit-env");
    let server = Server::start(&dir.path().join("data"), None, &[]);
    let phone = dir.path().join("phone");
    let env = [
        ("TALLY_ENDPOINT", server.base.as_str()),
        ("TALLY_WRITE_KEY", WRITE_KEY),
    ];
    let args = [
        "emit",
        "--data-dir",
        phone.to_str().unwrap(),
        "--event",
        "Env Checked",
        "--count",
        "4",
        "--timeout",
        "20s",
    ];
    let health: Value = serde_json::from_str(stdout(&tally(&args, &env)).trim()).unwrap();
    assert_eq!(health["pending"], 0, "{health}");
    assert_eq!(stats(&agent(), &server), (4, 0, 0, 4));
}
