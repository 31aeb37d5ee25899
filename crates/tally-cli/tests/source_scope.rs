//! Queries, export and deletion scoped to one source (write key id), end
//! to end: a real `tally serve` with two write keys (SQLite, and
//! PostgreSQL on a database of its own), the same user id sent through
//! both, and the `tally` commands and the HTTP API asked for one source.
//! A deletion scoped to key A removes exactly A's events of the user,
//! refuses A's late events (and tells only A's device to purge), stores
//! B's, and is listed and audited with its source.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::process::Command;

use serde_json::{json, Value};
use serve_support::*;
use tally_collector::ingest::auth::source_id;

/// The second source: another app's write key on the same collector.
const OTHER_KEY: &str = "other-write-key";

fn now() -> String {
    tally_proto::format_timestamp(tally_collector::clock::now_ms() - 1_000)
}

fn track(id: &str, user: &str) -> Value {
    json!({"type": "track", "messageId": id, "userId": user, "event": "Open",
           "timestamp": now(), "properties": {}})
}

/// Posts `batch` with `key`: (status, answer).
fn post(server: &Server, key: &str, batch: Value) -> (u16, Value) {
    let body = json!({ "batch": batch, "sentAt": now() }).to_string();
    read(
        agent()
            .post(server.url("/v1/batch"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .send(body.as_bytes())
            .unwrap(),
    )
}

/// `tally ARGS --endpoint ... ` with the admin token: its stdout, after
/// checking it succeeded.
fn tally(server: &Server, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .args(["--endpoint", &server.base])
        .env("TALLY_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tally {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `GET /v1/export?source=...`: (the header's count, the lines' ids).
fn export(server: &Server, source: &str) -> (u64, Vec<String>) {
    let mut response = agent()
        .get(server.url(&format!("/v1/export?source={source}")))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let header: u64 = response.headers()["tally-export-events"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = response.body_mut().read_to_string().unwrap();
    let mut ids: Vec<String> = body
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["messageId"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    (header, ids)
}

/// `Open` events and people of `source` through `tally query events`.
fn opens(server: &Server, source: &str) -> (u64, u64) {
    let out = tally(
        server,
        &[
            "query", "events", "--event", "Open", "--source", source, "--json",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    (
        v["total"]["count"].as_u64().unwrap(),
        v["total"]["people"].as_u64().unwrap(),
    )
}

fn statuses(answer: &Value) -> Vec<(String, Option<String>)> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_owned(),
                r["reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn a_deletion_scoped_to_one_write_key_leaves_the_others_data() {
    let a = source_id(WRITE_KEY);
    let b = source_id(OTHER_KEY);
    for db in [None, Some(TestDb::named("source_scope"))] {
        let label = if db.is_some() { "postgres" } else { "sqlite" };
        let dir = temp_dir("source-scope");
        let mut args = vec![
            "--write-key",
            WRITE_KEY,
            "--write-key",
            OTHER_KEY,
            "--admin-token",
            ADMIN_TOKEN,
        ];
        if let Some(db) = &db {
            args.extend(["--database-url", db.url.as_str()]);
        }
        let server = Server::start(dir.path(), None, &args);

        // Key A: N = 3 events of u1 and one of u2; key B: M = 2 of u1.
        let from_a = json!([
            track("a-1", "u1"),
            track("a-2", "u1"),
            track("a-3", "u1"),
            track("a-u2", "u2")
        ]);
        assert_eq!(post(&server, WRITE_KEY, from_a).0, 200);
        assert_eq!(
            post(
                &server,
                OTHER_KEY,
                json!([track("b-1", "u1"), track("b-2", "u1")])
            )
            .0,
            200
        );

        // Each source's queries and export count its own events exactly.
        assert_eq!(opens(&server, &a), (4, 2), "{label}");
        assert_eq!(opens(&server, &b), (2, 1), "{label}");
        assert_eq!(opens(&server, "wk_nobody"), (0, 0), "{label}");
        assert_eq!(
            export(&server, &a),
            (4, ["a-1", "a-2", "a-3", "a-u2"].map(String::from).to_vec())
        );
        assert_eq!(
            export(&server, &b),
            (2, ["b-1", "b-2"].map(String::from).to_vec())
        );
        let file = dir.path().join("b.ndjson");
        tally(
            &server,
            &[
                "export",
                "--format",
                "ndjson",
                "--source",
                &b,
                "--out",
                file.to_str().unwrap(),
            ],
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 2);

        // The deletion of u1 within source A.
        let out = tally(
            &server,
            &["delete", "--user-id", "u1", "--source", &a, "--json"],
        );
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["deleted_events"], 3, "{label}: {report}");
        assert_eq!(report["source"], json!(a));
        assert_eq!(export(&server, &a).0, 1, "{label}");
        assert_eq!(
            export(&server, &b),
            (2, ["b-1", "b-2"].map(String::from).to_vec())
        );
        assert_eq!(opens(&server, &a), (1, 1), "{label}");
        assert_eq!(opens(&server, &b), (2, 1), "{label}");

        // A's device comes back with an event of u1: refused, and told to
        // purge. B's device: stored, and told nothing.
        let (_, late_a) = post(&server, WRITE_KEY, json!([track("a-late", "u1")]));
        assert_eq!(
            statuses(&late_a),
            [("rejected".to_owned(), Some("deleted_user".to_owned()))],
            "{label}"
        );
        assert_eq!(late_a["deleted_users"], json!(["u1"]));
        let (_, late_b) = post(&server, OTHER_KEY, json!([track("b-late", "u1")]));
        assert_eq!(
            statuses(&late_b),
            [("accepted".to_owned(), None)],
            "{label}"
        );
        assert!(late_b.get("deleted_users").is_none_or(|d| d == &json!([])));
        assert_eq!(export(&server, &a).0, 1);
        assert_eq!(export(&server, &b).0, 3);

        // Listed and audited with its source.
        let (_, listed) = admin_get(&agent(), &server.url("/v1/deletions"));
        let first = &listed["deletions"][0];
        assert_eq!(
            (&first["userId"], &first["source"], &first["deleted_events"]),
            (&json!("u1"), &json!(a), &json!(3)),
            "{label}: {listed}"
        );
        let (_, audit) = admin_get(
            &agent(),
            &server.url("/v1/audit?action=POST%20/v1/deletions"),
        );
        let entries = audit["entries"].as_array().unwrap();
        let noted: Vec<&Value> = entries
            .iter()
            .filter(|e| e["action"] == "POST /v1/deletions")
            .map(|e| &e["params"])
            .collect();
        assert_eq!(
            noted,
            [&json!({"userId": "u1", "source": a})],
            "{label}: {audit}"
        );

        // An empty source is refused rather than read as every source.
        let (status, _) = read(
            agent()
                .post(server.url("/v1/deletions"))
                .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                .header("content-type", "application/json")
                .send(br#"{"userId": "u1", "source": ""}"#.as_slice())
                .unwrap(),
        );
        assert_eq!(status, 400);
        assert_eq!(export(&server, &b).0, 3);
    }
}
