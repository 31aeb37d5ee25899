//! Privacy: what may be stored and sent, decided on the device before
//! anything is persisted.
//!
//! Contract: [`Privacy::filter_properties`] takes a message's properties
//! (or traits) as JSON object text and returns the text to persist, with
//! keys outside the event's allow-list (or inside its deny-list) removed
//! and values under sensitive-looking keys replaced by `"[redacted]"`, at
//! any depth. Text that needs no change is returned untouched (no copy).
//! [`Privacy::user_id`] pseudonymises a user id with HMAC-SHA256 when a key
//! is configured. Neither fails: text that is not an object cannot reach
//! here (the tracker refuses it), and an unparsable value is dropped rather
//! than persisted unfiltered.
//!
//! Consent is enforced around this stage: the tracker refuses messages
//! while consent is denied (and while pending, when configured to store
//! nothing); the uploader sends nothing until consent is granted; denying
//! consent purges the log by crypto-shredding its key.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use hmac::{Hmac, Mac};
use memchr::memmem::Finder;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;

/// The replacement for a redacted value.
pub const REDACTED: &str = "[redacted]";

/// Key fragments that mark a value as sensitive, matched case-insensitively
/// against the key with `_`, `-`, `.` and spaces removed. The brief list of
/// what apps most often leak into analytics by accident: contact details
/// and credentials.
pub const DEFAULT_SENSITIVE_KEYS: &[&str] = &[
    "email",
    "phone",
    "token",
    "password",
    "passwd",
    "secret",
    "apikey",
    "authorization",
];

/// Whether the user agreed to analytics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Consent {
    /// Events are captured and sent.
    Granted,
    /// Nothing is captured; what was stored is shredded.
    Denied,
    /// Not decided yet: events are kept on the device (unless configured
    /// otherwise) but nothing is sent.
    #[default]
    Pending,
}

/// Which property keys an event may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScope {
    /// Only these keys are kept.
    Allow(Vec<String>),
    /// These keys are removed.
    Deny(Vec<String>),
}

/// Privacy settings, fixed when the tracker is built.
#[derive(Clone, Default)]
pub struct PrivacyConfig {
    /// Per event name, which keys are kept.
    pub scopes: HashMap<String, KeyScope>,
    /// Extra sensitive key fragments, on top of [`DEFAULT_SENSITIVE_KEYS`].
    pub extra_sensitive_keys: Vec<String>,
    /// HMAC-SHA256 key for pseudonymising user ids; `None` sends them as
    /// given.
    pub pseudonymisation_key: Option<Vec<u8>>,
}

impl fmt::Debug for PrivacyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivacyConfig")
            .field("scopes", &self.scopes)
            .field("extra_sensitive_keys", &self.extra_sensitive_keys)
            .field("pseudonymisation", &self.pseudonymisation_key.is_some())
            .finish()
    }
}

/// The privacy stage.
#[derive(Debug, Clone)]
pub struct Privacy {
    config: PrivacyConfig,
    /// One searcher per sensitive fragment (normalised), built once: this
    /// stage looks for them in every event's properties.
    sensitive: Vec<Finder<'static>>,
}

/// Normalised text up to this long is built on the stack: the properties of
/// nearly every event, so the check allocates nothing.
const STACK_NORMALISED: usize = 1024;

/// What filtering changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Keys removed by the event's scope.
    pub removed: usize,
    /// Values replaced by [`REDACTED`].
    pub redacted: usize,
}

impl Privacy {
    /// The stage for `config`.
    pub fn new(config: PrivacyConfig) -> Self {
        let sensitive = DEFAULT_SENSITIVE_KEYS
            .iter()
            .map(|s| (*s).to_owned())
            .chain(config.extra_sensitive_keys.iter().map(|k| normalise(k)))
            .map(|s| Finder::new(s.as_bytes()).into_owned())
            .collect();
        Self { config, sensitive }
    }

