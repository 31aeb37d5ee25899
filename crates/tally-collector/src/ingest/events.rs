//! Building what the store writes: a [`NewEvent`] per accepted message, a
//! [`DeadLetter`] per rejected one.
//!
//! A track named [`tally_proto::DROPPED_EVENT`] is the SDK's report of events it dropped
//! by policy (checked by `tally_proto::validate`, see
//! [`tally_proto::drops`]); its ranges become [`DroppedRange`]s so
//! completeness tells a gap by policy from a gap in transit. The report is
//! itself stored as an event.
//!
//! # Escapes no reader can take
//!
//! PostgreSQL's text and JSON types cannot hold U+0000, so one `\u0000`
//! escape would fail a whole batch or every query that reads the message's
//! properties. Ids and names holding one are rejected by validation
//! (`nul_character`); inside properties, traits and context the escape is
//! stored as `\ufffd`, the replacement character, on both stores alike
//! ([`storable_escapes`]).
//!
//! The same holds for a `\uD800`–`\uDFFF` escape that is not half of a
//! surrogate pair: JSON's grammar lets it through (the decoder keeps
//! unknown members as raw text, checked only for syntax), but it stands
//! for no character, so PostgreSQL's `jsonb` refuses the whole row (one
//! such event made every breakdown over its window fail) and strict JSON
//! readers (`tally export --format parquet`) stop at it. Browsers produce
//! them when a string is cut inside an emoji; each is stored as `\ufffd`
//! too, and the event is counted as sent.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use tally_proto::{Checked, DropReport, Message, RejectReason, Rejection};

use super::clock::MessageTimes;
use crate::store::{DeadLetter, DroppedRange, NewEvent};

/// The store's view of one validated, clock-corrected message sent by
/// `source`.
pub fn new_event(
    source: &str,
    msg: &Message,
    checked: Checked,
    times: MessageTimes,
    received_at: i64,
    raw: &str,
) -> NewEvent {
    let tally = msg.tally();
    let event = msg.event_name().map(str::to_owned);
    let drops = drop_ranges(msg);
    let event = NewEvent {
        source: source.to_owned(),
        message_id: Message::non_empty(&msg.message_id)
            .unwrap_or_default()
            .to_owned(),
        kind: checked.kind,
        event,
        user_id: Message::non_empty(&msg.user_id).map(str::to_owned),
        anonymous_id: Message::non_empty(&msg.anonymous_id).map(str::to_owned),
        group_id: Message::non_empty(&msg.group_id).map(str::to_owned),
        previous_id: Message::non_empty(&msg.previous_id).map(str::to_owned),
        install_id: tally.and_then(|t| t.install_id.clone()),
        seq: tally.and_then(|t| t.seq),
        session_id: tally.and_then(|t| Message::non_empty(&t.session_id).map(str::to_owned)),
        session_index: tally.and_then(|t| t.session_index),
        dedup_key: tally.and_then(|t| Message::non_empty(&t.dedup_key).map(str::to_owned)),
        priority: tally.and_then(|t| t.priority).unwrap_or_default(),
        timestamp: checked.timestamp,
        sent_at: times.sent_at,
        received_at,
        ts_corrected: times.correction.ts_corrected,
        clamped: times.correction.clamped,
        drops,
        raw: storable_escapes(raw).into_owned(),
    };
    #[cfg(feature = "broken-dedup-for-tests")]
    let event = broken::defeat_dedup(event);
    event
}

/// A deliberately broken collector, compiled only with the
/// `broken-dedup-for-tests` feature (which only test builds enable): with
/// `TALLY_BROKEN_DEDUP_FOR_TESTS=1` every message gets a fresh id and no
/// business key, so resent messages are counted again. It exists to prove
/// that `tally simulate` catches double counting.
#[cfg(feature = "broken-dedup-for-tests")]
mod broken {
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::store::NewEvent;

    static NEXT: AtomicU64 = AtomicU64::new(0);

    pub fn defeat_dedup(mut event: NewEvent) -> NewEvent {
        if std::env::var("TALLY_BROKEN_DEDUP_FOR_TESTS").as_deref() == Ok("1") {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            event.message_id = format!("{}#{}-{n}", event.message_id, std::process::id());
            event.dedup_key = None;
        }
        event
    }
}

