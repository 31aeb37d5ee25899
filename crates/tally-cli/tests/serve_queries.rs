//! Black-box tests of the product query API and `tally query`: the real
//! binary on 127.0.0.1, filled over HTTP, asked over HTTP and from the
//! command line.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::process::Command;

use serde_json::{json, Value};
use serve_support::*;

fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    read(request.call().unwrap())
}

/// 40 events from install q (anonymous), 10 from install r: two people.
fn filled_server(name: &str) -> (tempfile::TempDir, Server) {
    let dir = temp_dir(name);
    let server = Server::start(dir.path(), None, &[]);
    let agent = agent();
    for batch in batches("q", 1, 40).iter().chain(&batches("r", 1, 10)) {
        let (status, body) = post_batch(&agent, &server.base, batch).unwrap();
        assert_eq!(status, 200, "{body}");
    }
    (dir, server)
}

fn sum(rows: &Value, key: &str) -> u64 {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r[key].as_u64().unwrap())
        .sum()
}

#[test]
fn the_query_endpoints_need_the_admin_token_and_answer_exact_numbers() {
    let (_dir, server) = filled_server("queries");
    let agent = agent();
    let url = server.url("/v1/query/events?event=Item%20Added");
    assert_eq!(get(&agent, &url, None).0, 401);
    assert_eq!(get(&agent, &url, Some("not-the-token")).0, 401);
    assert_eq!(get(&agent, &url, Some(WRITE_KEY)).0, 403);

    let (status, v) = get(&agent, &url, Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["total"], json!({"count": 50, "people": 2}));
    assert_eq!(
        (v["interval"].as_str(), v["tz"].as_str()),
        (Some("day"), Some("UTC"))
    );
    // The default window, the 30 days before now, touches 31 UTC days.
    assert_eq!(v["series"].as_array().unwrap().len(), 31);
    assert_eq!(sum(&v["series"], "count"), 50);

    let (_, v) = get(
        &agent,
        &server.url("/v1/query/top-events"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(
        v,
        json!({"rows": [{"event": "Item Added", "count": 50, "people": 2}]})
    );
    let (_, v) = get(
        &agent,
        &server.url("/v1/query/breakdown?event=Item%20Added&by=properties.sku"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(
        v["rows"],
        json!([{"value": "sku-1", "count": 50, "people": 2, "other": false}])
    );
    let (_, v) = get(
        &agent,
        &server.url("/v1/query/active?tz=Europe/Paris"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(sum(&v["series"], "people"), 2);
    let (_, v) = get(
        &agent,
        &server.url("/v1/query/funnel?steps=Item%20Added,Checkout"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(
        v["steps"][0],
        json!({"event": "Item Added", "people": 2, "conversion": 1.0})
    );
    assert_eq!(v["steps"][1]["people"], json!(0));
    let (_, v) = get(&agent, &server.url("/v1/query/sessions"), Some(ADMIN_TOKEN));
    assert_eq!(v["sessions"], json!(0));
    let (_, v) = get(
        &agent,
        &server.url("/v1/query/retention?days=2"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(v["cohorts"][0]["size"], json!(2));
}

#[test]
fn bad_parameters_are_400_with_the_rule_named() {
    let (_dir, server) = filled_server("queries-bad");
    let agent = agent();
    for path in [
        "/v1/query/events?tz=Nowhere/Land",
        "/v1/query/events?interval=minute",
        "/v1/query/events?from=2026-13-01T00:00:00Z",
        "/v1/query/active?window=year",
        "/v1/query/funnel?steps=one",
        "/v1/query/breakdown?event=Item%20Added&by=sku",
        "/v1/query/top-events?limit=0",
        "/v1/query/retention?days=365",
    ] {
        let (status, body) = get(&agent, &server.url(path), Some(ADMIN_TOKEN));
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], "bad_request", "{path}");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
}

fn tally_query(server: &Server, args: &[&str], token: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.arg("query")
        .args(args)
        .args(["--endpoint", &server.base])
        .env_remove("TALLY_ADMIN_TOKEN");
    if let Some(token) = token {
        cmd.env("TALLY_ADMIN_TOKEN", token);
    }
    cmd.output().unwrap()
}

#[test]
fn tally_query_prints_a_table_or_the_api_json() {
    let (_dir, server) = filled_server("queries-cli");
    let out = tally_query(&server, &["top-events"], Some(ADMIN_TOKEN));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["event", "count", "people"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["Item", "Added", "50", "2"]
    );

    let out = tally_query(
        &server,
        &["funnel", "Item Added", "Checkout", "--json"],
        Some(ADMIN_TOKEN),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let agent = agent();
    let (_, api) = get(
        &agent,
        &server.url("/v1/query/funnel?steps=Item%20Added,Checkout"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(v, api);

    let out = tally_query(
        &server,
        &["events", "--event", "Item Added", "--tz", "Asia/Kolkata"],
        Some(ADMIN_TOKEN),
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let total = table
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(total, ["total", "50", "2"]);
    assert!(table.contains("+05:30"), "{table}");
    // The empty days before the first event are left out of the table and
    // said on stderr.
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains(" empty buckets before and "), "{note}");
    assert!(!table.contains("empty buckets"), "{table}");

    let out = tally_query(&server, &["top-events"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin token"));
    let out = tally_query(
        &server,
        &["events", "--tz", "Nowhere/Land"],
        Some(ADMIN_TOKEN),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("400"));
}
