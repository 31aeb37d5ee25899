//! The health task in process, over a real SQLite store: the stale-queue,
//! rejection and completeness rules take the values the fixture implies
//! and fire; `GET /v1/alerts` shows them; the gauges follow. The
//! plan-violation rule, on SQLite and on PostgreSQL, stays ok below its
//! minimum count, fires above it, and resolves once the window passed. Over one
//! PostgreSQL store shared by two collectors, a webhook receiver on
//! 127.0.0.1 gets each state change exactly once, also when the sending
//! collector dies in the middle of its retries.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tally_collector::alerts::rules::{self, RuleSettings};
use tally_collector::alerts::AlertConfig;
use tally_collector::api::{app, AppState};
use tally_collector::clock::now_ms;
use tally_collector::health::monitor;
use tally_collector::ingest::auth::Keys;
use tally_collector::store::quality::QualityFinding;
use tally_collector::store::{self, DeadLetter, NewEvent, PostgresStore, Store, WriteOutcome};
use tally_proto::{MessageType, Priority, RejectReason};
use tower::ServiceExt as _;

#[path = "support/test_db.rs"]
mod test_db;

use test_db::TestDb;

const ADMIN: &str = "admin";

fn event(id: &str, name: &str, install: &str, seq: u64, props: &str) -> NewEvent {
    let now = now_ms();
    NewEvent {
        source: "wk_alerts".to_owned(),
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
        min_count: 0,
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
    let dead = rejected();
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
        "tally_pipeline_batches_total{outcome=\"succeeded\"} 1",
        "tally_alert_state{rule=\"stale_client_queues\"} 2",
        "tally_alert_state{rule=\"dedup_rate_high\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// The plan-violation rule over a store: evaluated every 50 ms over a 2 s
/// window, breaching above 5 % with at least 3 violations.
fn violation_collector(store: Arc<dyn Store>) -> AppState {
    let mut config = AlertConfig {
        interval: Duration::from_millis(50),
        window: Duration::from_secs(2),
        ..AlertConfig::default()
    };
    let (name, settings) = &mut config.rules[4];
    assert_eq!(*name, rules::PLAN_VIOLATION_RATE_HIGH);
    *settings = RuleSettings {
        threshold: 0.05,
        for_s: 0.0,
        min_count: 3,
    };
    AppState::new(store, Keys::new(["k".to_owned()], Some(ADMIN.to_owned()))).with_alerts(config)
}

/// A finding of a plan violation: on event `at` of the batch, or on a
/// rejected message (`None`).
fn violation(at: Option<usize>, id: &str) -> QualityFinding {
    QualityFinding {
        event_index: at,
        source: "wk_alerts".to_owned(),
        event: "Order Completed".to_owned(),
        version: 1,
        finding: "plan_violation",
        rule: "required".to_owned(),
        path: "/currency".to_owned(),
        message_id: Some(id.to_owned()),
        received_at: now_ms(),
        detail: "Order Completed v1: required at /currency".to_owned(),
    }
}

/// Writes `events` accepted events named `prefix-N` (the first
/// `flagged` of them with a violation) and `refused` messages rejected
/// for one.
async fn judged_batch(state: &AppState, prefix: &str, events: u64, flagged: usize, refused: u64) {
    let batch: Vec<NewEvent> = (0..events)
        .map(|i| {
            event(
                &format!("{prefix}-{i}"),
                "Order Completed",
                prefix,
                i + 1,
                "{}",
            )
        })
        .collect();
    let mut findings: Vec<QualityFinding> = (0..flagged)
        .map(|i| violation(Some(i), &format!("{prefix}-{i}")))
        .collect();
    let mut dead = Vec::new();
    for i in 0..refused {
        let id = format!("{prefix}-bad-{i}");
        findings.push(violation(None, &id));
        dead.push(DeadLetter {
            message_id: Some(id),
            reason: RejectReason::PlanViolation,
            detail: "Order Completed v1: required at /currency".into(),
            ..rejected()
        });
    }
    let store = Arc::clone(&state.store);
    let outcomes =
        tokio::task::spawn_blocking(move || store.write_judged(&batch, &dead, &findings))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(outcomes, vec![WriteOutcome::Accepted; events as usize]);
}

/// `(state, value, count)` of the violation rule in `GET /v1/alerts`.
type Shown = (String, Value, Value);

/// Waits until the violation rule, as `GET /v1/alerts` shows it, reads
/// `(state, value, count)`; the states it showed on the way.
async fn rule_reads(state: &AppState, expected: (&str, Value, Value)) -> Vec<String> {
    let expected: Shown = (expected.0.to_owned(), expected.1, expected.2);
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = alerts(state).await;
        let r = rule(&all, rules::PLAN_VIOLATION_RATE_HIGH);
        let shown: Shown = (
            r["state"].as_str().unwrap().to_owned(),
            r["value"].clone(),
            r["count"].clone(),
        );
        if states.last() != Some(&shown.0) {
            states.push(shown.0.clone());
        }
        if shown == expected {
            assert_eq!(r["min_count"], 3);
            assert_eq!(r["threshold"], 0.05);
            return states;
        }
        assert!(Instant::now() < deadline, "{expected:?}: {all:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Ok under the minimum count, firing over it, ok once the window has
/// passed, with the exact value and count the store's totals give.
async fn violation_rule_fires_and_resolves(state: &AppState) {
    monitor::spawn(state.clone());
    // The first evaluation: nothing received, nothing to divide by.
    rule_reads(state, ("ok", Value::Null, 0.into())).await;

    // 2 flagged of 10: 20 %, but under the minimum count of 3.
    judged_batch(state, "a", 10, 2, 0).await;
    assert_eq!(
        rule_reads(state, ("ok", 0.2.into(), 2.into())).await,
        ["ok"]
    );
    // The window passes: nothing in it.
    rule_reads(state, ("ok", Value::Null, 0.into())).await;

    // 2 flagged of 10 accepted, and 1 rejected: 3 of 11.
    judged_batch(state, "b", 10, 2, 1).await;
    let firing = rule_reads(state, ("firing", (3.0 / 11.0).into(), 3.into())).await;
    assert_eq!(firing, ["ok", "firing"]);
    let text = state.metrics.encode();
    let gauge = "tally_alert_state{rule=\"plan_violation_rate_high\"} 2";
    assert!(text.lines().any(|l| l == gauge), "{text}");
    // Resolved once the batch left the window.
    let resolved = rule_reads(state, ("ok", Value::Null, 0.into())).await;
    assert_eq!(resolved, ["firing", "ok"]);
    let all = alerts(state).await;
    assert_eq!(
        rule(&all, rules::PLAN_VIOLATION_RATE_HIGH)["since"],
        Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_violation_rate_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let state = violation_collector(store::open(dir.path(), None).unwrap());
    violation_rule_fires_and_resolves(&state).await;
}

#[test]
fn plan_violation_rate_on_postgres() {
    on_runtime(|db| async move {
        let store: Arc<dyn Store> = Arc::new(tokio::task::block_in_place(|| {
            PostgresStore::connect(&db.url).unwrap()
        }));
        let state = violation_collector(store);
        violation_rule_fires_and_resolves(&state).await;
        vec![state]
    });
}

/// What the webhook receiver got: `(rule, state, status answered)`.
type Seen = Arc<Mutex<Vec<(String, String, u16)>>>;

/// A webhook receiver on 127.0.0.1: answers the POSTs with the statuses
/// of `plan` in turn, then 200, and records each.
fn receiver(plan: Vec<u16>) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hook/secret-token",
        listener.local_addr().unwrap()
    );
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut plan = plan.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(body) = read_body(&stream) else {
                continue;
            };
            let status = plan.next().unwrap_or(200);
            let change: Value = serde_json::from_slice(&body).unwrap();
            log.lock().unwrap().push((
                change["rule"].as_str().unwrap().to_owned(),
                change["state"].as_str().unwrap().to_owned(),
                status,
            ));
            let _ = write!(
                stream,
                "HTTP/1.1 {status} Status\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, seen)
}

/// The body of one HTTP/1.1 request (`content-length` or chunked).
fn read_body(stream: &TcpStream) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let (mut length, mut chunked) = (0, false);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok()?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.trim().eq_ignore_ascii_case("chunked");
        }
    }
    let mut body = Vec::new();
    if !chunked {
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
        return Some(body);
    }
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// A collector over its own connection pool to the shared database,
/// evaluating every 50 ms over a 1 s rate window and notifying `hook`.
fn collector(db: &TestDb, hook: &str) -> AppState {
    let store: Arc<dyn Store> = Arc::new(tokio::task::block_in_place(|| {
        PostgresStore::connect(&db.url).unwrap()
    }));
    AppState::new(store, Keys::new(["k".to_owned()], Some(ADMIN.to_owned()))).with_alerts(
        AlertConfig {
            interval: Duration::from_millis(50),
            window: Duration::from_secs(1),
            webhook: Some(hook.to_owned()),
            ..AlertConfig::default()
        },
    )
}

/// Whether a collector has evaluated its rules once (the baseline its
/// rates are measured from).
fn evaluated(state: &AppState) -> bool {
    state
        .health
        .alerts
        .rules()
        .iter()
        .any(|r| r.name == rules::COMPLETENESS_GAPS_GROWING && r.value.is_some())
}

/// The rejection rule's state on one collector.
fn rejection_state(state: &AppState) -> rules::AlertState {
    state
        .health
        .alerts
        .rules()
        .into_iter()
        .find(|r| r.name == rules::REJECTION_RATE_HIGH)
        .unwrap()
        .state
}

/// One accepted message and one rejected: the rejection rate (0.5) is
/// over its threshold until the 1 s window has passed.
async fn reject_one_of_two(state: &AppState) {
    let store = Arc::clone(&state.store);
    let dead = rejected();
    let written = tokio::task::spawn_blocking(move || {
        store.write_batch(&[event("ok-1", "Open", "i", 1, "{}")], &[dead])
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(written, vec![WriteOutcome::Accepted]);
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn counts(state: &AppState) -> (u64, u64, u64) {
    let w = &state.health.alerts.webhook;
    (
        w.deliveries.load(std::sync::atomic::Ordering::Relaxed),
        w.failures.load(std::sync::atomic::Ordering::Relaxed),
        w.dropped.load(std::sync::atomic::Ordering::Relaxed),
    )
}

fn seen(log: &Seen) -> Vec<(String, String, u16)> {
    log.lock().unwrap().clone()
}

fn change(state: &str, status: u16) -> (String, String, u16) {
    (
        rules::REJECTION_RATE_HIGH.to_owned(),
        state.to_owned(),
        status,
    )
}

/// Runs `test` on a runtime like the collector's. The blocking
/// PostgreSQL clients must not be dropped on it: the collectors `test`
/// returns (and the database) are dropped after the runtime.
fn on_runtime<F: std::future::Future<Output = Vec<AppState>>>(test: impl FnOnce(Arc<TestDb>) -> F) {
    let db = Arc::new(TestDb::new());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let collectors = runtime.block_on(test(Arc::clone(&db)));
    drop(runtime);
    drop(collectors);
}

#[test]
fn two_collectors_on_one_postgres_send_each_state_change_once() {
    on_runtime(two_collectors_send_once);
}

async fn two_collectors_send_once(db: Arc<TestDb>) -> Vec<AppState> {
    let (hook, log) = receiver(Vec::new());
    let collectors = [collector(&db, &hook), collector(&db, &hook)];
    for c in &collectors {
        monitor::spawn(c.clone());
    }
    wait_for("a first evaluation", Duration::from_secs(10), || {
        collectors.iter().all(evaluated)
    })
    .await;
    reject_one_of_two(&collectors[0]).await;
    // Both see the rule fire, and return to ok once the window passed.
    let mut fired = [false; 2];
    wait_for(
        "both collectors to fire and resolve",
        Duration::from_secs(20),
        || {
            for (c, fired) in collectors.iter().zip(&mut fired) {
                *fired |= rejection_state(c) == rules::AlertState::Firing;
            }
            fired.iter().all(|f| *f)
                && collectors
                    .iter()
                    .all(|c| rejection_state(c) == rules::AlertState::Ok)
                && seen(&log).len() >= 2
        },
    )
    .await;
    // Twenty more evaluations of each: a late copy would arrive now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(seen(&log), [change("firing", 200), change("ok", 200)]);
    let (a, b) = (counts(&collectors[0]), counts(&collectors[1]));
    assert_eq!((a.0 + b.0, a.1 + b.1, a.2 + b.2), (2, 0, 0), "{a:?} {b:?}");
    collectors.into()
}

#[test]
fn a_sender_stopping_cleanly_hands_the_lease_on_at_once() {
    on_runtime(a_clean_stop_hands_the_lease_on);
}

async fn a_clean_stop_hands_the_lease_on(db: Arc<TestDb>) -> Vec<AppState> {
    let (hook, log) = receiver(Vec::new());
    let holder = || -> Option<String> {
        tokio::task::block_in_place(|| {
            db.client()
                .query_opt("SELECT holder FROM alert_sender", &[])
                .unwrap()
                .map(|r| r.get(0))
        })
    };
    let first = collector(&db, &hook);
    let first_monitor = monitor::spawn(first.clone());
    wait_for(
        "the first collector to take the lease",
        Duration::from_secs(10),
        || holder().is_some(),
    )
    .await;
    let first_holder = holder();
    let second = collector(&db, &hook);
    let _second_monitor = monitor::spawn(second.clone());
    wait_for("a first evaluation", Duration::from_secs(10), || {
        evaluated(&first) && evaluated(&second)
    })
    .await;
    assert_eq!(holder(), first_holder, "the lease stays with its holder");

    // A clean stop releases the lease: the second collector takes it at
    // its next evaluation, not once it expired (11 s here).
    first_monitor.stop().await;
    let stopped = Instant::now();
    wait_for("the hand-over", Duration::from_secs(3), || {
        holder() != first_holder
    })
    .await;
    assert!(stopped.elapsed() < Duration::from_secs(3));
    reject_one_of_two(&second).await;
    // The receiver logs the request before the sender has read the answer
    // and counted the delivery: wait for both.
    wait_for("the firing notification", Duration::from_secs(10), || {
        !seen(&log).is_empty() && counts(&second).0 > 0
    })
    .await;
    assert_eq!(seen(&log), [change("firing", 200)]);
    assert_eq!(counts(&second), (1, 0, 0));
    assert_eq!(counts(&first), (0, 0, 0));
    vec![first, second]
}

#[test]
fn a_sender_dying_mid_retry_is_taken_over_without_loss_or_duplicate() {
    on_runtime(a_dying_sender_is_taken_over);
}

async fn a_dying_sender_is_taken_over(db: Arc<TestDb>) -> Vec<AppState> {
    // The first two attempts are refused.
    let (hook, log) = receiver(vec![503, 503]);
    let first = collector(&db, &hook);
    let first_monitor = monitor::spawn(first.clone());
    let sender = || -> i64 {
        tokio::task::block_in_place(|| {
            db.client()
                .query_one("SELECT count(*) FROM alert_sender", &[])
                .unwrap()
                .get(0)
        })
    };
    wait_for(
        "the first collector to take the lease",
        Duration::from_secs(10),
        || sender() == 1,
    )
    .await;
    let second = collector(&db, &hook);
    monitor::spawn(second.clone());
    wait_for("a first evaluation", Duration::from_secs(10), || {
        evaluated(&first) && evaluated(&second)
    })
    .await;
    reject_one_of_two(&first).await;
    // The first attempt is refused; the first collector dies in its
    // backoff, its lease left to expire.
    wait_for("the first attempt", Duration::from_secs(10), || {
        !seen(&log).is_empty()
    })
    .await;
    first_monitor.abort();
    // The second collector takes the lease once it expired (about 11 s),
    // continues the firing notification's attempts, then notifies the
    // ok its own rules reached meanwhile.
    wait_for("the hand-over", Duration::from_secs(40), || {
        seen(&log).len() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        seen(&log),
        [
            change("firing", 503),
            change("firing", 503),
            change("firing", 200),
            change("ok", 200),
        ]
    );
    assert_eq!(counts(&first), (0, 1, 0));
    assert_eq!(counts(&second), (2, 1, 0));
    let outbox: Vec<(String, i32, bool)> = tokio::task::block_in_place(|| {
        db.client()
            .query(
                "SELECT rule, attempts, delivered FROM alert_outbox WHERE done_at IS NOT NULL \
                 ORDER BY id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    });
    let rule = rules::REJECTION_RATE_HIGH.to_owned();
    assert_eq!(outbox, [(rule.clone(), 3, true), (rule, 1, true)]);
    vec![first, second]
}

/// A message rejected for a missing identity, received now.
fn rejected() -> DeadLetter {
    DeadLetter {
        source: "wk_alerts".to_owned(),
        message_id: Some("bad".to_owned()),
        reason: RejectReason::MissingIdentity,
        detail: "test".into(),
        received_at: now_ms(),
        raw: "{}".to_owned(),
        user_id: None,
        anonymous_id: None,
        install_id: None,
    }
}
