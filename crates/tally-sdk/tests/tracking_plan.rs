//! The tracking plan at the call (feature `plan`): the shared vectors
//! (`vectors/plan_checks.json`, which the web SDK's tests read too), a
//! refused call taking no `seq` and storing nothing, and the version the
//! generated code sends reaching the collector in `context.tally`.
//!
//! The generated code is the reviewed output of `tally plan codegen --lang
//! rust` for the fixture plan (`crates/tally-plan/tests/codegen.rs` keeps
//! it equal to what the generator writes).

#![allow(clippy::unwrap_used)]

#[path = "support/collector.rs"]
mod collector;
// Exactly as generated: rustfmt leaves it alone.
#[rustfmt::skip]
#[path = "../../tally-plan/tests/fixtures/codegen/tracking.rs"]
mod tracking;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tally_sdk::plan::{CompiledPlan, Plan, PlanCheck};
use tally_sdk::{Consent, PlanRefusal, Props, Refusal, TrackOptions, Tracker};

use collector::Collector;
use tracking::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vectors() -> Value {
    let text = std::fs::read_to_string(repo().join("vectors/plan_checks.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn plan(vectors: &Value, name: &str) -> CompiledPlan {
    let plan: Plan = serde_json::from_value(vectors["plans"][name].clone()).unwrap();
    CompiledPlan::compile(plan).unwrap()
}

fn fixture() -> CompiledPlan {
    CompiledPlan::load(&repo().join("crates/tally-plan/tests/fixtures/plan.yaml")).unwrap()
}

/// A refusal as the vectors write it.
fn as_vector(result: Result<u64, Refusal>) -> Value {
    match result {
        Ok(_) => json!("ok"),
        Err(Refusal::Plan(p)) => match *p {
            PlanRefusal::Violation {
                version,
                rule,
                path,
                count,
                ..
            } => {
                json!({"code": "plan_violation", "version": version, "rule": rule, "path": path, "count": count})
            }
            PlanRefusal::UnknownVersion { version, .. } => {
                json!({"code": "unknown_version", "version": version})
            }
            PlanRefusal::Unplanned { .. } => json!({"code": "unplanned"}),
            other => panic!("unexpected {other:?}"),
        },
        Err(other) => panic!("refused for another reason: {other:?}"),
    }
}

fn tracker(dir: &Path, endpoint: &str, check: Option<PlanCheck>) -> Tracker {
    let mut builder = Tracker::builder("wk", endpoint, dir)
        .consent(Consent::Granted)
        .auto_upload(false);
    if let Some(check) = check {
        builder = builder.tracking_plan(check);
    }
    builder.build().unwrap()
}

fn props(value: &Value) -> Props {
    Props::from_json(&value.to_string()).unwrap()
}

#[test]
fn the_vectors_plan_is_the_fixture_plan() {
    let vectors = vectors();
    assert_eq!(plan(&vectors, "shop").plan(), fixture().plan());
}

#[test]
fn each_vector_gets_its_verdict_at_the_call() {
    let vectors = vectors();
    let dir = tempfile::tempdir().unwrap();
    let mut trackers: BTreeMap<(String, bool), Tracker> = BTreeMap::new();
    let cases = vectors["cases"].as_array().unwrap();
    let (mut accepted, mut refused) = (0u64, BTreeMap::<String, u64>::new());
    for case in cases {
        let name = case["plan"].as_str().unwrap_or("shop").to_owned();
        let strict = case["refuse_unplanned"].as_bool().unwrap_or(false);
        let t = trackers.entry((name.clone(), strict)).or_insert_with(|| {
            let check = PlanCheck::new(plan(&vectors, &name)).refuse_unplanned(strict);
            tracker(
                &dir.path().join(format!("{name}-{strict}")),
                "http://127.0.0.1:9",
                Some(check),
            )
        });
        let options = TrackOptions {
            event_version: case["version"].as_u64().map(|v| u32::try_from(v).unwrap()),
            ..TrackOptions::default()
        };
        let result = t
            .track_with(
                case["event"].as_str().unwrap(),
                props(&case["properties"]),
                options,
            )
            .map(|a| a.seq);
        let got = as_vector(result);
        assert_eq!(got, case["expect"], "{}", case["name"]);
        match got["code"].as_str() {
            Some(code) => *refused.entry(code.to_owned()).or_default() += 1,
            None => accepted += 1,
        }
    }
    assert_eq!((accepted, cases.len()), (12, 60));
    // Every tracker counted its refusals; none took a seq.
    let mut counted = BTreeMap::<String, u64>::new();
    let mut next = 0;
    for t in trackers.values() {
        for (code, n) in t.health().refused {
            *counted.entry(code).or_default() += n;
        }
        // A screen is not judged: it takes the next seq.
        next += t.screen("Probe", Props::new()).unwrap().seq;
    }
    assert_eq!(counted, refused);
    assert_eq!(
        next,
        accepted + trackers.len() as u64,
        "a refusal took a seq"
    );
}

#[test]
fn a_refused_event_is_not_stored_and_names_no_value() {
    let (collector, url) = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &url, Some(PlanCheck::new(fixture())));
    let order = || {
        Props::new()
            .with("order_id", "0192f5e4-3c1a-7b2e-9a4d-5f6e7d8c9b0a")
            .with("amount", 42.5)
    };
    let v2 = TrackOptions {
        event_version: Some(2),
        ..TrackOptions::default()
    };
    let refusal = t
        .track_with(
            "Order Completed",
            order().with("currency", "JPY"),
            v2.clone(),
        )
        .unwrap_err();
    assert_eq!(
        refusal,
        Refusal::Plan(Box::new(PlanRefusal::Violation {
            event: "Order Completed".into(),
            version: 2,
            rule: "enum".into(),
            path: "/currency".into(),
            count: 1,
        }))
    );
    assert_eq!(refusal.code(), "plan_violation");
    assert_eq!(
        refusal.to_string(),
        "tracking plan: Order Completed v2: enum at /currency"
    );
    // Missing everything: the message counts the rest, the path is "/"
    // only for the object itself.
    let empty = t
        .track_with("Order Completed", Props::new(), v2.clone())
        .unwrap_err();
    assert_eq!(
        empty.to_string(),
        "tracking plan: Order Completed v2: required at /order_id (and 2 more)"
    );
    // Judged too: track_in_session. Not judged: a screen, an identify.
    let (session, _) = t.session();
    let in_session = t.track_in_session(&session, "Cart Item Added", Props::new(), v2);
    assert_eq!(in_session.unwrap_err().code(), "unknown_version");
    assert_eq!(t.screen("Order Completed", Props::new()).unwrap().seq, 1);
    let v1 = TrackOptions {
        event_version: Some(1),
        ..TrackOptions::default()
    };
    let kept = t
        .track_with(
            "Order Completed",
            Props::new().with("order_id", "ord_1").with("amount", 1),
            v1,
        )
        .unwrap();
    assert_eq!(kept.seq, 2);
    let h = t.health();
    assert_eq!(
        h.refused,
        BTreeMap::from([("plan_violation".into(), 2), ("unknown_version".into(), 1)])
    );
    assert_eq!(h.tracked, 2);
    assert!(t.wait_until_synced(Duration::from_secs(10)));
    let sent = collector.sent.lock().unwrap().clone();
    let seen: Vec<_> = sent
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap().to_owned(),
                m["context"]["tally"]["seq"].as_u64().unwrap(),
                m["context"]["tally"].get("event_version").cloned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("screen".to_owned(), 1, None),
            ("track".to_owned(), 2, Some(json!(1))),
        ]
    );
    assert!(!serde_json::to_string(&sent).unwrap().contains("JPY"));
    t.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn unplanned_events_are_accepted_unless_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lenient = tracker(
        &dir.path().join("a"),
        "http://127.0.0.1:9",
        Some(PlanCheck::new(fixture())),
    );
    assert_eq!(lenient.track("Search Made", Props::new()).unwrap().seq, 1);
    let strict = tracker(
        &dir.path().join("b"),
        "http://127.0.0.1:9",
        Some(PlanCheck::new(fixture()).refuse_unplanned(true)),
    );
    let refusal = strict.track("Search Made", Props::new()).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "tracking plan: Search Made: not in the tracking plan"
    );
    assert_eq!(
        strict.health().refused,
        BTreeMap::from([("unplanned".into(), 1)])
    );
}

