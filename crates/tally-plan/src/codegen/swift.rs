//! Swift: one `TallyTracker.track<Event>(...)` method per event, in an
//! extension over the UniFFI binding's `track(name:props:options:)`, with
//! required properties as parameters, optional ones defaulting to `nil`,
//! and string enums as `String` raw-value enums. Each sends the event's
//! plan version (`TrackOptions(eventVersion:)`, from `TallyPlanVersions`).

use std::fmt::Write;

use super::{
    doc_text, leading_letter, literal, members, reserved, version_note, CodegenError, Event, Names,
    Ty,
};
use crate::model::Priority;
use crate::naming;

const KEYWORDS: &[&str] = &[
    "associatedtype",
    "class",
    "deinit",
    "enum",
    "extension",
    "fileprivate",
    "func",
    "import",
    "init",
    "inout",
    "internal",
    "let",
    "open",
    "operator",
    "private",
    "protocol",
    "public",
    "rethrows",
    "static",
    "struct",
    "subscript",
    "typealias",
    "var",
    "break",
    "case",
    "continue",
    "default",
    "defer",
    "do",
    "else",
    "fallthrough",
    "for",
    "guard",
    "if",
    "in",
    "repeat",
    "return",
    "switch",
    "where",
    "while",
    "as",
    "catch",
    "false",
    "is",
    "nil",
    "self",
    "Self",
    "super",
    "throw",
    "throws",
    "true",
    "try",
    "Any",
    "Type",
];

fn ident(id: String) -> String {
    if reserved(KEYWORDS).contains(&id) {
        format!("`{id}`")
    } else {
        id
    }
}

fn param(key: &str) -> String {
    ident(leading_letter(naming::camel(key), "p"))
}

fn swift_type(ty: &Ty) -> String {
    match ty {
        Ty::Str => "String".into(),
        Ty::Int => "Int64".into(),
        Ty::Num => "Double".into(),
        Ty::Bool => "Bool".into(),
        Ty::Enum(name, _) => name.clone(),
        Ty::Array(inner) => format!("[{}]", swift_type(inner)),
        Ty::Object => "[String: PropValue]".into(),
        Ty::Any => "PropValue".into(),
    }
}

/// The `PropValue` of `expr`, a value of `ty`.
fn value(ty: &Ty, expr: &str) -> String {
    match ty {
        Ty::Str => format!("PropValue.text(value: {expr})"),
        Ty::Int => format!("PropValue.int(value: {expr})"),
        Ty::Num => format!("PropValue.double(value: {expr})"),
        Ty::Bool => format!("PropValue.bool(value: {expr})"),
        Ty::Enum(..) => format!("PropValue.text(value: {expr}.rawValue)"),
        Ty::Array(inner) => format!(
            "PropValue.items(value: {expr}.map {{ {} }})",
            value(inner, "$0")
        ),
        Ty::Object => format!("PropValue.members(value: {expr})"),
        Ty::Any => expr.to_owned(),
    }
}

pub(super) fn render(header: &str, events: &[Event]) -> Result<String, CodegenError> {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "// {line}");
    }
    if events.is_empty() {
        return Ok(out);
    }
    out.push_str("\nimport Tally\n");
    for event in events {
        for p in &event.props {
            for (name, values) in p.ty.enums() {
                let cases = members(values, |v| ident(leading_letter(naming::camel(v), "v")))?;
                let _ = writeln!(
                    out,
                    "\n/// `{}` of `{}`.\npublic enum {name}: String {{",
                    p.key, event.name
                );
                for (id, v) in &cases {
                    let _ = writeln!(out, "    case {id} = {}", literal(v));
                }
                out.push_str("}\n");
            }
        }
    }
    out.push_str("\n/// The plan version each generated method follows, sent in `context.tally.event_version`.\npublic enum TallyPlanVersions {\n");
    for event in events {
        let _ = writeln!(
            out,
            "    public static let {}: UInt32 = {}",
            ident(naming::camel(&event.name)),
            event.version
        );
    }
    out.push_str("}\n\npublic extension TallyTracker {\n");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let ty = naming::pascal(&event.name);
        let _ = write!(
            out,
            "    /// Tracks `{}` ({})",
            event.name,
            version_note(event)
        );
        match &event.description {
            Some(d) => {
                let _ = writeln!(out, ": {}", doc_text(d));
            }
            None => out.push_str(".\n"),
        }
        let mut names = Names::default();
        let mut params = Vec::new();
        for p in &event.props {
            names.claim(&p.key, param(&p.key))?;
            let default = if p.required { "" } else { "? = nil" };
            params.push(format!("{}: {}{default}", param(&p.key), swift_type(&p.ty)));
        }
        names.claim("dedupKey", "dedupKey".into())?;
        params.push("dedupKey: String? = nil".into());
        let _ = writeln!(
            out,
            "    @discardableResult\n    func track{ty}({}) throws -> UInt64 {{\n        var props: [String: PropValue] = [:]",
            params.join(", ")
        );
        for p in &event.props {
            let set = format!(
                "props[{}] = {}",
                literal(&p.key),
                value(&p.ty, &param(&p.key))
            );
            if p.required {
                let _ = writeln!(out, "        {set}");
            } else {
                let name = param(&p.key);
                let _ = writeln!(out, "        if let {name} = {name} {{ {set} }}");
            }
        }
        let priority = match event.priority {
            Priority::Critical => ".critical",
            Priority::Normal => "nil",
        };
        let _ = writeln!(
            out,
            "        return try track(name: {}, props: props, options: TrackOptions(priority: {priority}, dedupKey: dedupKey, eventVersion: TallyPlanVersions.{}))\n    }}",
            literal(&event.name),
            ident(naming::camel(&event.name))
        );
    }
    out.push_str("}\n");
    Ok(out)
}
