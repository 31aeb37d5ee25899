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
    /// An empty object.
    pub fn new() -> Self {
        Self {
            json: String::from("{}"),
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
    pub fn insert<V: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &V,
    ) -> Result<(), PropsError> {
        let value = serde_json::to_string(value).map_err(PropsError::Unserializable)?;
        let key = serde_json::to_string(key).map_err(PropsError::Unserializable)?;
        self.json.pop();
        if self.count > 0 {
            self.json.push(',');
        }
        self.json.push_str(&key);
        self.json.push(':');
        self.json.push_str(&value);
        self.json.push('}');
        self.count += 1;
        self.depth = self.depth.max(1 + json_depth(&value));
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
