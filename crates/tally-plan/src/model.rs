//! The plan file's model: what `docs/tracking-plan.md` documents, as serde
//! types. A plan is read from YAML or JSON (see [`crate::load`]) and is
//! plain data: nothing here validates an event or checks a rule (that is
//! [`crate::CompiledPlan`] and [`crate::lint`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use tally_proto::Priority;

/// A tracking plan: naming rules for the whole plan and every planned
/// event with its versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The plan's name (an app, a product); informative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Naming rules checked by `tally plan check`.
    #[serde(default)]
    pub naming: Naming,
    /// Every planned event, in the file's order.
    #[serde(default)]
    pub events: Vec<EventSpec>,
}

impl Plan {
    /// The event named `name`, if planned (the first one, if the plan
    /// names it twice: `check` reports that).
    pub fn event(&self, name: &str) -> Option<&EventSpec> {
        self.events.iter().find(|e| e.name == name)
    }
}

/// Naming rules for the whole plan. Every rule is optional: an absent rule
/// checks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Naming {
    /// The case of event names (`Title Case`, `snake_case`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_case: Option<Case>,
    /// The shape of event names (`Object Action`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_pattern: Option<EventPattern>,
    /// With `Object Action`: the words an event name may end with
    /// (`Viewed`, `Completed`); empty allows any. Compared in the event
    /// case, without regard to letter case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// The case of property names, at every nesting level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_case: Option<Case>,
}

/// A case style. Each is spelled in the plan file as it looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Case {
    /// `Order Completed`: words of letters and digits separated by one
    /// space, each starting with an upper-case letter or a digit, with no
    /// lower-case letter followed by an upper-case one (`SKU Scanned` is
    /// Title Case, `OrderCompleted` is not).
    #[serde(rename = "Title Case")]
    Title,
    /// `order_completed`: lower-case letters and digits, words separated
    /// by one underscore.
    #[serde(rename = "snake_case")]
    Snake,
    /// `orderCompleted`.
    #[serde(rename = "camelCase")]
    Camel,
    /// `OrderCompleted`.
    #[serde(rename = "PascalCase")]
    Pascal,
    /// `order-completed`.
    #[serde(rename = "kebab-case")]
    Kebab,
}

impl Case {
    /// The spelling used in plan files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Title => "Title Case",
            Self::Snake => "snake_case",
            Self::Camel => "camelCase",
            Self::Pascal => "PascalCase",
            Self::Kebab => "kebab-case",
        }
    }
}

/// The shape of event names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventPattern {
    /// At least two words: the object first, then one action word
    /// (`Order Completed`, `checkout_started`). Words are split by the
    /// event case (space, underscore, hyphen or capital letter).
    #[serde(rename = "Object Action")]
    ObjectAction,
}

/// One planned event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// The event name, exactly as tracked.
    pub name: String,
    /// What the event means and when it is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Delivery priority the typed tracking code sends it with.
    #[serde(default)]
    pub priority: Priority,
    /// A deprecated event is still accepted (old apps send it) but flagged,
    /// and no tracking code is generated for it.
    #[serde(default)]
    pub deprecated: bool,
    /// The event's versions, strictly ascending. An event names the
    /// version it was built against and is judged by that version.
    pub versions: Vec<EventVersion>,
}

impl EventSpec {
    /// The highest version (the last one, in a plan that passes `check`).
    pub fn latest(&self) -> Option<&EventVersion> {
        self.versions.iter().max_by_key(|v| v.version)
    }

    /// Version `version`, if the plan has it.
    pub fn version(&self, version: u32) -> Option<&EventVersion> {
        self.versions.iter().find(|v| v.version == version)
    }
}

/// One version of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventVersion {
    /// The version number, 1 or more.
    pub version: u32,
    /// What changed in this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema (draft 2020-12 unless `$schema` says otherwise) for
    /// the event's `properties` object. Absent: any object.
    #[serde(default = "any_object")]
    pub properties: Value,
}

/// The schema of an event version that gives none: any object.
pub fn any_object() -> Value {
    serde_json::json!({ "type": "object" })
}
