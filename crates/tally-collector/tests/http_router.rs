//! Router tests: the real router over the real SQLite store, driven with
//! `tower::ServiceExt::oneshot`. One test per status code the collector
//! answers, and one batch holding every rejection reason reachable over
//! HTTP.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::PathBuf;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use tally_collector::api::routes::{self, RouteInfo};
use tally_collector::api::{app, Access, AppState};
use tally_collector::client::ClientAddr;
use tally_collector::clock::now_ms;
use tally_collector::ingest::auth::Keys;
use tally_collector::store;
use tally_collector::store::keys::{KeyKind, KeyOrigin, NewKey};
use tally_proto::{content_digest, format_timestamp, DecodeLimits, RejectReason};
use tower::ServiceExt as _;

const KEY: &str = "write-key-1";
const OTHER_KEY: &str = "write-key-2";
const ADMIN: &str = "admin-token";

struct Harness {
    state: AppState,
    dir: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn harness(name: &str) -> Harness {
    let dir = std::env::temp_dir().join(format!("tally-router-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = store::open(&dir, None).unwrap();
    let keys = Keys::new(
        [KEY.to_owned(), OTHER_KEY.to_owned()],
        Some(ADMIN.to_owned()),
    );
    Harness {
        state: AppState::new(store, keys),
        dir,
    }
}

impl Harness {
    /// Judges events against a plan with one event, `Plan Checked` (a
    /// required integer `n`), in `mode`.
    fn with_plan(mut self, mode: tally_collector::plan::Mode) -> Harness {
        let file = self.dir.join("plan.yaml");
        std::fs::write(
            &file,
            "name: router\nevents:\n  - name: Plan Checked\n    versions:\n      - version: 1\n        properties:\n          type: object\n          required: [n]\n          properties:\n            n: { type: integer }\n",
        )
        .unwrap();
        let settings = tally_collector::plan::PlanSettings {
            file: Some(file),
            mode: Some(mode),
            sources: None,
        };
        let plans = tally_collector::plan::Plans::start(&settings, 0)
            .unwrap()
            .map(std::sync::Arc::new);
        self.state.plans = plans;
        self
    }

    fn app(&self) -> Router {
        app(self.state.clone())
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = self.app().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, headers, body)
    }

    async fn stats(&self) -> Value {
        let (status, _, body) = self.send(admin_get("/v1/stats")).await;
        assert_eq!(status, StatusCode::OK);
        body
    }
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

fn batch_request(path: &str, json: &Value) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, basic(KEY))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json.to_string()))
        .unwrap()
}

fn admin_get(path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap()
}

fn track(id: &str) -> Value {
    json!({
        "type": "track",
        "messageId": id,
        "anonymousId": "anon-1",
        "event": "Signed Up",
        "timestamp": format_timestamp(now_ms() - 1_000),
        "properties": {"plan": "pro"}
    })
}

