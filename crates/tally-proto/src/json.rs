//! JSON building blocks: raw JSON kept as text, and the object macro that
//! gives every wire struct typed known fields plus verbatim unknown ones.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON value kept as its original text (properties, traits, unknown
/// fields). The collector never builds a tree for it; equality compares the
/// text.
#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Parses `text` as one JSON value and keeps it verbatim.
    pub fn from_text(text: &str) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text.to_owned()).map(Self)
    }

    /// Serializes `value` to JSON and keeps the text.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Self)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Whether the value is a JSON object (leading whitespace is not kept by
    /// serde_json, so the first byte tells).
    pub fn is_object(&self) -> bool {
        self.get().starts_with('{')
    }

    /// Whether the value is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.get() == "null"
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Self)
    }
}

/// Members of an object that this version does not know, in their original
/// order, kept verbatim so nothing a client sent is dropped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra(pub Vec<(String, RawJson)>);

impl Extra {
    /// The raw value of unknown member `key`, if present.
    pub fn get(&self, key: &str) -> Option<&RawJson> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether no unknown member was kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An object key that borrows from the input when it has no escapes.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Declares a wire object: each known member a typed `Option` field, every
/// other member kept in `extra`. Hand-written visitors (not
/// `#[serde(flatten)]`, which buffers every value into an intermediate tree)
/// keep decoding at the speed of plain typed structs.
macro_rules! json_object {
    (
        $(#[doc = $doc:literal])*
        pub struct $name:ident {
            $( $(#[doc = $fdoc:literal])* $field:ident : $ty:ty = $key:literal, )*
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            $( $(#[doc = $fdoc])* pub $field: Option<$ty>, )*
            /// Members this version does not know, kept verbatim.
            pub extra: $crate::json::Extra,
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(None)?;
                $( if let Some(v) = &self.$field { map.serialize_entry($key, v)?; } )*
                for (k, v) in &self.extra.0 {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;
                impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("a JSON object (", stringify!($name), ")"))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$name, A::Error> {
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<$crate::json::Key<'de>>()? {
                            match &*key.0 {
                                $( $key => out.$field = map.next_value()?, )*
                                _ => {
                                    let value = map.next_value()?;
                                    out.extra.0.push((key.0.into_owned(), value));
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_map(ObjectVisitor)
            }
        }

        // The schema says what the (de)serializer above reads and writes:
        // every known member optional, under its wire name, with its doc
        // comment; unknown members allowed (they are kept verbatim).
        #[cfg(feature = "openapi")]
        impl $crate::openapi::WireSchema for $name {
            fn wire_schema() -> utoipa::openapi::schema::Schema {
                $crate::openapi::wire_object(
                    &[$($doc),*],
                    vec![$( (
                        $key,
                        <$ty as $crate::openapi::WireSchema>::wire_schema(),
                        &[$($fdoc),*][..],
                    ), )*],
                )
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                <$name as $crate::openapi::WireSchema>::wire_schema().into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

pub(crate) use json_object;

#[cfg(feature = "openapi")]
/// Any JSON value, kept as its text.
impl crate::openapi::WireSchema for RawJson {
    fn wire_schema() -> utoipa::openapi::schema::Schema {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
            .into()
    }
}

/// The deepest nesting of objects and arrays in a JSON text (a bare scalar
/// is 0). Linear, allocation-free; strings are skipped with their escapes.
pub fn json_depth(text: &str) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_nesting_and_ignores_brackets_in_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth("{}"), 1);
        assert_eq!(json_depth(r#"{"a":[{"b":[]}]}"#), 4);
        assert_eq!(json_depth(r#"{"a":"[[[[{{{{\"]]"}"#), 1);
        assert_eq!(json_depth(r#"["\\", [1]]"#), 2);
    }

    #[test]
    fn raw_json_keeps_text_and_compares_by_it() {
        let a = RawJson::from_text(r#"{"b":1,"a":2}"#).unwrap();
        assert_eq!(a.get(), r#"{"b":1,"a":2}"#);
        assert!(a.is_object());
        assert_ne!(a, RawJson::from_text(r#"{"a":2,"b":1}"#).unwrap());
        assert!(RawJson::from_text("null").unwrap().is_null());
        assert!(RawJson::from_text("{").is_err());
    }
}