#[test]
fn generated_code_sends_its_plan_version() {
    let (collector, url) = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    for (i, check) in [None, Some(PlanCheck::new(fixture()))]
        .into_iter()
        .enumerate()
    {
        let t = tracker(&dir.path().join(i.to_string()), &url, check);
        track_order_completed(
            &t,
            OrderCompleted {
                order_id: "0192f5e4-3c1a-7b2e-9a4d-5f6e7d8c9b0a".into(),
                amount: 42.5,
                currency: OrderCompletedCurrency::Eur,
                coupon: None,
                item_count: Some(3),
            },
        )
        .unwrap();
        track_cart_item_added(
            &t,
            CartItemAdded {
                product_id: "p1".into(),
                quantity: 2,
                gift: None,
                tags: Some(vec!["sale".into()]),
                variant: None,
            },
        )
        .unwrap();
        t.track("Search Made", Props::new()).unwrap();
        assert!(t.wait_until_synced(Duration::from_secs(10)));
        t.shutdown(Duration::from_secs(5)).unwrap();
    }
    let sent = collector.sent.lock().unwrap().clone();
    let seen: Vec<_> = sent
        .iter()
        .map(|m| {
            let tally = &m["context"]["tally"];
            (
                m["event"].as_str().unwrap().to_owned(),
                tally.get("event_version").cloned(),
                tally.get("priority").cloned(),
            )
        })
        .collect();
    let once = [
        (
            "Order Completed".to_owned(),
            Some(json!(OrderCompleted::VERSION)),
            Some(json!("critical")),
        ),
        ("Cart Item Added".to_owned(), Some(json!(1)), None),
        ("Search Made".to_owned(), None, None),
    ];
    assert_eq!(seen, [once.clone(), once].concat());
}
