//! The settings documents of browser libraries, through the real router over
//! the real SQLite store: what analytics-next and RudderStack's JS SDK read
//! (where to send, no other destination), for known write keys only, with
//! the host and scheme read from the request and refused when malformed.
//! `sdks/web`'s browser tests load analytics-next itself against them.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine as _;
use serde_json::Value;
use tally_collector::api::{app, AppState};
use tally_collector::ingest::auth::Keys;
use tally_collector::store;
use tower::ServiceExt as _;

const KEY: &str = "site-write-key";

struct Harness {
    state: AppState,
    dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn harness(name: &str) -> Harness {
    let dir = std::env::temp_dir().join(format!("tally-settings-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = store::open(&dir, None).unwrap();
    let keys = Keys::new([KEY.to_owned()], Some("settings-admin-token".to_owned()));
    Harness {
        state: AppState::new(store, keys),
        dir,
    }
}

impl Harness {
    async fn get(
        &self,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app(self.state.clone())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let cache = response
            .headers()
            .get(header::CACHE_CONTROL)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            cache,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

#[tokio::test]
async fn segment_settings_send_to_this_collector_and_nowhere_else() {
    let h = harness("segment");
    let uri = format!("/v1/projects/{KEY}/settings");
    let (status, cache, doc) = h
        .get(
            &uri,
            &[("host", "127.0.0.1:8080"), ("origin", "http://shop.test")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache.as_deref(), Some("private, max-age=300"));
    let segment = &doc["integrations"]["Segment.io"];
    assert_eq!(segment["apiKey"], KEY);
    assert_eq!(segment["apiHost"], "127.0.0.1:8080/v1");
    assert_eq!(segment["protocol"], "http");
    assert_eq!(doc["integrations"].as_object().unwrap().len(), 1);
    assert_eq!(doc["remotePlugins"], serde_json::json!([]));
    assert_eq!(doc["metrics"]["sampleRate"], 0);

    // An https page, or a proxy saying so, gets https; unknown: https.
    for (headers, scheme) in [
        (
            vec![("host", "c.test"), ("origin", "https://shop.test")],
            "https",
        ),
        (
            vec![("host", "c.test"), ("x-forwarded-proto", "http")],
            "http",
        ),
        (vec![("host", "c.test")], "https"),
    ] {
        let (_, _, doc) = h.get(&uri, &headers).await;
        assert_eq!(
            doc["integrations"]["Segment.io"]["protocol"], scheme,
            "{headers:?}"
        );
    }
    let (_, _, doc) = h
        .get(
            &uri,
            &[
                ("host", "internal:9000"),
                ("x-forwarded-host", "collector.example.com"),
            ],
        )
        .await;
    assert_eq!(
        doc["integrations"]["Segment.io"]["apiHost"],
        "collector.example.com/v1"
    );

    let (status, _, doc) = h
        .get("/v1/projects/not-a-key/settings", &[("host", "c.test")])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(doc["code"], "not_found");
    let (status, _, _) = h.get(&uri, &[("host", "evil.test/phish?x=")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn rudderstack_source_config_for_a_known_key() {
    let h = harness("rudder");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"))
    );
    let uri = "/sourceConfig/?p=npm&v=3.11.0&build=modern&lockIntegrationsVersion=false";
    let (status, cache, doc) = h.get(uri, &[("authorization", &basic)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache.as_deref(), Some("private, max-age=300"));
    // What the SDK requires: a source with an id, an object config, an array of destinations.
    let source = &doc["source"];
    assert_eq!(source["id"], "tally");
    assert_eq!(source["writeKey"], KEY);
    assert!(source["config"].is_object());
    assert_eq!(source["destinations"], serde_json::json!([]));

    let (status, _, _) = h.get(&format!("{uri}&writeKey={KEY}"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, doc) = h.get(uri, &[]).await;
    assert_eq!(
        (status, doc["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, _, _) = h.get(&format!("{uri}&writeKey=wrong"), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