    /// The user id to store: as given, or `HMAC-SHA256(key, id)` in hex.
    pub fn user_id(&self, id: &str) -> String {
        match &self.config.pseudonymisation_key {
            None => id.to_owned(),
            Some(key) => match Hmac::<Sha256>::new_from_slice(key) {
                Ok(mut mac) => {
                    mac.update(id.as_bytes());
                    mac.finalize()
                        .into_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect()
                }
                // HMAC takes keys of any length; this arm cannot be reached,
                // and if it were, sending nothing identifying is the safe side.
                Err(_) => String::from("pseudonymised"),
            },
        }
    }

    /// Whether `key`, normalised, contains a sensitive fragment.
    fn is_sensitive(&self, key: &str) -> bool {
        self.mentions_sensitive(key)
    }

    /// Whether `text`, normalised, contains a sensitive fragment anywhere:
    /// the quick test that lets most events' properties through untouched.
    fn mentions_sensitive(&self, text: &str) -> bool {
        let found = |normalised: &[u8]| self.sensitive.iter().any(|f| f.find(normalised).is_some());
        if text.len() <= STACK_NORMALISED && text.is_ascii() {
            let mut buf = [0u8; STACK_NORMALISED];
            let n = normalise_ascii_into(text.as_bytes(), &mut buf);
            return found(&buf[..n]);
        }
        found(normalise(text).as_bytes())
    }

    /// Filters the properties of event `event` (`None`: traits, or a
    /// message without a name, where only redaction applies).
    pub fn filter_properties<'a>(
        &self,
        event: Option<&str>,
        json: &'a str,
    ) -> (Cow<'a, str>, Filtered) {
        let scope = event.and_then(|e| self.config.scopes.get(e));
        if scope.is_none() && !self.mentions_sensitive(json) {
            return (Cow::Borrowed(json), Filtered::default());
        }
        let Ok(members) = parse_members(json) else {
            return (Cow::Borrowed("{}"), Filtered::default());
        };
        let mut report = Filtered::default();
        let mut kept: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::with_capacity(members.len());
        let mut changed = false;
        for (key, value) in members {
            let in_scope = match scope {
                None => true,
                Some(KeyScope::Allow(keys)) => keys.iter().any(|k| *k == key),
                Some(KeyScope::Deny(keys)) => !keys.iter().any(|k| *k == key),
            };
            if !in_scope {
                report.removed += 1;
                changed = true;
                continue;
            }
            if self.is_sensitive(&key) {
                report.redacted += 1;
                changed = true;
                kept.push((key, Cow::Owned(format!("\"{REDACTED}\""))));
                continue;
            }
            let raw = value.get();
            if (raw.starts_with('{') || raw.starts_with('[')) && self.mentions_sensitive(raw) {
                match serde_json::from_str::<serde_json::Value>(raw) {
                    Ok(mut tree) => {
                        let n = self.redact_tree(&mut tree);
                        if n > 0 {
                            report.redacted += n;
                            changed = true;
                            kept.push((key, Cow::Owned(tree.to_string())));
                            continue;
                        }
                    }
                    Err(_) => {
                        report.removed += 1;
                        changed = true;
                        continue;
                    }
                }
            }
            kept.push((key, Cow::Borrowed(raw)));
        }
        if !changed {
            return (Cow::Borrowed(json), report);
        }
        let mut out = String::with_capacity(json.len());
        out.push('{');
        for (i, (key, value)) in kept.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::Value::from(key.as_ref()).to_string());
            out.push(':');
            out.push_str(value);
        }
        out.push('}');
        (Cow::Owned(out), report)
    }

    fn redact_tree(&self, tree: &mut serde_json::Value) -> usize {
        match tree {
            serde_json::Value::Object(map) => map
                .iter_mut()
                .map(|(k, v)| {
                    if self.is_sensitive(k) {
                        *v = serde_json::Value::from(REDACTED);
                        1
                    } else {
                        self.redact_tree(v)
                    }
                })
                .sum(),
            serde_json::Value::Array(items) => items.iter_mut().map(|v| self.redact_tree(v)).sum(),
            _ => 0,
        }
    }
}

