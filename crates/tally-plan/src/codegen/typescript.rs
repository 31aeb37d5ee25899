//! TypeScript: a props type and a `track<Event>(tracker, props, options)`
//! function per event over `@tally/web`'s `Tracker.track`, which sends the
//! event's plan version (`eventVersion`); string enums become union types.

use std::fmt::Write;

use super::{doc_text, literal, version_note, CodegenError, Event, Ty};
use crate::model::Priority;
use crate::naming;

fn ts_type(ty: &Ty) -> String {
    match ty {
        Ty::Str => "string".into(),
        Ty::Int | Ty::Num => "number".into(),
        Ty::Bool => "boolean".into(),
        Ty::Enum(name, _) => name.clone(),
        Ty::Array(inner) => format!("Array<{}>", ts_type(inner)),
        Ty::Object => "Record<string, unknown>".into(),
        Ty::Any => "unknown".into(),
    }
}

/// A property key: bare if it is an identifier, quoted otherwise.
fn key(name: &str) -> String {
    let mut chars = name.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if identifier {
        name.to_owned()
    } else {
        literal(name)
    }
}

pub(super) fn render(header: &str, events: &[Event]) -> Result<String, CodegenError> {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "// {line}");
    }
    out.push_str(
        "//\n// Each event has a props type: a missing required property or a value\n\
         // outside an enum does not compile. `track<Event>` sends it with the\n\
         // planned priority and its plan version.\n",
    );
    if !events.is_empty() {
        out.push_str("\nimport type { CallOptions, Tracker, TrackResult } from \"@tally/web\";\n");
    }
    for event in events {
        let ty = naming::pascal(&event.name);
        for p in &event.props {
            for (name, values) in p.ty.enums() {
                let union: Vec<String> = values.iter().map(|v| literal(v)).collect();
                let _ = writeln!(
                    out,
                    "\n/** `{}` of `{}`. */\nexport type {name} = {};",
                    p.key,
                    event.name,
                    union.join(" | ")
                );
            }
        }
        let _ = write!(out, "\n/** `{}` ({})", event.name, version_note(event));
        match &event.description {
            Some(d) => {
                let _ = writeln!(out, ": {} */", doc_text(d));
            }
            None => out.push_str(". */\n"),
        }
        let _ = writeln!(out, "export type {ty}Props = {{");
        for p in &event.props {
            if let Some(d) = &p.description {
                let _ = writeln!(out, "  /** {} */", doc_text(d));
            }
            let optional = if p.required { "" } else { "?" };
            let _ = writeln!(out, "  {}{optional}: {};", key(&p.key), ts_type(&p.ty));
        }
        let constant = naming::snake(&event.name).to_uppercase();
        let _ = writeln!(
            out,
            "}};\n\n/** The plan version `{ty}Props` follows, sent in `context.tally.event_version`. */\n\
             export const {constant}_VERSION = {};",
            event.version
        );
        let options = match event.priority {
            Priority::Critical => {
                format!(
                    "{{ ...options, priority: \"critical\", eventVersion: {constant}_VERSION }}"
                )
            }
            Priority::Normal => format!("{{ ...options, eventVersion: {constant}_VERSION }}"),
        };
        let _ = writeln!(
            out,
            "\n/** Tracks `{}` ({}). */\n\
             export function track{ty}(tracker: Tracker, props: {ty}Props, options?: Pick<CallOptions, \"dedupKey\">): TrackResult {{\n  \
             return tracker.track({}, props, {options});\n}}",
            event.name,
            version_note(event),
            literal(&event.name),
        );
    }
    Ok(out)
}
