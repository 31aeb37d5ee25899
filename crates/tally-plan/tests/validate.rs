//! [`CompiledPlan::validate`] on the fixture plan: one test per kind of
//! rule, with the exact path, rule and count reported.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use serde_json::{json, Value};
use tally_plan::{CompiledPlan, LoadError, Plan, Verdict, Violation};

fn plan() -> CompiledPlan {
    CompiledPlan::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plan.yaml"))
        .unwrap()
}

fn order() -> Value {
    json!({
        "order_id": "0192f5e4-3c1a-7b2e-9a4d-5f6e7d8c9b0a",
        "amount": 42.5,
        "currency": "EUR",
        "coupon": "WINTER",
        "item_count": 3
    })
}

/// The verdict's first violation as (path, rule, count).
fn broken(verdict: Verdict) -> (String, String, usize) {
    match verdict {
        Verdict::Violation { first, count } => (first.path, first.rule, count),
        other => panic!("expected a violation, got {other:?}"),
    }
}

fn with(mut value: Value, key: &str, v: Value) -> Value {
    value[key] = v;
    value
}

fn without(mut value: Value, key: &str) -> Value {
    value.as_object_mut().unwrap().remove(key);
    value
}

#[test]
fn a_valid_event_is_ok_under_its_version_and_the_latest() {
    let plan = plan();
    assert_eq!(
        plan.validate("Order Completed", Some(2), &order()),
        Verdict::Ok
    );
    assert_eq!(
        plan.validate("Order Completed", None, &order()),
        Verdict::Ok
    );
    let cart = json!({"product_id": "p1", "quantity": 2, "variant": {"size": "M"}, "tags": ["a", "b"], "gift": false});
    assert_eq!(
        plan.validate("Cart Item Added", Some(1), &cart),
        Verdict::Ok
    );
}

#[test]
fn old_events_are_judged_by_the_version_they_name() {
    let plan = plan();
    let v1 = json!({"order_id": "ord_7x", "amount": 0});
    assert_eq!(plan.validate("Order Completed", Some(1), &v1), Verdict::Ok);
    // The same event judged by version 2: three violations.
    assert_eq!(
        broken(plan.validate("Order Completed", Some(2), &v1)),
        ("/currency".into(), "required".into(), 3)
    );
}

#[test]
fn required() {
    let verdict = plan().validate("Order Completed", Some(2), &without(order(), "currency"));
    assert_eq!(
        verdict,
        Verdict::Violation {
            first: Violation {
                path: "/currency".into(),
                rule: "required".into(),
                message: r#""currency" is a required property"#.into(),
            },
            count: 1
        }
    );
}

#[test]
fn types() {
    let verdict = plan().validate(
        "Order Completed",
        Some(2),
        &with(order(), "amount", json!("42.5")),
    );
    assert_eq!(
        verdict,
        Verdict::Violation {
            first: Violation {
                path: "/amount".into(),
                rule: "type".into(),
                message: r#""42.5" is not of type "number""#.into(),
            },
            count: 1
        }
    );
    assert_eq!(
        broken(plan().validate(
            "Order Completed",
            Some(2),
            &with(order(), "item_count", json!(2.5))
        )),
        ("/item_count".into(), "type".into(), 1)
    );
}

#[test]
fn enums() {
    let verdict = plan().validate(
        "Order Completed",
        Some(2),
        &with(order(), "currency", json!("JPY")),
    );
    assert_eq!(
        verdict,
        Verdict::Violation {
            first: Violation {
                path: "/currency".into(),
                rule: "enum".into(),
                message: r#""JPY" is not one of "EUR", "USD" or "GBP""#.into(),
            },
            count: 1
        }
    );
}

#[test]
fn ranges() {
    let plan = plan();
    let cases = [
        ("amount", json!(100_001), "maximum"),
        ("amount", json!(0), "exclusiveMinimum"),
        ("item_count", json!(0), "minimum"),
        ("coupon", json!("x".repeat(33)), "maxLength"),
    ];
    for (key, value, rule) in cases {
        assert_eq!(
            broken(plan.validate("Order Completed", Some(2), &with(order(), key, value))),
            (format!("/{key}"), rule.into(), 1),
            "{key}"
        );
    }
    let cart = json!({"product_id": "", "quantity": 100});
    assert_eq!(
        broken(plan.validate("Cart Item Added", Some(1), &cart)),
        ("/product_id".into(), "minLength".into(), 2)
    );
}

