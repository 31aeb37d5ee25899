//! Governance against a real `tally serve`: export (`GET /v1/export` and
//! `tally export` to NDJSON and Parquet), the list of deletions, and the
//! retention job deleting expired events; on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::{json, Value};
use serve_support::{admin_get, agent, read, temp_dir, Server, TestDb, ADMIN_TOKEN, WRITE_KEY};
use tally_proto::{format_timestamp, parse_timestamp};

/// The fixture: one message of each type, ids and times chosen so that the
/// export order (corrected time, ties by arrival) is fx-3, fx-2, fx-1,
/// fx-4, fx-6, fx-5, fx-7. No `sentAt`, so the corrected time is the
/// message's own timestamp.
const FIXTURE: [&str; 7] = [
    r#"{"type":"track","messageId":"fx-1","anonymousId":"anon-1","event":"Song Played","timestamp":"2026-10-01T10:00:00.000Z","properties":{"genre":"jazz","ms":215000,"tags":["a","b"]},"context":{"app":{"version":"2.3.0"},"locale":"fr-FR","tally":{"install_id":"inst-1","seq":1,"session_id":"s-1","session_index":1}}}"#,
    r#"{"type":"identify","messageId":"fx-2","userId":"user-1","anonymousId":"anon-1","timestamp":"2026-10-01T10:00:01+02:00","traits":{"plan":"pro"},"context":{"tally":{"install_id":"inst-1","seq":2}}}"#,
    r#"{"type":"page","messageId":"fx-3","userId":"user-1","name":"Pricing","timestamp":"2026-09-30T23:59:59.999Z","properties":{"path":"/pricing","title":"Prix \u00e9t\u00e9 \"sp\u00e9cial\""},"originalTimestamp":"2026-09-30T23:59:58Z"}"#,
    r#"{"type":"screen","messageId":"fx-4","userId":"","anonymousId":"anon-2","name":"Home","timestamp":"2026-10-02T00:00:00Z","receivedAt":"1999-01-01T00:00:00Z","unknown":{"x":[1,2,{"y":null}]}}"#,
    r#"{"type":"track","messageId":"fx-5","userId":"user-2","event":"Order Completed","timestamp":"2026-10-03T12:00:00.5Z","context":{"tally":{"install_id":"inst-2","seq":42,"session_id":"s-9","dedup_key":"order-1"}}}"#,
    r#"{"type":"alias","messageId":"fx-6","previousId":"anon-2","userId":"user-3","timestamp":"2026-10-02T00:00:00Z"}"#,
    r#"{"type":"group","messageId":"fx-7","userId":"user-2","groupId":"g-1","traits":{"name":"ACME"},"timestamp":"2026-10-04T00:00:00Z"}"#,
];

