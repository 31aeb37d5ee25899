//! Event properties (and traits), built as JSON text.
//!
//! A [`Props`] is a JSON object kept as its text, with its member count and
//! nesting depth tracked as it is built. That is what lets
//! [`crate::Tracker::track`] check the size, count and depth limits in
//! constant time on the caller's thread and hand the properties to the
//! pipeline without copying or re-encoding them.

use serde::Serialize;
use tally_proto::json_depth;

/// Why properties could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PropsError {
    /// [`Props::from_json`] was given text that is not JSON.
    #[error("properties are not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// [`Props::from_json`] was given JSON that is not an object.
    #[error("properties must be a JSON object")]
    NotAnObject,
    /// A value could not be serialized (a map with non-string keys, or a
    /// `Serialize` implementation that failed).
    #[error("property value could not be serialized: {0}")]
    Unserializable(#[source] serde_json::Error),
}

/// A JSON object of event properties.
///
/// ```
/// use tally_sdk::Props;
/// let props = Props::new().with("screen", "home").with("count", 3).with("ok", true);
/// assert_eq!(props.as_json(), r#"{"screen":"home","count":3,"ok":true}"#);
/// assert_eq!(props.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Props {
    json: String,
    count: usize,
    depth: usize,
}

impl Default for Props {
    fn default() -> Self {
        Self::new()
    }
}

impl Props {
    /// An empty object, with room for a few properties: one allocation
    /// where growing from two bytes would take five.
    pub fn new() -> Self {
        let mut json = String::with_capacity(64);
        json.push_str("{}");
        Self {
            json,
            count: 0,
            depth: 1,
        }
    }

    /// Adds `key: value`; a value that cannot be serialized is skipped
    /// (use [`Props::insert`] to see the error).
    pub fn with<V: Serialize>(mut self, key: &str, value: V) -> Self {
        // Skipping keeps the builder chainable; `insert` reports the error.
        let _ = self.insert(key, &value);
        self
    }

    /// Adds `key: value`. Keys are not deduplicated: add each key once.
    ///
    /// Serialized straight into the object's text, so building a few
    /// properties allocates only as the text grows.
    pub fn insert<V: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &V,
    ) -> Result<(), PropsError> {
        // Without the closing brace, to restore on failure.
        self.json.pop();
        let open = self.json.len();
        if self.count > 0 {
            self.json.push(',');
        }
        let mut text = Text(&mut self.json);
        let written = serde_json::to_writer(&mut text, key).and_then(|()| {
            text.0.push(':');
            let at = text.0.len();
            serde_json::to_writer(&mut text, value).map(|()| at)
        });
        let at = match written {
            Ok(at) => at,
            Err(e) => {
                self.json.truncate(open);
                self.json.push('}');
                return Err(PropsError::Unserializable(e));
            }
        };
        self.depth = self.depth.max(1 + json_depth(&self.json[at..]));
        self.json.push('}');
        self.count += 1;
        Ok(())
    }

    /// Properties from JSON text, which must be an object.
    pub fn from_json(text: &str) -> Result<Self, PropsError> {
        let members: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| {
                if e.is_data() {
                    PropsError::NotAnObject
                } else {
                    PropsError::NotJson(e)
                }
            })?;
        let json = serde_json::to_string(&members).map_err(PropsError::Unserializable)?;
        Ok(Self {
            depth: json_depth(&json),
            count: members.len(),
            json,
        })
    }

    /// The object as compact JSON text.
    pub fn as_json(&self) -> &str {
        &self.json
    }

    /// Number of top-level members.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the object has no member.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Nesting depth of the object (1 for a flat object).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The JSON text, consumed.
    pub fn into_json(self) -> String {
        self.json
    }
}

impl TryFrom<serde_json::Value> for Props {
    type Error = PropsError;

    fn try_from(value: serde_json::Value) -> Result<Self, PropsError> {
        let serde_json::Value::Object(members) = value else {
            return Err(PropsError::NotAnObject);
        };
        let json = serde_json::to_string(&members).map_err(PropsError::Unserializable)?;
        Ok(Self {
            depth: json_depth(&json),
            count: members.len(),
            json,
        })
    }
}

/// Appends what serde_json writes to a `String`. serde_json writes whole
/// UTF-8 sequences (it splits strings only at ASCII escapes), so each piece
/// is valid on its own; a piece that were not would fail the write, never
/// corrupt the text.
struct Text<'a>(&'a mut String);

impl std::io::Write for Text<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let piece = std::str::from_utf8(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.0.push_str(piece);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_escaped_json_and_tracks_count_and_depth() {
        let mut p = Props::new();
        assert_eq!(p.as_json(), "{}");
        assert_eq!(p.depth(), 1);
        p.insert("say \"hi\"", "a\nb").unwrap();
        p.insert("nested", &serde_json::json!({"a": [1, 2]}))
            .unwrap();
        assert_eq!(p.as_json(), r#"{"say \"hi\"":"a\nb","nested":{"a":[1,2]}}"#);
        assert_eq!(p.len(), 2);
        assert_eq!(p.depth(), 3);
        let parsed: serde_json::Value = serde_json::from_str(p.as_json()).unwrap();
        assert_eq!(parsed["say \"hi\""], "a\nb");
    }

    #[test]
    fn a_value_that_fails_to_serialize_leaves_the_object_as_it_was() {
        let mut p = Props::new().with("a", 1);
        let bad: std::collections::HashMap<Vec<u8>, u8> = [(vec![1u8], 1u8)].into();
        assert!(matches!(
            p.insert("bad", &bad),
            Err(PropsError::Unserializable(_))
        ));
        p.insert("é", "naïve ☃ \u{1F600}").unwrap();
        assert_eq!(p.as_json(), "{\"a\":1,\"é\":\"naïve ☃ \u{1F600}\"}");
        assert_eq!((p.len(), p.depth()), (2, 1));
        let empty = Props::new();
        let mut q = empty.clone();
        assert!(q.insert("bad", &bad).is_err());
        assert_eq!(q, empty);
    }

    #[test]
    fn from_json_accepts_only_objects() {
        let p = Props::from_json(r#"{"k": [1, {"x": 2}]}"#).unwrap();
        assert_eq!(p.as_json(), r#"{"k":[1,{"x":2}]}"#);
        assert_eq!((p.len(), p.depth()), (1, 3));
        assert!(matches!(
            Props::from_json("[1]"),
            Err(PropsError::NotAnObject)
        ));
        assert!(matches!(Props::from_json("{"), Err(PropsError::NotJson(_))));
        assert!(matches!(
            Props::try_from(serde_json::json!("x")),
            Err(PropsError::NotAnObject)
        ));
    }
}
