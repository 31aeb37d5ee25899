//! Why a message was rejected: a stable code per reason.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, )*) => {
        /// Why one message was rejected. The string code ([`RejectReason::as_str`])
        /// is part of the wire protocol and never changes meaning.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum RejectReason {
            $( $(#[$doc])* $variant, )*
        }

        impl RejectReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [RejectReason] = &[$(RejectReason::$variant),*];

            /// The stable wire code.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( RejectReason::$variant => $code, )*
                }
            }
        }

        impl FromStr for RejectReason {
            type Err = UnknownReason;
            fn from_str(s: &str) -> Result<Self, UnknownReason> {
                match s {
                    $( $code => Ok(RejectReason::$variant), )*
                    _ => Err(UnknownReason),
                }
            }
        }
    };
}

reasons! {
    /// The message is not a JSON object, or a known member has the wrong
    /// JSON type (`messageId` a number, `context` a string).
    MalformedMessage = "malformed_message",
    /// No `type`.
    MissingType = "missing_type",
    /// A `type` other than the Spec's six.
    UnknownType = "unknown_type",
    /// No `messageId`, or an empty one.
    MissingMessageId = "missing_message_id",
    /// `messageId` longer than [`crate::limits::MAX_MESSAGE_ID_BYTES`].
    MessageIdTooLong = "message_id_too_long",
    /// Neither `userId` nor `anonymousId` is a non-empty string.
    MissingIdentity = "missing_identity",
    /// An id longer than [`crate::limits::MAX_ID_BYTES`].
    IdTooLong = "id_too_long",
    /// A track without `event`.
    MissingEventName = "missing_event_name",
    /// An event, page or screen name longer than
    /// [`crate::limits::MAX_EVENT_NAME_BYTES`].
    EventNameTooLong = "event_name_too_long",
    /// A group without `groupId`.
    MissingGroupId = "missing_group_id",
    /// An alias without `previousId`.
    MissingPreviousId = "missing_previous_id",
    /// `properties` or `traits` present but not a JSON object.
    PropertiesNotObject = "properties_not_object",
    /// `properties` or `traits` larger than
    /// [`crate::limits::MAX_PROPERTIES_BYTES`].
    PropertiesTooLarge = "properties_too_large",
    /// The whole message larger than [`crate::limits::MAX_MESSAGE_BYTES`].
    MessageTooLarge = "message_too_large",
    /// Objects and arrays nested deeper than [`crate::limits::MAX_JSON_DEPTH`].
    NestingTooDeep = "nesting_too_deep",
    /// `timestamp`, `originalTimestamp` or `sentAt` is not a date-time.
    BadTimestamp = "bad_timestamp",
    /// `context.tally.seq` is 0 (sequences start at 1).
    SeqZero = "seq_zero",
    /// `context.tally` has a `seq` without an `install_id`, or an empty or
    /// overlong `install_id`.
    BadInstallId = "bad_install_id",
    /// `context.tally.schema` is 0: no such version was ever written.
    UnsupportedSchema = "unsupported_schema",
    /// The user was deleted: events for them are refused from then on, and
    /// the device should purge what it still holds for them.
    DeletedUser = "deleted_user",
    /// An id, a name or another member the collector indexes (`messageId`,
    /// `userId`, `anonymousId`, `groupId`, `previousId`, `event`, `name`,
    /// `context.tally` ids) holds a NUL character (U+0000), which
    /// PostgreSQL's text cannot store and no identifier needs.
    NulCharacter = "nul_character",
    /// A `tally.dropped` report without `context.tally.install_id` and
    /// `seq`, whose properties are not `{"reason", "ranges"}`, whose reason
    /// is not a short snake_case code, or with a range that is empty, starts
    /// at 0 or reaches the report's own seq: a device only reports seqs it
    /// assigned before the report.
    InvalidDropReport = "invalid_drop_report",
    /// An `alias` whose `previousId` is a user id that already has events of
    /// its own: merging two identified users is refused, so no client can
    /// join another user's data to its own.
    AliasOfIdentifiedUser = "alias_of_identified_user",
    /// A code this version does not know (from a newer collector).
    Unrecognized = "unrecognized",
}

/// A reason code that is not one of [`RejectReason::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown reject reason code")]
pub struct UnknownReason;

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RejectReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RejectReason {
    /// Unknown codes map to [`RejectReason::Unrecognized`], so an SDK keeps
    /// working against a newer collector.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = crate::json::Key::deserialize(d)?;
        Ok(key.0.parse().unwrap_or(RejectReason::Unrecognized))
    }
}

/// A rejected message: the reason, and which rule in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// The stable reason.
    pub reason: RejectReason,
    /// Which member or rule, for people (never holds message content).
    pub detail: &'static str,
}

impl Rejection {
    pub(crate) fn new(reason: RejectReason, detail: &'static str) -> Self {
        Self { reason, detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for r in RejectReason::ALL {
            let code = r.as_str();
            assert!(seen.insert(code), "{code} twice");
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
            assert_eq!(code.parse::<RejectReason>(), Ok(*r));
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<RejectReason>(&json).unwrap(), *r);
        }
        assert_eq!(
            serde_json::from_str::<RejectReason>("\"from_the_future\"").unwrap(),
            RejectReason::Unrecognized
        );
    }
}