/// The ranges of a drop report (none for any other event). Validation
/// refused malformed reports, so what is read here is well formed. The
/// reason is kept as the device sent it: a [`tally_proto::DropReason`]
/// code, or one of another SDK version, counted all the same.
fn drop_ranges(msg: &Message) -> Vec<DroppedRange> {
    let Ok(Some(report)) = DropReport::of(msg) else {
        return Vec::new();
    };
    report
        .ranges
        .into_iter()
        .map(|(from, to)| DroppedRange {
            from,
            to,
            reason: report.reason.clone(),
        })
        .collect()
}

/// `raw` with every `\u0000` escape and every unpaired surrogate escape
/// replaced by `\ufffd` (see the module doc); borrowed when there is none.
/// `raw` is JSON text the decoder accepted, so a backslash only ever
/// starts an escape: skipping each escape whole keeps an escaped backslash
/// followed by `u0000` (the text `\u0000`) as it is.
pub fn storable_escapes(raw: &str) -> Cow<'_, str> {
    if !raw.contains("\\u") {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out: Option<String> = None;
    let (mut i, mut copied) = (0, 0);
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        let Some(unit) = unicode_escape(bytes, i) else {
            // A two-byte escape.
            i += 2;
            continue;
        };
        let paired = (0xD800..=0xDBFF).contains(&unit)
            && unicode_escape(bytes, i + 6).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low));
        if paired {
            i += 12;
        } else if unit == 0 || (0xD800..=0xDFFF).contains(&unit) {
            let out = out.get_or_insert_with(|| String::with_capacity(raw.len()));
            out.push_str(&raw[copied..i]);
            out.push_str("\\ufffd");
            i += 6;
            copied = i;
        } else {
            i += 6;
        }
    }
    match out {
        None => Cow::Borrowed(raw),
        Some(mut out) => {
            out.push_str(&raw[copied.min(raw.len())..]);
            Cow::Owned(out)
        }
    }
}

/// The code unit of the `\uXXXX` escape at `at`, if one is there.
fn unicode_escape(bytes: &[u8], at: usize) -> Option<u32> {
    let escape = bytes.get(at..at + 6)?;
    if escape[0] != b'\\' || escape[1] != b'u' {
        return None;
    }
    let hex = std::str::from_utf8(&escape[2..]).ok()?;
    u32::from_str_radix(hex, 16).ok()
}

/// The dead letter of a message `source` sent and validation rejected.
pub fn dead_letter(
    source: &str,
    message_id: Option<&str>,
    rejection: Rejection,
    received_at: i64,
    raw: &str,
) -> DeadLetter {
    dead_letter_with(
        source,
        message_id,
        rejection.reason,
        rejection.detail.into(),
        received_at,
        raw,
    )
}

