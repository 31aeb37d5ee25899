//! A write key ships inside every app, so anyone may hold one. What such a
//! holder sends must never reach data that is not its own: these tests
//! drive a real `tally serve` (SQLite, and PostgreSQL where the store
//! matters) with hostile batches and check exactly what was stored,
//! answered and left behind.
//!
//! PostgreSQL tests use the server at `TALLY_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), in a database of their own.

#![allow(clippy::unwrap_used)]

mod serve_support;

use serde_json::{json, Value};
use serve_support::*;

/// The two stores a test runs against.
enum Store {
    Sqlite,
    Postgres(TestDb),
}

impl Store {
    fn both(label: &str) -> [Store; 2] {
        [Store::Sqlite, Store::Postgres(TestDb::named(label))]
    }

    fn start(&self, dir: &std::path::Path, extra: &[&str]) -> Server {
        let mut args = vec!["--write-key", WRITE_KEY, "--admin-token", ADMIN_TOKEN];
        if let Store::Postgres(db) = self {
            args.extend(["--database-url", db.url.as_str()]);
        }
        args.extend_from_slice(extra);
        Server::start(dir, None, &args)
    }

    fn name(&self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }
}

/// Posts `batch` (a JSON array of messages) as plain JSON with `key`.
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

fn now() -> String {
    tally_proto::format_timestamp(tally_collector::ingest::clock::now_ms() - 1_000)
}

fn track(id: &str, user: &str, event: &str, props: Value) -> Value {
    json!({"type": "track", "messageId": id, "userId": user, "event": event,
           "timestamp": now(), "properties": props})
}

/// (status, reason) of each result of an answer.
fn outcomes(answer: &Value) -> Vec<(String, Option<String>)> {
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

fn ok(status: &str) -> (String, Option<String>) {
    (status.to_owned(), None)
}

fn rejected(reason: &str) -> (String, Option<String>) {
    ("rejected".to_owned(), Some(reason.to_owned()))
}

#[test]
fn a_nul_character_fails_only_its_own_message_and_no_query() {
    for store in Store::both("nul") {
        let dir = temp_dir("nul");
        let server = store.start(dir.path(), &[]);
        let (status, answer) = post(
            &server,
            WRITE_KEY,
            json!([
                track("n-1", "u1", "Plan Chosen", json!({"plan": "pro"})),
                track("n-2", "u2", "Plan\u{0}Chosen", json!({})),
                track("n-3\u{0}", "u3", "Plan Chosen", json!({})),
                track("n-4", "u4\u{0}", "Plan Chosen", json!({})),
                track(
                    "n-5",
                    "u5",
                    "Plan Chosen",
                    json!({"plan": "p\u{0}ro", "k\u{0}": 1})
                ),
            ]),
        );
        assert_eq!(status, 200, "{}: {answer}", store.name());
        assert_eq!(
            outcomes(&answer),
            [
                ok("accepted"),
                rejected("nul_character"),
                rejected("nul_character"),
                rejected("nul_character"),
                ok("accepted"),
            ],
            "{}",
            store.name()
        );
        let (status, rows) = admin_get(
            &agent(),
            &server.url("/v1/query/breakdown?event=Plan%20Chosen&by=properties.plan"),
        );
        assert_eq!(status, 200, "{}: {rows}", store.name());
        let mut values: Vec<(String, u64)> = rows["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["value"].as_str().unwrap().to_owned(),
                    r["count"].as_u64().unwrap(),
                )
            })
            .collect();
        values.sort();
        // The NUL inside a property is kept as U+FFFD on both stores.
        assert_eq!(
            values,
            [("pro".to_owned(), 1), ("p\u{fffd}ro".to_owned(), 1)],
            "{}",
            store.name()
        );
    }
}

#[test]
fn postgres_queries_read_past_rows_that_hold_a_nul_escape() {
    let store = Store::Postgres(TestDb::named("nulrow"));
    let dir = temp_dir("nulrow");
    let server = store.start(dir.path(), &[]);
    let (status, _) = post(
        &server,
        WRITE_KEY,
        json!([
            track("r-1", "u1", "Song Played", json!({"genre": "jazz"})),
            track("r-2", "u2", "Song Played", json!({"genre": "rock"})),
        ]),
    );
    assert_eq!(status, 200);
    // A row as an older collector could store it: a real \u0000 escape in
    // its raw JSON, which PostgreSQL's JSON types cannot read.
    let Store::Postgres(db) = &store else {
        unreachable!()
    };
    let mut client = ::postgres::Client::connect(&db.url, ::postgres::NoTls).unwrap();
    let changed = client
        .execute(
            "UPDATE events SET raw = replace(raw, 'rock', 'ro\\u0000ck') WHERE message_id = 'r-2'",
            &[],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let (status, rows) = admin_get(
        &agent(),
        &server.url("/v1/query/breakdown?event=Song%20Played&by=properties.genre"),
    );
    assert_eq!(status, 200, "{rows}");
    let values: Vec<(&str, u64)> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["value"].as_str().unwrap(), r["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(values.len(), 2, "{rows}");
    assert!(values.contains(&("jazz", 1)), "{rows}");
    assert!(values.contains(&("(none)", 1)), "{rows}");
}