/// The export lines of the fixture, in export order, with `{R}` for the
/// collector's receipt time.
const EXPECTED_LINES: [&str; 7] = [
    r#"{"type":"page","messageId":"fx-3","userId":"user-1","name":"Pricing","timestamp":"2026-09-30T23:59:59.999Z","properties":{"path":"/pricing","title":"Prix \u00e9t\u00e9 \"sp\u00e9cial\""},"originalTimestamp":"2026-09-30T23:59:58Z","receivedAt":"{R}"}"#,
    r#"{"type":"identify","messageId":"fx-2","userId":"user-1","anonymousId":"anon-1","timestamp":"2026-10-01T08:00:01.000Z","traits":{"plan":"pro"},"context":{"tally":{"install_id":"inst-1","seq":2}},"originalTimestamp":"2026-10-01T10:00:01+02:00","receivedAt":"{R}"}"#,
    r#"{"type":"track","messageId":"fx-1","anonymousId":"anon-1","event":"Song Played","timestamp":"2026-10-01T10:00:00.000Z","properties":{"genre":"jazz","ms":215000,"tags":["a","b"]},"context":{"app":{"version":"2.3.0"},"locale":"fr-FR","tally":{"install_id":"inst-1","seq":1,"session_id":"s-1","session_index":1}},"originalTimestamp":"2026-10-01T10:00:00.000Z","receivedAt":"{R}"}"#,
    r#"{"type":"screen","messageId":"fx-4","userId":"","anonymousId":"anon-2","name":"Home","timestamp":"2026-10-02T00:00:00.000Z","unknown":{"x":[1,2,{"y":null}]},"originalTimestamp":"2026-10-02T00:00:00Z","receivedAt":"{R}"}"#,
    r#"{"type":"alias","messageId":"fx-6","previousId":"anon-2","userId":"user-3","timestamp":"2026-10-02T00:00:00.000Z","originalTimestamp":"2026-10-02T00:00:00Z","receivedAt":"{R}"}"#,
    r#"{"type":"track","messageId":"fx-5","userId":"user-2","event":"Order Completed","timestamp":"2026-10-03T12:00:00.500Z","context":{"tally":{"install_id":"inst-2","seq":42,"session_id":"s-9","dedup_key":"order-1"}},"originalTimestamp":"2026-10-03T12:00:00.5Z","receivedAt":"{R}"}"#,
    r#"{"type":"group","messageId":"fx-7","userId":"user-2","groupId":"g-1","traits":{"name":"ACME"},"timestamp":"2026-10-04T00:00:00.000Z","originalTimestamp":"2026-10-04T00:00:00Z","receivedAt":"{R}"}"#,
];

/// Posts `messages` as one JSON batch (no `sentAt`); every one must be
/// accepted.
fn post_messages(server: &Server, messages: &[String]) {
    let body = format!("{{\"batch\":[{}]}}", messages.join(","));
    let (status, answer) = read(
        agent()
            .post(server.url("/v1/batch"))
            .header("authorization", format!("Bearer {WRITE_KEY}"))
            .header("content-type", "application/json")
            .send(body.as_bytes())
            .unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), messages.len(), "{answer}");
    assert!(
        results.iter().all(|r| r["status"] == "accepted"),
        "{answer}"
    );
}

/// Runs `tally export` and returns its JSON summary.
fn tally_export(server: &Server, format: &str, out: &Path, extra: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "export",
            "--endpoint",
            &server.base,
            "--admin-token",
            ADMIN_TOKEN,
        ])
        .args(["--format", format, "--out"])
        .arg(out)
        .args(extra)
        .env_remove("TALLY_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tally export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn ms(text: &str) -> i64 {
    parse_timestamp(text).unwrap()
}

fn s(v: &str) -> Field {
    Field::Str(v.to_owned())
}

fn opt(v: Option<&str>) -> Field {
    v.map_or(Field::Null, s)
}

