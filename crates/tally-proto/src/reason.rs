//! Why a message was rejected ([`RejectReason`]) or dropped on the device
//! ([`DropReason`]): a stable code per reason.
//!
//! Both vocabularies are part of the wire protocol: a rejection's code
//! travels in the collector's answer, a drop's in the SDK's
//! `tally.dropped` report (see [`crate::drops`]) and in its health
//! report. A code never changes meaning; a new reason gets a new code.

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
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( RejectReason::$variant => $code, )*
                }
            }

            /// The drop code of a message the device built and found this
            /// rejection in: `invalid:` and the code.
            const fn invalid_drop_code(self) -> &'static str {
                match self {
                    $( RejectReason::$variant => concat!("invalid:", $code), )*
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
    /// A track event whose properties break the schema of its version in
    /// the tracking plan, from a source whose plan mode is `enforce`; the
    /// dead letter names the version, the rule and the path.
    PlanViolation = "plan_violation",
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

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, )*) => {
        /// Why the device dropped a message that had taken a `seq`: the
        /// reason a `tally.dropped` report names for its ranges, and the key
        /// of the SDK's `health().dropped` counts.
        ///
        /// The codes ([`DropReason::as_str`]) are the documented list: the
        /// plain ones of [`DropReason::PLAIN`], `invalid:` followed by a
        /// [`RejectReason`] code, and [`DropReason::Uninstalled`], which no
        /// device reports (it is the simulator's name for what an
        /// uninstalled app still held). A code from another SDK version
        /// that is not one of these is not an error where drops are
        /// stored and counted: the collector and the device's files keep
        /// the code as it came and count it under it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
            /// The message the pipeline built would be rejected for this
            /// reason (`invalid:<reject code>`): the caller's checks catch
            /// most rules at the call, so this is rare (a message over
            /// the size limit only with its context).
            Invalid(RejectReason),
        }

        impl DropReason {
            /// Every reason without a parameter, in declaration order.
            pub const PLAIN: &'static [DropReason] = &[$(DropReason::$variant),*];

            /// The stable wire code.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( DropReason::$variant => $code, )*
                    DropReason::Invalid(r) => r.invalid_drop_code(),
                }
            }
        }

        impl FromStr for DropReason {
            type Err = UnknownDropReason;
            fn from_str(s: &str) -> Result<Self, UnknownDropReason> {
                match s {
                    $( $code => Ok(DropReason::$variant), )*
                    _ => s
                        .strip_prefix(INVALID_PREFIX)
                        .and_then(|r| r.parse().ok())
                        .map(DropReason::Invalid)
                        .ok_or(UnknownDropReason),
                }
            }
        }
    };
}

/// What a [`DropReason::Invalid`] code starts with.
const INVALID_PREFIX: &str = "invalid:";

drop_reasons! {
    /// A bound of the device's log (its most events or bytes) dropped the
    /// record to make room, the oldest normal records first, or refused
    /// its append.
    LogFull = "log_full",
    /// The record stayed pending longer than the log's age bound.
    Expired = "expired",
    /// The append was refused because the log's writer was too far behind
    /// (the disk stalls or is full).
    WriterBacklog = "writer_backlog",
    /// The record failed its checksum or could not be decrypted (its key is
    /// gone).
    Corrupt = "corrupt",
    /// Consent was denied: what was stored was shredded, and what was
    /// captured before the denial took effect was not stored.
    ConsentDenied = "consent_denied",
    /// The collector answered that the record's user was deleted.
    DeletedUser = "deleted_user",
    /// The log refused the record as larger than it can hold.
    TooLarge = "too_large",
    /// The log could not store the record (an I/O error).
    PersistFailed = "persist_failed",
    /// The uploader gave up on the record: the collector could not decode
    /// it, even alone and re-encoded.
    QuarantinedUndecodable = "quarantined_undecodable",
    /// The uploader gave up on the record: the collector refused it as too
    /// large even alone.
    QuarantinedTooLarge = "quarantined_too_large",
    /// The uploader gave up on the record: the collector kept answering it
    /// with a server error.
    QuarantinedServerError = "quarantined_server_error",
    /// Not reported by a device: what an uninstalled app still held, as
    /// the simulator accounts for it.
    Uninstalled = "uninstalled",
}

/// A drop code that is none of [`DropReason`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown drop reason code")]
pub struct UnknownDropReason;

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DropReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DropReason {
    /// An unknown code is an error: where a code from another version may
    /// arrive, it is kept as text (see [`DropReason`]).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = crate::json::Key::deserialize(d)?;
        key.0.parse().map_err(serde::de::Error::custom)
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

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for RejectReason {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::string()
            .description(Some("Why a message was rejected: a stable code."))
            .enum_values(Some(RejectReason::ALL.iter().map(|r| r.as_str())))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for RejectReason {}

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

    #[test]
    fn drop_codes_are_exactly_the_documented_list() {
        let plain: Vec<&str> = DropReason::PLAIN.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            plain,
            [
                "log_full",
                "expired",
                "writer_backlog",
                "corrupt",
                "consent_denied",
                "deleted_user",
                "too_large",
                "persist_failed",
                "quarantined_undecodable",
                "quarantined_too_large",
                "quarantined_server_error",
                "uninstalled",
            ]
        );
        assert_eq!(
            DropReason::Invalid(RejectReason::MessageTooLarge).as_str(),
            "invalid:message_too_large"
        );
        for r in RejectReason::ALL {
            let code = DropReason::Invalid(*r).as_str();
            assert_eq!(code, format!("invalid:{}", r.as_str()));
        }
    }

    #[test]
    fn drop_codes_round_trip_and_unknown_ones_are_refused() {
        let every = DropReason::PLAIN
            .iter()
            .copied()
            .chain(RejectReason::ALL.iter().map(|r| DropReason::Invalid(*r)));
        let mut seen = std::collections::HashSet::new();
        for r in every {
            let code = r.as_str();
            assert!(seen.insert(code), "{code} twice");
            assert_eq!(code.parse::<DropReason>(), Ok(r));
            assert_eq!(r.to_string(), code);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<DropReason>(&json).unwrap(), r);
        }
        // The plain codes pass a drop report's code check.
        for r in DropReason::PLAIN {
            let code = r.as_str();
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
        for unknown in ["queue_full", "invalid:", "invalid:from_the_future", ""] {
            assert_eq!(unknown.parse::<DropReason>(), Err(UnknownDropReason));
        }
        assert!(serde_json::from_str::<DropReason>("\"queue_full\"").is_err());
    }
}
