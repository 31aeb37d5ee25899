//! The OpenAPI document: every route of the table is described, the
//! document served at `/openapi.json` is the one committed as
//! `docs/openapi.json`, and its operations are exactly the table's.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::Value;
use tally_collector::api::routes::{self, Access};
use tally_collector::api::{app, openapi, AppState};
use tally_collector::client::ClientAddr;
use tally_collector::ingest::auth::Keys;
use tally_collector::store;
use tower::ServiceExt as _;

fn committed() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn every_route_is_described() {
    assert_eq!(openapi::undescribed(), Vec::<(&str, &str)>::new());
}

#[test]
fn the_committed_document_is_the_generated_one() {
    assert!(
        committed() == openapi::json(),
        "docs/openapi.json is out of date: run `cargo run -- openapi > docs/openapi.json`"
    );
}

#[test]
fn the_http_api_reference_lists_every_route_as_the_document_does() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/http-api.md");
    let page = std::fs::read_to_string(path).unwrap();
    let begin = "<!-- routes:begin (generated: tally openapi --reference) -->\n";
    let end = "<!-- routes:end -->";
    let start = page
        .find(begin)
        .expect("docs/http-api.md has no routes:begin marker")
        + begin.len();
    let stop = page[start..].find(end).expect("no routes:end marker") + start;
    assert!(
        page[start..stop] == openapi::reference_markdown(),
        "docs/http-api.md's route reference is out of date: run `cargo run -- openapi --reference` \
         and paste it between the markers"
    );
}

#[test]
fn the_document_has_one_operation_per_route_and_method_with_its_role() {
    let doc: Value = serde_json::from_str(openapi::json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((path.clone(), method.to_uppercase()));
            let ids = op["security"].as_array().map(Vec::len).unwrap_or(0);
            let route = routes::table()
                .into_iter()
                .find(|r| r.path == path)
                .unwrap();
            // A credentialed route says which scheme, and answers 401.
            let credentialed = !matches!(
                route.access,
                Access::App | Access::Public | Access::WriteKeyInRequest
            );
            assert_eq!(ids > 0, credentialed, "{method} {path}");
            if credentialed {
                assert!(op["responses"].get("401").is_some(), "{method} {path}");
            }
            assert_eq!(
                op["description"],
                format!("Role: {}.", route.access.as_str()),
                "{method} {path}"
            );
        }
    }
    let table: BTreeSet<(String, String)> = routes::table()
        .into_iter()
        .flat_map(|r| {
            r.methods
                .iter()
                .map(move |m| (r.path.to_owned(), (*m).to_owned()))
        })
        .collect();
    assert_eq!(documented, table);
    assert_eq!(documented.len(), 53);
    // Operation ids are unique: clients are generated from them.
    let ids: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 53);
}

#[tokio::test]
async fn the_collector_serves_the_committed_document() {
    let dir = std::env::temp_dir().join(format!("tally-openapi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = store::open(&dir, None).unwrap();
    let state = AppState::new(store, Keys::new(["k".to_owned()], Some("admin".to_owned())));
    let mut request = Request::get("/openapi.json").body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(ClientAddr("127.0.0.1:9".parse().unwrap()));
    let response = app(state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(body.to_vec()).unwrap(), committed());
    let _ = std::fs::remove_dir_all(&dir);
}
