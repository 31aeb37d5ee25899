//! Pipeline health against a real `tally serve`: exact figures from a
//! known traffic mix, the admin token required, the figures kept across a
//! restart, and summed exactly over two collectors on one PostgreSQL.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::time::Duration;

use serde_json::{json, Value};
use serve_support::*;
use tally_proto::{format_timestamp, Batch, ContentEncoding, EncodedBatch, Message};

/// Corrected capture time is `sentAt − LAG_MS` for every fixture event.
const LAG_MS: i64 = 60_000;

/// `size` track events of install `install`, seqs from `first_seq`, each
/// captured exactly [`LAG_MS`] before the batch was sent.
fn lagged_batch(install: &str, first_seq: u64, size: u64) -> EncodedBatch {
    let sent = tally_collector::ingest::clock::now_ms();
    let messages = (0..size)
        .map(|i| {
            let seq = first_seq + i;
            let mut msg = Message::track(
                format!("{install}-{seq}"),
                format_timestamp(sent - LAG_MS),
                "Song Played",
            );
            msg.anonymous_id = Some(format!("{install}-anon"));
            let tally = msg.tally_mut();
            tally.install_id = Some(install.to_owned());
            tally.seq = Some(seq);
            msg
        })
        .collect();
    Batch::new(messages, format_timestamp(sent)).encode(ContentEncoding::Zstd)
}

/// A raw JSON body posted with the test write key (or `key`).
fn post_json(agent: &ureq::Agent, server: &Server, key: &str, body: &Value) -> (u16, Value) {
    read(
        agent
            .post(server.url("/v1/batch"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap(),
    )
}

fn beacon(install: &str, seq: u64, props: Value) -> Value {
    let now = tally_collector::ingest::clock::now_ms();
    json!({"batch": [{
        "type": "track", "messageId": format!("{install}-beacon-{seq}"), "event": "tally.health",
        "anonymousId": format!("{install}-anon"), "timestamp": format_timestamp(now),
        "properties": props,
        "context": {"tally": {"install_id": install, "seq": seq}}
    }], "sentAt": format_timestamp(now)})
}

/// The traffic mix: 4 requests answered 200 and 1 refused, 21 accepted,
/// 10 duplicates, 1 rejected, one install with a gap, one beacon.
fn send_fixture(agent: &ureq::Agent, server: &Server) {
    let ten = lagged_batch("inst-a", 1, 10);
    for expected in [(10, 0), (0, 10)] {
        let (status, answer) = post_batch(agent, &server.base, &ten).unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            (answer["accepted"].as_u64(), answer["duplicate"].as_u64()),
            (Some(expected.0), Some(expected.1))
        );
    }
    // inst-b skips seq 3..=4: a gap of two.
    let (status, _) = post_batch(agent, &server.base, &lagged_batch("inst-b", 1, 2)).unwrap();
    assert_eq!(status, 200);
    let (status, _) = post_batch(agent, &server.base, &lagged_batch("inst-b", 5, 8)).unwrap();
    assert_eq!(status, 200);
    let mut with_bad = beacon(
        "inst-c",
        1,
        json!({"pending": 40, "oldest_pending_age_s": 100000, "backoff_ms": 2000,
               "persistence_errors": 0, "sync_latency_p50_ms": 70, "sync_latency_p99_ms": 300}),
    );
    // A message without messageId is rejected alone.
    with_bad["batch"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "track", "event": "x", "anonymousId": "a"}));
    let (status, answer) = post_json(agent, server, WRITE_KEY, &with_bad);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rejected"], 1, "{answer}");
    let (status, _) = post_json(agent, server, "not-a-key", &beacon("inst-z", 1, json!({})));
    assert_eq!(status, 401);
}

fn health(agent: &ureq::Agent, server: &Server) -> Value {
    let (status, body) = admin_get(agent, &server.url("/v1/health/pipeline"));
    assert_eq!(status, 200, "{body}");
    body
}

/// Everything but the window (which moves with the clock).
fn figures(mut report: Value) -> Value {
    report.as_object_mut().unwrap().remove("window");
    report
}