/// [`dead_letter`] with a detail made for this message (which rule of the
/// tracking plan, where: never the message's content).
pub fn dead_letter_with(
    source: &str,
    message_id: Option<&str>,
    reason: RejectReason,
    detail: Cow<'static, str>,
    received_at: i64,
    raw: &str,
) -> DeadLetter {
    let ids = LenientIds::of(raw);
    DeadLetter {
        source: source.to_owned(),
        message_id: message_id.and_then(usable_id),
        reason,
        detail,
        received_at,
        raw: raw.to_owned(),
        user_id: ids.user_id.and_then(text_of),
        anonymous_id: ids.anonymous_id.and_then(text_of),
        install_id: ids
            .context
            .and_then(member::<LenientContext<'_>>)
            .and_then(|c| c.tally)
            .and_then(member::<LenientTally<'_>>)
            .and_then(|t| t.install_id)
            .and_then(text_of),
    }
}

/// An id the stores can keep and index: non-empty, no NUL, not overlong.
fn usable_id(id: &str) -> Option<String> {
    (!id.is_empty() && !id.contains('\0') && id.len() <= tally_proto::limits::MAX_ID_BYTES)
        .then(|| id.to_owned())
}

fn text_of(value: &RawValue) -> Option<String> {
    serde_json::from_str::<Cow<'_, str>>(value.get())
        .ok()
        .and_then(|id| usable_id(&id))
}

fn member<'a, T: Deserialize<'a>>(value: &'a RawValue) -> Option<T> {
    serde_json::from_str(value.get()).ok()
}

/// The ids of a rejected message, read as far as its JSON allows: any
/// member may be missing or of another type, each level read on its own so
/// a bad `context` does not hide a good `userId`.
#[derive(Deserialize, Default)]
struct LenientIds<'a> {
    #[serde(rename = "userId", borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "anonymousId", borrow, default)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct LenientContext<'a> {
    #[serde(borrow, default)]
    tally: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct LenientTally<'a> {
    #[serde(borrow, default)]
    install_id: Option<&'a RawValue>,
}

impl<'a> LenientIds<'a> {
    fn of(raw: &'a str) -> LenientIds<'a> {
        serde_json::from_str(raw).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_proto::{validate, Correction, MessageType, Priority};

    fn build(raw: &str) -> NewEvent {
        let msg: Message = serde_json::from_str(raw).unwrap();
        let checked = validate(&msg, raw).unwrap();
        let times = MessageTimes {
            sent_at: Some(2),
            correction: Correction {
                ts_corrected: 3,
                offset: 1,
                clamped: false,
            },
        };
        new_event("wk_test", &msg, checked, times, 4, raw)
    }

    #[test]
    fn fields_come_from_the_message_and_context_tally() {
        let raw = r#"{"type":"track","messageId":"m1","event":"Buy","userId":"","anonymousId":"a1","timestamp":"1970-01-01T00:00:00.001Z","context":{"tally":{"install_id":"i1","seq":7,"session_id":"s1","session_index":2,"dedup_key":"order-9","priority":"critical"}}}"#;
        let e = build(raw);
        assert_eq!(e.message_id, "m1");
        assert_eq!(e.kind, MessageType::Track);
        assert_eq!(e.event.as_deref(), Some("Buy"));
        assert_eq!(e.user_id, None);
        assert_eq!(e.anonymous_id.as_deref(), Some("a1"));
        assert_eq!(e.install_id.as_deref(), Some("i1"));
        assert_eq!((e.seq, e.session_index), (Some(7), Some(2)));
        assert_eq!(e.session_id.as_deref(), Some("s1"));
        assert_eq!(e.dedup_key.as_deref(), Some("order-9"));
        assert_eq!(e.priority, Priority::Critical);
        assert_eq!(
            (e.timestamp, e.sent_at, e.ts_corrected, e.received_at),
            (Some(1), Some(2), 3, 4)
        );
        assert!(e.drops.is_empty());
        assert_eq!(e.raw, raw);
    }

    #[test]
    fn a_drop_report_becomes_ranges() {
        let raw = r#"{"type":"track","messageId":"d","event":"tally.dropped","anonymousId":"a","properties":{"reason":"queue_full","ranges":[[3,5],[9,9]]},"context":{"tally":{"install_id":"i","seq":10}}}"#;
        let e = build(raw);
        let ranges: Vec<_> = e
            .drops
            .iter()
            .map(|d| (d.from, d.to, d.reason.as_str()))
            .collect();
        assert_eq!(ranges, [(3, 5, "queue_full"), (9, 9, "queue_full")]);
    }

    #[test]
    fn nul_escapes_become_replacement_characters_and_nothing_else_changes() {
        let cases = [
            (r#"{"a":"x"}"#, r#"{"a":"x"}"#),
            (r#"{"a":"x\u0000y"}"#, r#"{"a":"x\ufffdy"}"#),
            (
                r#"{"k\u0000":"\u0000\u0000"}"#,
                r#"{"k\ufffd":"\ufffd\ufffd"}"#,
            ),
            // An escaped backslash, then the text u0000: not a NUL.
            (r#"{"a":"\\u0000"}"#, r#"{"a":"\\u0000"}"#),
            (r#"{"a":"\\\u0000"}"#, r#"{"a":"\\\ufffd"}"#),
            (r#"{"a":"\u00001"}"#, r#"{"a":"\ufffd1"}"#),
            (r#"{"a":"\"\u0000"}"#, r#"{"a":"\"\ufffd"}"#),
        ];
        for (raw, want) in cases {
            assert_eq!(storable_escapes(raw), want, "{raw}");
            let parsed: serde_json::Value = serde_json::from_str(want).unwrap();
            assert!(!parsed.to_string().contains('\0'));
        }
        assert!(matches!(storable_escapes(r#"{"a":1}"#), Cow::Borrowed(_)));
    }

    #[test]
    fn unpaired_surrogate_escapes_become_replacement_characters_and_pairs_stay() {
        let cases = [
            // A pair (an emoji) stays, in either case of hex digits.
            (r#"{"a":"\ud83d\ude00"}"#, r#"{"a":"\ud83d\ude00"}"#),
            (r#"{"a":"\uD83D\uDE00"}"#, r#"{"a":"\uD83D\uDE00"}"#),
            // A high half cut from its low half, at the end or before text.
            (r#"{"a":"x\ud83d"}"#, r#"{"a":"x\ufffd"}"#),
            (r#"{"a":"\ud83dy"}"#, r#"{"a":"\ufffdy"}"#),
            // Two high halves: neither has its low half.
            (r#"{"a":"\ud83d\ud83d"}"#, r#"{"a":"\ufffd\ufffd"}"#),
            // A low half alone, and in a member name.
            (r#"{"\udddd":"\uDDDD"}"#, r#"{"\ufffd":"\ufffd"}"#),
            // A high half before an escape that is not a low half.
            (r#"{"a":"\ud800\u0041"}"#, r#"{"a":"\ufffd\u0041"}"#),
            // An escaped backslash, then text that only looks like one.
            (r#"{"a":"\\udddd"}"#, r#"{"a":"\\udddd"}"#),
            // Other escapes are left alone.
            (r#"{"a":"\u00e9\n"}"#, r#"{"a":"\u00e9\n"}"#),
        ];
        for (raw, want) in cases {
            assert_eq!(storable_escapes(raw), want, "{raw}");
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(want);
            assert!(parsed.is_ok(), "{want} is strict JSON");
        }
        assert!(matches!(
            storable_escapes(r#"{"a":"\ud83d\ude00\u00e9"}"#),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_dead_letter_records_the_ids_its_message_has() {
        let rejection = Rejection {
            reason: tally_proto::RejectReason::MissingEventName,
            detail: "d",
        };
        let d = dead_letter(
            "s",
            None,
            rejection,
            1,
            r#"{"userId":"u1","anonymousId":"a1","context":{"tally":{"install_id":"i1"}}}"#,
        );
        assert_eq!(
            (
                d.user_id.as_deref(),
                d.anonymous_id.as_deref(),
                d.install_id.as_deref()
            ),
            (Some("u1"), Some("a1"), Some("i1"))
        );
        // A bad context hides nothing else; other types, empty and NUL ids
        // are not ids.
        let d = dead_letter(
            "s",
            None,
            rejection,
            1,
            r#"{"userId":"u\u0000","anonymousId":"a2","context":"oops"}"#,
        );
        assert_eq!(
            (
                d.user_id.as_deref(),
                d.anonymous_id.as_deref(),
                d.install_id
            ),
            (None, Some("a2"), None)
        );
        let d = dead_letter("s", None, rejection, 1, r#"{"userId":7,"anonymousId":""}"#);
        assert_eq!((d.user_id, d.anonymous_id), (None, None));
        let d = dead_letter("s", None, rejection, 1, "[1,2]");
        assert_eq!(
            (d.user_id, d.anonymous_id, d.install_id),
            (None, None, None)
        );
    }

    #[test]
    fn a_dead_letter_keeps_no_id_with_a_nul() {
        let rejection = Rejection {
            reason: tally_proto::RejectReason::NulCharacter,
            detail: "d",
        };
        assert_eq!(
            dead_letter("s", Some("m\0"), rejection, 1, "{}").message_id,
            None
        );
        assert_eq!(
            dead_letter("s", Some("m"), rejection, 1, "{}")
                .message_id
                .as_deref(),
            Some("m")
        );
    }
}
