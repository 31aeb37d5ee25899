//! `tally installs` and `tally dead-letters` against the real binary on
//! 127.0.0.1: stalled queues from health beacons, dead letters by reason
//! and a page at a time, and the collector's own error message when it
//! refuses a request.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::process::{Command, Output};

use serde_json::{json, Value};
use serve_support::*;

fn post_json(agent: &ureq::Agent, server: &Server, body: &Value) -> Value {
    let (status, answer) = read(
        agent
            .post(server.url("/v1/batch"))
            .header("authorization", format!("Bearer {WRITE_KEY}"))
            .header("content-type", "application/json")
            .send(body.to_string())
            .unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    answer
}

fn tally(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .args(["--endpoint", &server.base])
        .env("TALLY_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The words of each line after the table's header and rule.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(2)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn beacon(id: &str, install: &str, pending: u64, age_s: f64) -> Value {
    json!({"type": "track", "messageId": id, "anonymousId": "a", "event": "tally.health",
        "context": {"tally": {"install_id": install, "seq": 1}},
        "properties": {"pending": pending, "pending_bytes": pending * 700,
            "oldest_pending_age_s": age_s, "consecutive_failures": 12}})
}

#[test]
fn installs_lists_the_stalled_queues_and_one_install() {
    let dir = temp_dir("installs-cli");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    post_json(
        &agent,
        &server,
        &json!({"batch": [
            beacon("b-1", "phone-1", 40, 180_000.0),
            beacon("b-2", "phone-2", 2, 600.0),
            beacon("b-3", "phone-3", 9, 7_200.0),
        ]}),
    );

    let out = tally(&server, &["installs"]);
    let table = stdout(&out);
    let listed = rows(&table);
    assert_eq!(listed.len(), 1, "{table}");
    assert_eq!(
        listed[0][..6],
        ["phone-1", "40", "28000", "50.0", "12", "0"].map(String::from)
    );
    assert!(
        table.ends_with("\n1 install with an event pending longer than 86400 s\n"),
        "{table}"
    );

    let table = stdout(&tally(&server, &["installs", "--stalled", "30m"]));
    let ids: Vec<String> = rows(&table).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, ["phone-1", "phone-3"]);

    let out = tally(&server, &["installs", "--stalled", "5m", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let (_, api) = admin_get(&agent, &server.url("/v1/installs?stalled=300"));
    assert_eq!(v, api);
    assert_eq!(v["installs"].as_array().unwrap().len(), 3);

    let report = stdout(&tally(&server, &["installs", "phone-1"]));
    assert_eq!(
        report,
        "max_seq         1\nmissing         none\ndropped         0\ndropped_ranges  none\n"
    );
    let out = tally(&server, &["installs", "never-seen"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404"), "{err}");
}

#[test]
fn dead_letters_are_read_by_reason_and_a_page_at_a_time() {
    let dir = temp_dir("dead-letters-cli");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    let unnamed = |id: &str| json!({"type": "track", "messageId": id, "anonymousId": "a"});
    let answer = post_json(
        &agent,
        &server,
        &json!({"batch": [unnamed("u-1"), unnamed("u-2"), unnamed("u-3"),
            {"type": "track", "messageId": "s-1", "anonymousId": "a", "event": "E",
             "context": {"tally": {"install_id": "i", "seq": 0}}}]}),
    );
    assert_eq!(answer["results"].as_array().unwrap().len(), 4);

    let out = tally(
        &server,
        &[
            "dead-letters",
            "--reason",
            "missing_event_name",
            "--limit",
            "2",
        ],
    );
    let table = stdout(&out);
    let ids: Vec<String> = rows(&table).into_iter().map(|r| r[3].clone()).collect();
    assert_eq!(ids, ["u-3", "u-2"]);
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.starts_with("2 shown, more with --before "), "{note}");
    assert!(note.contains("the store keeps 4 ("), "{note}");

    // --all follows the cursor to the last page.
    let out = tally(
        &server,
        &[
            "dead-letters",
            "--reason",
            "missing_event_name",
            "--limit",
            "2",
            "--all",
        ],
    );
    let text = stdout(&out);
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter(|w| w.starts_with("u-"))
        .collect();
    assert_eq!(ids, ["u-3", "u-2", "u-1"]);
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("3 shown; "));

    let out = tally(&server, &["dead-letters", "--reason", "seq_zero", "--json"]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["dead_letters"][0]["message_id"], "s-1");
    assert_eq!(v["next_before_id"], Value::Null);

    // The collector's refusal reaches the operator in its own words.
    let out = tally(&server, &["dead-letters", "--reason", "no_such_reason"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("400 Bad Request: reason is not a rejection reason code"),
        "{err}"
    );
}
