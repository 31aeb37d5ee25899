//! Whether a schema accepts everything an older one accepted.
//!
//! [`compare`] walks two JSON Schemas side by side and lists each change
//! with whether it is breaking: whether an instance valid under the old
//! schema may be invalid under the new one. The keywords a plan uses
//! (types, enums, const, bounds, formats, patterns, required, properties,
//! `additionalProperties`, items) are compared exactly; any other keyword
//! that changed (`anyOf`, `$ref`, `if`, ...) is reported as
//! `schema-changed`, breaking, because compatibility is not proven.
//!
//! One rule is not about validity: removing a property from `required`
//! accepts more events, yet it is breaking, because queries and consumers
//! of that version count on the property being there.

use serde_json::{Map, Value};

/// One difference between two schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaChange {
    /// JSON pointer into the schema (the new one's, where it exists).
    pub pointer: String,
    /// Stable code.
    pub code: &'static str,
    /// Whether an instance valid under the old schema may be invalid
    /// under the new one (or, for `required-removed`, may lack a property
    /// consumers count on).
    pub breaking: bool,
    /// What changed.
    pub message: String,
}

/// Keywords that never change what is valid.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "examples",
    "default",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Keywords [`compare`] understands; any other that changed is
/// `schema-changed`.
const UNDERSTOOD: &[&str] = &[
    "type",
    "enum",
    "const",
    "minimum",
    "exclusiveMinimum",
    "minLength",
    "minItems",
    "minProperties",
    "maximum",
    "exclusiveMaximum",
    "maxLength",
    "maxItems",
    "maxProperties",
    "multipleOf",
    "pattern",
    "format",
    "uniqueItems",
    "required",
    "properties",
    "additionalProperties",
    "items",
];

const LOWER_BOUNDS: &[&str] = &[
    "minimum",
    "exclusiveMinimum",
    "minLength",
    "minItems",
    "minProperties",
];
const UPPER_BOUNDS: &[&str] = &[
    "maximum",
    "exclusiveMaximum",
    "maxLength",
    "maxItems",
    "maxProperties",
];

/// Every change from `old` to `new`, in a stable order.
pub(crate) fn compare(old: &Value, new: &Value) -> Vec<SchemaChange> {
    let mut out = Vec::new();
    compare_at(old, new, "", &mut out);
    out
}

fn push(
    out: &mut Vec<SchemaChange>,
    pointer: &str,
    code: &'static str,
    breaking: bool,
    message: String,
) {
    out.push(SchemaChange {
        pointer: pointer.to_owned(),
        code,
        breaking,
        message,
    });
}

