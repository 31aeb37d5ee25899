use proptest::prelude::*;
use tally_proto::{validate, App, Library};

use super::check::{certainly_valid, EpochFacts};
use super::*;

fn epoch() -> Epoch {
    Epoch {
        context: Context {
            app: Some(App {
                name: Some("shop".into()),
                ..App::default()
            }),
            library: Some(Library {
                name: Some("tally-sdk".into()),
                version: Some("1.0.0".into()),
                ..Library::default()
            }),
            locale: Some("en-GB".into()),
            ..Context::default()
        },
        install_id: "i-1".into(),
        anonymous_id: "a-1".into(),
        user_id: Some("u-1".into()),
        session_id: "s-1".into(),
    }
}

fn track<'a>(name: &'a str, bag: Option<&'a str>) -> Event<'a> {
    Event {
        kind: Kind::Track,
        ts_ms: 1_764_547_200_123,
        random: [7; 10],
        session_index: 3,
        name,
        user_id: None,
        inherit_user: true,
        previous_id: None,
        dedup_key: None,
        critical: false,
        bag,
        event_version: None,
    }
}

#[test]
fn a_track_expands_to_the_exact_message_json() {
    let bag = r#"{"plan":"pro","n":1}"#;
    let e = Event {
        dedup_key: Some("order-9"),
        critical: true,
        event_version: Some(2),
        ..track("Order Completed", Some(bag))
    };
    let mut record = Vec::new();
    encode(&e, &mut record);
    // 3 header bytes, 6 of time, 10 random, 1 session index, then strings.
    assert_eq!(record.len(), 3 + 6 + 10 + 1 + 1 + 16 + 8 + 21);
    let context = epoch().to_bytes();
    let json = Expander::default()
        .json(&record, Some(&context), 42)
        .unwrap();
    assert_eq!(
        String::from_utf8(json).unwrap(),
        concat!(
            r#"{"type":"track","messageId":"019ad735-847b-7707-8707-070707070707","#,
            r#""timestamp":"2025-12-01T00:00:00.123Z","userId":"u-1","anonymousId":"a-1","#,
            r#""event":"Order Completed","properties":{"plan":"pro","n":1},"context":{"#,
            r#""app":{"name":"shop"},"library":{"name":"tally-sdk","version":"1.0.0"},"#,
            r#""locale":"en-GB","tally":{"install_id":"i-1","seq":42,"session_id":"s-1","#,
            r#""session_index":3,"schema":1,"priority":"critical","dedup_key":"order-9","event_version":2}}}"#
        )
    );
}

