//! Validation of one message: every rejection has a typed reason.
//!
//! Checks run in a fixed order (shape, ids, type-specific members, NUL
//! characters, sizes, times, `context.tally`, drop reports) so a message breaking several rules always gets
//! the same reason. Validation never changes the message: fixing it is the
//! sender's job; the reason says what to fix.

use crate::drops::DropReport;
use crate::json::{json_depth, RawJson};
use crate::limits::{
    MAX_EVENT_NAME_BYTES, MAX_ID_BYTES, MAX_JSON_DEPTH, MAX_MESSAGE_BYTES, MAX_MESSAGE_ID_BYTES,
    MAX_PROPERTIES_BYTES,
};
use crate::message::{Message, MessageType};
use crate::reason::{RejectReason, Rejection};
use crate::timestamp::parse_timestamp;

/// What validation learned about an acceptable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// One of the six known types.
    pub kind: MessageType,
    /// The capture time in Unix ms (`timestamp`, else `originalTimestamp`),
    /// if the message has one.
    pub timestamp: Option<i64>,
    /// The message's own `sentAt` in Unix ms, if any.
    pub sent_at: Option<i64>,
}

/// Validates `msg`, whose JSON text as received is `raw` (used for the size
/// and depth limits: they apply to what was sent, not to a re-encoding).
pub fn validate(msg: &Message, raw: &str) -> Result<Checked, Rejection> {
    use RejectReason as R;

    let kind = match &msg.kind {
        None => return Err(Rejection::new(R::MissingType, "no type")),
        Some(MessageType::Other(_)) => {
            return Err(Rejection::new(
                R::UnknownType,
                "type is not one of the Spec's six",
            ))
        }
        Some(kind) => kind.clone(),
    };

    let Some(message_id) = Message::non_empty(&msg.message_id) else {
        return Err(Rejection::new(R::MissingMessageId, "no messageId"));
    };
    if message_id.len() > MAX_MESSAGE_ID_BYTES {
        return Err(Rejection::new(R::MessageIdTooLong, "messageId too long"));
    }

    let user_id = Message::non_empty(&msg.user_id);
    let anonymous_id = Message::non_empty(&msg.anonymous_id);
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Rejection::new(
            R::MissingIdentity,
            "neither userId nor anonymousId",
        ));
    }
    let ids = [
        &msg.user_id,
        &msg.anonymous_id,
        &msg.group_id,
        &msg.previous_id,
    ];
    if ids
        .iter()
        .any(|id| id.as_ref().is_some_and(|s| s.len() > MAX_ID_BYTES))
    {
        return Err(Rejection::new(R::IdTooLong, "an id is too long"));
    }

    match kind {
        MessageType::Track => match Message::non_empty(&msg.event) {
            None => return Err(Rejection::new(R::MissingEventName, "track without event")),
            Some(e) if e.len() > MAX_EVENT_NAME_BYTES => {
                return Err(Rejection::new(R::EventNameTooLong, "event name too long"))
            }
            Some(_) => {}
        },
        MessageType::Page | MessageType::Screen
            if msg
                .name
                .as_ref()
                .is_some_and(|n| n.len() > MAX_EVENT_NAME_BYTES) =>
        {
            return Err(Rejection::new(
                R::EventNameTooLong,
                "page or screen name too long",
            ));
        }
        MessageType::Group if Message::non_empty(&msg.group_id).is_none() => {
            return Err(Rejection::new(R::MissingGroupId, "group without groupId"));
        }
        MessageType::Alias if Message::non_empty(&msg.previous_id).is_none() => {
            return Err(Rejection::new(
                R::MissingPreviousId,
                "alias without previousId",
            ));
        }
        _ => {}
    }

    if indexed_text(msg).any(|s| s.contains('\0')) {
        return Err(Rejection::new(
            R::NulCharacter,
            "an id or a name holds a NUL character",
        ));
    }

    for bag in [&msg.properties, &msg.traits].into_iter().flatten() {
        check_bag(bag)?;
    }
    if raw.len() > MAX_MESSAGE_BYTES {
        return Err(Rejection::new(
            R::MessageTooLarge,
            "message larger than 32 KiB",
        ));
    }
    // Nesting deeper than the limit needs more opening brackets than the
    // limit; counting them is a loop the compiler vectorizes, so almost
    // every message skips the string-aware depth scan.
    let openers = raw.bytes().filter(|&b| b == b'{' || b == b'[').count();
    if openers > MAX_JSON_DEPTH && json_depth(raw) > MAX_JSON_DEPTH {
        return Err(Rejection::new(
            R::NestingTooDeep,
            "nested deeper than 32 levels",
        ));
    }

    let timestamp = match msg.capture_timestamp() {
        None => None,
        Some(text) => Some(
            parse_timestamp(text)
                .ok_or(Rejection::new(R::BadTimestamp, "timestamp is not RFC 3339"))?,
        ),
    };
    let sent_at = match Message::non_empty(&msg.sent_at) {
        None => None,
        Some(text) => Some(
            parse_timestamp(text)
                .ok_or(Rejection::new(R::BadTimestamp, "sentAt is not RFC 3339"))?,
        ),
    };

    if let Some(tally) = msg.tally() {
        if tally.schema == Some(0) {
            return Err(Rejection::new(
                R::UnsupportedSchema,
                "schema 0 does not exist",
            ));
        }
        if tally.seq == Some(0) {
            return Err(Rejection::new(R::SeqZero, "seq starts at 1"));
        }
        match tally.install_id.as_deref() {
            None if tally.seq.is_some() => {
                return Err(Rejection::new(R::BadInstallId, "seq without install_id"))
            }
            Some("") => return Err(Rejection::new(R::BadInstallId, "empty install_id")),
            Some(id) if id.len() > MAX_ID_BYTES => {
                return Err(Rejection::new(R::BadInstallId, "install_id too long"))
            }
            _ => {}
        }
        let tally_ids = [&tally.session_id, &tally.dedup_key];
        if tally_ids
            .iter()
            .any(|id| id.as_ref().is_some_and(|s| s.len() > MAX_ID_BYTES))
        {
            return Err(Rejection::new(
                R::IdTooLong,
                "session_id or dedup_key too long",
            ));
        }
    }

    DropReport::of(msg)?;

    Ok(Checked {
        kind,
        timestamp,
        sent_at,
    })
}