/// Whether a schema accepts every instance.
pub(crate) fn is_trivial(schema: &Value) -> bool {
    match schema {
        Value::Bool(b) => *b,
        Value::Object(map) => map.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

fn compare_at(old: &Value, new: &Value, at: &str, out: &mut Vec<SchemaChange>) {
    if old == new {
        return;
    }
    if old == &Value::Bool(false) {
        push(
            out,
            at,
            "schema-loosened",
            false,
            "accepted nothing; now accepts more".into(),
        );
        return;
    }
    if is_trivial(new) {
        if !is_trivial(old) {
            push(
                out,
                at,
                "schema-loosened",
                false,
                "every constraint removed".into(),
            );
        }
        return;
    }
    if new == &Value::Bool(false) {
        push(
            out,
            at,
            "schema-changed",
            true,
            "now accepts nothing".into(),
        );
        return;
    }
    let empty = Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    compare_type(o, n, at, out);
    compare_enum(o, n, at, out);
    compare_const(o, n, at, out);
    for key in LOWER_BOUNDS {
        compare_bound(o, n, key, true, at, out);
    }
    for key in UPPER_BOUNDS {
        compare_bound(o, n, key, false, at, out);
    }
    compare_multiple_of(o, n, at, out);
    for (key, changed, removed) in [
        ("pattern", "pattern-changed", "pattern-removed"),
        ("format", "format-changed", "format-removed"),
    ] {
        match (o.get(key), n.get(key)) {
            (a, b) if a == b => {}
            (_, None) => push(out, at, removed, false, format!("`{key}` removed")),
            (None, Some(b)) => push(out, at, changed, true, format!("`{key}` {b} added")),
            (Some(a), Some(b)) => push(out, at, changed, true, format!("`{key}` {a} is now {b}")),
        }
    }
    if !flag(o, "uniqueItems") && flag(n, "uniqueItems") {
        push(
            out,
            at,
            "unique-items-added",
            true,
            "items must now be unique".into(),
        );
    } else if flag(o, "uniqueItems") && !flag(n, "uniqueItems") {
        push(
            out,
            at,
            "unique-items-removed",
            false,
            "items need no longer be unique".into(),
        );
    }
    compare_required(o, n, at, out);
    compare_properties(o, n, at, out);
    let items = format!("{at}/items");
    let any = Value::Bool(true);
    compare_at(
        o.get("items").unwrap_or(&any),
        n.get("items").unwrap_or(&any),
        &items,
        out,
    );
    let mut others: Vec<&String> = o
        .keys()
        .chain(n.keys())
        .filter(|k| !UNDERSTOOD.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
        .collect();
    others.sort();
    others.dedup();
    for key in others {
        if o.get(key) != n.get(key) {
            push(
                out,
                &format!("{at}/{}", escape(key)),
                "schema-changed",
                true,
                format!("`{key}` changed: compatibility is not proven"),
            );
        }
    }
}

fn flag(map: &Map<String, Value>, key: &str) -> bool {
    map.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// The types a schema allows; `None` for any.
fn types(map: &Map<String, Value>) -> Option<Vec<&str>> {
    match map.get("type")? {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn type_covered(t: &str, by: &[&str]) -> bool {
    by.contains(&t) || (t == "integer" && by.contains(&"number"))
}

fn compare_type(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    at: &str,
    out: &mut Vec<SchemaChange>,
) {
    let (old, new) = (types(o), types(n));
    if old == new {
        return;
    }
    let shown = |t: &Option<Vec<&str>>| match t {
        None => "any".to_owned(),
        Some(ts) => ts.join("|"),
    };
    let narrowed = match (&old, &new) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(a), Some(b)) => !a.iter().all(|t| type_covered(t, b)),
    };
    let (code, what) = if narrowed {
        ("type-narrowed", "narrowed")
    } else {
        ("type-widened", "widened")
    };
    push(
        out,
        at,
        code,
        narrowed,
        format!("type {what} from {} to {}", shown(&old), shown(&new)),
    );
}

fn compare_enum(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    at: &str,
    out: &mut Vec<SchemaChange>,
) {
    let (old, new) = (
        o.get("enum").and_then(Value::as_array),
        n.get("enum").and_then(Value::as_array),
    );
    match (old, new) {
        (a, b) if a == b => {}
        (None, Some(b)) => push(
            out,
            at,
            "enum-added",
            true,
            format!("values limited to {}", Value::Array(b.clone())),
        ),
        (Some(_), None) => push(
            out,
            at,
            "enum-removed",
            false,
            "values no longer limited".into(),
        ),
        (Some(a), Some(b)) => {
            let gone: Vec<Value> = a.iter().filter(|v| !b.contains(v)).cloned().collect();
            if gone.is_empty() {
                let added: Vec<Value> = b.iter().filter(|v| !a.contains(v)).cloned().collect();
                push(
                    out,
                    at,
                    "enum-widened",
                    false,
                    format!("values added: {}", Value::Array(added)),
                );
            } else {
                push(
                    out,
                    at,
                    "enum-narrowed",
                    true,
                    format!("values removed: {}", Value::Array(gone)),
                );
            }
        }
        (None, None) => {}
    }
}

fn compare_const(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    at: &str,
    out: &mut Vec<SchemaChange>,
) {
    match (o.get("const"), n.get("const")) {
        (a, b) if a == b => {}
        (Some(_), None) => push(
            out,
            at,
            "const-removed",
            false,
            "value no longer fixed".into(),
        ),
        (_, Some(b)) => push(
            out,
            at,
            "const-changed",
            true,
            format!("value must now be {b}"),
        ),
        (None, None) => {}
    }
}

fn compare_bound(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    key: &str,
    lower: bool,
    at: &str,
    out: &mut Vec<SchemaChange>,
) {
    let (old, new) = (
        o.get(key).and_then(Value::as_f64),
        n.get(key).and_then(Value::as_f64),
    );
    let narrowed = match (old, new) {
        (a, b) if a == b => return,
        (None, Some(_)) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => {
            if lower {
                b > a
            } else {
                b < a
            }
        }
        (None, None) => return,
    };
    let shown = |v: Option<&Value>| v.map_or_else(|| "none".to_owned(), Value::to_string);
    let (code, what) = if narrowed {
        ("bound-narrowed", "narrowed")
    } else {
        ("bound-widened", "widened")
    };
    push(
        out,
        at,
        code,
        narrowed,
        format!(
            "`{key}` {what} from {} to {}",
            shown(o.get(key)),
            shown(n.get(key))
        ),
    );
}

fn compare_multiple_of(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    at: &str,
    out: &mut Vec<SchemaChange>,
) {
    let (old, new) = (
        o.get("multipleOf").and_then(Value::as_f64),
        n.get("multipleOf").and_then(Value::as_f64),
    );
    match (old, new) {
        (a, b) if a == b => {}
        (_, None) => push(
            out,
            at,
            "multiple-of-removed",
            false,
            "`multipleOf` removed".into(),
        ),
        (Some(a), Some(b)) if (a / b).fract() == 0.0 => push(
            out,
            at,
            "multiple-of-widened",
            false,
            format!("`multipleOf` {a} is now {b}"),
        ),
        (_, Some(b)) => push(
            out,
            at,
            "multiple-of-changed",
            true,
            format!("values must now be multiples of {b}"),
        ),
    }
}

fn names(map: &Map<String, Value>, key: &str) -> Vec<String> {
    map.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn compare_required(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    at: &str,
    out: &mut Vec<SchemaChange>,
) {
    let (old, new) = (names(o, "required"), names(n, "required"));
    for name in new.iter().filter(|p| !old.contains(p)) {
        push(
            out,
            &format!("{at}/properties/{}", escape(name)),
            "required-added",
            true,
            format!("`{name}` is now required"),
        );
    }
    for name in old.iter().filter(|p| !new.contains(p)) {
        push(
            out,
            &format!("{at}/properties/{}", escape(name)),
            "required-removed",
            true,
            format!("`{name}` is no longer required: consumers of this version count on it"),
        );
    }
}

/// What an object schema says of a property it does not list.
enum Additional<'a> {
    Open,
    Closed,
    Schema(&'a Value),
}

fn additional(map: &Map<String, Value>) -> Additional<'_> {
    match map.get("additionalProperties") {
        None => Additional::Open,
        Some(v) if is_trivial(v) => Additional::Open,
        Some(Value::Bool(false)) => Additional::Closed,
        Some(v) => Additional::Schema(v),
    }
}

fn compare_properties(
    o: &Map<String, Value>,
    n: &Map<String, Value>,
    at: &str,
    out: &mut Vec<SchemaChange>,
) {
    let empty = Map::new();
    let old = o
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let new = n
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let (old_add, new_add) = (additional(o), additional(n));
    for (name, old_p) in old {
        let here = format!("{at}/properties/{}", escape(name));
        match new.get(name) {
            Some(new_p) => compare_at(old_p, new_p, &here, out),
            None => {
                let breaking = match &new_add {
                    Additional::Open => false,
                    Additional::Closed => true,
                    Additional::Schema(s) => compare(old_p, s).iter().any(|c| c.breaking),
                };
                let message = if breaking {
                    format!("`{name}` removed: events carrying it are now invalid")
                } else {
                    format!("`{name}` removed from the schema: any value is now accepted")
                };
                push(out, &here, "property-removed", breaking, message);
            }
        }
    }
    for (name, new_p) in new.iter().filter(|(k, _)| !old.contains_key(*k)) {
        let here = format!("{at}/properties/{}", escape(name));
        let breaking = match &old_add {
            Additional::Closed => false,
            Additional::Open => !is_trivial(new_p),
            Additional::Schema(s) => compare(s, new_p).iter().any(|c| c.breaking),
        };
        let message = if breaking {
            format!("`{name}` added: events that carried it with another value are now invalid")
        } else {
            format!("`{name}` added")
        };
        push(out, &here, "property-added", breaking, message);
    }
    let here = format!("{at}/additionalProperties");
    match (old_add, new_add) {
        (Additional::Open, Additional::Open) | (Additional::Closed, Additional::Closed) => {}
        (Additional::Closed, _) => push(
            out,
            &here,
            "additional-properties-opened",
            false,
            "unlisted properties now accepted".into(),
        ),
        (_, Additional::Closed) => push(
            out,
            &here,
            "additional-properties-closed",
            true,
            "unlisted properties now rejected".into(),
        ),
        (Additional::Open, Additional::Schema(s)) => compare_at(&Value::Bool(true), s, &here, out),
        (Additional::Schema(a), Additional::Schema(b)) => compare_at(a, b, &here, out),
        (Additional::Schema(_), Additional::Open) => push(
            out,
            &here,
            "schema-loosened",
            false,
            "every constraint removed".into(),
        ),
    }
}

/// A JSON pointer segment.
pub(crate) fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes(old: Value, new: Value) -> Vec<(String, &'static str, bool)> {
        compare(&old, &new)
            .into_iter()
            .map(|c| (c.pointer, c.code, c.breaking))
            .collect()
    }

    #[test]
    fn identical_and_annotation_only_changes_are_no_change() {
        assert_eq!(
            codes(json!({"type": "string"}), json!({"type": "string"})),
            vec![]
        );
        assert_eq!(
            codes(
                json!({"type": "object"}),
                json!({"type": "object", "description": "x"})
            ),
            vec![]
        );
    }

    #[test]
    fn type_enum_and_bounds() {
        assert_eq!(
            codes(json!({"type": "number"}), json!({"type": "integer"})),
            vec![(String::new(), "type-narrowed", true)]
        );
        assert_eq!(
            codes(
                json!({"type": "integer"}),
                json!({"type": ["number", "null"]})
            ),
            vec![(String::new(), "type-widened", false)]
        );
        assert_eq!(
            codes(json!({"enum": ["a", "b"]}), json!({"enum": ["a"]})),
            vec![(String::new(), "enum-narrowed", true)]
        );
        assert_eq!(
            codes(json!({"enum": ["a"]}), json!({"enum": ["a", "b"]})),
            vec![(String::new(), "enum-widened", false)]
        );
        assert_eq!(
            codes(
                json!({"minimum": 0, "maximum": 10}),
                json!({"minimum": 1, "maximum": 20})
            ),
            vec![
                (String::new(), "bound-narrowed", true),
                (String::new(), "bound-widened", false)
            ]
        );
        assert_eq!(
            codes(json!({"multipleOf": 10}), json!({"multipleOf": 5})),
            vec![(String::new(), "multiple-of-widened", false)]
        );
    }

    #[test]
    fn properties_against_additional_properties() {
        let closed = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false});
        let open = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let mut closed_plus = closed.clone();
        closed_plus["properties"]["b"] = json!({"type": "integer"});
        let mut open_plus = open.clone();
        open_plus["properties"]["b"] = json!({"type": "integer"});
        assert_eq!(
            codes(closed.clone(), closed_plus.clone()),
            vec![("/properties/b".to_owned(), "property-added", false)]
        );
        assert_eq!(
            codes(open.clone(), open_plus.clone()),
            vec![("/properties/b".to_owned(), "property-added", true)]
        );
        assert_eq!(
            codes(closed_plus, closed.clone()),
            vec![("/properties/b".to_owned(), "property-removed", true)]
        );
        assert_eq!(
            codes(open_plus, open.clone()),
            vec![("/properties/b".to_owned(), "property-removed", false)]
        );
        assert_eq!(
            codes(open, closed),
            vec![(
                "/additionalProperties".to_owned(),
                "additional-properties-closed",
                true
            )]
        );
    }

    #[test]
    fn unknown_keywords_that_change_are_breaking() {
        assert_eq!(
            codes(
                json!({"anyOf": [{"type": "string"}]}),
                json!({"anyOf": [{"type": "integer"}]})
            ),
            vec![("/anyOf".to_owned(), "schema-changed", true)]
        );
    }
}