#[test]
fn identify_alias_and_internal_events_carry_their_own_user() {
    let context = epoch().to_bytes();
    let mut x = Expander::default();
    let identify = Event {
        kind: Kind::Identify,
        name: "",
        user_id: Some("u-2"),
        ..track("", Some(r#"{"plan":"pro"}"#))
    };
    let alias = Event {
        kind: Kind::Alias,
        name: "",
        user_id: Some("u-3"),
        previous_id: Some("u-2"),
        bag: None,
        ..track("", None)
    };
    let internal = Event {
        inherit_user: false,
        ..track("tally.health", None)
    };
    let mut users = Vec::new();
    for e in [identify, alias, internal] {
        let mut record = Vec::new();
        encode(&e, &mut record);
        assert_eq!(decode(&record), Ok(e));
        let msg: Message =
            serde_json::from_slice(&x.json(&record, Some(&context), 5).unwrap()).unwrap();
        assert_eq!(x.user_id(&record, Some(&context)).unwrap(), msg.user_id);
        users.push((
            msg.user_id,
            msg.previous_id,
            msg.traits.map(|t| t.get().to_owned()),
        ));
    }
    assert_eq!(
        users,
        [
            (Some("u-2".into()), None, Some(r#"{"plan":"pro"}"#.into())),
            (Some("u-3".into()), Some("u-2".into()), None),
            (None, None, None),
        ]
    );
}

#[test]
fn stored_json_passes_through_and_bad_records_are_refused() {
    let mut x = Expander::default();
    let json = br#"{"type":"track","messageId":"m","userId":"old"}"#;
    assert_eq!(x.json(json, None, 1).unwrap(), json.to_vec());
    assert_eq!(x.user_id(json, None).unwrap().as_deref(), Some("old"));
    let mut record = Vec::new();
    encode(&track("E", None), &mut record);
    assert_eq!(x.json(&record, None, 1), Err(DecodeError::Context));
    let bad_context: Arc<[u8]> = Arc::from(&b"not json"[..]);
    assert_eq!(
        x.json(&record, Some(&bad_context), 1),
        Err(DecodeError::Context)
    );
    let context = epoch().to_bytes();
    for cut in 1..record.len() {
        assert_eq!(
            x.json(&record[..cut], Some(&context), 1),
            Err(DecodeError::Record),
            "cut at {cut}"
        );
    }
    let mut longer = record.clone();
    longer.push(0);
    assert_eq!(x.json(&longer, Some(&context), 1), Err(DecodeError::Record));
}

#[test]
fn a_typical_event_is_a_fraction_of_its_json() {
    let bag = r#"{"screen":"home","button":"buy","variant":3}"#;
    let e = track("bench.track", Some(bag));
    let mut record = Vec::new();
    encode(&e, &mut record);
    let json = message(&e, &epoch(), 1).to_json();
    assert_eq!(record.len(), 77);
    assert!(json.len() > 4 * record.len(), "{}", json.len());
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z .]{0,12}",
        1 => "[\\[{\"\\\\\u{0}\u{1}é]{0,40}",
        1 => Just("x".repeat(256)),
        1 => Just("tally.dropped".to_owned()),
        1 => Just(String::new()),
    ]
}

fn bag() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        3 => "[a-z]{0,8}".prop_map(|v| Some(format!(r#"{{"k":"{v}"}}"#))),
        1 => (1usize..40).prop_map(|d| Some(format!("{}1{}", "[".repeat(d), "]".repeat(d)))),
        1 => (0usize..34).prop_map(|d| Some(format!("{{\"a\":{}1{}}}", "[".repeat(d), "]".repeat(d)))),
        1 => Just(Some(format!(r#"{{"big":"{}"}}"#, "y".repeat(25_000)))),
        1 => Just(Some(format!(r#"{{"big":"{}"}}"#, "\u{1}".repeat(1_500)))),
    ]
}

proptest! {
    /// The cheap check never accepts what `validate` rejects, and a
    /// record decodes to the event it was encoded from.
    #[test]
    fn the_cheap_check_implies_validate(
        kind in 0u8..6,
        name in text(),
        user in proptest::option::of(text()),
        previous in proptest::option::of(text()),
        dedup in proptest::option::of(text()),
        bag in bag(),
        anon in text(),
        session in text(),
        seq in 0u64..3,
        critical in any::<bool>(),
        version in proptest::option::of(any::<u32>()),
    ) {
        let e = Event {
            kind: Kind::from_code(kind).unwrap(),
            ts_ms: 1_764_547_200_123,
            random: [1; 10],
            session_index: 1,
            name: &name,
            user_id: user.as_deref(),
            inherit_user: true,
            previous_id: previous.as_deref(),
            dedup_key: dedup.as_deref(),
            critical,
            bag: bag.as_deref(),
            event_version: version,
        };
        let mut record = Vec::new();
        encode(&e, &mut record);
        prop_assert_eq!(decode(&record), Ok(e));
        let epoch = Epoch { anonymous_id: anon, session_id: session, ..epoch() };
        let bytes = epoch.to_bytes();
        let msg = message(&e, &epoch, seq);
        let json = msg.to_json();
        if certainly_valid(&e, &EpochFacts::of(&epoch, &bytes), seq) {
            prop_assert!(validate(&msg, &json).is_ok(), "{:?}", validate(&msg, &json));
        }
    }
}
