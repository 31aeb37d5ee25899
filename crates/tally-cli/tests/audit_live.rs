//! The audit log, against a real `tally serve` over HTTP: read and admin
//! actions recorded with who, what, when, from where and the outcome; the
//! attacks of the access model (a write key reading, deleting, exporting;
//! a read token deleting; a token in the query string; a secret put in a
//! parameter) refused and recorded; no secret and no event content in any
//! row; and 10,000 failed logins from one address recorded as a few rows
//! whose counts add up to exactly 10,000.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use serve_support::*;
use tally_collector::store::audit::{AuditFilter, AuditOutcome, AuditRow, AuditStore as _};
use tally_collector::store::SqliteStore;

fn call(agent: &ureq::Agent, method: &str, url: &str, token: Option<&str>, body: &str) -> u16 {
    let response = match (method, token) {
        ("GET", Some(t)) => agent
            .get(url)
            .header("authorization", format!("Bearer {t}"))
            .call(),
        ("GET", None) => agent.get(url).call(),
        (_, Some(t)) => agent
            .post(url)
            .header("authorization", format!("Bearer {t}"))
            .header("content-type", "application/json")
            .send(body),
        (_, None) => agent
            .post(url)
            .header("content-type", "application/json")
            .send(body),
    };
    read(response.unwrap()).0
}

/// Every audit row of the stopped server's store, newest first.
fn rows_of(data_dir: &std::path::Path) -> Vec<AuditRow> {
    let store = SqliteStore::open(&data_dir.join("tally.db")).unwrap();
    store.audit_page(&AuditFilter::default(), 100_000).unwrap()
}

