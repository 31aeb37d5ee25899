//! Kotlin: one `TallyTracker.track<Event>(...)` extension function per
//! event over the UniFFI binding's `track(name, props, options)`, with
//! required properties as parameters, optional ones defaulting to `null`,
//! and string enums as enum classes. Each sends the event's plan version
//! (`TrackOptions(eventVersion = ...)`, a `UInt` as the binding has it).

use std::fmt::Write;

use super::{
    doc_text, leading_letter, literal, members, reserved, version_note, CodegenError, Event, Names,
    Ty,
};
use crate::model::Priority;
use crate::naming;

const KEYWORDS: &[&str] = &[
    "as",
    "break",
    "class",
    "continue",
    "do",
    "else",
    "false",
    "for",
    "fun",
    "if",
    "in",
    "interface",
    "is",
    "null",
    "object",
    "package",
    "return",
    "super",
    "this",
    "throw",
    "true",
    "try",
    "typealias",
    "typeof",
    "val",
    "var",
    "when",
    "while",
];

fn param(key: &str) -> String {
    let id = leading_letter(naming::camel(key), "p");
    if reserved(KEYWORDS).contains(&id) {
        format!("`{id}`")
    } else {
        id
    }
}

fn kotlin_type(ty: &Ty) -> String {
    match ty {
        Ty::Str => "String".into(),
        Ty::Int => "Long".into(),
        Ty::Num => "Double".into(),
        Ty::Bool => "Boolean".into(),
        Ty::Enum(name, _) => name.clone(),
        Ty::Array(inner) => format!("List<{}>", kotlin_type(inner)),
        Ty::Object => "Map<String, PropValue>".into(),
        Ty::Any => "PropValue".into(),
    }
}

/// The `PropValue` of `expr`, a value of `ty`.
fn value(ty: &Ty, expr: &str) -> String {
    match ty {
        Ty::Str => format!("PropValue.Text({expr})"),
        Ty::Int => format!("PropValue.Int({expr})"),
        Ty::Num => format!("PropValue.Double({expr})"),
        Ty::Bool => format!("PropValue.Bool({expr})"),
        Ty::Enum(..) => format!("PropValue.Text({expr}.value)"),
        Ty::Array(inner) => format!("PropValue.Items({expr}.map {{ {} }})", value(inner, "it")),
        Ty::Object => format!("PropValue.Members({expr})"),
        Ty::Any => expr.to_owned(),
    }
}

/// A Kotlin string literal (`$` escaped: it starts a template).
fn kotlin_literal(s: &str) -> String {
    literal(s).replace('$', "\\$")
}

pub(super) fn render(header: &str, events: &[Event]) -> Result<String, CodegenError> {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "// {line}");
    }
    out.push_str("package tally.plan\n");
    if !events.is_empty() {
        out.push_str("\nimport tally.Priority\nimport tally.PropValue\nimport tally.TallyTracker\nimport tally.TrackOptions\n");
    }
    for event in events {
        let ty = naming::pascal(&event.name);
        for p in &event.props {
            for (name, values) in p.ty.enums() {
                let constants = members(values, |v| {
                    leading_letter(naming::snake(v).to_uppercase(), "V_")
                })?;
                let _ = writeln!(
                    out,
                    "\n/** `{}` of `{}`. */\nenum class {name}(val value: String) {{",
                    p.key, event.name
                );
                for (id, v) in &constants {
                    let _ = writeln!(out, "    {id}({}),", kotlin_literal(v));
                }
                out.push_str("}\n");
            }
        }
        let constant = naming::snake(&event.name).to_uppercase();
        let _ = writeln!(
            out,
            "\n/** The plan version `track{ty}` follows, sent in `context.tally.event_version`. */\n\
             const val {constant}_VERSION: UInt = {}u",
            event.version
        );
        let _ = write!(
            out,
            "\n/**\n * Tracks `{}` ({})",
            event.name,
            version_note(event)
        );
        match &event.description {
            Some(d) => {
                let _ = writeln!(out, ": {}", doc_text(d));
            }
            None => out.push_str(".\n"),
        }
        let _ = writeln!(out, " */\nfun TallyTracker.track{ty}(");
        let mut names = Names::default();
        for p in &event.props {
            names.claim(&p.key, param(&p.key))?;
            let default = if p.required { "" } else { "? = null" };
            let _ = writeln!(
                out,
                "    {}: {}{default},",
                param(&p.key),
                kotlin_type(&p.ty)
            );
        }
        names.claim("dedupKey", "dedupKey".into())?;
        out.push_str("    dedupKey: String? = null,\n): ULong {\n    val props = HashMap<String, PropValue>()\n");
        for p in &event.props {
            let set = format!(
                "props[{}] = {}",
                kotlin_literal(&p.key),
                value(&p.ty, &param(&p.key))
            );
            if p.required {
                let _ = writeln!(out, "    {set}");
            } else {
                let _ = writeln!(out, "    if ({} != null) {set}", param(&p.key));
            }
        }
        let priority = match event.priority {
            Priority::Critical => "Priority.CRITICAL",
            Priority::Normal => "null",
        };
        let _ = writeln!(
            out,
            "    return track({}, props, TrackOptions(priority = {priority}, dedupKey = dedupKey, eventVersion = {constant}_VERSION))\n}}",
            kotlin_literal(&event.name)
        );
    }
    Ok(out)
}
