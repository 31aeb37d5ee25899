//! `lint::check`: the fixture plan passes clean; a plan breaking every
//! rule gets exactly one finding per break.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use tally_plan::lint::{check, has_errors, Severity};
use tally_plan::{Format, Plan};

fn fixture() -> Plan {
    Plan::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plan.yaml")).unwrap()
}

#[test]
fn the_fixture_is_clean() {
    assert_eq!(check(&fixture()), vec![]);
}

const BAD: &str = r#"
naming:
  event_case: Title Case
  event_pattern: Object Action
  actions: [Viewed, Completed]
  property_case: snake_case
events:
  - name: order completed
    description: Wrong case.
    versions: [{version: 1}]
  - name: Checkout
    description: One word.
    versions: [{version: 1}]
  - name: Order Shipped
    description: Not a plan action.
    versions: [{version: 1}]
  - name: tally.Thing Viewed
    description: Reserved.
    versions: [{version: 1}]
  - name: Page Viewed
    versions:
      - version: 1
        properties:
          type: object
          required: [pageUrl, title]
          properties:
            pageUrl: { type: string }
            referrer:
              type: object
              properties:
                SourceName: { type: string }
      - version: 1
        properties: { type: object }
      - version: 3
        properties: { type: object }
  - name: Page Viewed
    description: Twice.
    versions: [{version: 0, properties: {type: array}}]
  - name: Screen Viewed
    description: No versions.
    versions: []
  - name: Item Viewed
    description: Broken schemas.
    versions:
      - version: 1
        properties: { type: object, properties: { size: { type: huge } } }
      - version: 2
        properties: { type: object, properties: { size: { type: string, format: colour } } }
"#;

#[test]
fn every_rule_reports_exactly_one_finding() {
    let plan = Plan::parse(BAD, Format::Yaml).unwrap();
    let findings = check(&plan);
    let got: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            r#"error[event-name-case] "order completed": not Title Case"#,
            r#"error[event-name-pattern] "Checkout": not Object Action: name the object, then what happened to it ("Order Completed")"#,
            r#"error[event-name-action] "Order Shipped": "Shipped" is not one of the plan's actions (Viewed, Completed)"#,
            r#"error[event-name-reserved] "tally.Thing Viewed": names starting with `tally.` are Tally's own"#,
            r#"error[event-name-case] "tally.Thing Viewed": not Title Case"#,
            r#"warning[missing-description] "Page Viewed": no description: say what the event means and when it is sent"#,
            r#"warning[required-undeclared] "Page Viewed" v1 /properties/title: `title` is required but not listed in `properties`: a typo?"#,
            r#"error[property-name-case] "Page Viewed" v1 /properties/pageUrl: `pageUrl` is not snake_case"#,
            r#"error[property-name-case] "Page Viewed" v1 /properties/referrer/properties/SourceName: `SourceName` is not snake_case"#,
            r#"error[version-order] "Page Viewed" v1: versions must be strictly ascending: 1 follows 1"#,
            r#"warning[version-unchanged] "Page Viewed" v3: same schema as version 1"#,
            r#"error[duplicate-event] "Page Viewed": planned more than once"#,
            r#"error[version-order] "Page Viewed" v0: versions start at 1"#,
            r#"error[schema-not-object] "Page Viewed" v0: the properties schema must say `type: object`"#,
            r#"error[no-versions] "Screen Viewed": an event needs at least one version"#,
            r#"error[schema-invalid] "Item Viewed" v1 /properties/size/type: "huge" is not valid under any of the schemas listed in the 'anyOf' keyword"#,
            r#"error[schema-invalid] "Item Viewed" v2 /properties/size/format: Unknown format: 'colour'. Adjust configuration to ignore unrecognized formats"#,
        ]
    );
    assert!(has_errors(&findings));
    assert_eq!(findings[5].severity, Severity::Warning);
    assert_eq!(
        serde_json::to_value(&findings[6]).unwrap(),
        serde_json::json!({
            "severity": "warning",
            "code": "required-undeclared",
            "event": "Page Viewed",
            "version": 1,
            "pointer": "/properties/title",
            "message": "`title` is required but not listed in `properties`: a typo?"
        })
    );
}

#[test]
fn other_cases_and_no_rules() {
    let plan = Plan::parse(
        "naming: {event_case: snake_case, event_pattern: Object Action, property_case: camelCase}\n\
         events:\n\
         - {name: order_completed, description: d, versions: [{version: 1, properties: {type: object, properties: {orderId: {}}}}]}\n\
         - {name: checkout, description: d, versions: [{version: 1}]}\n",
        Format::Yaml,
    )
    .unwrap();
    let got: Vec<&str> = check(&plan).iter().map(|f| f.code).collect();
    assert_eq!(got, vec!["event-name-pattern"]);
    let free = Plan::parse(
        "events: [{name: anything at ALL, description: d, versions: [{version: 1}]}]",
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(check(&free), vec![]);
}