fn statuses(body: &Value) -> Vec<(String, Option<String>)> {
    body["results"]
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

#[tokio::test]
async fn accepted_then_a_replay_is_all_duplicate_and_counts_do_not_move() {
    let h = harness("replay");
    let batch = json!({"batch": [track("m-1"), track("m-2"), track("m-3")], "sentAt": format_timestamp(now_ms())});
    let (status, _, body) = h.send(batch_request("/v1/batch", &batch)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicate"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(body["results"][0]["id"], "m-1");
    assert!(body["server_time"].as_str().unwrap().ends_with('Z'));
    let (status, _, body) = h.send(batch_request("/v1/batch", &batch)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicate"].as_u64()),
        (Some(0), Some(3))
    );
    let stats = h.stats().await;
    assert_eq!(
        stats,
        json!({"accepted": 3, "duplicate": 3, "rejected": 0, "events": 3,
               "dead_letters": {"kept": 0, "bytes": 0, "not_kept": 0, "truncated": 0}})
    );
    let (status, _, count) = h
        .send(admin_get("/v1/events/count?event=Signed%20Up"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count, json!({"count": 3, "users": 1}));
}

#[tokio::test]
async fn every_rejection_reason_reachable_over_http_is_answered_and_kept() {
    let h = harness("reasons").with_plan(tally_collector::plan::Mode::Enforce);
    // Delete a user first so that `deleted_user` is reachable.
    let deletion = Request::builder()
        .method(Method::POST)
        .uri("/v1/deletions")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::from(r#"{"userId":"gone"}"#))
        .unwrap();
    let (status, _, _) = h.send(deletion).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // And give a user events of its own, so that an alias merging it is
    // refused (`alias_of_identified_user`).
    let mut known = track("known-1");
    known["userId"] = json!("known");
    let (status, _, _) = h
        .send(batch_request("/v1/batch", &json!({ "batch": [known] })))
        .await;
    assert_eq!(status, StatusCode::OK);

    let ts = format_timestamp(now_ms());
    let good = || track("ok-1");
    let with = |patch: Value| {
        let mut m = track("x");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                m.as_object_mut().unwrap().remove(k);
            } else {
                m[k] = v.clone();
            }
        }
        m
    };
    let big = "x".repeat(25 * 1024);
    let deep = (0..40).fold(json!(1), |v, _| json!([v]));
    let cases: Vec<(Value, RejectReason)> = vec![
        (
            json!({"type": "track", "messageId": 5}),
            RejectReason::MalformedMessage,
        ),
        (
            with(json!({"messageId": "r1", "type": null})),
            RejectReason::MissingType,
        ),
        (
            with(json!({"messageId": "r2", "type": "purchase"})),
            RejectReason::UnknownType,
        ),
        (
            with(json!({"messageId": ""})),
            RejectReason::MissingMessageId,
        ),
        (
            with(json!({"messageId": "m".repeat(129)})),
            RejectReason::MessageIdTooLong,
        ),
        (
            with(json!({"messageId": "r3", "anonymousId": null, "userId": null})),
            RejectReason::MissingIdentity,
        ),
        (
            with(json!({"messageId": "r4", "userId": "u".repeat(256)})),
            RejectReason::IdTooLong,
        ),
        (
            with(json!({"messageId": "r5", "event": null})),
            RejectReason::MissingEventName,
        ),
        (
            with(json!({"messageId": "r6", "event": "e".repeat(256)})),
            RejectReason::EventNameTooLong,
        ),
        (
            json!({"type": "group", "messageId": "r7", "userId": "u", "timestamp": ts}),
            RejectReason::MissingGroupId,
        ),
        (
            json!({"type": "alias", "messageId": "r8", "userId": "u", "timestamp": ts}),
            RejectReason::MissingPreviousId,
        ),
        (
            with(json!({"messageId": "r9", "properties": [1, 2]})),
            RejectReason::PropertiesNotObject,
        ),
        (
            with(json!({"messageId": "r10", "properties": {"big": big}})),
            RejectReason::PropertiesTooLarge,
        ),
        (
            with(
                json!({"messageId": "r11", "properties": {"a": "y".repeat(20 * 1024)}, "context": {"pad": "z".repeat(13 * 1024)}}),
            ),
            RejectReason::MessageTooLarge,
        ),
        (
            with(json!({"messageId": "r12", "properties": {"deep": deep}})),
            RejectReason::NestingTooDeep,
        ),
        (
            with(json!({"messageId": "r13", "timestamp": "yesterday"})),
            RejectReason::BadTimestamp,
        ),
        (
            with(json!({"messageId": "r14", "context": {"tally": {"install_id": "i", "seq": 0}}})),
            RejectReason::SeqZero,
        ),
        (
            with(json!({"messageId": "r15", "context": {"tally": {"seq": 3}}})),
            RejectReason::BadInstallId,
        ),
        (
            with(json!({"messageId": "r16", "context": {"tally": {"schema": 0}}})),
            RejectReason::UnsupportedSchema,
        ),
        (
            with(json!({"messageId": "r17", "userId": "gone"})),
            RejectReason::DeletedUser,
        ),
        (
            with(json!({"messageId": "r18", "event": "Signed\u{0}Up"})),
            RejectReason::NulCharacter,
        ),
        (
            with(json!({"messageId": "r19", "event": "tally.dropped",
                "properties": {"reason": "queue_full", "ranges": [[1, 3]]},
                "context": {"tally": {"install_id": "i19", "seq": 3}}})),
            RejectReason::InvalidDropReport,
        ),
        (
            json!({"type": "alias", "messageId": "r20", "userId": "other", "previousId": "known",
                "timestamp": ts}),
            RejectReason::AliasOfIdentifiedUser,
        ),
        (
            with(json!({"messageId": "r21", "event": "Plan Checked",
                "properties": {"n": "three"}})),
            RejectReason::PlanViolation,
        ),
    ];
    let mut messages: Vec<Value> = cases.iter().map(|(m, _)| m.clone()).collect();
    messages.push(good());
    let (status, _, body) = h
        .send(batch_request("/v1/batch", &json!({ "batch": messages })))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut expected: Vec<(String, Option<String>)> = cases
        .iter()
        .map(|(_, r)| ("rejected".to_owned(), Some(r.as_str().to_owned())))
        .collect();
    expected.push(("accepted".to_owned(), None));
    assert_eq!(statuses(&body), expected);
    assert_eq!(body["deleted_users"], json!(["gone"]));
    assert_eq!(body["rejected"].as_u64(), Some(cases.len() as u64));
    // Every reason but `unrecognized` (a client-side code) was reached.
    let reached: std::collections::BTreeSet<_> = cases.iter().map(|(_, r)| *r).collect();
    let reachable: std::collections::BTreeSet<_> = RejectReason::ALL
        .iter()
        .copied()
        .filter(|r| *r != RejectReason::Unrecognized)
        .collect();
    assert_eq!(reached, reachable);
    let stats = h.stats().await;
    assert_eq!(stats["accepted"], 2);
    assert_eq!(stats["rejected"].as_u64(), Some(cases.len() as u64));
    assert_eq!(stats["events"], 2);

    // Every rejected message is kept with its reason (one request: the
    // order within it is the store's).
    let (status, _, kept) = h.send(admin_get("/v1/dead-letters?limit=1000")).await;
    assert_eq!(status, StatusCode::OK);
    let mut kept_reasons: Vec<&str> = kept["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    let mut sent_reasons: Vec<&str> = cases.iter().map(|(_, r)| r.as_str()).collect();
    kept_reasons.sort_unstable();
    sent_reasons.sort_unstable();
    assert_eq!(kept_reasons, sent_reasons);
    let (_, _, two) = h.send(admin_get("/v1/dead-letters?limit=2")).await;
    assert_eq!(two["dead_letters"].as_array().unwrap().len(), 2);
    let (status, _, _) = h.send(admin_get("/v1/dead-letters?limit=-1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn credentials_401_and_403() {
    let h = harness("auth");
    let body = json!({"batch": [track("a-1")]}).to_string();
    let without = Request::post("/v1/batch")
        .body(Body::from(body.clone()))
        .unwrap();
    let (status, _, answer) = h.send(without).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["code"], "unauthorized");
    assert!(answer["message"].as_str().unwrap().contains("missing"));

    let wrong = Request::post("/v1/batch")
        .header(header::AUTHORIZATION, basic("nope"))
        .body(Body::from(body.clone()))
        .unwrap();
    let (status, _, answer) = h.send(wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["message"], "unknown write key");

    // The header wins over a good key in the body.
    let header_wins = Request::post("/v1/batch")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::from(
            json!({"batch": [track("a-2")], "writeKey": KEY}).to_string(),
        ))
        .unwrap();
    assert_eq!(h.send(header_wins).await.0, StatusCode::UNAUTHORIZED);

    // The admin token is not a write key.
    let admin_as_write = Request::post("/v1/batch")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(h.send(admin_as_write).await.0, StatusCode::UNAUTHORIZED);

    // A write key is never an admin token: 403; no token 401.
    for path in ["/v1/stats", "/v1/events/count?event=x", "/v1/installs/i"] {
        let with_write_key = Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .body(Body::empty())
            .unwrap();
        let (status, _, answer) = h.send(with_write_key).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(answer["code"], "forbidden");
        let (status, _, _) = h
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let delete_with_write_key = Request::post("/v1/deletions")
        .header(header::AUTHORIZATION, basic(KEY))
        .body(Body::from(r#"{"userId":"u"}"#))
        .unwrap();
    assert_eq!(h.send(delete_with_write_key).await.0, StatusCode::FORBIDDEN);
    assert_eq!(h.stats().await["accepted"], 0);
}

#[tokio::test]
async fn the_write_key_may_come_from_body_message_or_query() {
    let h = harness("keyplaces");
    let in_body = Request::post("/v1/batch")
        .body(Body::from(
            json!({"batch": [track("k-1")], "writeKey": OTHER_KEY}).to_string(),
        ))
        .unwrap();
    assert_eq!(h.send(in_body).await.0, StatusCode::OK);
    let mut msg = track("k-2");
    msg["writeKey"] = json!(KEY);
    let in_message = Request::post("/v1/t")
        .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(Body::from(msg.to_string()))
        .unwrap();
    assert_eq!(h.send(in_message).await.0, StatusCode::OK);
    let beacon = Request::post(format!("/beacon/v1/batch?writeKey={KEY}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(json!({"batch": [track("k-3")]}).to_string()))
        .unwrap();
    let (status, _, body) = h.send(beacon).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["accepted"], 1);
    // The body's key wins over the query's.
    let body_wins = Request::post(format!("/beacon/v1/batch?writeKey={KEY}"))
        .body(Body::from(
            json!({"batch": [track("k-4")], "writeKey": "nope"}).to_string(),
        ))
        .unwrap();
    assert_eq!(h.send(body_wins).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(h.stats().await["accepted"], 3);
}

#[tokio::test]
async fn single_message_paths_give_the_type_a_message_lacks() {
    let h = harness("paths");
    let cases = [
        (
            "/v1/track",
            json!({"messageId": "p1", "userId": "u1", "event": "E"}),
        ),
        (
            "/v1/t",
            json!({"messageId": "p2", "userId": "u1", "event": "E"}),
        ),
        (
            "/v1/identify",
            json!({"messageId": "p3", "userId": "u1", "traits": {"plan": "pro"}}),
        ),
        ("/v1/i", json!({"messageId": "p4", "anonymousId": "a"})),
        (
            "/v1/page",
            json!({"messageId": "p5", "anonymousId": "a", "name": "Home"}),
        ),
        ("/v1/p", json!({"messageId": "p6", "anonymousId": "a"})),
        (
            "/v1/screen",
            json!({"messageId": "p7", "anonymousId": "a", "name": "Cart"}),
        ),
        ("/v1/s", json!({"messageId": "p8", "anonymousId": "a"})),
        (
            "/v1/group",
            json!({"messageId": "p9", "userId": "u1", "groupId": "g"}),
        ),
        (
            "/v1/g",
            json!({"messageId": "p10", "userId": "u1", "groupId": "g"}),
        ),
        (
            "/v1/alias",
            json!({"messageId": "p11", "userId": "u1", "previousId": "a"}),
        ),
        (
            "/v1/a",
            json!({"messageId": "p12", "userId": "u1", "previousId": "a"}),
        ),
        (
            "/v1/b",
            json!({"batch": [{"type": "track", "messageId": "p13", "userId": "u1", "event": "E"}]}),
        ),
    ];
    for (path, body) in &cases {
        let (status, _, answer) = h.send(batch_request(path, body)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(
            statuses(&answer),
            [("accepted".to_owned(), None)],
            "{path}: {answer}"
        );
    }
    assert_eq!(
        h.stats().await["accepted"].as_u64(),
        Some(cases.len() as u64)
    );
    let (_, _, count) = h.send(admin_get("/v1/events/count?event=E")).await;
    assert_eq!(count["count"], 3);
}

#[tokio::test]
async fn undecodable_bodies_and_digest_mismatch_are_400_and_store_nothing() {
    let h = harness("400");
    for body in [&b"{\"batch\":["[..], b"[1,2]", b"\xff\xfe", b""] {
        let request = Request::post("/v1/batch")
            .header(header::AUTHORIZATION, basic(KEY))
            .body(Body::from(body.to_vec()))
            .unwrap();
        let (status, _, answer) = h.send(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(answer["code"], "undecodable");
    }
    let json = json!({"batch": [track("d-1")]}).to_string();
    let corrupt_gzip = Request::post("/v1/batch")
        .header(header::AUTHORIZATION, basic(KEY))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(json.clone()))
        .unwrap();
    assert_eq!(h.send(corrupt_gzip).await.0, StatusCode::BAD_REQUEST);
    let mismatch = Request::post("/v1/batch")
        .header(header::AUTHORIZATION, basic(KEY))
        .header("content-digest", content_digest(b"something else"))
        .body(Body::from(json.clone()))
        .unwrap();
    let (status, _, answer) = h.send(mismatch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["code"], "digest_mismatch");
    assert_eq!(
        h.stats().await,
        json!({"accepted": 0, "duplicate": 0, "rejected": 0, "events": 0,
               "dead_letters": {"kept": 0, "bytes": 0, "not_kept": 0, "truncated": 0}})
    );
    let good = Request::post("/v1/batch")
        .header(header::AUTHORIZATION, basic(KEY))
        .header("content-digest", content_digest(json.as_bytes()))
        .body(Body::from(json))
        .unwrap();
    assert_eq!(h.send(good).await.0, StatusCode::OK);
    assert_eq!(h.stats().await["accepted"], 1);
}

#[tokio::test]
async fn size_limits_are_413_and_unknown_encodings_415() {
    let h = harness("413");
    let send_raw = |body: Vec<u8>, encoding: &str, length: Option<usize>| {
        let mut b = Request::post("/v1/batch").header(header::AUTHORIZATION, basic(KEY));
        if !encoding.is_empty() {
            b = b.header(header::CONTENT_ENCODING, encoding);
        }
        if let Some(n) = length {
            b = b.header(header::CONTENT_LENGTH, n);
        }
        b.body(Body::from(body)).unwrap()
    };
    // Declared length over 20 MiB: refused before reading.
    let (status, _, answer) = h
        .send(send_raw(Vec::new(), "", Some(21 * 1024 * 1024)))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["code"], "payload_too_large");
    // 17 MiB of whitespace-padded JSON: over the decoded limit.
    let mut padded = vec![b' '; 17 * 1024 * 1024];
    padded.extend_from_slice(br#"{"batch":[]}"#);
    assert_eq!(
        h.send(send_raw(padded, "", None)).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // A gzip bomb: 256 MiB of zeros.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..256 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        h.send(send_raw(bomb, "gzip", None)).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // More messages than the limit.
    let many = json!({"batch": vec![json!({}); tally_proto::limits::MAX_BATCH_MESSAGES + 1]});
    assert_eq!(
        h.send(send_raw(many.to_string().into_bytes(), "", None))
            .await
            .0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let (status, _, answer) = h.send(send_raw(b"{}".to_vec(), "br", None)).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer["code"], "unsupported_encoding");
    assert_eq!(h.stats().await["rejected"], 0);
}

#[tokio::test]
async fn a_500_kb_batch_is_always_accepted() {
    let h = harness("500kb");
    let mut messages = Vec::new();
    let mut size = 0;
    let mut i = 0;
    while size < tally_proto::limits::MAX_BATCH_BYTES - 2_000 {
        let mut m = track(&format!("big-{i}"));
        m["properties"] = json!({"pad": "p".repeat(900)});
        size += m.to_string().len() + 1;
        messages.push(m);
        i += 1;
    }
    let body = json!({"batch": messages}).to_string();
    assert!(body.len() <= tally_proto::limits::MAX_BATCH_BYTES);
    let (status, _, answer) = h
        .send(batch_request(
            "/v1/batch",
            &serde_json::from_str(&body).unwrap(),
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["accepted"].as_u64(), Some(i as u64));
}

#[tokio::test]
async fn saturation_is_429_with_retry_after() {
    let h = harness("429");
    let state = h.state.clone().with_max_in_flight(1);
    let held = state.ingest_slots.clone().try_acquire_owned().unwrap();
    let response = app(state.clone())
        .oneshot(batch_request(
            "/v1/batch",
            &json!({"batch": [track("s-1")]}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    drop(held);
    let response = app(state)
        .oneshot(batch_request(
            "/v1/batch",
            &json!({"batch": [track("s-1")]}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn admin_queries_and_their_errors() {
    let h = harness("admin");
    let now = now_ms();
    // The device clock is a day behind; its own sentAt says so, and the
    // corrected time lands in the last minute.
    let day = 24 * 3600 * 1000;
    let mut m = track("c-1");
    m["timestamp"] = json!(format_timestamp(now - day - 10_000));
    m["sentAt"] = json!(format_timestamp(now - day));
    m["context"] = json!({"tally": {"install_id": "inst-1", "seq": 1}});
    let mut m2 = track("c-2");
    m2["context"] = json!({"tally": {"install_id": "inst-1", "seq": 4}});
    let (status, _, _) = h
        .send(batch_request("/v1/batch", &json!({"batch": [m, m2]})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let from = format_timestamp(now - 60_000);
    let (status, _, count) = h
        .send(admin_get(&format!(
            "/v1/events/count?event=Signed%20Up&from={from}"
        )))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count["count"], 2);
    let to = format_timestamp(now - 5_000);
    let (_, _, count) = h
        .send(admin_get(&format!(
            "/v1/events/count?event=Signed%20Up&from={from}&to={to}"
        )))
        .await;
    assert_eq!(count["count"], 1, "only the corrected event is 10 s old");

    let (status, _, install) = h.send(admin_get("/v1/installs/inst-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(install["max_seq"], 4);
    assert_eq!(install["missing"], json!([[2, 3]]));
    assert_eq!(install["dropped"], 0);
    let (status, _, answer) = h.send(admin_get("/v1/installs/never-seen")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["code"], "not_found");

    for bad in [
        "/v1/events/count",
        "/v1/events/count?event=E&from=yesterday",
        "/v1/events/count?event=E&to=1",
    ] {
        let (status, _, answer) = h.send(admin_get(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer["code"], "bad_request");
    }
    let bad_deletion = Request::post("/v1/deletions")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(h.send(bad_deletion).await.0, StatusCode::BAD_REQUEST);
    let deletion = Request::post("/v1/deletions")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::from(r#"{"userId":"u-9"}"#))
        .unwrap();
    let (status, _, answer) = h.send(deletion).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer["deleted_events"], 0);
}

#[tokio::test]
async fn drop_reports_fill_completeness() {
    let h = harness("drops");
    let seq = |id: &str, n: u64| {
        let mut m = track(id);
        m["context"] = json!({"tally": {"install_id": "inst-d", "seq": n}});
        m
    };
    let mut report = seq("d-report", 5);
    report["event"] = json!("tally.dropped");
    report["properties"] = json!({"reason": "queue_full", "ranges": [[2, 3]]});
    let batch = json!({"batch": [seq("d-1", 1), report, seq("d-6", 6)]});
    assert_eq!(
        h.send(batch_request("/v1/batch", &batch)).await.0,
        StatusCode::OK
    );
    let (_, _, install) = h.send(admin_get("/v1/installs/inst-d")).await;
    assert_eq!(install["max_seq"], 6);
    assert_eq!(install["missing"], json!([[4, 4]]));
    assert_eq!(install["dropped"], 2);
}

/// Dead letters read a page at a time, newest first, by reason and by
/// time of receipt; `next_before_id` is the cursor of the following page.
#[tokio::test]
async fn dead_letters_are_paged_and_filtered() {
    let h = harness("dead-pages");
    let unnamed = |id: &str| {
        let mut m = track(id);
        m.as_object_mut().unwrap().remove("event");
        m
    };
    let seq_zero = |id: &str| {
        let mut m = track(id);
        m["context"] = json!({"tally": {"install_id": "inst-z", "seq": 0}});
        m
    };
    let batch = json!({"batch": [unnamed("n-1"), seq_zero("z-1"), unnamed("n-2"),
        seq_zero("z-2"), unnamed("n-3"), track("fine")]});
    let (status, _, body) = h.send(batch_request("/v1/batch", &batch)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        statuses(&body).iter().filter(|s| s.0 == "rejected").count(),
        5
    );

    let ids = |page: &Value| -> Vec<String> {
        page["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["message_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, _, first) = h.send(admin_get("/v1/dead-letters?limit=2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&first), ["n-3", "z-2"]);
    assert_eq!(first["next_before_id"], first["dead_letters"][1]["id"]);
    assert_eq!(first["totals"]["kept"], 5);
    let next = first["next_before_id"].as_i64().unwrap();
    let (_, _, second) = h
        .send(admin_get(&format!(
            "/v1/dead-letters?limit=2&before_id={next}"
        )))
        .await;
    assert_eq!(ids(&second), ["n-2", "z-1"]);
    let next = second["next_before_id"].as_i64().unwrap();
    let (_, _, last) = h
        .send(admin_get(&format!(
            "/v1/dead-letters?limit=2&before_id={next}"
        )))
        .await;
    assert_eq!(ids(&last), ["n-1"]);
    assert_eq!(
        last["next_before_id"],
        Value::Null,
        "a short page is the last"
    );

    let (_, _, by_reason) = h.send(admin_get("/v1/dead-letters?reason=seq_zero")).await;
    assert_eq!(ids(&by_reason), ["z-2", "z-1"]);
    assert_eq!(by_reason["next_before_id"], Value::Null);
    assert_eq!(by_reason["dead_letters"][0]["reason"], "seq_zero");
    let (_, _, none_yet) = h
        .send(admin_get(&format!(
            "/v1/dead-letters?since={}",
            format_timestamp(now_ms() + 60_000)
        )))
        .await;
    assert_eq!(ids(&none_yet), Vec::<String>::new());
    let (_, _, all_before) = h
        .send(admin_get(&format!(
            "/v1/dead-letters?reason=missing_event_name&until={}",
            format_timestamp(now_ms() + 60_000)
        )))
        .await;
    assert_eq!(ids(&all_before), ["n-3", "n-2", "n-1"]);

    for bad in [
        "/v1/dead-letters?reason=no_such_reason",
        "/v1/dead-letters?since=yesterday",
        "/v1/dead-letters?before_id=x",
        "/v1/dead-letters?limit=-1",
    ] {
        let (status, _, answer) = h.send(admin_get(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer["code"], "bad_request");
    }
}

/// `GET /v1/installs?stalled=` lists the installs whose latest beacon
/// shows an event pending longer than the threshold, oldest queue first.
#[tokio::test]
async fn stalled_installs_are_listed_by_their_latest_beacon() {
    let h = harness("stalled");
    let beacon = |id: &str, install: &str, pending: u64, age_s: f64| {
        let mut m = track(id);
        m["event"] = json!("tally.health");
        m["context"] = json!({"tally": {"install_id": install, "seq": 1}});
        m["properties"] = json!({"pending": pending, "pending_bytes": pending * 100,
            "oldest_pending_age_s": age_s, "consecutive_failures": 4});
        m
    };
    let batch = json!({"batch": [
        beacon("b-a", "inst-a", 5, 10.0),
        beacon("b-b", "inst-b", 3, 90_000.0),
        beacon("b-c", "inst-c", 7, 200_000.0),
        beacon("b-d", "inst-d", 0, 300_000.0),
    ]});
    let (status, _, body) = h.send(batch_request("/v1/batch", &batch)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        statuses(&body).iter().filter(|s| s.0 == "accepted").count(),
        4
    );
    let listed = |answer: &Value| -> Vec<(String, i64)> {
        answer["installs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["install_id"].as_str().unwrap().to_owned(),
                    b["pending"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let (status, _, default) = h.send(admin_get("/v1/installs")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(default["stalled_s"], 86_400.0);
    assert_eq!(
        listed(&default),
        [("inst-c".to_owned(), 7), ("inst-b".to_owned(), 3)],
        "a queue older than a day, with events in it"
    );
    assert_eq!(default["installs"][0]["oldest_pending_age_s"], 200_000.0);
    assert_eq!(default["installs"][0]["pending_bytes"], 700);
    assert_eq!(default["installs"][0]["consecutive_failures"], 4);
    let (_, _, low) = h.send(admin_get("/v1/installs?stalled=5")).await;
    assert_eq!(
        listed(&low),
        [
            ("inst-c".to_owned(), 7),
            ("inst-b".to_owned(), 3),
            ("inst-a".to_owned(), 5)
        ]
    );
    let (_, _, one) = h.send(admin_get("/v1/installs?stalled=5&limit=1")).await;
    assert_eq!(listed(&one), [("inst-c".to_owned(), 7)]);
    for bad in ["/v1/installs?stalled=-1", "/v1/installs?stalled=soon"] {
        let (status, _, answer) = h.send(admin_get(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer["code"], "bad_request");
    }
}

#[tokio::test]
async fn plain_endpoints_404_and_405() {
    let h = harness("plain");
    let (status, headers, body) = h
        .send(Request::get("/v1/time").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    let server_time = tally_proto::parse_timestamp(body["server_time"].as_str().unwrap()).unwrap();
    assert!((server_time - now_ms()).abs() < 5_000);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let (status, _, body) = h
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, _, body) = h
        .send(
            Request::post("/v1/m")
                .body(Body::from("{\"series\":[]}"))
                .unwrap(),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, _, body) = h
        .send(Request::get("/nope").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");
    let (status, _, body) = h
        .send(Request::get("/v1/batch").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "method_not_allowed");

    h.send(batch_request(
        "/v1/batch",
        &json!({"batch": [track("x-1"), track("x-1")]}),
    ))
    .await;
    let (status, headers, text) = h.send(admin_get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .contains("openmetrics"));
    let text = text.as_str().unwrap().to_owned();
    for line in [
        "tally_events_total{outcome=\"accepted\"} 1",
        "tally_events_total{outcome=\"duplicate\"} 1",
        "tally_dedup_total 1",
        "tally_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
        "tally_http_requests_total{route=\"/v1/batch\",status=\"405\"} 1",
        "tally_http_requests_total{route=\"/v1/batch\",status=\"200\"} 1",
        "tally_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
        "tally_http_requests_total{route=\"/v1/time\",status=\"200\"} 1",
        "tally_http_request_duration_seconds_count{route=\"/v1/batch\",status_class=\"4xx\"} 1",
        "tally_batch_duration_seconds_count 1",
        "tally_store_commit_duration_seconds_count 1",
        "tally_ingest_in_flight 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

fn preflight(path: &str, origin: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri(path)
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn ingest_cors_answers_any_origin_without_credentials() {
    let h = harness("cors");
    for origin in ["https://shop.example", "null"] {
        let (status, headers, _) = h.send(preflight("/v1/t", origin)).await;
        assert!(status.is_success(), "{status}");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization,content-type"
        );
        assert!(headers[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("POST"));
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }
    // An error answer carries them too, so the browser can read it.
    let unauthorized = Request::post("/v1/t")
        .header(header::ORIGIN, "https://shop.example")
        .body(Body::from("{}"))
        .unwrap();
    let (status, headers, _) = h.send(unauthorized).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let ok = Request::post("/v1/t")
        .header(header::ORIGIN, "https://shop.example")
        .header(header::AUTHORIZATION, basic(KEY))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(track("cors-1").to_string()))
        .unwrap();
    let (status, headers, _) = h.send(ok).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
}

#[tokio::test]
async fn admin_cors_answers_only_configured_origins() {
    let h = harness("cors-admin");
    let with_origin = |path: &str, origin: &str| {
        let mut request = admin_get(path);
        request
            .headers_mut()
            .insert(header::ORIGIN, origin.parse().unwrap());
        request
    };
    // None configured: no page of another origin may read an answer.
    for origin in ["https://evil.example", "null"] {
        let (status, headers, _) = h.send(with_origin("/v1/stats", origin)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        let (_, headers, _) = h.send(preflight("/v1/deletions", origin)).await;
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }
    let state = h
        .state
        .clone()
        .with_cors_origins(&["https://admin.example".to_owned()]);
    let send = |request: Request<Body>| {
        let app = app(state.clone());
        async move { app.oneshot(request).await.unwrap() }
    };
    let allowed = send(with_origin("/v1/stats", "https://admin.example")).await;
    assert_eq!(
        allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://admin.example"
    );
    assert!(!allowed
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    let preflight_ok = send(preflight("/v1/deletions", "https://admin.example")).await;
    assert_eq!(
        preflight_ok.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://admin.example"
    );
    for origin in ["https://evil.example", "null"] {
        let refused = send(with_origin("/v1/export", origin)).await;
        assert!(!refused
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }
    // The metrics are an admin path too, and need a token.
    let metrics = send(
        Request::get("/metrics")
            .header(header::ORIGIN, "https://evil.example")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(metrics.status(), StatusCode::UNAUTHORIZED);
    assert!(!metrics
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[tokio::test]
async fn small_decode_limits_come_from_the_state() {
    let h = harness("limits");
    let state = h.state.clone().with_limits(DecodeLimits {
        max_batch_messages: 2,
        ..DecodeLimits::default()
    });
    let response = app(state)
        .oneshot(batch_request(
            "/v1/batch",
            &json!({"batch": [track("l-1"), track("l-2"), track("l-3")]}),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_locked_store_is_503_with_retry_after_and_nothing_is_accepted() {
    use tally_collector::store::{SqliteOptions, SqliteStore};
    let dir = std::env::temp_dir().join(format!("tally-router-503-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(store::SQLITE_FILE_NAME);
    let options = SqliteOptions {
        busy_timeout: std::time::Duration::from_millis(50),
        ..SqliteOptions::default()
    };
    let sqlite = SqliteStore::open_with(&path, options).unwrap();
    let state = AppState::new(
        std::sync::Arc::new(sqlite),
        Keys::new([KEY.to_owned()], Some(ADMIN.to_owned())),
    );
    // Another process holding the write lock (a backup, an operator's
    // sqlite3 shell) makes the store busy.
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let batch = json!({"batch": [track("busy-1")]});
    let response = app(state.clone())
        .oneshot(batch_request("/v1/batch", &batch))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["code"], "unavailable");
    locker.execute_batch("ROLLBACK").unwrap();
    // Once the lock is gone the resend is accepted: nothing was half-stored.
    let response = app(state.clone())
        .oneshot(batch_request("/v1/batch", &batch))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["accepted"], 1);
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A read token and a metrics token, besides the harness's keys.
const READ: &str = "read-token-0123456789";
const METRICS: &str = "metrics-token-0123456789";
const WRONG: &str = "not-a-token-0123456789";
/// The stored key the role walk rotates and revokes.
const ROLES_KEY_ID: &str = "rt_00000000000000aa";

/// What a credential must get on a route: the status when the route is
/// walked with that credential and a valid request.
fn expected(route: &RouteInfo, method: &str, credential: Option<&str>) -> StatusCode {
    use StatusCode as S;
    let ok = match (method, route.path) {
        ("POST", "/v1/deletions") => S::ACCEPTED,
        ("POST", "/v1/keys") => S::CREATED,
        _ => S::OK,
    };
    let known = |allowed: &[&str]| match credential {
        None => S::UNAUTHORIZED,
        Some(c) if allowed.contains(&c) => ok,
        Some(c) if [KEY, READ, ADMIN, METRICS].contains(&c) => S::FORBIDDEN,
        Some(_) => S::UNAUTHORIZED,
    };
    match route.access {
        Access::App | Access::Public => ok,
        // A write key is all ingest takes; every other secret is an
        // unknown write key there.
        Access::WriteKey => match credential {
            Some(KEY) => ok,
            _ => S::UNAUTHORIZED,
        },
        // The settings documents: a known write key, in the path (else no
        // such document) or the Authorization header (else refused).
        Access::WriteKeyInRequest => match credential {
            Some(KEY) => ok,
            _ if route.path.contains("{write_key}") => S::NOT_FOUND,
            _ => S::UNAUTHORIZED,
        },
        Access::Read => known(&[READ, ADMIN]),
        Access::Admin => known(&[ADMIN]),
        Access::Metrics => known(&[ADMIN, METRICS]),
    }
}

/// A valid request to `path` (parameters filled in; `asset` is one of the
/// dashboard's) by `method`.
fn example(
    path: &str,
    method: &str,
    credential: Option<&str>,
    asset: &str,
    n: usize,
) -> Request<Body> {
    let uri = path
        .replace("{install_id}", "install-roles")
        .replace("{key_id}", ROLES_KEY_ID)
        .replace("{person_id}", "user-roles-1")
        .replace("{file}", asset)
        .replace("{write_key}", credential.unwrap_or("none"));
    let uri = match uri.as_str() {
        "/v1/events/count" => "/v1/events/count?event=Signed%20Up".to_owned(),
        "/v1/query/funnel" => "/v1/query/funnel?steps=Signed%20Up,Order%20Completed".to_owned(),
        "/v1/query/breakdown" => {
            "/v1/query/breakdown?event=Signed%20Up&by=properties.plan".to_owned()
        }
        _ => uri,
    };
    let message = json!({
        "messageId": format!("roles-{n}"),
        "anonymousId": "anon-roles",
        "userId": format!("user-roles-{n}"),
        "previousId": format!("before-roles-{n}"),
        "groupId": "group-roles",
        "event": "Signed Up",
        "name": "Home",
    });
    let body = match (method, uri.as_str()) {
        ("GET", _) => Body::empty(),
        (_, "/v1/batch" | "/v1/b" | "/beacon/v1/batch") => {
            let mut message = message;
            message["type"] = json!("track");
            Body::from(json!({ "batch": [message] }).to_string())
        }
        (_, "/v1/deletions") => Body::from(json!({ "userId": format!("gone-{n}") }).to_string()),
        (_, "/v1/m") => Body::from("{}"),
        (_, "/v1/keys") => Body::from(json!({ "kind": "read", "name": "roles" }).to_string()),
        (_, p) if p.starts_with("/v1/keys/") => Body::from("{}"),
        _ => Body::from(message.to_string()),
    };
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "collector.example")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(c) = credential {
        request = request.header(header::AUTHORIZATION, format!("Bearer {c}"));
    }
    let mut request = request.body(body).unwrap();
    // Each request from an address of its own: wrong credentials on
    // purpose must not trip the per-client throttle of the next ones.
    let [a, b] = u16::try_from(n).unwrap().to_be_bytes();
    request
        .extensions_mut()
        .insert(ClientAddr(std::net::SocketAddr::from((
            [10, 9, a, b],
            40_000,
        ))));
    request
}

/// Walks every route of the router's table with every credential and
/// none: the status is the one the route's role says, on every route.
#[tokio::test]
async fn every_route_answers_every_credential_as_its_role_says() {
    let mut h = harness("roles").with_plan(tally_collector::plan::Mode::Warn);
    h.state.keys = std::sync::Arc::new(
        Keys::new([KEY.to_owned()], Some(ADMIN.to_owned()))
            .with_read_tokens([READ.to_owned()])
            .with_metrics_token(Some(METRICS.to_owned())),
    );
    // A key to rotate and revoke (once, by the admin token).
    h.state
        .store
        .create_key(&NewKey {
            id: ROLES_KEY_ID.to_owned(),
            kind: KeyKind::Read,
            name: "roles".to_owned(),
            origin: KeyOrigin::Api,
            created_at: now_ms(),
            digest: tally_collector::keyring::digest("roles-key-secret-0123456789"),
        })
        .unwrap();
    let seed = json!({"batch": [{
        "type": "track", "messageId": "roles-seed", "anonymousId": "anon-roles",
        "event": "Signed Up", "context": {"tally": {"install_id": "install-roles", "seq": 1}}
    }]});
    assert_eq!(
        h.send(batch_request("/v1/batch", &seed)).await.0,
        StatusCode::OK
    );
    let (status, _, page) = h.send(example("/", "GET", None, "", 0)).await;
    assert_eq!(status, StatusCode::OK);
    let page = page.as_str().unwrap();
    let at = page.find("/assets/app.").unwrap() + "/assets/".len();
    let asset = &page[at..at + page[at..].find('"').unwrap()];
    let credentials = [
        None,
        Some(KEY),
        Some(READ),
        Some(ADMIN),
        Some(METRICS),
        Some(WRONG),
    ];
    let table = routes::table();
    let mut walked = 0;
    let mut wrong = Vec::new();
    for route in &table {
        for method in route.methods {
            for credential in credentials {
                walked += 1;
                let request = example(route.path, method, credential, asset, walked);
                let (status, _, body) = h.send(request).await;
                let want = expected(route, method, credential);
                if status != want {
                    wrong.push(format!(
                        "{method} {} ({:?}) with {credential:?}: {status}, expected {want}: {body}",
                        route.path, route.access
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every route, every method, six credentials each.
    let methods: usize = table.iter().map(|r| r.methods.len()).sum();
    assert_eq!(walked, methods * credentials.len());
    assert_eq!(table.len(), 51);
    // Who may do what is a decision: changing it changes this list.
    let by_access = |access: Access| -> Vec<&str> {
        let mut paths: Vec<&str> = table
            .iter()
            .filter(|r| r.access == access)
            .map(|r| r.path)
            .collect();
        paths.sort_unstable();
        paths
    };
    assert_eq!(
        by_access(Access::Admin),
        [
            "/v1/alerts",
            "/v1/audit",
            "/v1/dead-letters",
            "/v1/deletions",
            "/v1/health/pipeline",
            "/v1/installs",
            "/v1/installs/{install_id}",
            "/v1/installs/{install_id}/events",
            "/v1/keys",
            "/v1/keys/{key_id}/revoke",
            "/v1/keys/{key_id}/rotate",
            "/v1/people/{person_id}/export",
            "/v1/plan/reload",
        ]
    );
    assert_eq!(
        by_access(Access::Read),
        [
            "/v1/events/count",
            "/v1/export",
            "/v1/me",
            "/v1/plan",
            "/v1/quality",
            "/v1/query/active",
            "/v1/query/breakdown",
            "/v1/query/events",
            "/v1/query/finality",
            "/v1/query/funnel",
            "/v1/query/retention",
            "/v1/query/sessions",
            "/v1/query/top-events",
            "/v1/stats",
        ]
    );
    assert_eq!(by_access(Access::Metrics), ["/metrics"]);
    assert_eq!(
        by_access(Access::Public),
        ["/", "/assets/{file}", "/healthz", "/openapi.json"]
    );
    assert_eq!(by_access(Access::App), ["/v1/m", "/v1/time"]);
    assert_eq!(by_access(Access::WriteKey).len(), 15);
    // The table names each path once.
    let mut paths: Vec<&str> = table.iter().map(|r| r.path).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), table.len());
}

/// `GET /v1/me` tells the dashboard which views to show.
#[tokio::test]
async fn me_names_the_role_of_the_token() {
    let mut h = harness("me");
    h.state.keys = std::sync::Arc::new(
        Keys::new([KEY.to_owned()], Some(ADMIN.to_owned())).with_read_tokens([READ.to_owned()]),
    );
    for (token, role) in [(READ, "read"), (ADMIN, "admin")] {
        let (status, _, body) = h.send(example("/v1/me", "GET", Some(token), "", 1)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({ "role": role }));
    }
}

/// `POST /v1/deletions` takes a user id, an anonymous id or an install
/// id (exactly one); a never-identified person's late events are refused
/// after it, and the list names each request's kind.
#[tokio::test]
async fn deletion_by_anonymous_id_or_install_id() {
    let h = harness("erase");
    let anonymous = |id: &str, anon: &str, install: &str| {
        json!({
            "type": "track", "messageId": id, "anonymousId": anon, "event": "Opened",
            "timestamp": format_timestamp(now_ms() - 1_000),
            "context": {"tally": {"install_id": install, "seq": 1}},
        })
    };
    let batch = json!({"batch": [
        anonymous("e1", "anon-erase", "inst-1"),
        anonymous("e2", "anon-keep", "inst-erase"),
    ]});
    assert_eq!(
        h.send(batch_request("/v1/batch", &batch)).await.0,
        StatusCode::OK
    );
    let delete = |body: Value| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/deletions")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    for bad in [
        json!({}),
        json!({"userId": "u", "anonymousId": "a"}),
        json!({"anonymousId": ""}),
        json!({"deviceId": "d"}),
    ] {
        let (status, _, body) = h.send(delete(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _, report) = h.send(delete(json!({"anonymousId": "anon-erase"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        report,
        json!({"deleted_events": 1, "deleted_dead_letters": 0, "aliased_user_ids": []})
    );
    let (status, _, report) = h.send(delete(json!({"installId": "inst-erase"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(report["deleted_events"], 1);
    // The offline device syncs later: refused, with the reason.
    let late = json!({"batch": [anonymous("e3", "anon-erase", "inst-2")]});
    let (_, _, body) = h.send(batch_request("/v1/batch", &late)).await;
    assert_eq!(
        statuses(&body),
        [("rejected".to_owned(), Some("deleted_user".to_owned()))]
    );
    let (_, _, list) = h.send(admin_get("/v1/deletions")).await;
    let rows = list["deletions"].as_array().unwrap();
    assert_eq!(rows[0]["kind"], "installId");
    assert_eq!(rows[0]["installId"], "inst-erase");
    assert_eq!(rows[1]["kind"], "anonymousId");
    assert_eq!(rows[1]["anonymousId"], "anon-erase");
    assert_eq!(rows[1]["deleted_events"], 1);
    assert!(rows[1].get("userId").is_none());
}

/// `GET /v1/people/{id}/export`: one person's stored events for an access
/// request, as export lines: a user's own and stitched events, or a
/// device's anonymous ones, and nothing of anyone else.
#[tokio::test]
async fn a_person_export_holds_that_person_and_no_one_else() {
    let h = harness("person");
    let ts = |ms: i64| format_timestamp(now_ms() - ms);
    let batch = json!({"batch": [
        {"type": "track", "messageId": "p1", "anonymousId": "anon-p", "event": "Opened",
         "timestamp": ts(5_000), "properties": {"n": 1}},
        {"type": "identify", "messageId": "p2", "anonymousId": "anon-p", "userId": "user-p",
         "timestamp": ts(4_000)},
        {"type": "track", "messageId": "p3", "userId": "user-p", "event": "Paid",
         "timestamp": ts(3_000)},
        {"type": "track", "messageId": "o1", "anonymousId": "anon-o", "event": "Opened",
         "timestamp": ts(2_000), "context": {"tally": {"install_id": "inst-o", "seq": 1}}},
    ]});
    assert_eq!(
        h.send(batch_request("/v1/batch", &batch)).await.0,
        StatusCode::OK
    );
    // One line is read back as a JSON object, several as text.
    let ids = |body: &Value| -> Vec<String> {
        let lines: Vec<Value> = match body {
            Value::Object(_) => vec![body.clone()],
            other => other
                .as_str()
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        };
        lines
            .iter()
            .map(|v| v["messageId"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, headers, body) = h.send(admin_get("/v1/people/user-p/export")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-ndjson");
    // The user's own events and the anonymous one stitched to them.
    assert_eq!(ids(&body), ["p1", "p2", "p3"]);
    let line: Value = serde_json::from_str(body.as_str().unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(line["properties"], json!({"n": 1}));
    assert!(line["receivedAt"].is_string());
    let (_, _, body) = h
        .send(admin_get("/v1/people/anon-o/export?kind=anonymousId"))
        .await;
    assert_eq!(ids(&body), ["o1"]);
    let (_, _, body) = h
        .send(admin_get("/v1/people/inst-o/export?kind=installId"))
        .await;
    assert_eq!(ids(&body), ["o1"]);
    let own = tally_collector::ingest::auth::source_id(KEY);
    let (_, _, body) = h
        .send(admin_get(&format!("/v1/people/user-p/export?source={own}")))
        .await;
    assert_eq!(ids(&body), ["p1", "p2", "p3"]);
    let other = tally_collector::ingest::auth::source_id(OTHER_KEY);
    let (_, _, body) = h
        .send(admin_get(&format!(
            "/v1/people/user-p/export?source={other}"
        )))
        .await;
    assert!(ids(&body).is_empty());
    let (status, _, body) = h.send(admin_get("/v1/people/nobody/export")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::Null);
    let (status, _, _) = h
        .send(admin_get("/v1/people/user-p/export?kind=email"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