/// The Parquet rows the fixture must give, in export order.
fn expected_rows(received_at: i64) -> Vec<Vec<(String, Field)>> {
    let row = |id: &str,
               kind: &str,
               event: Option<&str>,
               user: Option<&str>,
               anon: Option<&str>,
               tally: (Option<&str>, Option<i64>, Option<&str>),
               ts: &str,
               properties: Option<&str>,
               context: Option<&str>| {
        let columns = [
            ("message_id", s(id)),
            ("type", s(kind)),
            ("event", opt(event)),
            ("user_id", opt(user)),
            ("anonymous_id", opt(anon)),
            ("install_id", opt(tally.0)),
            ("seq", tally.1.map_or(Field::Null, Field::Long)),
            ("session_id", opt(tally.2)),
            ("timestamp", Field::TimestampMillis(ms(ts))),
            ("received_at", Field::TimestampMillis(received_at)),
            ("properties", opt(properties)),
            ("context", opt(context)),
        ];
        columns
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Vec<_>>()
    };
    let none = (None, None, None);
    vec![
        row(
            "fx-3",
            "page",
            Some("Pricing"),
            Some("user-1"),
            None,
            none,
            "2026-09-30T23:59:59.999Z",
            Some(r#"{"path":"/pricing","title":"Prix \u00e9t\u00e9 \"sp\u00e9cial\""}"#),
            None,
        ),
        row(
            "fx-2",
            "identify",
            None,
            Some("user-1"),
            Some("anon-1"),
            (Some("inst-1"), Some(2), None),
            "2026-10-01T08:00:01Z",
            None,
            Some(r#"{"tally":{"install_id":"inst-1","seq":2}}"#),
        ),
        row(
            "fx-1",
            "track",
            Some("Song Played"),
            None,
            Some("anon-1"),
            (Some("inst-1"), Some(1), Some("s-1")),
            "2026-10-01T10:00:00Z",
            Some(r#"{"genre":"jazz","ms":215000,"tags":["a","b"]}"#),
            Some(
                r#"{"app":{"version":"2.3.0"},"locale":"fr-FR","tally":{"install_id":"inst-1","seq":1,"session_id":"s-1","session_index":1}}"#,
            ),
        ),
        row(
            "fx-4",
            "screen",
            Some("Home"),
            None,
            Some("anon-2"),
            none,
            "2026-10-02T00:00:00Z",
            None,
            None,
        ),
        row(
            "fx-6",
            "alias",
            None,
            Some("user-3"),
            None,
            none,
            "2026-10-02T00:00:00Z",
            None,
            None,
        ),
        row(
            "fx-5",
            "track",
            Some("Order Completed"),
            Some("user-2"),
            None,
            (Some("inst-2"), Some(42), Some("s-9")),
            "2026-10-03T12:00:00.500Z",
            None,
            Some(
                r#"{"tally":{"install_id":"inst-2","seq":42,"session_id":"s-9","dedup_key":"order-1"}}"#,
            ),
        ),
        row(
            "fx-7",
            "group",
            None,
            Some("user-2"),
            None,
            none,
            "2026-10-04T00:00:00Z",
            None,
            None,
        ),
    ]
}

fn read_parquet(path: &Path) -> (usize, Vec<Vec<(String, Field)>>) {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let groups = reader.metadata().num_row_groups();
    let rows = reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| {
            row.unwrap()
                .get_column_iter()
                .map(|(name, field)| (name.clone(), field.clone()))
                .collect()
        })
        .collect();
    (groups, rows)
}

/// The whole governance path on one running collector.
fn export_and_deletions(server: &Server, dir: &Path) {
    let agent = agent();
    let before = tally_collector::clock::now_ms();
    // Two requests, so that ties on the time are also ties across batches.
    post_messages(
        server,
        &FIXTURE[..4]
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>(),
    );
    post_messages(
        server,
        &FIXTURE[4..]
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>(),
    );
    let after = tally_collector::clock::now_ms();

    // The stream itself: its headers, then every line byte for byte.
    let response = agent
        .get(server.url("/v1/export?format=ndjson"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/x-ndjson"
    );
    assert_eq!(response.headers().get("tally-export-events").unwrap(), "7");

    let ndjson = dir.join("events.ndjson");
    let summary = tally_export(server, "ndjson", &ndjson, &[]);
    assert_eq!(summary["events"], 7);
    assert!(!dir.join("events.ndjson.partial").exists());
    let text = std::fs::read_to_string(&ndjson).unwrap();
    let received: Vec<i64> = text
        .lines()
        .map(|l| {
            ms(serde_json::from_str::<Value>(l).unwrap()["receivedAt"]
                .as_str()
                .unwrap())
        })
        .collect();
    assert_eq!(received.len(), 7);
    assert!(
        received.iter().all(|r| (before..=after).contains(r)),
        "{received:?} not in {before}..={after}"
    );
    // fx-1..fx-4 came in the first request, fx-5..fx-7 in the second.
    let receipt = |id: &str| received[EXPECTED_LINES.iter().position(|l| l.contains(id)).unwrap()];
    let expected: String = EXPECTED_LINES
        .iter()
        .map(|l| {
            let id = &l[l.find("fx-").unwrap()..][..4];
            format!("{}\n", l.replace("{R}", &format_timestamp(receipt(id))))
        })
        .collect();
    assert_eq!(text, expected);
    assert_eq!(summary["bytes"], expected.len());

    // A window: from inclusive, to exclusive, on the corrected time.
    let window = dir.join("window.ndjson");
    let summary = tally_export(
        server,
        "ndjson",
        &window,
        &[
            "--from",
            "2026-10-01T00:00:00Z",
            "--to",
            "2026-10-02T00:00:00Z",
        ],
    );
    assert_eq!(summary["events"], 2);
    let text = std::fs::read_to_string(&window).unwrap();
    let ids: Vec<&str> = text
        .lines()
        .map(|l| &l[l.find("fx-").unwrap()..][..4])
        .collect();
    assert_eq!(ids, ["fx-2", "fx-1"]);

    // Parquet in row groups of 3: every value read back.
    let parquet = dir.join("events.parquet");
    let summary = tally_export(server, "parquet", &parquet, &["--row-group-rows", "3"]);
    assert_eq!(summary["events"], 7);
    let (groups, rows) = read_parquet(&parquet);
    assert_eq!(groups, 3);
    let mut expected = expected_rows(0);
    for (row, want) in rows.iter().zip(expected.iter_mut()) {
        // The receipt time is the collector's; checked against the NDJSON.
        let id = match &want[0].1 {
            Field::Str(id) => id.clone(),
            other => panic!("{other:?}"),
        };
        want[9].1 = Field::TimestampMillis(receipt(&id));
        assert_eq!(row, want);
    }
    assert_eq!(rows.len(), 7);

    // Refusals.
    let (status, _) = read(agent.get(server.url("/v1/export")).call().unwrap());
    assert_eq!(status, 401);
    let (status, _) = read(
        agent
            .get(server.url("/v1/export"))
            .header("authorization", format!("Bearer {WRITE_KEY}"))
            .call()
            .unwrap(),
    );
    assert!(status == 401 || status == 403, "{status}");
    let (status, body) = admin_get(&agent, &server.url("/v1/export?format=parquet"));
    assert_eq!(status, 400, "{body}");
    let (status, body) = admin_get(&agent, &server.url("/v1/export?from=yesterday"));
    assert_eq!(status, 400, "{body}");
    let (status, _) = read(agent.get(server.url("/v1/deletions")).call().unwrap());
    assert_eq!(status, 401);

    // Deletions, listed with their status.
    let (status, list) = admin_get(&agent, &server.url("/v1/deletions"));
    assert_eq!((status, list), (200, json!({"deletions": []})));
    let asked = tally_collector::clock::now_ms();
    let (status, answer) = read(
        agent
            .post(server.url("/v1/deletions"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .send(r#"{"userId":"user-2"}"#.as_bytes())
            .unwrap(),
    );
    assert_eq!((status, &answer["deleted_events"]), (202, &json!(2)));
    let (status, list) = admin_get(&agent, &server.url("/v1/deletions"));
    assert_eq!(status, 200);
    let entries = list["deletions"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    let at = ms(entries[0]["requested_at"].as_str().unwrap());
    assert!((asked..=tally_collector::clock::now_ms()).contains(&at));
    assert_eq!(
        entries[0],
        json!({"kind": "userId", "userId": "user-2", "requested_at": format_timestamp(at), "status": "done", "deleted_events": 2, "source": null})
    );
    let (status, body) = admin_get(&agent, &server.url("/v1/deletions?limit=0"));
    assert_eq!(status, 400, "{body}");
    // The deleted user's events are gone from the export too.
    let after_deletion = dir.join("after.ndjson");
    assert_eq!(
        tally_export(server, "ndjson", &after_deletion, &[])["events"],
        5
    );
    let text = std::fs::read_to_string(&after_deletion).unwrap();
    assert!(!text.contains("user-2"));
}

#[test]
fn export_and_deletions_on_sqlite() {
    let dir = temp_dir("governance");
    let server = Server::start(&dir.path().join("data"), None, &[]);
    export_and_deletions(&server, dir.path());
}

#[test]
fn export_and_deletions_on_postgres() {
    let db = TestDb::named("governance");
    let dir = temp_dir("governance-pg");
    let server = Server::start(&dir.path().join("data"), None, &["--database-url", &db.url]);
    export_and_deletions(&server, dir.path());
    drop(server);
}

#[test]
fn a_failed_export_leaves_no_file() {
    let dir = temp_dir("governance-fail");
    let server = Server::start(&dir.path().join("data"), None, &[]);
    let out = dir.path().join("x.ndjson");
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "export",
            "--endpoint",
            &server.base,
            "--admin-token",
            "wrong",
        ])
        .args(["--format", "ndjson", "--out"])
        .arg(&out)
        .env_remove("TALLY_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("HTTP 401"));
    assert!(!out.exists());
    assert!(!dir.path().join("x.ndjson.partial").exists());
}

/// Events whose corrected time is `days_ago` days before now (the device
/// kept them that long: `timestamp` old, no `sentAt`).
fn aged(id: &str, name: &str, days_ago: i64) -> String {
    let ts = tally_collector::clock::now_ms() - days_ago * 24 * 60 * 60 * 1000;
    json!({"type": "track", "messageId": id, "anonymousId": "anon-r", "event": name,
           "timestamp": format_timestamp(ts)})
    .to_string()
}

fn retention_job(server: &Server) {
    let agent = agent();
    let mut messages = Vec::new();
    for i in 0..30 {
        messages.push(aged(&format!("song-old-{i}"), "Song Played", 40));
    }
    for i in 0..5 {
        messages.push(aged(&format!("song-new-{i}"), "Song Played", 20));
    }
    for i in 0..7 {
        messages.push(aged(&format!("open-old-{i}"), "Open", 100));
    }
    messages.push(aged("open-new", "Open", 1));
    messages.push(aged("order-old", "Order Completed", 400));
    post_messages(server, &messages);
    // The job's next pass (every second) deletes 30 + 7 events, in chunks
    // of 4.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (accepted, _, _, events) = serve_support::stats(&agent, server);
        assert_eq!(accepted, 44);
        if events == 7 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events still {events}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let count = |event: &str| {
        let (status, body) = admin_get(
            &agent,
            &server.url(&format!(
                "/v1/events/count?event={}",
                event.replace(' ', "%20")
            )),
        );
        assert_eq!(status, 200);
        body["count"].as_u64().unwrap()
    };
    assert_eq!(count("Song Played"), 5);
    assert_eq!(count("Open"), 1);
    assert_eq!(count("Order Completed"), 1);
    let metrics = agent
        .get(server.url("/metrics"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "tally_retention_expired_events_total 37"),
        "{metrics}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log().contains("retention pass") {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn retention_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("tally.toml");
    std::fs::write(
        &config,
        format!(
            "write_keys = [\"{WRITE_KEY}\"]\nadmin_token = \"{ADMIN_TOKEN}\"\n\
             [retention]\ndefault_days = 90\ninterval_s = 1\nchunk_rows = 4\n\
             [retention.events]\n\"Song Played\" = 30\n\"Order Completed\" = 2555\n"
        ),
    )
    .unwrap();
    config
}

#[test]
fn retention_job_deletes_expired_events_on_sqlite() {
    let dir = temp_dir("retention");
    let config = retention_config(dir.path());
    let server = Server::start(
        &dir.path().join("data"),
        None,
        &["--config", config.to_str().unwrap()],
    );
    retention_job(&server);
}

#[test]
fn retention_job_deletes_expired_events_on_postgres() {
    let db = TestDb::named("retention");
    let dir = temp_dir("retention-pg");
    let config = retention_config(dir.path());
    let server = Server::start(
        &dir.path().join("data"),
        None,
        &[
            "--config",
            config.to_str().unwrap(),
            "--database-url",
            &db.url,
        ],
    );
    retention_job(&server);
    drop(server);
}
