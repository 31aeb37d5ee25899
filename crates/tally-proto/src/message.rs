//! The message model: the Segment Spec's six message types, with Tally's
//! own fields under `context.tally`.
//!
//! Known members are typed; everything else a client sends is kept verbatim
//! in `extra` and written back unchanged, so a third-party SDK's fields
//! survive the trip through Tally.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::json::{json_object, RawJson};
use crate::limits::SCHEMA_VERSION;

/// The Segment Spec message types.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// An action the user took (`event` names it).
    Track,
    /// Who the user is (`userId`, `traits`).
    Identify,
    /// A web page view (`name`).
    Page,
    /// A mobile screen view (`name`).
    Screen,
    /// Membership of a group or account (`groupId`).
    Group,
    /// Two identities that are one person (`previousId` → `userId`).
    Alias,
    /// A type this version does not know; rejected as `unknown_type`.
    Other(String),
}

impl MessageType {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Track => "track",
            Self::Identify => "identify",
            Self::Page => "page",
            Self::Screen => "screen",
            Self::Group => "group",
            Self::Alias => "alias",
            Self::Other(s) => s,
        }
    }

    /// Maps a wire name; unknown names become [`MessageType::Other`].
    pub fn from_wire(s: &str) -> Self {
        match s {
            "track" => Self::Track,
            "identify" => Self::Identify,
            "page" => Self::Page,
            "screen" => Self::Screen,
            "group" => Self::Group,
            "alias" => Self::Alias,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The six known types, in Spec order.
    pub const KNOWN: [MessageType; 6] = [
        Self::Track,
        Self::Identify,
        Self::Page,
        Self::Screen,
        Self::Group,
        Self::Alias,
    ];
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MessageType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MessageType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = crate::json::Key::deserialize(d)?;
        Ok(Self::from_wire(&key.0))
    }
}

/// Delivery priority set by the app. Critical events are kept longest when
/// the device queue is full and are sent first after reconnecting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// The default.
    #[default]
    Normal,
    /// Purchases, sign-ups: the events a business cannot lose.
    Critical,
}

json_object! {
    /// Tally's own fields, under `context.tally`. Absent in messages from
    /// third-party SDKs, which are then deduplicated by `messageId` alone
    /// and have no completeness accounting.
    pub struct TallyContext {
        /// One app install on one device; random, made at first start.
        install_id: String = "install_id",
        /// Per-install capture counter, starting at 1, strictly +1.
        seq: u64 = "seq",
        /// The session this event belongs to.
        session_id: String = "session_id",
        /// 1 for the install's first session, +1 for each new one.
        session_index: u64 = "session_index",
        /// Schema version of this message ([`SCHEMA_VERSION`] when made by
        /// this crate).
        schema: u32 = "schema",
        /// Delivery priority.
        priority: Priority = "priority",
        /// Business idempotency key (an order id): first writer wins across
        /// every device.
        dedup_key: String = "dedup_key",
        /// The version of this event in the tracking plan the app was
        /// built against: the collector judges the event by that version.
        event_version: u32 = "event_version",
    }
}

json_object! {
    /// `context.app`.
    pub struct App {
        /// App name.
        name: String = "name",
        /// Marketing version (`1.4.2`).
        version: String = "version",
        /// Build number.
        build: String = "build",
        /// Bundle id or package name.
        namespace: String = "namespace",
    }
}

json_object! {
    /// `context.device`. Tally's SDK sends no device name or advertising id.
    pub struct Device {
        /// Manufacturer.
        manufacturer: String = "manufacturer",
        /// Model (`iPhone15,2`, `Pixel 8`).
        model: String = "model",
        /// Device class (`ios`, `android`, `desktop`).
        device_type: String = "type",
    }
}

json_object! {
    /// `context.os`.
    pub struct Os {
        /// OS name.
        name: String = "name",
        /// OS version.
        version: String = "version",
    }
}

json_object! {
    /// `context.library`: the SDK that made the message.
    pub struct Library {
        /// Library name (`tally-sdk`, `analytics-python`).
        name: String = "name",
        /// Library version.
        version: String = "version",
    }
}

