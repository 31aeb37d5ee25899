//! The request shapes of the browser libraries (Segment's analytics-next,
//! RudderStack's analytics-js v3), replayed against the real `tally serve`:
//! `text/plain` JSON, one event per request on the short paths, the write
//! key in a Basic header, in every event, or in the beacon's query string,
//! `originalTimestamp` and per-event `sentAt`, empty-string ids, and CORS.
//! (Running the libraries in a browser comes with the web SDK work.)

#![allow(clippy::unwrap_used)]

mod serve_support;

use base64::Engine as _;
use serde_json::{json, Value};
use serve_support::*;
use tally_collector::clock::now_ms;
use tally_proto::format_timestamp;

const ORIGIN: &str = "https://shop.example";

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
    )
}

/// A track as analytics-next sends it to `/v1/t`.
fn analytics_next_track(n: u32) -> Value {
    let now = now_ms();
    json!({
        "timestamp": format_timestamp(now - 2_000),
        "integrations": {},
        "type": "track",
        "properties": {"plan": "pro", "n": n},
        "event": "Browser Signed Up",
        "messageId": format!("ajs-next-{now}-8e7c5a2e-3b1f-4c0e-9a8d-{n:012}"),
        "anonymousId": "5e4b6a0c-7f1d-4c4e-8a59-0d9c3f1e2b7a",
        "userId": null,
        "context": {
            "page": {"path": "/", "referrer": "", "search": "", "title": "Shop", "url": "https://shop.example/"},
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
            "userAgentData": {"brands": [{"brand": "Chromium", "version": "126"}], "mobile": false, "platform": "Linux"},
            "locale": "en-US",
            "library": {"name": "analytics.js", "version": "next-1.70.0"},
            "timezone": "Europe/Paris"
        },
        "writeKey": WRITE_KEY,
        "sentAt": format_timestamp(now - 1_000),
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []}
    })
}

/// An event as RudderStack's analytics-js v3 sends it.
fn rudder_js_event(kind: &str, n: u32) -> Value {
    let now = now_ms();
    let mut event = json!({
        "channel": "web",
        "context": {
            "app": {"name": "RudderLabs JavaScript SDK", "namespace": "com.rudderlabs.javascript", "version": "3.0.0", "installType": "npm"},
            "traits": {},
            "library": {"name": "RudderLabs JavaScript SDK", "version": "3.0.0"},
            "locale": "en-US",
            "screen": {"density": 2, "width": 1440, "height": 900, "innerWidth": 1440, "innerHeight": 800},
            "page": {"path": "/p", "referrer": "$direct", "search": "", "title": "", "url": "https://shop.example/p", "initial_referrer": "$direct"},
            "timezone": "GMT+0100",
            "sessionId": now - 60_000,
            "sessionStart": n == 0
        },
        "type": kind,
        "originalTimestamp": format_timestamp(now - 3_000),
        "anonymousId": "b2d4f6a8-1c3e-4a5b-9d7f-0e2c4a6b8d0f",
        "userId": "",
        "integrations": {"All": true},
        "messageId": format!("d8f0b2c4-rudder-{kind}-{n:06}-{now}"),
        "sentAt": format_timestamp(now - 500),
        "rudderId": "4a6c8e0a-2b4d-4f6a-8c0e-2a4c6e8a0c2e"
    });
    match kind {
        "track" => {
            event["event"] = json!("Browser Product Viewed");
            event["properties"] = json!({"sku": format!("A{n}")});
        }
        "page" => {
            event["name"] = json!("Browser Home");
            event["properties"] = json!({"path": "/p"});
        }
        "identify" => {
            event["userId"] = json!("browser-user");
            event["context"]["traits"] = json!({"plan": "pro"});
        }
        _ => {}
    }
    event
}

fn send(
    agent: &ureq::Agent,
    server: &Server,
    path: &str,
    auth: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut request = agent
        .post(server.url(path))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", ORIGIN);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    read(request.send(body.to_string().as_bytes()).unwrap())
}

fn accepted(answer: &Value) -> u64 {
    answer["accepted"].as_u64().unwrap()
}

