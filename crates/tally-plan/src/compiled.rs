//! A plan compiled for validation: each event version's schema built once,
//! then [`CompiledPlan::validate`] per event on the ingest path (the
//! collector) or at `track()` (the SDKs in development builds).
//!
//! ## Cost
//!
//! The event is found by name in a hash map (no allocation), its version
//! by a scan of a short sorted list, and the properties are checked with
//! the schema's `is_valid`, which does not allocate for the keywords a
//! plan uses (types, enums, ranges, required, formats,
//! `additionalProperties`). Only a violation builds its report (the
//! errors are walked a second time to find the first and count them).
//! `benches/validate.rs` measures it.

use std::collections::HashMap;
use std::path::Path;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, PatternOptions, ValidationError, Validator};
use serde_json::Value;

use crate::load::LoadError;
use crate::model::{EventSpec, Plan, Priority};

/// What the plan says about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Planned, not deprecated, and valid under the version it names (or
    /// the latest version, if it names none).
    Ok,
    /// The plan has no event of that name.
    Unplanned,
    /// The event names a version the plan does not have (an app built
    /// against a newer plan than the one loaded, or a made-up number).
    UnknownVersion {
        /// The version the event named.
        version: u32,
    },
    /// Valid, but the event is deprecated.
    Deprecated,
    /// The properties break the version's schema. A deprecated event that
    /// breaks its schema is a violation too.
    Violation {
        /// The first violation (in the schema's keyword order).
        first: Violation,
        /// How many violations there are in all (1 or more).
        count: usize,
    },
}

impl Verdict {
    /// A stable code: `ok`, `unplanned`, `unknown_version`, `deprecated`,
    /// `plan_violation` (the collector's reject reason).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unplanned => "unplanned",
            Self::UnknownVersion { .. } => "unknown_version",
            Self::Deprecated => "deprecated",
            Self::Violation { .. } => "plan_violation",
        }
    }

    /// Whether the properties break the schema.
    pub fn is_violation(&self) -> bool {
        matches!(self, Self::Violation { .. })
    }
}

/// One way the properties break the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the properties object to the failing value: the
    /// missing property for `required`, the unexpected one for
    /// `additionalProperties`; `""` is the object itself.
    pub path: String,
    /// The JSON Schema keyword that failed (`required`, `type`, `enum`,
    /// `maximum`, `format`, `additionalProperties`, ...).
    pub rule: String,
    /// A human-readable account.
    pub message: String,
}

/// One planned event, compiled.
#[derive(Debug)]
pub struct CompiledEvent {
    priority: Priority,
    deprecated: bool,
    /// Ascending by version.
    versions: Vec<(u32, Validator)>,
}

impl CompiledEvent {
    /// The event's planned priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Whether the event is deprecated.
    pub fn deprecated(&self) -> bool {
        self.deprecated
    }

    /// The highest version.
    pub fn latest_version(&self) -> u32 {
        self.versions.last().map_or(0, |(v, _)| *v)
    }

    /// Every version, ascending.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.versions.iter().map(|(v, _)| *v)
    }

    fn validator(&self, version: Option<u32>) -> Option<&Validator> {
        match version {
            None => self.versions.last().map(|(_, s)| s),
            Some(wanted) => self
                .versions
                .iter()
                .find(|(v, _)| *v == wanted)
                .map(|(_, s)| s),
        }
    }
}

/// A plan with every event version's schema compiled.
#[derive(Debug)]
pub struct CompiledPlan {
    plan: Plan,
    events: HashMap<String, CompiledEvent>,
}

impl CompiledPlan {
    /// Compiles every version's schema. Fails on the first event planned
    /// twice, without versions, with versions out of order, or with a
    /// schema that is not valid (`tally plan check` lists them all).
    pub fn compile(plan: Plan) -> Result<Self, LoadError> {
        let mut events = HashMap::with_capacity(plan.events.len());
        for spec in &plan.events {
            let compiled = compile_event(spec)?;
            if events.insert(spec.name.clone(), compiled).is_some() {
                return Err(LoadError::DuplicateEvent(spec.name.clone()));
            }
        }
        Ok(Self { plan, events })
    }

