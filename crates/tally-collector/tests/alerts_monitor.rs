//! The health task in process, over a real SQLite store: the stale-queue,
//! rejection and completeness rules take the values the fixture implies
//! and fire; `GET /v1/alerts` shows them; the gauges follow.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tally_collector::alerts::rules::{self, RuleSettings};
use tally_collector::alerts::AlertConfig;
use tally_collector::app::{app, AppState};
use tally_collector::health::monitor;
use tally_collector::ingest::auth::Keys;
use tally_collector::ingest::clock::now_ms;
use tally_collector::store::{self, DeadLetter, NewEvent, WriteOutcome};
use tally_proto::{MessageType, Priority, RejectReason};
use tower::ServiceExt as _;

const ADMIN: &str = "admin";

fn event(id: &str, name: &str, install: &str, seq: u64, props: &str) -> NewEvent {
    let now = now_ms();
    NewEvent {
        message_id: id.to_owned(),
        kind: MessageType::Track,
        event: Some(name.to_owned()),
        user_id: None,
        anonymous_id: Some("anon".to_owned()),
        group_id: None,
        previous_id: None,
        install_id: Some(install.to_owned()),
        seq: Some(seq),
        session_id: None,
        session_index: None,
        dedup_key: None,
        priority: Priority::Normal,
        timestamp: Some(now),
        sent_at: Some(now),
        received_at: now,
        ts_corrected: now,
        clamped: false,
        drops: Vec::new(),
        raw: format!(
            r#"{{"type":"track","messageId":"{id}","event":"{name}","properties":{props}}}"#
        ),
    }
}

async fn alerts(state: &AppState) -> Value {
    let response = app(state.clone())
        .oneshot(
            Request::get("/v1/alerts")
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn rule<'a>(alerts: &'a Value, name: &str) -> &'a Value {
    alerts["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_queues_rejections_and_growing_gaps_fire() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(dir.path(), None).unwrap();
    let mut config = AlertConfig {
        interval: Duration::from_millis(50),
        window: Duration::from_secs(60),
        ..AlertConfig::default()
    };
    // The stale-queue rule waits 0.3 s, the others fire at once.
    config.rules[0].1 = RuleSettings {
        threshold: 0.05,
        for_s: 0.3,
    };
    let state = AppState::new(
        store.clone(),
        Keys::new(["k".to_owned()], Some(ADMIN.to_owned())),
    )
    .with_alerts(config);
    monitor::spawn(state.clone());
    // The first evaluation sees an empty store: nothing to divide by.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rule(&alerts(&state).await, rules::COMPLETENESS_GAPS_GROWING)["value"].is_null() {
        assert!(Instant::now() < deadline, "no evaluation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let empty = alerts(&state).await;
    assert_eq!(rule(&empty, rules::DEDUP_RATE_HIGH)["value"], Value::Null);
    assert_eq!(
        rule(&empty, rules::STALE_CLIENT_QUEUES)["value"],
        Value::Null
    );
    assert_eq!(empty["webhook"]["configured"], false);

    // Two installs report, one with a queue 25 h old; install c skips
    // seqs 2..=4; one message of five is rejected.
    let events = vec![
        event(
            "b1",
            "tally.health",
            "a",
            1,
            r#"{"pending":3,"oldest_pending_age_s":90000}"#,
        ),
        event(
            "b2",
            "tally.health",
            "b",
            1,
            r#"{"pending":1,"oldest_pending_age_s":5}"#,
        ),
        event("c1", "Open", "c", 1, "{}"),
        event("c5", "Open", "c", 5, "{}"),
    ];
    let dead = DeadLetter {
        message_id: Some("bad".to_owned()),
        reason: RejectReason::MissingIdentity,
        detail: "test",
        received_at: now_ms(),
        raw: "{}".to_owned(),
    };
    let writer = store.clone();
    let outcomes = tokio::task::spawn_blocking(move || writer.write_batch(&events, &[dead]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcomes, vec![WriteOutcome::Accepted; 4]);

    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let firing = loop {
        let now = alerts(&state).await;
        let stale = rule(&now, rules::STALE_CLIENT_QUEUES)["state"]
            .as_str()
            .unwrap()
            .to_owned();
        if states.last() != Some(&stale) {
            states.push(stale.clone());
        }
        if stale == "firing" {
            break now;
        }
        assert!(Instant::now() < deadline, "{now:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // for_s = 0.3: the stale-queue rule was pending before it fired.
    assert_eq!(states, ["ok", "pending", "firing"]);
    let value = |name| rule(&firing, name)["value"].as_f64().unwrap();
    assert_eq!(value(rules::STALE_CLIENT_QUEUES), 0.5);
    assert_eq!(value(rules::REJECTION_RATE_HIGH), 0.2);
    assert_eq!(value(rules::COMPLETENESS_GAPS_GROWING), 3.0);
    assert_eq!(value(rules::DEDUP_RATE_HIGH), 0.0);
    for name in [rules::REJECTION_RATE_HIGH, rules::COMPLETENESS_GAPS_GROWING] {
        assert_eq!(rule(&firing, name)["state"], "firing", "{firing:#}");
    }
    assert_eq!(rule(&firing, rules::DEDUP_RATE_HIGH)["state"], "ok");

    let text = state.metrics.encode();
    for line in [
        "tally_fleet_installs_reporting 2",
        "tally_fleet_pending_events 4",
        "tally_fleet_installs_oldest_pending_over_24h 1",
        "tally_fleet_stale_queue_ratio 0.5",
        "tally_completeness_missing_events 3",
        "tally_completeness_installs_with_gaps 1",
        "tally_pipeline_rejections{reason=\"missing_identity\"} 1",
        "tally_pipeline_batches{outcome=\"succeeded\"} 1",
        "tally_alert_state{rule=\"stale_client_queues\"} 2",
        "tally_alert_state{rule=\"dedup_rate_high\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
