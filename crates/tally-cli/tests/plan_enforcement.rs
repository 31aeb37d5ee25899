//! The tracking plan at the collector, black-box: `tally serve --plan` on
//! 127.0.0.1, on SQLite and on PostgreSQL. In `enforce` mode a violating
//! track event is rejected as `plan_violation` with the version, rule and
//! path in its dead letter; an event naming an older version is judged by
//! it; `warn` accepts and counts; a changed file is in force without a
//! restart, and one that does not load leaves the previous plan. Tally's
//! own `tally.` events are never counted as unplanned.

#![allow(clippy::unwrap_used)]

mod serve_support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serve_support::*;

/// Version 1: an order id and a non-negative amount. Version 2 also
/// requires a currency.
const PLAN: &str = "name: shop
events:
  - name: Order Completed
    versions:
      - version: 1
        properties:
          type: object
          required: [order_id, amount]
          properties:
            order_id: { type: string }
            amount: { type: number, minimum: 0 }
      - version: 2
        properties:
          type: object
          required: [order_id, amount, currency]
          properties:
            order_id: { type: string }
            amount: { type: number, minimum: 0 }
            currency: { enum: [EUR, USD] }
";

/// [`PLAN`] without version 2.
fn plan_v1_only() -> String {
    PLAN[..PLAN.find("      - version: 2").unwrap()].to_owned()
}

fn order(id: &str, version: Option<u32>, properties: Value) -> Value {
    let mut tally = json!({"install_id": "plan-install", "seq": 1});
    if let Some(v) = version {
        tally["event_version"] = json!(v);
    }
    json!({"type": "track", "messageId": id, "anonymousId": "a", "event": "Order Completed",
        "properties": properties, "context": {"tally": tally}})
}

/// One of the SDK's own events (`tally.health`, `tally.dropped`), from an
/// install of its own.
fn internal(id: &str, event: &str, seq: u64, properties: Value) -> Value {
    json!({"type": "track", "messageId": id, "anonymousId": "a", "event": event,
        "properties": properties,
        "context": {"tally": {"install_id": "sdk-install", "seq": seq}}})
}