    /// Reads and compiles a plan file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        Self::compile(Plan::load(path)?)
    }

    /// The plan this was compiled from.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The compiled event named `name`.
    pub fn event(&self, name: &str) -> Option<&CompiledEvent> {
        self.events.get(name)
    }

    /// Judges event `name`'s `properties` by the version the event names
    /// (`context.tally`), or by the latest version if it names none.
    pub fn validate(&self, name: &str, version: Option<u32>, properties: &Value) -> Verdict {
        let Some(event) = self.events.get(name) else {
            return Verdict::Unplanned;
        };
        let Some(validator) = event.validator(version) else {
            return Verdict::UnknownVersion {
                version: version.unwrap_or(0),
            };
        };
        if validator.is_valid(properties) {
            return if event.deprecated {
                Verdict::Deprecated
            } else {
                Verdict::Ok
            };
        }
        let mut errors = validator.iter_errors(properties);
        let Some(first) = errors.next() else {
            // is_valid and iter_errors disagree: never seen; treat as valid.
            return Verdict::Ok;
        };
        Verdict::Violation {
            first: violation(&first),
            count: 1 + errors.count(),
        }
    }

    /// [`CompiledPlan::validate`] for properties given as JSON text (as
    /// the collector keeps them). Text that is not a JSON object is a
    /// violation of rule `type` at `""`. Unplanned events and unknown
    /// versions are answered without parsing.
    pub fn validate_json(&self, name: &str, version: Option<u32>, properties: &str) -> Verdict {
        match self.events.get(name) {
            None => return Verdict::Unplanned,
            Some(event) if event.validator(version).is_none() => {
                return Verdict::UnknownVersion {
                    version: version.unwrap_or(0),
                }
            }
            Some(_) => {}
        }
        match serde_json::from_str::<Value>(properties) {
            Ok(value) => self.validate(name, version, &value),
            Err(e) => Verdict::Violation {
                first: Violation {
                    path: String::new(),
                    rule: "type".to_owned(),
                    message: format!("properties are not JSON: {e}"),
                },
                count: 1,
            },
        }
    }
}

fn compile_event(spec: &EventSpec) -> Result<CompiledEvent, LoadError> {
    if spec.versions.is_empty() {
        return Err(LoadError::NoVersions(spec.name.clone()));
    }
    let mut versions: Vec<(u32, Validator)> = Vec::with_capacity(spec.versions.len());
    for v in &spec.versions {
        let in_order = v.version >= 1 && versions.last().is_none_or(|(prev, _)| v.version > *prev);
        if !in_order {
            return Err(LoadError::VersionOrder {
                event: spec.name.clone(),
                version: v.version,
            });
        }
        let validator = build_schema(&v.properties).map_err(|e| LoadError::Schema {
            event: spec.name.clone(),
            version: v.version,
            pointer: e.0,
            message: e.1,
        })?;
        versions.push((v.version, validator));
    }
    Ok(CompiledEvent {
        priority: spec.priority,
        deprecated: spec.deprecated,
        versions,
    })
}

/// Builds one version's schema: draft 2020-12 unless `$schema` names
/// another, formats asserted (a value that is not an `email` is a
/// violation), unknown formats refused, no `$ref` outside the schema.
/// Patterns run on the `regex` crate's engine, in time linear in the
/// value: the values are a client's, sent with a public write key, and the
/// default engine backtracks for a pattern with look-around or
/// backreferences, up to a million steps per value (such patterns are
/// refused instead). On error: the JSON pointer into the schema and the
/// message.
pub(crate) fn build_schema(schema: &Value) -> Result<Validator, (String, String)> {
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .with_pattern_options(PatternOptions::regex())
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .build(schema)
        .map_err(|e| (e.instance_path().as_str().to_owned(), e.to_string()))
}

/// The report of one error, with the path pointing at the property itself
/// for `required` and `additionalProperties`.
fn violation(error: &ValidationError<'_>) -> Violation {
    let mut path = error.instance_path().as_str().to_owned();
    let child = match error.kind() {
        ValidationErrorKind::Required { property } => property.as_str(),
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            unexpected.first().map(String::as_str)
        }
        _ => None,
    };
    if let Some(name) = child {
        path.push('/');
        path.push_str(&name.replace('~', "~0").replace('/', "~1"));
    }
    Violation {
        path,
        rule: error.kind().keyword().to_owned(),
        message: error.to_string(),
    }
}