#[test]
fn analytics_next_single_events_and_batching_mode() {
    let dir = temp_dir("next");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    // Default mode: one event per request to /v1/t, key in header and body.
    for n in 0..3 {
        let (status, answer) = send(
            &agent,
            &server,
            "/v1/t",
            Some(&basic()),
            &analytics_next_track(n),
        );
        assert_eq!(status, 200, "{answer}");
        assert_eq!(accepted(&answer), 1);
    }
    // The page and identify short paths.
    let mut page = analytics_next_track(10);
    page["type"] = json!("page");
    page["name"] = json!("Browser Home");
    assert_eq!(
        accepted(&send(&agent, &server, "/v1/p", Some(&basic()), &page).1),
        1
    );
    let mut identify = analytics_next_track(11);
    identify["type"] = json!("identify");
    identify["userId"] = json!("browser-user");
    identify["traits"] = json!({"plan": "pro"});
    assert_eq!(
        accepted(&send(&agent, &server, "/v1/i", Some(&basic()), &identify).1),
        1
    );
    // Batching mode: /v1/b with the key only inside each event.
    let batch = json!({"batch": [analytics_next_track(20), analytics_next_track(21)], "sentAt": format_timestamp(now_ms())});
    let (status, answer) = send(&agent, &server, "/v1/b", None, &batch);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(accepted(&answer), 2);
    // Client telemetry is taken and dropped.
    assert_eq!(
        send(&agent, &server, "/v1/m", None, &json!({"series": []})).0,
        200
    );
    let (_, count) = admin_get(
        &agent,
        &server.url("/v1/events/count?event=Browser%20Signed%20Up"),
    );
    assert_eq!(count["count"], 5);
    assert_eq!(count["users"], 1);
    assert_eq!(stats(&agent, &server), (7, 0, 0, 7));
}

#[test]
fn rudderstack_js_paths_and_the_beacon() {
    let dir = temp_dir("rudderjs");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    for (path, kind) in [
        ("/v1/track", "track"),
        ("/v1/page", "page"),
        ("/v1/identify", "identify"),
    ] {
        let (status, answer) = send(
            &agent,
            &server,
            path,
            Some(&basic()),
            &rudder_js_event(kind, 0),
        );
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(accepted(&answer), 1, "{path}");
    }
    // The beacon on page unload: key in the query, no header.
    let beacon = json!({
        "batch": [rudder_js_event("track", 1), rudder_js_event("track", 2), rudder_js_event("track", 3)],
        "sentAt": format_timestamp(now_ms())
    });
    let (status, answer) = send(
        &agent,
        &server,
        &format!("/beacon/v1/batch?writeKey={WRITE_KEY}"),
        None,
        &beacon,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(accepted(&answer), 3);
    // Sent again (the beacon fired twice): duplicates.
    let (_, answer) = send(
        &agent,
        &server,
        &format!("/beacon/v1/batch?writeKey={WRITE_KEY}"),
        None,
        &beacon,
    );
    assert_eq!(answer["duplicate"], 3);
    let (_, count) = admin_get(
        &agent,
        &server.url("/v1/events/count?event=Browser%20Product%20Viewed"),
    );
    assert_eq!(count["count"], 4);
    assert_eq!(stats(&agent, &server), (6, 3, 0, 6));
    // A wrong key in the query is refused.
    let (status, answer) = send(
        &agent,
        &server,
        "/beacon/v1/batch?writeKey=wrong",
        None,
        &beacon,
    );
    assert_eq!(status, 401);
    assert_eq!(answer["code"], "unauthorized");
}

#[test]
fn cors_preflight_and_headers_over_the_wire() {
    let dir = temp_dir("cors");
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    let preflight = ureq::http::Request::builder()
        .method("OPTIONS")
        .uri(server.url("/v1/t"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .body(())
        .unwrap();
    let response = agent.run(preflight).unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let h = response.headers();
    // Any origin, without credentials: the write key is public.
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h.get("access-control-allow-credentials").is_none());
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization,content-type"
    );
    let response = agent
        .post(server.url("/v1/t"))
        .header("origin", ORIGIN)
        .header("authorization", basic())
        .send(analytics_next_track(0).to_string().as_bytes())
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}