json_object! {
    /// The message `context`.
    pub struct Context {
        /// The app.
        app: App = "app",
        /// The device.
        device: Device = "device",
        /// The operating system.
        os: Os = "os",
        /// The SDK.
        library: Library = "library",
        /// BCP 47 locale (`en-GB`).
        locale: String = "locale",
        /// IANA time zone (`Europe/Paris`).
        timezone: String = "timezone",
        /// Tally's fields.
        tally: TallyContext = "tally",
    }
}

json_object! {
    /// One message of the Segment Spec. Every member is optional at the type
    /// level so any client's message decodes; [`crate::validate`] says
    /// whether it is acceptable and why not.
    pub struct Message {
        /// `type`.
        kind: MessageType = "type",
        /// The exact dedup key, forever.
        message_id: String = "messageId",
        /// Device clock at capture (RFC 3339).
        timestamp: String = "timestamp",
        /// Capture time as RudderStack's browser SDK sends it, used when
        /// `timestamp` is absent.
        original_timestamp: String = "originalTimestamp",
        /// Device clock at send, per message (wins over the batch's).
        sent_at: String = "sentAt",
        /// The known user.
        user_id: String = "userId",
        /// The anonymous identity (Tally: the install's current one).
        anonymous_id: String = "anonymousId",
        /// Event name of a track.
        event: String = "event",
        /// Name of a page or screen.
        name: String = "name",
        /// Group of a group call.
        group_id: String = "groupId",
        /// Old identity of an alias call.
        previous_id: String = "previousId",
        /// Event properties (track, page, screen), kept raw.
        properties: RawJson = "properties",
        /// Traits (identify, group), kept raw.
        traits: RawJson = "traits",
        /// Context.
        context: Context = "context",
        /// Destinations switchboard, kept raw.
        integrations: RawJson = "integrations",
        /// Write key some SDKs put in every message.
        write_key: String = "writeKey",
    }
}

impl Message {
    fn of_kind(
        kind: MessageType,
        message_id: impl Into<String>,
        timestamp: impl Into<String>,
    ) -> Self {
        Self {
            kind: Some(kind),
            message_id: Some(message_id.into()),
            timestamp: Some(timestamp.into()),
            ..Self::default()
        }
    }

    /// A track message. Identity and context are set by the caller.
    pub fn track(
        message_id: impl Into<String>,
        timestamp: impl Into<String>,
        event: impl Into<String>,
    ) -> Self {
        Self {
            event: Some(event.into()),
            ..Self::of_kind(MessageType::Track, message_id, timestamp)
        }
    }

    /// An identify message for `user_id`.
    pub fn identify(
        message_id: impl Into<String>,
        timestamp: impl Into<String>,
        user_id: impl Into<String>,
    ) -> Self {
        Self {
            user_id: Some(user_id.into()),
            ..Self::of_kind(MessageType::Identify, message_id, timestamp)
        }
    }