fn expected() -> Value {
    json!({
        // 20 events lagged 60 s (bucket 70 s), the beacon 0 s.
        "ingest_lag_ms": {"p50": 70000, "p90": 70000, "p99": 70000},
        "sync_latency_ms": {"p50": 70, "p99": 300},
        "batches": {"total": 6, "succeeded": 5, "success_rate": 5.0 / 6.0},
        "dedup": {"accepted": 21, "duplicates": 10, "rate": 10.0 / 31.0},
        "rejections": {"total": 1, "rate": 1.0 / 32.0, "by_reason": {"missing_message_id": 1}},
        "completeness": {"installs": 2 + 1, "installs_with_gaps": 1, "missing": 2},
        "fleet": {"installs_reporting": 1, "pending_events": 40,
                  "oldest_pending_age_s": 100000.0, "installs_with_persistence_errors": 0,
                  "installs_in_backoff": 1, "installs_oldest_pending_over_24h": 1}
    })
}

#[test]
fn pipeline_health_is_exact_needs_the_admin_token_and_survives_a_restart() {
    let dir = temp_dir("health");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    let url = server.url("/v1/health/pipeline");
    let (status, _) = read(agent.get(&url).call().unwrap());
    assert_eq!(status, 401);
    let (status, _) = read(
        agent
            .get(&url)
            .header("authorization", format!("Bearer {WRITE_KEY}"))
            .call()
            .unwrap(),
    );
    assert_eq!(status, 403);
    let (status, _) = admin_get(&agent, &format!("{url}?from=yesterday"));
    assert_eq!(status, 400);

    send_fixture(&agent, &server);
    // The rejected batch with one bad message and the 401 are in; the
    // 401 request to the admin endpoint is not an ingest request.
    let report = health(&agent, &server);
    assert_eq!(figures(report.clone()), expected(), "{report:#}");
    assert!(report["window"]["from"]
        .as_str()
        .unwrap()
        .ends_with(":00:00.000Z"));
    // A window before any traffic holds none of it; the state figures stay.
    let (status, empty) = admin_get(
        &agent,
        &format!("{url}?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z"),
    );
    assert_eq!(status, 200);
    assert_eq!(
        empty["batches"],
        json!({"total": 0, "succeeded": 0, "success_rate": null})
    );
    assert_eq!(empty["ingest_lag_ms"]["p50"], Value::Null);
    assert_eq!(empty["completeness"], expected()["completeness"]);

    // One more refused request, then a restart: it is counted at shutdown.
    let (status, _) = post_json(
        &agent,
        &server,
        "not-a-key",
        &beacon("inst-z", 2, json!({})),
    );
    assert_eq!(status, 401);
    assert!(server.terminate(Duration::from_secs(20)).success());
    let server = Server::start(dir.path(), None, &[]);
    let mut want = expected();
    want["batches"] = json!({"total": 7, "succeeded": 5, "success_rate": 5.0 / 7.0});
    assert_eq!(figures(health(&agent, &server)), want);
}

#[test]
fn two_collectors_on_one_postgres_sum_exactly() {
    let db = TestDb::new("health");
    let dir = temp_dir("health-pg");
    let start = |name: &str| {
        Server::start(
            &dir.path().join(name),
            None,
            &[
                "--write-key",
                WRITE_KEY,
                "--admin-token",
                ADMIN_TOKEN,
                "--database-url",
                &db.url,
            ],
        )
    };
    let (a, b) = (start("a"), start("b"));
    let agent = agent();
    // The fixture split over both: a sends it, b repeats the duplicates
    // batch and a refused request.
    send_fixture(&agent, &a);
    let (status, _) = post_batch(&agent, &b.base, &lagged_batch("inst-a", 1, 10)).unwrap();
    assert_eq!(status, 200);
    let (status, _) = post_json(&agent, &b, "not-a-key", &beacon("inst-z", 3, json!({})));
    assert_eq!(status, 401);
    let mut want = expected();
    want["batches"] = json!({"total": 8, "succeeded": 6, "success_rate": 6.0 / 8.0});
    want["dedup"] = json!({"accepted": 21, "duplicates": 20, "rate": 20.0 / 41.0});
    want["rejections"]["rate"] = json!(1.0 / 42.0);
    // Each collector adds its refused requests when it answers: once a
    // has answered, b's answer holds everything, and then a's does too.
    let _ = health(&agent, &a);
    assert_eq!(figures(health(&agent, &b)), want);
    assert_eq!(figures(health(&agent, &a)), want);
}
