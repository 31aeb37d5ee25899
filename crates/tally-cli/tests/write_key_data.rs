//! A write key ships inside every app, so anyone may hold one. What such a
//! holder sends must never reach data that is not its own: these tests
//! drive a real `tally serve` (SQLite, and PostgreSQL where the store
//! matters) with hostile batches and check exactly what was stored,
//! answered and left behind.
//!
//! PostgreSQL tests use a database of their own (see
//! `tally-collector/tests/support/test_db.rs` for which server).

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
    post_text(server, key, &body)
}

/// Posts `body`, JSON text, with `key`.
fn post_text(server: &Server, key: &str, body: &str) -> (u16, Value) {
    read(
        agent()
            .post(server.url("/v1/batch"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .send(body.as_bytes())
            .unwrap(),
    )
}

/// `POST /v1/deletions` for `user`: (status, answer).
fn delete_user(server: &Server, user: &str) -> (u16, Value) {
    read(
        agent()
            .post(server.url("/v1/deletions"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .send(json!({ "userId": user }).to_string().as_bytes())
            .unwrap(),
    )
}

fn now() -> String {
    tally_proto::format_timestamp(tally_collector::clock::now_ms() - 1_000)
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
        let values = plan_breakdown(&server, &store);
        // The NUL inside a property is kept as U+FFFD on both stores.
        assert_eq!(
            values,
            [("pro".to_owned(), 1), ("p\u{fffd}ro".to_owned(), 1)],
            "{}",
            store.name()
        );
    }
}

/// The `Plan Chosen` events by `properties.plan`, sorted: (value, count).
fn plan_breakdown(server: &Server, store: &Store) -> Vec<(String, u64)> {
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
    values
}

/// Browsers send a lone surrogate escape when a string is cut inside an
/// emoji. It is JSON by the grammar but no character: stored as it came,
/// PostgreSQL's jsonb refused the row and every breakdown over it failed.
/// It is stored as U+FFFD; a real pair is kept.
#[test]
fn a_lone_surrogate_escape_fails_no_message_and_no_query() {
    for store in Store::both("surrogate") {
        let dir = temp_dir("surrogate");
        let server = store.start(dir.path(), &[]);
        let batch = json!({"sentAt": now(), "batch": [
            track("s-1", "u1", "Plan Chosen", json!({"plan": "pro"})),
            track("s-2", "u2", "Plan Chosen", json!({"plan": "p@LOW@ro"})),
            track("s-3", "u3", "Plan Chosen", json!({"plan": "@HIGH@", "@HIGH@k": 1})),
            track("s-4", "u4", "Plan Chosen", json!({"plan": "@PAIR@"})),
        ]})
        .to_string()
        .replace("@LOW@", "\\udddd")
        .replace("@HIGH@", "\\ud83d")
        .replace("@PAIR@", "\\ud83d\\ude00");
        let (status, answer) = post_text(&server, WRITE_KEY, &batch);
        assert_eq!(status, 200, "{}: {answer}", store.name());
        assert_eq!(
            outcomes(&answer),
            vec![ok("accepted"); 4],
            "{}",
            store.name()
        );
        let values = plan_breakdown(&server, &store);
        assert_eq!(
            values,
            [
                ("pro".to_owned(), 1),
                ("p\u{fffd}ro".to_owned(), 1),
                ("\u{fffd}".to_owned(), 1),
                ("\u{1f600}".to_owned(), 1),
            ],
            "{}",
            store.name()
        );
        // Every exported line is strict JSON.
        let export = agent()
            .get(server.url("/v1/export"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        let lines: Vec<Value> = export
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "{}", store.name());
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

/// A second source: another app's write key on the same collector.
const OTHER_KEY: &str = "other-write-key";

fn with_tally(mut msg: Value, install: &str, seq: u64) -> Value {
    msg["context"] = json!({"tally": {"install_id": install, "seq": seq}});
    msg
}

#[test]
fn one_source_never_suppresses_nor_answers_for_another() {
    for store in Store::both("sources") {
        let dir = temp_dir("sources");
        let server = store.start(dir.path(), &["--write-key", OTHER_KEY]);
        let mut keyed = track("shared-2", "u1", "Order Completed", json!({}));
        keyed["context"] = json!({"tally": {"dedup_key": "order-7"}});
        let batch = json!([track("shared-1", "u1", "Order Completed", json!({})), keyed]);
        let (_, first) = post(&server, WRITE_KEY, batch.clone());
        assert_eq!(outcomes(&first), [ok("accepted"), ok("accepted")]);
        // The other source used the same ids: its events are its own, not
        // duplicates of the first source's (and the answer tells it
        // nothing about them).
        let (_, other) = post(&server, OTHER_KEY, batch.clone());
        assert_eq!(
            outcomes(&other),
            [ok("accepted"), ok("accepted")],
            "{}",
            store.name()
        );
        // Within one source, dedup stays exact.
        let (_, again) = post(&server, OTHER_KEY, batch);
        assert_eq!(outcomes(&again), [ok("duplicate"), ok("duplicate")]);
        assert_eq!(stats(&agent(), &server), (4, 2, 0, 4), "{}", store.name());
    }
}

#[test]
fn a_drop_report_counts_only_for_the_installs_own_source() {
    for store in Store::both("drops") {
        let dir = temp_dir("drops");
        let server = store.start(dir.path(), &["--write-key", OTHER_KEY]);
        let install = "inst-victim";
        let seqs: Vec<Value> = [1, 2, 5]
            .iter()
            .map(|&n| {
                with_tally(
                    track(&format!("v-{n}"), "u1", "Open", json!({})),
                    install,
                    n,
                )
            })
            .collect();
        assert_eq!(post(&server, WRITE_KEY, json!(seqs)).0, 200);
        let report = |id: &str, ranges: Value, seq: u64| {
            with_tally(
                track(
                    id,
                    "u1",
                    "tally.dropped",
                    json!({"reason": "queue_full", "ranges": ranges}),
                ),
                install,
                seq,
            )
        };
        let install_report =
            || admin_get(&agent(), &server.url(&format!("/v1/installs/{install}")));
        let gap = json!({"max_seq": 5, "missing": [[3, 4]], "dropped": 0});
        let (_, before) = install_report();
        assert_eq!(
            (&before["max_seq"], &before["missing"], &before["dropped"]),
            (&gap["max_seq"], &gap["missing"], &gap["dropped"])
        );
        // Another source cannot turn the real gap into "dropped".
        let (_, forged) = post(
            &server,
            OTHER_KEY,
            json!([report("f-1", json!([[3, 4]]), 6)]),
        );
        assert_eq!(
            outcomes(&forged),
            [rejected("invalid_drop_report")],
            "{}",
            store.name()
        );
        // Nor can a report name seqs at or after its own.
        let (_, ahead) = post(
            &server,
            WRITE_KEY,
            json!([report("f-2", json!([[3, 9]]), 6)]),
        );
        assert_eq!(outcomes(&ahead), [rejected("invalid_drop_report")]);
        let (_, after) = install_report();
        assert_eq!(after["missing"], json!([[3, 4]]), "{}", store.name());
        // The install's own source explains its gap.
        let (_, own) = post(
            &server,
            WRITE_KEY,
            json!([report("r-1", json!([[3, 4]]), 6)]),
        );
        assert_eq!(outcomes(&own), [ok("accepted")]);
        let (_, explained) = install_report();
        assert_eq!(explained["missing"], json!([]), "{}", store.name());
        assert_eq!(explained["dropped"], 2);
    }
}

#[test]
fn an_alias_cannot_make_a_deletion_reach_another_users_data() {
    for store in Store::both("alias") {
        let dir = temp_dir("alias");
        let server = store.start(dir.path(), &[]);
        let past = "2020-01-01T00:00:00.000Z";
        // The victim uses the app.
        let victim: Vec<Value> = (0..3)
            .map(|n| track(&format!("v-{n}"), "victim", "Song Played", json!({})))
            .collect();
        assert_eq!(post(&server, WRITE_KEY, json!(victim)).0, 200);
        // The attacker holds the same public key: it claims the victim's
        // user id is its own, backdated so it would win the earliest link.
        let claim = json!({"type": "alias", "messageId": "claim-1", "userId": "attacker",
                           "previousId": "victim", "timestamp": past});
        let (_, answer) = post(&server, WRITE_KEY, json!([claim]));
        assert_eq!(
            outcomes(&answer),
            [rejected("alias_of_identified_user")],
            "{}",
            store.name()
        );
        // A user id that has sent nothing yet can be claimed (nothing tells
        // it from a sign-up), but deletion never follows the claim.
        let early = json!({"type": "alias", "messageId": "claim-2", "userId": "attacker",
                           "previousId": "newcomer", "timestamp": past});
        assert_eq!(
            outcomes(&post(&server, WRITE_KEY, json!([early])).1),
            [ok("accepted")]
        );
        let newcomer: Vec<Value> = (0..2)
            .map(|n| track(&format!("n-{n}"), "newcomer", "Song Played", json!({})))
            .collect();
        assert_eq!(post(&server, WRITE_KEY, json!(newcomer)).0, 200);
        let own = track("a-1", "attacker", "Song Played", json!({}));
        assert_eq!(post(&server, WRITE_KEY, json!([own])).0, 200);

        let (status, deleted) = delete_user(&server, "attacker");
        assert_eq!(status, 202);
        // The attacker's own event and its two alias messages (they carry
        // its user id); the report names the id it had merged.
        assert_eq!(deleted["deleted_events"], 2, "{}: {deleted}", store.name());
        assert_eq!(deleted["aliased_user_ids"], json!(["newcomer"]));
        let (_, count) = admin_get(
            &agent(),
            &server.url("/v1/events/count?event=Song%20Played"),
        );
        assert_eq!(count["count"], 5, "{}: {count}", store.name());
        // Neither user is told to purge: their next events are accepted.
        for (id, user) in [("v-9", "victim"), ("n-9", "newcomer")] {
            let (_, next) = post(
                &server,
                WRITE_KEY,
                json!([track(id, user, "Song Played", json!({}))]),
            );
            assert_eq!(outcomes(&next), [ok("accepted")], "{}", store.name());
            assert!(next.get("deleted_users").is_none_or(|d| d == &json!([])));
        }
    }
}

/// Every occurrence of `needle` in the files of `dir` (SQLite's database,
/// WAL and shared-memory files), as (file, count).
fn occurrences(dir: &std::path::Path, needle: &[u8]) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let n = bytes.windows(needle.len()).filter(|w| *w == needle).count();
        if n > 0 {
            found.push((path.file_name().unwrap().to_string_lossy().into_owned(), n));
        }
    }
    found
}

#[test]
fn a_deletion_leaves_no_readable_copy_of_the_users_data() {
    for store in Store::both("erase") {
        let dir = temp_dir("erase");
        let server = store.start(dir.path(), &[]);
        // A value only this user's messages hold, to look for afterwards.
        let marker = format!("street-{}-address", std::process::id());
        let mine: Vec<Value> = (0..50)
            .map(|n| {
                track(
                    &format!("m-{n}"),
                    "leaving",
                    "Checkout",
                    json!({"address": marker}),
                )
            })
            .collect();
        assert_eq!(post(&server, WRITE_KEY, json!(mine)).0, 200);
        // Before identifying, the device sent anonymously; one message was
        // rejected and kept as a dead letter.
        let anonymous = json!({"type": "track", "messageId": "anon-1", "anonymousId": "device-a",
                                "event": "Browse", "timestamp": now(), "properties": {"note": marker}});
        let broken = json!({"type": "track", "messageId": "bad-1", "userId": "leaving",
                             "timestamp": now(), "properties": {"note": marker}});
        let identify = json!({"type": "identify", "messageId": "id-1", "userId": "leaving",
                               "anonymousId": "device-a", "timestamp": now()});
        let (_, answer) = post(&server, WRITE_KEY, json!([anonymous, broken, identify]));
        assert_eq!(
            outcomes(&answer),
            [
                ok("accepted"),
                rejected("missing_event_name"),
                ok("accepted")
            ]
        );
        let others = track(
            "o-1",
            "staying",
            "Checkout",
            json!({"address": "elsewhere"}),
        );
        assert_eq!(post(&server, WRITE_KEY, json!([others])).0, 200);

        let (status, deleted) = delete_user(&server, "leaving");
        assert_eq!(status, 202, "{deleted}");
        assert_eq!(deleted["deleted_events"], 52, "{}: {deleted}", store.name());
        assert_eq!(deleted["deleted_dead_letters"], 1, "{}", store.name());
        let (_, letters) = admin_get(&agent(), &server.url("/v1/dead-letters"));
        assert_eq!(letters["dead_letters"], json!([]), "{}", store.name());
        assert_eq!(stats(&agent(), &server).3, 1);
        match &store {
            // Secure delete and a truncated WAL: no byte of the deleted
            // messages is left in the files.
            Store::Sqlite => assert_eq!(occurrences(dir.path(), marker.as_bytes()), []),
            // What the rows held is unreachable; the tables keep none of
            // the user's ids but the tombstone's.
            Store::Postgres(db) => {
                let mut client = ::postgres::Client::connect(&db.url, ::postgres::NoTls).unwrap();
                let mut count = |sql: &str| -> i64 { client.query_one(sql, &[]).unwrap().get(0) };
                assert_eq!(count("SELECT count(*) FROM links"), 0);
                assert_eq!(
                    count("SELECT count(*) FROM idents WHERE user_id = 'leaving' OR anonymous_id = 'device-a'"),
                    0
                );
                assert_eq!(
                    count("SELECT count(*) FROM tombstone_links WHERE user_id = 'leaving'"),
                    1
                );
                assert_eq!(
                    count(&format!(
                        "SELECT count(*) FROM events WHERE raw LIKE '%{marker}%'"
                    )),
                    0
                );
            }
        }
    }
}

#[test]
fn rejected_messages_cannot_fill_the_disk() {
    for store in Store::both("flood") {
        let dir = temp_dir("flood");
        let config = dir.path().join("tally.toml");
        std::fs::write(
            &config,
            "write_keys = [\"unused-key\"]\n[dead_letters]\nmax_rows = 40\nmax_bytes = 30000\nmax_message_bytes = 1000\n",
        )
        .unwrap();
        let data = dir.path().join("data");
        let server = store.start(&data, &["--config", config.to_str().unwrap()]);
        // 40 requests of 15 rejected messages of 64 KiB each (over the
        // 32 KiB message limit): 39 MB of JSON, a few KB compressed (each
        // request decodes to under the 1 MiB below which the decompression
        // ratio is not checked).
        let padding = "x".repeat(64 * 1024);
        let mut sent = 0u64;
        for r in 0..40 {
            let batch: Vec<Value> = (0..15)
                .map(|n| {
                    track(
                        &format!("big-{r}-{n}"),
                        "u1",
                        "Upload",
                        json!({"pad": padding}),
                    )
                })
                .collect();
            let body = json!({ "batch": batch }).to_string();
            let compressed = zstd::encode_all(body.as_bytes(), 3).unwrap();
            let (status, answer) = read(
                agent()
                    .post(server.url("/v1/batch"))
                    .header("authorization", format!("Bearer {WRITE_KEY}"))
                    .header("content-type", "application/json")
                    .header("content-encoding", "zstd")
                    .send(&compressed[..])
                    .unwrap(),
            );
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["rejected"], 15);
            sent += 15;
        }
        // Every rejection was answered and counted; 40 copies were kept,
        // each cut to 1,000 bytes; the rest counted as not kept.
        let (_, s) = admin_get(&agent(), &server.url("/v1/stats"));
        assert_eq!(s["rejected"], sent, "{}: {s}", store.name());
        assert_eq!(
            s["dead_letters"],
            json!({"kept": 30, "bytes": 30000, "not_kept": sent - 30, "truncated": 30}),
            "{}",
            store.name()
        );
        if matches!(store, Store::Sqlite) {
            let size: u64 = std::fs::read_dir(&data)
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            assert!(
                size < 4 * 1024 * 1024,
                "the data directory holds {size} bytes"
            );
        }
    }
}