    /// A page or screen view named `name` (`kind` must be page or screen).
    pub fn view(
        kind: MessageType,
        message_id: impl Into<String>,
        timestamp: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            name: Some(name.into()),
            ..Self::of_kind(kind, message_id, timestamp)
        }
    }

    /// A group message for `group_id`.
    pub fn group(
        message_id: impl Into<String>,
        timestamp: impl Into<String>,
        group_id: impl Into<String>,
    ) -> Self {
        Self {
            group_id: Some(group_id.into()),
            ..Self::of_kind(MessageType::Group, message_id, timestamp)
        }
    }

    /// An alias of `previous_id` to `user_id`.
    pub fn alias(
        message_id: impl Into<String>,
        timestamp: impl Into<String>,
        previous_id: impl Into<String>,
        user_id: impl Into<String>,
    ) -> Self {
        Self {
            previous_id: Some(previous_id.into()),
            user_id: Some(user_id.into()),
            ..Self::of_kind(MessageType::Alias, message_id, timestamp)
        }
    }

    /// `context.tally`, created (with the current schema version) if absent.
    pub fn tally_mut(&mut self) -> &mut TallyContext {
        self.context
            .get_or_insert_with(Context::default)
            .tally
            .get_or_insert_with(|| TallyContext {
                schema: Some(SCHEMA_VERSION),
                ..TallyContext::default()
            })
    }

    /// `context.tally`, if present.
    pub fn tally(&self) -> Option<&TallyContext> {
        self.context.as_ref().and_then(|c| c.tally.as_ref())
    }

    /// A non-empty id: the Spec treats `""` the same as an absent id.
    pub fn non_empty(id: &Option<String>) -> Option<&str> {
        id.as_deref().filter(|s| !s.is_empty())
    }

    /// The capture timestamp text: `timestamp`, else `originalTimestamp`.
    pub fn capture_timestamp(&self) -> Option<&str> {
        Self::non_empty(&self.timestamp).or(Self::non_empty(&self.original_timestamp))
    }

    /// The event name a query groups by: `event` for a track, `name` for a
    /// page or screen, nothing for the other types.
    pub fn event_name(&self) -> Option<&str> {
        match self.kind {
            Some(MessageType::Track) => Self::non_empty(&self.event),
            Some(MessageType::Page | MessageType::Screen) => Self::non_empty(&self.name),
            _ => None,
        }
    }

    /// The message as compact JSON.
    pub fn to_json(&self) -> String {
        // Serializing this type cannot fail: every member is a string, a
        // number, a bool or already-valid raw JSON, and maps have string keys.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(feature = "openapi")]
impl crate::openapi::WireSchema for MessageType {
    fn wire_schema() -> utoipa::openapi::schema::Schema {
        crate::openapi::string()
            .enum_values(Some(MessageType::KNOWN.iter().map(MessageType::as_str)))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl crate::openapi::WireSchema for Priority {
    fn wire_schema() -> utoipa::openapi::schema::Schema {
        crate::openapi::string()
            .enum_values(Some(["normal", "critical"]))
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_members_survive_a_round_trip_in_order() {
        let text = r#"{"type":"track","messageId":"m1","zeta":{"x":[1,2]},"event":"A","alpha":null,"context":{"ip":"1.2.3.4","tally":{"seq":3,"future":true}}}"#;
        let msg: Message = serde_json::from_str(text).unwrap();
        assert_eq!(msg.kind, Some(MessageType::Track));
        assert_eq!(msg.extra.0.len(), 2);
        assert_eq!(msg.extra.get("zeta").unwrap().get(), r#"{"x":[1,2]}"#);
        let ctx = msg.context.as_ref().unwrap();
        assert_eq!(ctx.extra.get("ip").unwrap().get(), r#""1.2.3.4""#);
        assert_eq!(msg.tally().unwrap().seq, Some(3));
        assert_eq!(
            msg.tally().unwrap().extra.get("future").unwrap().get(),
            "true"
        );
        let again: Message = serde_json::from_str(&msg.to_json()).unwrap();
        assert_eq!(again, msg);
        assert_eq!(
            msg.to_json(),
            r#"{"type":"track","messageId":"m1","event":"A","context":{"tally":{"seq":3,"future":true},"ip":"1.2.3.4"},"zeta":{"x":[1,2]},"alpha":null}"#
        );
    }

    #[test]
    fn unknown_type_is_kept_not_refused() {
        let msg: Message = serde_json::from_str(r#"{"type":"purchase"}"#).unwrap();
        assert_eq!(msg.kind, Some(MessageType::Other("purchase".into())));
        assert_eq!(msg.to_json(), r#"{"type":"purchase"}"#);
    }

    #[test]
    fn escaped_keys_are_matched_after_unescaping() {
        let msg: Message = serde_json::from_str(r#"{"\u0074ype":"alias"}"#).unwrap();
        assert_eq!(msg.kind, Some(MessageType::Alias));
    }

    #[test]
    fn builders_set_the_fields_of_their_type() {
        let mut m = Message::alias("id", "2024-01-01T00:00:00Z", "anon", "u1");
        m.tally_mut().seq = Some(1);
        assert_eq!(m.previous_id.as_deref(), Some("anon"));
        assert_eq!(m.user_id.as_deref(), Some("u1"));
        assert_eq!(m.tally().unwrap().schema, Some(SCHEMA_VERSION));
        let page = Message::view(MessageType::Page, "p", "2024-01-01T00:00:00Z", "Home");
        assert_eq!(page.event_name(), Some("Home"));
        assert_eq!(Message::track("t", "x", "").event_name(), None);
    }
}