#[test]
fn actions_and_attacks_are_recorded_without_a_secret_or_event_content() {
    let dir = temp_dir("audit");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    let secret_prop = "property-value-that-must-stay-out-of-the-audit";
    let batch = json!({"batch": [{
        "type": "track", "messageId": "audit-1", "userId": "user-audit", "event": "Signed Up",
        "properties": {"note": secret_prop},
    }]});
    assert_eq!(
        call(
            &agent,
            "POST",
            &server.url("/v1/batch"),
            Some(WRITE_KEY),
            &batch.to_string()
        ),
        200
    );
    // A read token made through the API (its secret is in that answer
    // alone).
    let made: Value = serde_json::from_str(&{
        let out = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["keys", "create", "--kind", "read", "--name", "bi", "--json"])
            .args(["--endpoint", &server.base])
            .env("TALLY_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    })
    .unwrap();
    let read_token = made["secret"].as_str().unwrap().to_owned();
    let read_id = made["id"].as_str().unwrap().to_owned();

    // Allowed: a read, an export, a deletion by the admin.
    let count = server.url("/v1/events/count?event=Signed%20Up&from=2020-01-01T00:00:00Z");
    assert_eq!(call(&agent, "GET", &count, Some(&read_token), ""), 200);
    assert_eq!(
        call(
            &agent,
            "GET",
            &server.url("/v1/export?from=2020-01-01T00:00:00Z"),
            Some(&read_token),
            ""
        ),
        200
    );
    // The attacks: each refused.
    let attacks = [
        // A write key trying to read, delete, export.
        ("GET", "/v1/stats", Some(WRITE_KEY), "", 403),
        (
            "POST",
            "/v1/deletions",
            Some(WRITE_KEY),
            r#"{"userId":"user-audit"}"#,
            403,
        ),
        ("GET", "/v1/export", Some(WRITE_KEY), "", 403),
        // A read token trying to delete, or to list the keys.
        (
            "POST",
            "/v1/deletions",
            Some(read_token.as_str()),
            r#"{"userId":"user-audit"}"#,
            403,
        ),
        ("GET", "/v1/keys", Some(read_token.as_str()), "", 403),
    ];
    for (method, path, token, body, want) in attacks {
        assert_eq!(
            call(&agent, method, &server.url(path), token, body),
            want,
            "{method} {path}"
        );
    }
    // A token in the query string, where only the header is read.
    let in_query = server.url(&format!(
        "/v1/stats?token={ADMIN_TOKEN}&access_token={ADMIN_TOKEN}"
    ));
    assert_eq!(call(&agent, "GET", &in_query, None, ""), 401);
    // A secret put in a parameter the audit records.
    let leaked = server.url(&format!("/v1/events/count?event={read_token}"));
    assert_eq!(call(&agent, "GET", &leaked, Some(ADMIN_TOKEN), ""), 200);
    assert_eq!(
        call(
            &agent,
            "POST",
            &server.url("/v1/deletions"),
            Some(ADMIN_TOKEN),
            r#"{"userId":"user-audit"}"#
        ),
        202
    );
    // The audit log through the CLI.
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["audit", "--key-id", &read_id, "--json"])
        .args(["--endpoint", &server.base])
        .env("TALLY_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success());
    let by_reader: Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions: Vec<&str> = by_reader["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["GET /v1/export", "GET /v1/events/count"]);
    let export = &by_reader["entries"][0];
    assert_eq!(export["role"], "read");
    assert_eq!(export["client"], "127.0.0.1");
    assert_eq!(export["outcome"], "ok");
    assert_eq!(export["status"], 200);
    assert_eq!(
        export["params"],
        json!({"query": {"from": "2020-01-01T00:00:00Z"}})
    );

    let data_dir = server.data_dir.clone();
    assert_eq!(server.terminate(Duration::from_secs(10)).code(), Some(0));
    let rows = rows_of(&data_dir);
    let all = serde_json::to_string(&rows).unwrap();
    for secret in [ADMIN_TOKEN, WRITE_KEY, read_token.as_str(), secret_prop] {
        assert!(!all.contains(secret), "the audit holds {secret}: {all}");
    }
    let find = |action: &str, outcome: AuditOutcome, status: u16| {
        rows.iter()
            .filter(|r| {
                r.record.action == action
                    && r.record.outcome == outcome
                    && r.record.status == status
            })
            .collect::<Vec<_>>()
    };
    // The admin's deletion, with its user.
    let deletion = find("POST /v1/deletions", AuditOutcome::Ok, 202);
    assert_eq!(deletion.len(), 1);
    assert_eq!(deletion[0].record.role.as_deref(), Some("admin"));
    assert_eq!(deletion[0].record.params, r#"{"userId":"user-audit"}"#);
    // The key made, named but not its secret.
    let created = find("POST /v1/keys", AuditOutcome::Ok, 201);
    assert_eq!(
        created[0].record.params,
        format!(r#"{{"key_id":"{read_id}","kind":"read","name":"bi"}}"#)
    );
    // The secret in a parameter is replaced.
    let counted = find("GET /v1/events/count", AuditOutcome::Ok, 200);
    assert!(counted
        .iter()
        .any(|r| r.record.params == r#"{"query":{"event":"(secret)"}}"#));
    // Every refusal is there, counted: 403 for known keys short of the
    // role, 401 for the token in the query.
    let denied = |action: &str, status: u16| -> u64 {
        find(action, AuditOutcome::Denied, status)
            .iter()
            .map(|r| r.record.count)
            .sum()
    };
    assert_eq!(denied("GET /v1/stats", 403), 1);
    assert_eq!(denied("POST /v1/deletions", 403), 2);
    assert_eq!(denied("GET /v1/export", 403), 1);
    assert_eq!(denied("GET /v1/keys", 403), 1);
    assert_eq!(denied("GET /v1/stats", 401), 1);
    assert!(rows
        .iter()
        .filter(|r| r.record.outcome == AuditOutcome::Denied)
        .all(|r| r.record.key_id.is_none() && r.record.params == "{}"));
}

#[test]
fn ten_thousand_failed_logins_are_a_few_rows_counting_all_of_them() {
    let dir = temp_dir("audit-flood");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    let url = server.url("/v1/stats");
    let started = std::time::Instant::now();
    let (mut unauthorized, mut throttled) = (0u64, 0u64);
    for n in 0..10_000 {
        match call(&agent, "GET", &url, Some(&format!("guess-{n:08}")), "") {
            401 => unauthorized += 1,
            429 => throttled += 1,
            other => panic!("a wrong token was answered {other}"),
        }
    }
    assert_eq!(unauthorized + throttled, 10_000);
    let windows = started.elapsed().as_secs() / 5 + 2;
    assert!(throttled > 9_000, "only {throttled} throttled");
    let data_dir = server.data_dir.clone();
    // Stopping writes what the last window counted.
    assert_eq!(server.terminate(Duration::from_secs(10)).code(), Some(0));
    let rows = rows_of(&data_dir);
    assert!(
        rows.iter().all(|r| r.record.outcome == AuditOutcome::Denied
            && r.record.client == "127.0.0.1"
            && r.record.action == "GET /v1/stats"),
        "{rows:?}"
    );
    let count = |status: u16| -> u64 {
        rows.iter()
            .filter(|r| r.record.status == status)
            .map(|r| r.record.count)
            .sum()
    };
    assert_eq!(count(401), unauthorized);
    assert_eq!(count(429), throttled);
    // One row per status per 5 s window (and the one written at the
    // stop): a handful, however many tries.
    assert!(
        rows.len() as u64 <= 2 * windows,
        "{} rows for 10,000 refusals in {windows} windows",
        rows.len()
    );
    let guesses = serde_json::to_string(&rows).unwrap();
    assert!(!guesses.contains("guess-"));
}