/// The members a collector stores in indexed text columns: ids and names.
fn indexed_text(msg: &Message) -> impl Iterator<Item = &str> {
    let tally = msg.tally();
    [
        &msg.message_id,
        &msg.user_id,
        &msg.anonymous_id,
        &msg.group_id,
        &msg.previous_id,
        &msg.event,
        &msg.name,
    ]
    .into_iter()
    .chain(tally.map(|t| &t.install_id))
    .chain(tally.map(|t| &t.session_id))
    .chain(tally.map(|t| &t.dedup_key))
    .filter_map(|s| s.as_deref())
}

fn check_bag(bag: &RawJson) -> Result<(), Rejection> {
    if bag.is_null() {
        return Ok(());
    }
    if !bag.is_object() {
        return Err(Rejection::new(
            RejectReason::PropertiesNotObject,
            "properties or traits is not an object",
        ));
    }
    if bag.get().len() > MAX_PROPERTIES_BYTES {
        return Err(Rejection::new(
            RejectReason::PropertiesTooLarge,
            "properties or traits larger than 24 KiB",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use RejectReason as R;

    fn check(raw: &str) -> Result<Checked, RejectReason> {
        let msg: Message = serde_json::from_str(raw).unwrap();
        validate(&msg, raw).map_err(|r| r.reason)
    }

    fn track_with(extra: &str) -> String {
        format!(
            r#"{{"type":"track","messageId":"m","anonymousId":"a","event":"E","timestamp":"2024-01-01T00:00:00Z"{extra}}}"#
        )
    }

    #[test]
    fn a_good_track_passes_with_its_times() {
        let ok = check(&track_with(r#","sentAt":"2024-01-01T00:00:01Z""#)).unwrap();
        assert_eq!(ok.kind, MessageType::Track);
        assert_eq!(ok.timestamp, Some(1_704_067_200_000));
        assert_eq!(ok.sent_at, Some(1_704_067_201_000));
    }

    #[test]
    fn every_known_type_passes_with_its_required_members() {
        for raw in [
            r#"{"type":"identify","messageId":"m","userId":"u","traits":{"plan":"pro"}}"#,
            r#"{"type":"page","messageId":"m","anonymousId":"a","name":"Home"}"#,
            r#"{"type":"page","messageId":"m","anonymousId":"a"}"#,
            r#"{"type":"screen","messageId":"m","userId":"u","name":"Cart","properties":null}"#,
            r#"{"type":"group","messageId":"m","userId":"u","groupId":"g"}"#,
            r#"{"type":"alias","messageId":"m","userId":"u","previousId":"p"}"#,
        ] {
            assert!(check(raw).is_ok(), "{raw}");
        }
    }

    #[test]
    fn a_nul_in_an_id_or_a_name_is_refused_and_in_properties_is_not() {
        for raw in [
            r#"{"type":"track","messageId":"m\u0000","anonymousId":"a","event":"E"}"#,
            r#"{"type":"track","messageId":"m","userId":"u\u0000x","event":"E"}"#,
            r#"{"type":"track","messageId":"m","anonymousId":"\u0000","event":"E"}"#,
            r#"{"type":"track","messageId":"m","anonymousId":"a","event":"E\u0000"}"#,
            r#"{"type":"page","messageId":"m","anonymousId":"a","name":"\u0000"}"#,
            r#"{"type":"group","messageId":"m","userId":"u","groupId":"g\u0000"}"#,
            r#"{"type":"alias","messageId":"m","userId":"u","previousId":"p\u0000"}"#,
            r#"{"type":"track","messageId":"m","anonymousId":"a","event":"E","context":{"tally":{"install_id":"i\u0000","seq":1}}}"#,
            r#"{"type":"track","messageId":"m","anonymousId":"a","event":"E","context":{"tally":{"session_id":"s\u0000"}}}"#,
            r#"{"type":"track","messageId":"m","anonymousId":"a","event":"E","context":{"tally":{"dedup_key":"\u0000"}}}"#,
        ] {
            assert_eq!(check(raw), Err(R::NulCharacter), "{raw}");
        }
        let in_props = r#"{"type":"track","messageId":"m","anonymousId":"a","event":"E","properties":{"k\u0000":"v\u0000"}}"#;
        assert!(check(in_props).is_ok());
    }

    #[test]
    fn a_drop_report_reaching_its_own_seq_is_refused() {
        let report = |to: u64| {
            format!(
                r#"{{"type":"track","messageId":"m","anonymousId":"a","event":"tally.dropped","properties":{{"reason":"queue_full","ranges":[[1,{to}]]}},"context":{{"tally":{{"install_id":"i","seq":5}}}}}}"#
            )
        };
        assert!(check(&report(4)).is_ok());
        assert_eq!(check(&report(5)), Err(R::InvalidDropReport));
    }

    #[test]
    fn missing_type() {
        assert_eq!(
            check(r#"{"messageId":"m","userId":"u"}"#),
            Err(R::MissingType)
        );
    }

    #[test]
    fn unknown_type() {
        assert_eq!(
            check(r#"{"type":"purchase","messageId":"m","userId":"u"}"#),
            Err(R::UnknownType)
        );
    }

    #[test]
    fn missing_message_id_absent_or_empty() {
        assert_eq!(
            check(r#"{"type":"identify","userId":"u"}"#),
            Err(R::MissingMessageId)
        );
        assert_eq!(
            check(r#"{"type":"identify","messageId":"","userId":"u"}"#),
            Err(R::MissingMessageId)
        );
    }

    #[test]
    fn message_id_too_long() {
        let long = "m".repeat(MAX_MESSAGE_ID_BYTES + 1);
        let raw = format!(r#"{{"type":"identify","messageId":"{long}","userId":"u"}}"#);
        assert_eq!(check(&raw), Err(R::MessageIdTooLong));
        let max = "m".repeat(MAX_MESSAGE_ID_BYTES);
        let raw = format!(r#"{{"type":"identify","messageId":"{max}","userId":"u"}}"#);
        assert!(check(&raw).is_ok());
    }

    #[test]
    fn missing_identity_when_both_ids_absent_null_or_empty() {
        assert_eq!(
            check(r#"{"type":"track","messageId":"m","event":"E","userId":null,"anonymousId":""}"#),
            Err(R::MissingIdentity)
        );
        assert!(check(
            r#"{"type":"track","messageId":"m","event":"E","userId":null,"anonymousId":"a"}"#
        )
        .is_ok());
    }

    #[test]
    fn id_too_long() {
        let long = "u".repeat(MAX_ID_BYTES + 1);
        let raw = format!(r#"{{"type":"identify","messageId":"m","userId":"{long}"}}"#);
        assert_eq!(check(&raw), Err(R::IdTooLong));
    }

    #[test]
    fn missing_event_name() {
        assert_eq!(
            check(r#"{"type":"track","messageId":"m","userId":"u"}"#),
            Err(R::MissingEventName)
        );
    }

    #[test]
    fn event_name_too_long_for_track_and_screen() {
        let long = "e".repeat(MAX_EVENT_NAME_BYTES + 1);
        let raw = format!(r#"{{"type":"track","messageId":"m","userId":"u","event":"{long}"}}"#);
        assert_eq!(check(&raw), Err(R::EventNameTooLong));
        let raw = format!(r#"{{"type":"screen","messageId":"m","userId":"u","name":"{long}"}}"#);
        assert_eq!(check(&raw), Err(R::EventNameTooLong));
    }

    #[test]
    fn missing_group_id() {
        assert_eq!(
            check(r#"{"type":"group","messageId":"m","userId":"u"}"#),
            Err(R::MissingGroupId)
        );
    }

    #[test]
    fn missing_previous_id() {
        assert_eq!(
            check(r#"{"type":"alias","messageId":"m","userId":"u","previousId":""}"#),
            Err(R::MissingPreviousId)
        );
    }

    #[test]
    fn properties_not_object() {
        assert_eq!(
            check(&track_with(r#","properties":[1,2]"#)),
            Err(R::PropertiesNotObject)
        );
        assert_eq!(
            check(r#"{"type":"identify","messageId":"m","userId":"u","traits":"pro"}"#),
            Err(R::PropertiesNotObject)
        );
    }

    #[test]
    fn properties_too_large() {
        let big = "x".repeat(MAX_PROPERTIES_BYTES);
        assert_eq!(
            check(&track_with(&format!(r#","properties":{{"k":"{big}"}}"#))),
            Err(R::PropertiesTooLarge)
        );
    }

    #[test]
    fn message_too_large_when_context_carries_the_bulk() {
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(
            check(&track_with(&format!(r#","context":{{"k":"{big}"}}"#))),
            Err(R::MessageTooLarge)
        );
    }

    #[test]
    fn nesting_too_deep() {
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert_eq!(
            check(&track_with(&format!(r#","properties":{{"k":{deep}}}"#))),
            Err(R::NestingTooDeep)
        );
        let ok = format!(
            "{}1{}",
            "[".repeat(MAX_JSON_DEPTH - 2),
            "]".repeat(MAX_JSON_DEPTH - 2)
        );
        assert!(check(&track_with(&format!(r#","properties":{{"k":{ok}}}"#))).is_ok());
    }

    #[test]
    fn bad_timestamp_in_timestamp_or_sent_at() {
        assert_eq!(
            check(r#"{"type":"identify","messageId":"m","userId":"u","timestamp":"soon"}"#),
            Err(R::BadTimestamp)
        );
        assert_eq!(
            check(&track_with(r#","sentAt":"later""#)),
            Err(R::BadTimestamp)
        );
    }

    #[test]
    fn original_timestamp_is_used_when_timestamp_is_absent() {
        let ok = check(
            r#"{"type":"identify","messageId":"m","userId":"u","originalTimestamp":"2024-01-01T00:00:00.000Z"}"#,
        )
        .unwrap();
        assert_eq!(ok.timestamp, Some(1_704_067_200_000));
        let none = check(r#"{"type":"identify","messageId":"m","userId":"u"}"#).unwrap();
        assert_eq!(none.timestamp, None);
    }

    #[test]
    fn seq_zero() {
        assert_eq!(
            check(&track_with(
                r#","context":{"tally":{"install_id":"i","seq":0}}"#
            )),
            Err(R::SeqZero)
        );
    }

    #[test]
    fn bad_install_id() {
        assert_eq!(
            check(&track_with(r#","context":{"tally":{"seq":4}}"#)),
            Err(R::BadInstallId)
        );
        assert_eq!(
            check(&track_with(
                r#","context":{"tally":{"install_id":"","seq":4}}"#
            )),
            Err(R::BadInstallId)
        );
    }

    #[test]
    fn unsupported_schema() {
        assert_eq!(
            check(&track_with(
                r#","context":{"tally":{"install_id":"i","seq":1,"schema":0}}"#
            )),
            Err(R::UnsupportedSchema)
        );
        assert!(check(&track_with(
            r#","context":{"tally":{"install_id":"i","seq":1,"schema":7}}"#
        ))
        .is_ok());
    }

    #[test]
    fn tally_ids_too_long() {
        let long = "d".repeat(MAX_ID_BYTES + 1);
        assert_eq!(
            check(&track_with(&format!(
                r#","context":{{"tally":{{"dedup_key":"{long}"}}}}"#
            ))),
            Err(R::IdTooLong)
        );
    }
}
