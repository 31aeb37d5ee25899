//! Rust: a module with one struct per event (required properties as
//! fields, optional ones as `Option`, string enums as enums) and one
//! `track_<event>(tracker, event)` over `tally_sdk::Tracker::track_with`,
//! which sends the event's plan version (`TrackOptions::event_version`).

use std::fmt::Write;

use super::{
    doc_text, leading_letter, literal, members, reserved, version_note, CodegenError, Event, Ty,
};
use crate::model::Priority;
use crate::naming;

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false",
    "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
    "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where", "while",
    "abstract", "become", "box", "do", "final", "gen", "macro", "override", "priv", "try",
    "typeof", "unsized", "virtual", "yield",
];

/// A field or function name: snake case, keywords raw.
fn field(key: &str) -> String {
    let id = leading_letter(naming::snake(key), "p_");
    match id.as_str() {
        "self" | "super" | "crate" => format!("{id}_"),
        _ if reserved(KEYWORDS).contains(&id) => format!("r#{id}"),
        _ => id,
    }
}

fn rust_type(ty: &Ty) -> String {
    match ty {
        Ty::Str => "String".into(),
        Ty::Int => "i64".into(),
        Ty::Num => "f64".into(),
        Ty::Bool => "bool".into(),
        Ty::Enum(name, _) => name.clone(),
        Ty::Array(inner) => format!("Vec<{}>", rust_type(inner)),
        Ty::Object => "serde_json::Map<String, serde_json::Value>".into(),
        Ty::Any => "serde_json::Value".into(),
    }
}

/// An expression that serializes `expr` (a reference to a value of `ty`).
fn value(ty: &Ty, expr: &str) -> String {
    match ty {
        Ty::Enum(..) => format!("{expr}.as_str()"),
        Ty::Array(inner) if matches!(**inner, Ty::Enum(..) | Ty::Array(_)) => format!(
            "{expr}.iter().map(|x| {}).collect::<Vec<_>>()",
            value(inner, "x")
        ),
        _ => expr.to_owned(),
    }
}

pub(super) fn render(header: &str, events: &[Event]) -> Result<String, CodegenError> {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "//! {line}");
    }
    out.push_str(
        "//!\n\
         //! Each event is a struct: a missing required property or a value\n\
         //! outside an enum does not compile. `track_<event>` sends it with\n\
         //! the planned priority and its plan version.\n\n\
         #![allow(dead_code, missing_docs, clippy::all)]\n\n",
    );
    if !events.is_empty() {
        out.push_str("use tally_sdk::{Props, TrackOptions, TrackResult, Tracker};\n");
    }
    for event in events {
        for p in &event.props {
            for (name, values) in p.ty.enums() {
                let variants = members(values, |v| leading_letter(naming::pascal(v), "V"))?;
                let _ = writeln!(
                    out,
                    "\n/// `{}` of `{}`.\n#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]\npub enum {name} {{",
                    p.key, event.name
                );
                for (id, v) in &variants {
                    let _ = writeln!(out, "    /// {}\n    {id},", literal(v));
                }
                let _ = writeln!(
                    out,
                    "}}\n\nimpl {name} {{\n    /// The value as tracked.\n    pub fn as_str(self) -> &'static str {{\n        match self {{"
                );
                for (id, v) in &variants {
                    let _ = writeln!(out, "            Self::{id} => {},", literal(v));
                }
                out.push_str("        }\n    }\n}\n");
            }
        }
        let ty = naming::pascal(&event.name);
        let fn_name = format!("track_{}", naming::snake(&event.name));
        let _ = write!(out, "\n/// `{}` ({})", event.name, version_note(event));
        match &event.description {
            Some(d) => {
                let _ = writeln!(out, ": {}", doc_text(d));
            }
            None => out.push_str(".\n"),
        }
        let _ = writeln!(
            out,
            "#[derive(Debug, Clone, PartialEq)]\npub struct {ty} {{"
        );
        for p in &event.props {
            if let Some(d) = &p.description {
                let _ = writeln!(out, "    /// {}", doc_text(d));
            }
            let t = rust_type(&p.ty);
            let t = if p.required {
                t
            } else {
                format!("Option<{t}>")
            };
            let _ = writeln!(out, "    pub {}: {t},", field(&p.key));
        }
        let _ = writeln!(
            out,
            "}}\n\nimpl {ty} {{\n    /// The event name.\n    pub const NAME: &'static str = {};\n    \
             /// The plan version these properties follow, sent in\n    \
             /// `context.tally.event_version`: the collector judges the event by it.\n    \
             pub const VERSION: u32 = {};\n\n    \
             /// The properties, as tracked.\n    pub fn props(&self) -> Props {{",
            literal(&event.name),
            event.version
        );
        let mutable = if event.props.iter().any(|p| !p.required) {
            "mut "
        } else {
            ""
        };
        let _ = write!(out, "        let {mutable}props = Props::new()");
        for p in event.props.iter().filter(|p| p.required) {
            let _ = write!(
                out,
                "\n            .with({}, {})",
                literal(&p.key),
                value(&p.ty, &format!("&self.{}", field(&p.key)))
            );
        }
        out.push_str(";\n");
        for p in event.props.iter().filter(|p| !p.required) {
            let _ = writeln!(
                out,
                "        if let Some(v) = &self.{} {{\n            props = props.with({}, {});\n        }}",
                field(&p.key),
                literal(&p.key),
                value(&p.ty, "v")
            );
        }
        out.push_str("        props\n    }\n}\n");
        let priority = match event.priority {
            Priority::Critical => "\n            priority: tally_sdk::Priority::Critical,",
            Priority::Normal => "",
        };
        let options = format!(
            "TrackOptions {{{priority}\n            event_version: Some({ty}::VERSION),\n            ..TrackOptions::default()\n        }}"
        );
        let _ = writeln!(
            out,
            "\n/// Tracks `{}` ({}).\npub fn {fn_name}(tracker: &Tracker, event: {ty}) -> TrackResult {{\n    \
             tracker.track_with(\n        {ty}::NAME,\n        event.props(),\n        {options},\n    )\n}}",
            event.name,
            version_note(event),
        );
    }
    Ok(out)
}
