//! `diff::diff` between the fixture plan and an edited copy: every change,
//! exactly, with whether it breaks events valid under the old plan.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use tally_plan::diff::diff;
use tally_plan::Plan;

fn load(name: &str) -> Plan {
    Plan::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn every_change_with_its_verdict() {
    let d = diff(&load("plan.yaml"), &load("plan-next.yaml"));
    let got: Vec<String> = d.changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            "ok       naming-changed: naming rules changed: run `tally plan check` on the new plan",
            r#"ok       enum-widened "Order Completed" v2 /properties/currency: values added: ["CHF"]"#,
            r#"ok       property-added "Order Completed" v2 /properties/channel: `channel` added"#,
            r#"ok       version-added "Order Completed" v3: added"#,
            r#"breaking required-removed "Cart Item Added" v1 /properties/quantity: `quantity` is no longer required: consumers of this version count on it"#,
            r#"breaking bound-narrowed "Cart Item Added" v1 /properties/quantity: `maximum` narrowed from 99 to 50"#,
            r#"breaking enum-narrowed "Cart Item Added" v1 /properties/variant/properties/size: values removed: ["L"]"#,
            r#"breaking event-removed "Newsletter Subscribed": removed: events already sent become unplanned (deprecate it instead)"#,
            r#"ok       event-undeprecated "Checkout Started": no longer deprecated"#,
            r#"ok       priority-changed "Checkout Started": priority normal is now critical"#,
            r#"breaking type-narrowed "Checkout Started" v1 /properties/cart_value: type narrowed from number to integer"#,
            r#"ok       event-added "Order Refunded": added"#,
        ]
    );
    assert!(d.is_breaking());
}

#[test]
fn a_plan_against_itself_has_no_change_and_the_reverse_is_breaking() {
    let plan = load("plan.yaml");
    assert_eq!(diff(&plan, &plan).changes, vec![]);
    let back = diff(&load("plan-next.yaml"), &plan);
    let breaking: Vec<(&str, Option<&str>, Option<u32>)> = back
        .changes
        .iter()
        .filter(|c| c.breaking)
        .map(|c| (c.code, c.event.as_deref(), c.version))
        .collect();
    assert_eq!(
        breaking,
        vec![
            ("property-removed", Some("Order Completed"), Some(2)),
            ("enum-narrowed", Some("Order Completed"), Some(2)),
            ("version-removed", Some("Order Completed"), Some(3)),
            ("required-added", Some("Cart Item Added"), Some(1)),
            ("event-removed", Some("Order Refunded"), None),
        ]
    );
}

#[test]
fn json_output_shape() {
    let d = diff(&load("plan.yaml"), &load("plan-next.yaml"));
    assert_eq!(
        serde_json::to_value(&d.changes[3]).unwrap(),
        serde_json::json!({
            "code": "version-added",
            "breaking": false,
            "event": "Order Completed",
            "version": 3,
            "pointer": "",
            "message": "added"
        })
    );
}