/// [`normalise`] for ASCII text, into `out` (at least as long as `text`);
/// returns the normalised length.
fn normalise_ascii_into(text: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    for &b in text {
        if !matches!(b, b'_' | b'-' | b'.' | b' ') {
            out[n] = b.to_ascii_lowercase();
            n += 1;
        }
    }
    n
}

fn normalise(key: &str) -> String {
    if key.is_ascii() {
        // Byte-wise: the common case, and many times faster than the
        // Unicode mapping below (this runs over every event's properties).
        return key
            .bytes()
            .filter(|b| !matches!(b, b'_' | b'-' | b'.' | b' '))
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect();
    }
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

type Members<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// The members of a JSON object, keys and values borrowed from the text.
fn parse_members(json: &str) -> Result<Members<'_>, serde_json::Error> {
    struct MembersOf<'a>(Members<'a>);
    impl<'de> Deserialize<'de> for MembersOf<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = MembersOf<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut out = Vec::new();
                    while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                        out.push((key, map.next_value::<&'de RawValue>()?));
                    }
                    Ok(MembersOf(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<MembersOf<'_>>(json).map(|m| m.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn privacy() -> Privacy {
        let mut scopes = HashMap::new();
        scopes.insert(
            "Signup".to_owned(),
            KeyScope::Allow(vec!["plan".into(), "email".into()]),
        );
        scopes.insert("Search".to_owned(), KeyScope::Deny(vec!["query".into()]));
        Privacy::new(PrivacyConfig {
            scopes,
            extra_sensitive_keys: vec!["SSN".into()],
            pseudonymisation_key: None,
        })
    }

    #[test]
    fn untouched_text_is_not_copied() {
        let json = r#"{"screen":"home","n":1}"#;
        let (out, report) = privacy().filter_properties(Some("View"), json);
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(out, json);
        assert_eq!(report, Filtered::default());
    }

    #[test]
    fn sensitive_keys_are_redacted_at_any_depth() {
        let json = r#"{"User_Email":"a@b.c","profile":{"phoneNumber":"1","name":"x","list":[{"authToken":"t"}]},"ssn":"1","ok":true}"#;
        let (out, report) = privacy().filter_properties(None, json);
        assert_eq!(
            out,
            r#"{"User_Email":"[redacted]","profile":{"list":[{"authToken":"[redacted]"}],"name":"x","phoneNumber":"[redacted]"},"ssn":"[redacted]","ok":true}"#
        );
        assert_eq!(
            report,
            Filtered {
                removed: 0,
                redacted: 4
            }
        );
    }

    #[test]
    fn scopes_allow_and_deny_per_event() {
        let json = r#"{"plan":"pro","email":"a@b.c","referrer":"x"}"#;
        let (out, report) = privacy().filter_properties(Some("Signup"), json);
        assert_eq!(out, r#"{"plan":"pro","email":"[redacted]"}"#);
        assert_eq!(
            report,
            Filtered {
                removed: 1,
                redacted: 1
            }
        );
        let (out, report) =
            privacy().filter_properties(Some("Search"), r#"{"query":"q","page":2}"#);
        assert_eq!(out, r#"{"page":2}"#);
        assert_eq!(report.removed, 1);
    }

    #[test]
    fn user_ids_are_pseudonymised_with_hmac_sha256() {
        let p = Privacy::new(PrivacyConfig {
            pseudonymisation_key: Some(b"key".to_vec()),
            ..PrivacyConfig::default()
        });
        // RFC 4231-style check computed independently:
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            p.user_id("The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert_eq!(privacy().user_id("u-1"), "u-1");
    }
}
