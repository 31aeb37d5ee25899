//! JSON Schemas of the wire types, for the collector's OpenAPI document
//! (feature `openapi`).
//!
//! The objects made by `json_object!` get their schema from the same
//! macro that writes their (de)serializer, so the member names and doc
//! comments of the schema are those of the code. Every member is
//! optional and unknown members are allowed, as the decoder reads them;
//! what a valid message must hold is [`crate::validate`]'s, and the
//! schema's descriptions say it.

use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// A type's schema as it is read and written on the wire.
pub trait WireSchema {
    /// The schema, inline.
    fn wire_schema() -> Schema;
}

/// Doc comment lines joined into one description.
pub fn doc_text(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned()
}

/// An object schema with the given members (wire name, schema, doc
/// lines), none required, unknown members allowed.
pub fn wire_object(doc: &[&str], members: Vec<(&str, Schema, &[&str])>) -> Schema {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(doc_text(doc)))
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(true)));
    for (key, schema, lines) in members {
        object = object.property(key, described(schema, lines));
    }
    object.into()
}

/// `schema` with the description `lines`, when it can hold one.
fn described(schema: Schema, lines: &[&str]) -> Schema {
    let text = doc_text(lines);
    match schema {
        Schema::Object(mut o) if !text.is_empty() => {
            o.description = Some(text);
            Schema::Object(o)
        }
        Schema::Array(mut a) if !text.is_empty() => {
            a.description = Some(text);
            Schema::Array(a)
        }
        other => other,
    }
}

/// A string schema to build on.
pub fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

impl WireSchema for String {
    fn wire_schema() -> Schema {
        string().into()
    }
}

impl WireSchema for u64 {
    fn wire_schema() -> Schema {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .into()
    }
}

impl WireSchema for u32 {
    fn wire_schema() -> Schema {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(u32::MAX))
            .into()
    }
}

impl<T: WireSchema> WireSchema for Vec<T> {
    fn wire_schema() -> Schema {
        ArrayBuilder::new().items(RefOr::T(T::wire_schema())).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    #[test]
    fn a_message_schema_names_its_wire_members_with_their_docs() {
        let value = serde_json::to_value(Message::wire_schema()).unwrap_or_default();
        assert_eq!(value["type"], "object");
        assert_eq!(value["additionalProperties"], true);
        assert_eq!(
            value["properties"]["messageId"]["description"],
            "The exact dedup key, forever."
        );
        assert_eq!(
            value["properties"]["type"]["enum"],
            serde_json::json!(["track", "identify", "page", "screen", "group", "alias"])
        );
        assert_eq!(
            value["properties"]["context"]["properties"]["tally"]["properties"]["seq"]["type"],
            "integer"
        );
        assert!(value.get("required").is_none());
    }
}
