//! `tally plan check`: the rules one plan file must follow.
//!
//! Every finding has a severity and a stable code (documented in
//! `docs/tracking-plan.md`): errors make `check` fail; warnings are
//! reported only.
//!
//! | code | severity | what |
//! |---|---|---|
//! | `event-name-invalid` | error | empty, longer than the protocol allows, or holding a NUL |
//! | `event-name-reserved` | error | starts with `tally.` (Tally's own events) |
//! | `event-name-case` | error | not in `naming.event_case` |
//! | `event-name-pattern` | error | not `Object Action` (fewer than two words) |
//! | `event-name-action` | error | does not end with one of `naming.actions` |
//! | `property-name-case` | error | a property (at any depth) not in `naming.property_case` |
//! | `duplicate-event` | error | the same name planned twice |
//! | `no-versions` | error | an event without a version |
//! | `version-order` | error | a version 0, or not greater than the one before it |
//! | `schema-invalid` | error | not a valid JSON Schema, an unknown format, a `$ref` outside the schema |
//! | `schema-not-object` | error | the properties schema does not say `type: object` |
//! | `required-undeclared` | warning | a required property not listed in `properties` |
//! | `version-unchanged` | warning | a version whose schema is the one before it |
//! | `missing-description` | warning | an event without a description |
//!
//! What may change between two files (a version edited in a breaking way,
//! removed events) is [`crate::diff`]'s: within one file, a new version
//! may change anything, since events name the version they were built
//! against and are judged by it.

use serde::Serialize;
use serde_json::Value;
use tally_proto::limits::MAX_EVENT_NAME_BYTES;

use crate::compat::escape;
use crate::compiled::build_schema;
use crate::model::{Case, EventPattern, EventSpec, Plan};
use crate::naming;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Reported; `check` still passes.
    Warning,
    /// `check` fails.
    Error,
}

/// One thing `check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// A stable code (see the module documentation).
    pub code: &'static str,
    /// The event concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The version concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// JSON pointer into that version's properties schema (`""`: the
    /// schema itself or not about a schema).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}[{}]", self.code)?;
        if let Some(event) = &self.event {
            write!(f, " {event:?}")?;
        }
        if let Some(version) = self.version {
            write!(f, " v{version}")?;
        }
        if !self.pointer.is_empty() {
            write!(f, " {}", self.pointer)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Whether any finding is an error.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

/// Every finding in `plan`, in the file's order.
pub fn check(plan: &Plan) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, event) in plan.events.iter().enumerate() {
        let finding =
            |severity, code, version: Option<u32>, pointer: String, message: String| Finding {
                severity,
                code,
                event: Some(event.name.clone()),
                version,
                pointer,
                message,
            };
        if plan.events[..i].iter().any(|e| e.name == event.name) {
            out.push(finding(
                Severity::Error,
                "duplicate-event",
                None,
                String::new(),
                "planned more than once".into(),
            ));
        }
        check_name(plan, event, &mut |code, message| {
            out.push(finding(Severity::Error, code, None, String::new(), message))
        });
        if event
            .description
            .as_deref()
            .is_none_or(|d| d.trim().is_empty())
        {
            out.push(finding(
                Severity::Warning,
                "missing-description",
                None,
                String::new(),
                "no description: say what the event means and when it is sent".into(),
            ));
        }
        if event.versions.is_empty() {
            out.push(finding(
                Severity::Error,
                "no-versions",
                None,
                String::new(),
                "an event needs at least one version".into(),
            ));
        }
        let mut previous: Option<&crate::model::EventVersion> = None;
        for v in &event.versions {
            let version = Some(v.version);
            if v.version == 0 {
                out.push(finding(
                    Severity::Error,
                    "version-order",
                    version,
                    String::new(),
                    "versions start at 1".into(),
                ));
            } else if let Some(prev) = previous.filter(|p| v.version <= p.version) {
                out.push(finding(
                    Severity::Error,
                    "version-order",
                    version,
                    String::new(),
                    format!(
                        "versions must be strictly ascending: {} follows {}",
                        v.version, prev.version
                    ),
                ));
            }
            if let Some(prev) = previous.filter(|p| p.properties == v.properties) {
                out.push(finding(
                    Severity::Warning,
                    "version-unchanged",
                    version,
                    String::new(),
                    format!("same schema as version {}", prev.version),
                ));
            }
            previous = Some(v);
            if let Err((pointer, message)) = build_schema(&v.properties) {
                out.push(finding(
                    Severity::Error,
                    "schema-invalid",
                    version,
                    pointer,
                    message,
                ));
                continue;
            }
            if v.properties.get("type") != Some(&Value::String("object".into())) {
                out.push(finding(
                    Severity::Error,
                    "schema-not-object",
                    version,
                    String::new(),
                    "the properties schema must say `type: object`".into(),
                ));
            }
            walk_object(
                &v.properties,
                "",
                &mut |pointer, code, message| {
                    let severity = if code == "required-undeclared" {
                        Severity::Warning
                    } else {
                        Severity::Error
                    };
                    out.push(finding(severity, code, version, pointer, message));
                },
                plan.naming.property_case,
            );
        }
    }
    out
}

/// The name rules of one event.
fn check_name(plan: &Plan, event: &EventSpec, report: &mut dyn FnMut(&'static str, String)) {
    let name = event.name.as_str();
    if name.is_empty() || name.len() > MAX_EVENT_NAME_BYTES || name.contains('\0') {
        report(
            "event-name-invalid",
            format!("event names are 1 to {MAX_EVENT_NAME_BYTES} bytes without NUL"),
        );
        return;
    }
    if naming::is_reserved(name) {
        report(
            "event-name-reserved",
            "names starting with `tally.` are Tally's own".into(),
        );
    }
    let naming = &plan.naming;
    if let Some(case) = naming.event_case {
        if !naming::follows(case, name) {
            report("event-name-case", format!("not {}", case.as_str()));
        }
    }
    if let Some(EventPattern::ObjectAction) = naming.event_pattern {
        let words = naming::words(naming.event_case, name);
        match words.last() {
            Some(last) if words.len() >= 2 => {
                if !naming.actions.is_empty() && !naming.actions.iter().any(|a| a.eq_ignore_ascii_case(last)) {
                    report(
                        "event-name-action",
                        format!("{last:?} is not one of the plan's actions ({})", naming.actions.join(", ")),
                    );
                }
            }
            _ => report(
                "event-name-pattern",
                "not Object Action: name the object, then what happened to it (\"Order Completed\")".into(),
            ),
        }
    }
}

/// Checks property names and `required` lists of an object schema and the
/// object schemas inside it.
fn walk_object(
    schema: &Value,
    at: &str,
    report: &mut dyn FnMut(String, &'static str, String),
    case: Option<Case>,
) {
    let Some(map) = schema.as_object() else {
        return;
    };
    let properties = map.get("properties").and_then(Value::as_object);
    if let Some(required) = map.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !properties.is_some_and(|p| p.contains_key(name)) {
                report(
                    format!("{at}/properties/{}", escape(name)),
                    "required-undeclared",
                    format!("`{name}` is required but not listed in `properties`: a typo?"),
                );
            }
        }
    }
    for (name, sub) in properties.into_iter().flatten() {
        let here = format!("{at}/properties/{}", escape(name));
        if let Some(case) = case {
            if !naming::follows(case, name) {
                report(
                    here.clone(),
                    "property-name-case",
                    format!("`{name}` is not {}", case.as_str()),
                );
            }
        }
        walk_object(sub, &here, report, case);
    }
    if let Some(items) = map.get("items") {
        walk_object(items, &format!("{at}/items"), report, case);
    }
}
