//! `tally plan diff OLD NEW`: what changed between two plan files, and
//! whether each change breaks events that were valid under the old one.
//!
//! Events name the version they were built against, and an app built
//! against the old plan may still be offline, holding events it will send
//! next month. So:
//!
//! | change | breaking |
//! |---|---|
//! | `event-added`, `version-added` | no: nothing was built against them |
//! | `event-removed`, `version-removed` | yes: events naming them become unplanned |
//! | a schema change in a version present in both files (see below) | yes if an event valid under the old schema may be invalid under the new one |
//! | `required-removed` in a version present in both | yes: consumers of that version count on the property (bump the version instead) |
//! | `event-deprecated`, `event-undeprecated`, `priority-changed`, `description-changed`, `naming-changed` | no |
//!
//! Schema changes carry the code of what changed: `type-narrowed`,
//! `type-widened`, `enum-added`, `enum-narrowed`, `enum-widened`,
//! `enum-removed`, `const-changed`, `const-removed`, `bound-narrowed`,
//! `bound-widened`, `multiple-of-changed`, `multiple-of-widened`,
//! `multiple-of-removed`, `pattern-changed`, `pattern-removed`,
//! `format-changed`, `format-removed`, `unique-items-added`,
//! `unique-items-removed`, `required-added`, `required-removed`,
//! `property-added`, `property-removed`, `additional-properties-closed`,
//! `additional-properties-opened`, `schema-loosened`, and
//! `schema-changed` for any other keyword (breaking: not proven safe).

use serde::Serialize;

use crate::compat::compare;
use crate::model::{EventSpec, Plan};

/// One change between two plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// A stable code (see the module documentation).
    pub code: &'static str,
    /// Whether events valid under the old plan may be invalid (or
    /// unplanned) under the new one.
    pub breaking: bool,
    /// The event concerned (none for plan-wide changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The version concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// JSON pointer into that version's properties schema (`""`: not
    /// about one place in a schema).
    pub pointer: String,
    /// What changed.
    pub message: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.breaking { "breaking" } else { "ok" };
        write!(f, "{kind:<8} {}", self.code)?;
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

/// Every change from one plan to another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Changes: plan-wide first, then per event in the old file's order,
    /// then events only the new file has.
    pub changes: Vec<Change>,
}

impl Diff {
    /// Whether any change is breaking.
    pub fn is_breaking(&self) -> bool {
        self.changes.iter().any(|c| c.breaking)
    }
}

/// What changed from `old` to `new`.
pub fn diff(old: &Plan, new: &Plan) -> Diff {
    let mut changes = Vec::new();
    if old.naming != new.naming {
        changes.push(Change {
            code: "naming-changed",
            breaking: false,
            event: None,
            version: None,
            pointer: String::new(),
            message: "naming rules changed: run `tally plan check` on the new plan".into(),
        });
    }
    for old_event in &old.events {
        match new.event(&old_event.name) {
            Some(new_event) => diff_event(old_event, new_event, &mut changes),
            None => changes.push(event_change(
                old_event,
                "event-removed",
                true,
                "removed: events already sent become unplanned (deprecate it instead)".into(),
            )),
        }
    }
    for new_event in &new.events {
        if old.event(&new_event.name).is_none() {
            changes.push(event_change(
                new_event,
                "event-added",
                false,
                "added".into(),
            ));
        }
    }
    Diff { changes }
}

fn event_change(event: &EventSpec, code: &'static str, breaking: bool, message: String) -> Change {
    Change {
        code,
        breaking,
        event: Some(event.name.clone()),
        version: None,
        pointer: String::new(),
        message,
    }
}

fn diff_event(old: &EventSpec, new: &EventSpec, out: &mut Vec<Change>) {
    if old.deprecated != new.deprecated {
        let (code, message) = if new.deprecated {
            (
                "event-deprecated",
                "deprecated: still accepted, flagged; no tracking code",
            )
        } else {
            ("event-undeprecated", "no longer deprecated")
        };
        out.push(event_change(new, code, false, message.into()));
    }
    if old.priority != new.priority {
        out.push(event_change(
            new,
            "priority-changed",
            false,
            format!("priority {:?} is now {:?}", old.priority, new.priority).to_lowercase(),
        ));
    }
    if old.description != new.description {
        out.push(event_change(
            new,
            "description-changed",
            false,
            "description changed".into(),
        ));
    }
    for old_version in &old.versions {
        let version = Some(old_version.version);
        match new.version(old_version.version) {
            None => out.push(Change {
                code: "version-removed",
                breaking: true,
                event: Some(new.name.clone()),
                version,
                pointer: String::new(),
                message: "removed: events built against it can no longer be judged".into(),
            }),
            Some(new_version) => {
                for c in compare(&old_version.properties, &new_version.properties) {
                    out.push(Change {
                        code: c.code,
                        breaking: c.breaking,
                        event: Some(new.name.clone()),
                        version,
                        pointer: c.pointer,
                        message: c.message,
                    });
                }
            }
        }
    }
    for new_version in &new.versions {
        if old.version(new_version.version).is_none() {
            out.push(Change {
                code: "version-added",
                breaking: false,
                event: Some(new.name.clone()),
                version: Some(new_version.version),
                pointer: String::new(),
                message: "added".into(),
            });
        }
    }
}