fn post(server: &Server, messages: Vec<Value>) -> Vec<(String, String, Option<String>)> {
    let (status, answer) = read(
        agent()
            .post(server.url("/v1/batch"))
            .header("authorization", format!("Bearer {WRITE_KEY}"))
            .header("content-type", "application/json")
            .send(json!({ "batch": messages }).to_string())
            .unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
                r["reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn result(id: &str, status: &str, reason: Option<&str>) -> (String, String, Option<String>) {
    (id.to_owned(), status.to_owned(), reason.map(str::to_owned))
}

/// `(message id, detail)` of the `plan_violation` dead letters, oldest
/// first.
fn violations(server: &Server) -> Vec<(String, String)> {
    let (status, v) = admin_get(
        &agent(),
        &server.url("/v1/dead-letters?reason=plan_violation"),
    );
    assert_eq!(status, 200, "{v}");
    let mut out: Vec<(String, String)> = v["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["message_id"].as_str().unwrap().to_owned(),
                d["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.reverse();
    out
}

/// The value of the `tally_plan_findings_total` series whose labels
/// contain every one of `labels`.
fn findings(server: &Server, labels: &[&str]) -> u64 {
    let text = agent()
        .get(server.url("/metrics"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("tally_plan_findings_total{"))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn enforce_judges_each_event_by_the_version_it_names(server: &Server) {
    let got = post(
        server,
        vec![
            // Version 1 from a device offline since the old app: valid.
            order("o-1", Some(1), json!({"order_id": "a", "amount": 5})),
            // Version 2 without its currency.
            order("o-2", Some(2), json!({"order_id": "b", "amount": 5})),
            // No version: the latest, 2.
            order("o-3", None, json!({"order_id": "c", "amount": 5})),
            // Two violations of version 1: the first is named, the rest counted.
            order("o-4", Some(1), json!({"order_id": 4, "amount": -1})),
            order(
                "o-5",
                Some(2),
                json!({"order_id": "e", "amount": 1, "currency": "EUR"}),
            ),
            // Not in the plan: accepted and counted.
            json!({"type": "track", "messageId": "s-1", "anonymousId": "a", "event": "Song Played"}),
            // A version the plan does not have: accepted and counted.
            order("o-6", Some(7), json!({})),
            // Tally's own events: accepted, and not the plan's to count.
            internal("t-1", "tally.health", 1, json!({"pending": 0})),
            internal(
                "t-2",
                "tally.dropped",
                4,
                json!({"reason": "queue_full", "ranges": [[2, 3]]}),
            ),
        ],
    );
    assert_eq!(
        got,
        [
            result("o-1", "accepted", None),
            result("o-2", "rejected", Some("plan_violation")),
            result("o-3", "rejected", Some("plan_violation")),
            result("o-4", "rejected", Some("plan_violation")),
            result("o-5", "accepted", None),
            result("s-1", "accepted", None),
            result("o-6", "accepted", None),
            result("t-1", "accepted", None),
            result("t-2", "accepted", None),
        ]
    );
    assert_eq!(
        violations(server),
        [
            (
                "o-2".to_owned(),
                "Order Completed v2: required at /currency".to_owned()
            ),
            (
                "o-3".to_owned(),
                "Order Completed v2: required at /currency".to_owned()
            ),
            (
                "o-4".to_owned(),
                "Order Completed v1: minimum at /amount (and 1 more)".to_owned()
            ),
        ]
    );
    let rejected = [
        "finding=\"plan_violation\"",
        "action=\"rejected\"",
        "event=\"Order Completed\"",
    ];
    assert_eq!(findings(server, &rejected), 3);
    assert_eq!(
        findings(server, &["finding=\"unplanned\"", "event=\"\""]),
        1
    );
    assert_eq!(findings(server, &["finding=\"unknown_version\""]), 1);
    // Every finding of the batch: 3 rejected, 1 unplanned (`Song Played`
    // alone), 1 unknown version; the two `tally.` events add none.
    assert_eq!(findings(server, &[]), 5);
    quality_counts_what_the_store_took(server);
}

/// `(event, version, finding, rule, path, flagged, rejected, example ids)`.
type QualityRow = (String, u64, String, String, String, u64, u64, Vec<String>);

/// `tally quality --json` against the server: `(event, version, finding,
/// rule, path, flagged, rejected, example ids)` of each row, findings
/// then unplanned events.
fn quality(server: &Server, extra: &[&str]) -> Vec<QualityRow> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["quality", "--json", "--endpoint", &server.base])
        .args(extra)
        .env("TALLY_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = |v: &Value| v.as_str().unwrap().to_owned();
    ["findings", "unplanned"]
        .iter()
        .flat_map(|k| v[*k].as_array().unwrap().clone())
        .map(|r| {
            let ids = r["examples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| s(&e["message_id"]))
                .collect();
            (
                s(&r["event"]),
                r["version"].as_u64().unwrap(),
                s(&r["finding"]),
                s(&r["rule"]),
                s(&r["path"]),
                r["flagged"].as_u64().unwrap(),
                r["rejected"].as_u64().unwrap(),
                ids,
            )
        })
        .collect()
}

/// The store's quality counts after the batch above, through `tally
/// quality`: a retry of the accepted events adds nothing (they are
/// duplicates), and the filters select.
fn quality_counts_what_the_store_took(server: &Server) {
    let ids = |ids: &[&str]| ids.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let row =
        |event: &str, v: u64, finding: &str, rule: &str, path: &str, n: (u64, u64), ex: &[&str]| {
            (
                event.to_owned(),
                v,
                finding.to_owned(),
                rule.to_owned(),
                path.to_owned(),
                n.0,
                n.1,
                ids(ex),
            )
        };
    let expected = vec![
        row(
            "Order Completed",
            1,
            "plan_violation",
            "minimum",
            "/amount",
            (0, 1),
            &["o-4"],
        ),
        row(
            "Order Completed",
            2,
            "plan_violation",
            "required",
            "/currency",
            (0, 2),
            &["o-3", "o-2"],
        ),
        row(
            "Order Completed",
            7,
            "unknown_version",
            "",
            "",
            (1, 0),
            &["o-6"],
        ),
        row("Song Played", 0, "unplanned", "", "", (1, 0), &["s-1"]),
    ];
    assert_eq!(quality(server, &[]), expected);
    let retry = post(
        server,
        vec![
            json!({"type": "track", "messageId": "s-1", "anonymousId": "a", "event": "Song Played"}),
            order("o-6", Some(7), json!({})),
        ],
    );
    assert_eq!(
        retry,
        [
            result("s-1", "duplicate", None),
            result("o-6", "duplicate", None)
        ]
    );
    assert_eq!(quality(server, &[]), expected);
    assert_eq!(quality(server, &["--event", "Song Played"]), expected[3..]);
    assert_eq!(quality(server, &["--source", "wk_nobody"]), []);
}

fn start(dir: &Path, plan: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--write-key",
        WRITE_KEY,
        "--admin-token",
        ADMIN_TOKEN,
        "--plan",
        plan.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start(dir, None, &args)
}

#[test]
fn enforce_on_sqlite() {
    let dir = temp_dir("plan-sqlite");
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, PLAN).unwrap();
    let server = start(&dir.path().join("data"), &plan, &["--plan-mode", "enforce"]);
    enforce_judges_each_event_by_the_version_it_names(&server);
}

#[test]
fn enforce_on_postgres() {
    let db = TestDb::named("plan");
    let dir = temp_dir("plan-pg");
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, PLAN).unwrap();
    let server = start(
        &dir.path().join("data"),
        &plan,
        &["--plan-mode", "enforce", "--database-url", &db.url],
    );
    enforce_judges_each_event_by_the_version_it_names(&server);
}

#[test]
fn warn_accepts_and_counts_and_a_source_may_enforce() {
    let dir = temp_dir("plan-warn");
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, PLAN).unwrap();
    let bad = || order("w-1", Some(2), json!({"order_id": "b", "amount": 5}));
    let server = start(&dir.path().join("warn"), &plan, &[]);
    assert_eq!(
        post(&server, vec![bad()]),
        [result("w-1", "accepted", None)]
    );
    assert_eq!(
        findings(
            &server,
            &["finding=\"plan_violation\"", "action=\"accepted\""]
        ),
        1
    );
    assert!(violations(&server).is_empty());
    drop(server);

    // Warn for every source but ours, which the config file enforces.
    let source = tally_collector::ingest::auth::source_id(WRITE_KEY);
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        format!(
            "[plan]\nfile = {:?}\nmode = \"warn\"\n[plan.sources]\n{source:?} = \"enforce\"\n",
            plan.to_str().unwrap()
        ),
    )
    .unwrap();
    let server = Server::start_with_config(&dir.path().join("per-source"), &config, &[]);
    assert_eq!(
        post(&server, vec![bad()]),
        [result("w-1", "rejected", Some("plan_violation"))]
    );
    let (_, shown) = admin_get(&agent(), &server.url("/v1/plan"));
    assert_eq!(shown["plan"]["mode"], "warn");
    assert_eq!(shown["plan"]["sources"][&source], "enforce");
    assert_eq!(shown["plan"]["events"], 1);
}

/// Waits until `GET /v1/plan` shows a digest other than `old`.
fn wait_for_new_plan(server: &Server, old: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, shown) = admin_get(&agent(), &server.url("/v1/plan"));
        if shown["plan"]["digest"] != *old {
            return shown;
        }
        assert!(Instant::now() < deadline, "the changed plan was not loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_changed_plan_is_in_force_without_a_restart() {
    let dir = temp_dir("plan-reload");
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, plan_v1_only()).unwrap();
    let server = start(&dir.path().join("data"), &plan, &["--plan-mode", "enforce"]);
    let v2_without_currency = |id: &str| order(id, Some(2), json!({"order_id": "b", "amount": 5}));
    // The loaded plan has no version 2 yet: accepted, as an unknown version.
    assert_eq!(
        post(&server, vec![v2_without_currency("r-1")]),
        [result("r-1", "accepted", None)]
    );
    let (_, before) = admin_get(&agent(), &server.url("/v1/plan"));
    std::fs::write(&plan, PLAN).unwrap();
    let after = wait_for_new_plan(&server, &before["plan"]["digest"]);
    assert_ne!(after["plan"]["loaded_at"], before["plan"]["loaded_at"]);
    assert_eq!(
        post(&server, vec![v2_without_currency("r-2")]),
        [result("r-2", "rejected", Some("plan_violation"))]
    );

    // A plan that does not load: refused, counted, and the previous one
    // stays in force.
    std::fs::write(&plan, "name: shop\nevents: [{name: Order Completed}]\n").unwrap();
    let (status, answer) = read(
        agent()
            .post(server.url("/v1/plan/reload"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .send_empty()
            .unwrap(),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "bad_request");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("does not load"),
        "{answer}"
    );
    let (_, still) = admin_get(&agent(), &server.url("/v1/plan"));
    assert_eq!(still["plan"]["digest"], after["plan"]["digest"]);
    assert_eq!(
        post(&server, vec![v2_without_currency("r-3")]),
        [result("r-3", "rejected", Some("plan_violation"))]
    );
    // Counted by the request, and by the periodic check if it saw the file
    // first; then not again, however many checks see the same file.
    let reloads = |outcome: &str| -> u64 {
        let text = agent()
            .get(server.url("/metrics"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let series = format!("tally_plan_reloads_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap()
            .parse()
            .unwrap()
    };
    let failed = reloads("failed");
    assert!((1..=2).contains(&failed), "{failed}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(reloads("failed"), failed);
    assert_eq!(reloads("ok"), 1);
}

#[test]
fn a_plan_that_does_not_load_stops_the_start() {
    let dir = temp_dir("plan-broken");
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, "events: [").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--write-key", WRITE_KEY])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--plan")
        .arg(&plan)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot start with the tracking plan"), "{err}");
    assert!(err.contains("does not load"), "{err}");
}
