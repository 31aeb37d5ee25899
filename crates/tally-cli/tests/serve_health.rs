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
    let sent = tally_collector::clock::now_ms();
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
    let now = tally_collector::clock::now_ms();
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
    let db = TestDb::named("health");
    let dir = temp_dir("health-pg");
    let start = |name: &str| Server::start_postgres(&dir.path().join(name), &db.url);
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

/// A webhook receiver on loopback: answers the first request 500 and the
/// others 200, and hands every body it received to the test.
struct Receiver {
    url: String,
    bodies: std::sync::mpsc::Receiver<(u16, Value)>,
}

fn receiver() -> Receiver {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/tally", listener.local_addr().unwrap());
    let (tx, bodies) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = if n == 0 { 500 } else { 200 };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            if tx
                .send((status, serde_json::from_slice(&body).unwrap()))
                .is_err()
            {
                return;
            }
        }
    });
    Receiver { url, bodies }
}

fn alerts(agent: &ureq::Agent, server: &Server) -> Value {
    let (status, body) = admin_get(agent, &server.url("/v1/alerts"));
    assert_eq!(status, 200, "{body}");
    body
}

fn rule<'a>(alerts: &'a Value, name: &str) -> &'a Value {
    alerts["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()
}

/// Polls `check` every 50 ms for up to 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dedup_alert_goes_pending_firing_ok_and_reaches_a_failing_webhook() {
    let dir = temp_dir("alerts");
    let hook = receiver();
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        "[alerts]\ninterval_s = 0.1\nwindow_s = 5\n\
         [alerts.dedup_rate_high]\nthreshold = 0.1\nfor_s = 0.6\n",
    )
    .unwrap();
    let server = Server::start_with_config(
        &dir.path().join("data"),
        &config,
        &["--alert-webhook", &hook.url],
    );
    let agent = agent();
    let (status, _) = read(agent.get(server.url("/v1/alerts")).call().unwrap());
    assert_eq!(status, 401);
    let before = alerts(&agent, &server);
    assert_eq!(
        rule(&before, "dedup_rate_high")["threshold"],
        json!(0.1),
        "{before:#}"
    );
    assert_eq!(before["rules"].as_array().unwrap().len(), 5);
    assert_eq!(before["webhook"]["configured"], true);

    // The rates are measured from the health task's first evaluation: a
    // batch committed before it would be outside the window's baseline.
    eventually("a first evaluation", || {
        rule(&alerts(&agent, &server), "completeness_gaps_growing")["value"].is_number()
    });
    // 10 accepted, then the same 10 again: a dedup rate of 0.5.
    let ten = lagged_batch("inst-d", 1, 10);
    for _ in 0..2 {
        assert_eq!(post_batch(&agent, &server.base, &ten).unwrap().0, 200);
    }
    // The window (5 s) holds both batches until long after the rule fires
    // (0.6 s), even on a loaded machine; the value is read from the same
    // answer that shows the rule firing.
    let mut firing = Value::Null;
    eventually("the rule to fire", || {
        firing = alerts(&agent, &server);
        rule(&firing, "dedup_rate_high")["state"] == "firing"
    });
    assert_eq!(rule(&firing, "dedup_rate_high")["value"], json!(0.5));
    assert!(rule(&firing, "dedup_rate_high")["since"].is_string());
    assert_eq!(rule(&firing, "rejection_rate_high")["state"], "ok");
    let (_, metrics) = admin_get(&agent, &server.url("/metrics"));
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("tally_alert_state{rule=\"dedup_rate_high\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tally_pipeline_dedup_ratio 0.5"),
        "{metrics}"
    );

    // The receiver saw: pending (answered 500, so sent again), pending,
    // firing; then, once the window holds no traffic, ok.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let (status, body) = hook
            .bodies
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("webhook got only {seen:?}"));
        assert_eq!(body["rule"], "dedup_rate_high", "{body}");
        assert_eq!(body["threshold"], json!(0.1));
        assert!(body["at"].as_str().unwrap().ends_with('Z'));
        seen.push((status, body["state"].as_str().unwrap().to_owned()));
    }
    let states: Vec<(u16, &str)> = seen.iter().map(|(s, st)| (*s, st.as_str())).collect();
    assert_eq!(
        states,
        [
            (500, "pending"),
            (200, "pending"),
            (200, "firing"),
            (200, "ok")
        ]
    );
    eventually("the deliveries to be counted", || {
        alerts(&agent, &server)["webhook"]["deliveries"] == 3
    });
    let after = alerts(&agent, &server);
    assert_eq!(after["webhook"]["failures"], 1, "{after:#}");
    assert_eq!(after["webhook"]["dropped"], 0);
    assert!(after["webhook"]["last_delivery"].is_string());
    assert_eq!(rule(&after, "dedup_rate_high")["state"], "ok");
    assert_eq!(rule(&after, "dedup_rate_high")["since"], Value::Null);
    let (_, metrics) = admin_get(&agent, &server.url("/metrics"));
    assert!(metrics
        .as_str()
        .unwrap()
        .contains("tally_alert_webhook_failures_total 1"));
}

/// The metric names an expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("tally_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        names.push(name);
    }
    names
}

#[test]
fn the_prometheus_rules_use_only_exported_metrics() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/alerts.rules.yml");
    let text = std::fs::read_to_string(path).unwrap();
    let document: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let rules: Value = serde_json::from_str(&document).unwrap();
    let dir = temp_dir("rules");
    let config = dir.path().join("tally.toml");
    // A plan that lacks the batch's event: its finding (unplanned) is
    // counted, so the findings series exists too.
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        "events: [{name: Order Completed, versions: [{version: 1}]}]\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[alerts]\ninterval_s = 0.1\n[plan]\nfile = {:?}\n",
            plan.to_str().unwrap()
        ),
    )
    .unwrap();
    let server = Server::start_with_config(&dir.path().join("data"), &config, &[]);
    let agent = agent();
    // One request of each outcome, so every labelled series exists.
    assert_eq!(
        post_batch(&agent, &server.base, &lagged_batch("inst-r", 1, 1))
            .unwrap()
            .0,
        200
    );
    eventually("the first health refresh", || {
        let (_, text) = admin_get(&agent, &server.url("/metrics"));
        text.as_str()
            .unwrap()
            .contains("tally_completeness_installs 1")
    });
    let (_, text) = admin_get(&agent, &server.url("/metrics"));
    let exported: Vec<&str> = text
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut checked = 0;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert!(rule["alert"].as_str().unwrap().starts_with("Tally"));
            let expr = rule["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                assert!(
                    exported.contains(&name.as_str()),
                    "{name} (in {expr}) is not exported"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "{checked}");
}