#[test]
fn formats_and_patterns() {
    let plan = plan();
    assert_eq!(
        broken(plan.validate(
            "Order Completed",
            Some(2),
            &with(order(), "order_id", json!("ord_7x"))
        )),
        ("/order_id".into(), "format".into(), 1)
    );
    assert_eq!(
        broken(plan.validate(
            "Order Completed",
            Some(1),
            &json!({"order_id": "7x", "amount": 1})
        )),
        ("/order_id".into(), "pattern".into(), 1)
    );
    assert_eq!(
        broken(plan.validate(
            "Newsletter Subscribed",
            None,
            &json!({"email": "not an address"})
        )),
        ("/email".into(), "format".into(), 1)
    );
    assert_eq!(
        broken(plan.validate(
            "Newsletter Subscribed",
            None,
            &json!({"email": "a@example.com", "consented_at": "yesterday"})
        )),
        ("/consented_at".into(), "format".into(), 1)
    );
    assert_eq!(
        plan.validate(
            "Newsletter Subscribed",
            None,
            &json!({"email": "a@example.com", "consented_at": "2026-12-07T10:00:00Z"})
        ),
        Verdict::Ok
    );
}

#[test]
fn closed_objects_nested_objects_and_arrays() {
    let plan = plan();
    assert_eq!(
        broken(plan.validate(
            "Order Completed",
            Some(2),
            &with(order(), "note", json!("hi"))
        )),
        ("/note".into(), "additionalProperties".into(), 1)
    );
    let cart = |extra: Value| {
        let mut v = json!({"product_id": "p1", "quantity": 1});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    assert_eq!(
        broken(plan.validate(
            "Cart Item Added",
            None,
            &cart(json!({"variant": {"size": "XL"}}))
        )),
        ("/variant/size".into(), "enum".into(), 1)
    );
    assert_eq!(
        broken(plan.validate("Cart Item Added", None, &cart(json!({"tags": ["a", 1]})))),
        ("/tags/1".into(), "type".into(), 1)
    );
    assert_eq!(
        broken(plan.validate("Cart Item Added", None, &cart(json!({"tags": ["a", "a"]})))),
        ("/tags".into(), "uniqueItems".into(), 1)
    );
    // Undeclared properties of an open object are accepted.
    assert_eq!(
        plan.validate("Cart Item Added", None, &cart(json!({"note": 1}))),
        Verdict::Ok
    );
}

#[test]
fn not_an_object() {
    assert_eq!(
        broken(plan().validate("Cart Item Added", None, &json!([1]))),
        ("".into(), "type".into(), 1)
    );
}

#[test]
fn unplanned_unknown_versions_and_deprecated_events() {
    let plan = plan();
    assert_eq!(
        plan.validate("Order Refunded", None, &json!({})),
        Verdict::Unplanned
    );
    assert_eq!(
        plan.validate("Order Completed", Some(3), &order()),
        Verdict::UnknownVersion { version: 3 }
    );
    assert_eq!(
        plan.validate("Order Completed", Some(0), &order()),
        Verdict::UnknownVersion { version: 0 }
    );
    assert_eq!(
        plan.validate("Checkout Started", Some(1), &json!({"cart_value": 10})),
        Verdict::Deprecated
    );
    assert_eq!(
        broken(plan.validate("Checkout Started", Some(1), &json!({"cart_value": "10"}))),
        ("/cart_value".into(), "type".into(), 1)
    );
    assert_eq!(Verdict::Deprecated.code(), "deprecated");
    assert_eq!(
        Verdict::UnknownVersion { version: 3 }.code(),
        "unknown_version"
    );
}

#[test]
fn properties_as_json_text() {
    let plan = plan();
    let text = serde_json::to_string(&order()).unwrap();
    assert_eq!(
        plan.validate_json("Order Completed", Some(2), &text),
        Verdict::Ok
    );
    assert_eq!(
        plan.validate_json("Nope", Some(2), "not json"),
        Verdict::Unplanned
    );
    assert_eq!(
        plan.validate_json("Order Completed", Some(9), "not json"),
        Verdict::UnknownVersion { version: 9 }
    );
    let verdict = plan.validate_json("Order Completed", Some(2), "{");
    assert_eq!(broken(verdict), ("".into(), "type".into(), 1));
}

#[test]
fn the_compiled_plan_keeps_what_the_collector_needs() {
    let plan = plan();
    let order = plan.event("Order Completed").unwrap();
    assert_eq!(order.priority(), tally_plan::Priority::Critical);
    assert!(!order.deprecated());
    assert_eq!(order.latest_version(), 2);
    assert_eq!(order.versions().collect::<Vec<_>>(), vec![1, 2]);
    assert!(plan.event("Checkout Started").unwrap().deprecated());
    assert_eq!(plan.plan().name.as_deref(), Some("shop"));
}

#[test]
fn loading_errors_are_typed() {
    let err = Plan::parse("events: [{name: A}]", tally_plan::Format::Yaml).unwrap_err();
    assert_eq!(err.code(), "parse");
    assert_eq!(
        err.to_string(),
        "not a valid plan (YAML): events[0]: missing field `versions` at line 1 column 10"
    );
    let err = Plan::parse(r#"{"events": [], "extra": 1}"#, tally_plan::Format::Json).unwrap_err();
    assert_eq!(err.code(), "parse");
    let compile = |yaml: &str| {
        CompiledPlan::compile(Plan::parse(yaml, tally_plan::Format::Yaml).unwrap()).unwrap_err()
    };
    let err = compile("events: [{name: A, versions: []}]");
    assert!(
        matches!(&err, LoadError::NoVersions(name) if name == "A"),
        "{err}"
    );
    let err = compile("events: [{name: A, versions: [{version: 2}, {version: 1}]}]");
    assert_eq!(
        err.to_string(),
        r#"event "A": versions must be 1 or more and strictly ascending; 1 is not"#
    );
    let err = compile(
        "events: [{name: A, versions: [{version: 1}]}, {name: A, versions: [{version: 1}]}]",
    );
    assert_eq!(err.to_string(), r#"event "A" is planned twice"#);
    let err = compile("events: [{name: A, versions: [{version: 1, properties: {type: object, properties: {x: {type: text}}}}]}]");
    assert_eq!(err.code(), "schema-invalid");
    let err = compile("events: [{name: A, versions: [{version: 1, properties: {properties: {x: {format: colour}}}}]}]");
    assert_eq!(err.code(), "schema-invalid");
    let err = compile(
        r#"events: [{name: A, versions: [{version: 1, properties: {"$ref": "https://example.com/s.json"}}]}]"#,
    );
    assert_eq!(err.code(), "schema-invalid");
    // Patterns run in linear time: look-around (which needs a backtracking
    // engine) is refused when the plan loads, and a pattern with nested
    // repetition judges a long hostile value.
    let err = compile(
        r#"events: [{name: A, versions: [{version: 1, properties: {properties: {x: {pattern: "^(?=a)a$"}}}}]}]"#,
    );
    assert_eq!(err.code(), "schema-invalid");
    let plan = CompiledPlan::compile(
        Plan::parse(
            r#"events: [{name: A, versions: [{version: 1, properties: {properties: {x: {pattern: "^(a+)+$"}}}}]}]"#,
            tally_plan::Format::Yaml,
        )
        .unwrap(),
    )
    .unwrap();
    let hostile = format!("{}!", "a".repeat(16 * 1024));
    assert!(plan
        .validate("A", None, &serde_json::json!({ "x": hostile }))
        .is_violation());
    assert_eq!(
        plan.validate("A", None, &serde_json::json!({"x": "aaaa"})),
        tally_plan::Verdict::Ok
    );
    let err = CompiledPlan::load(Path::new("/nonexistent/plan.yaml")).unwrap_err();
    assert_eq!(err.code(), "io");
}
