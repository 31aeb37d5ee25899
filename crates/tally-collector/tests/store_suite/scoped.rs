//! Queries, export and deletion scoped to a source (write key id), against
//! both stores: two write keys send for the same user id; the product
//! queries and the export of each count only its events; a deletion of
//! the user scoped to one source removes exactly that source's events and
//! dead letters (its reach computed from its own identify calls), its
//! tombstone refuses that source's late events only, the active slots the
//! deleted events leave empty go, and the request records the source.

use super::*;
use serde_json::Value;

const KEY_A: &str = "wk_aaaaaaaaaaaaaaaa";
const KEY_B: &str = "wk_bbbbbbbbbbbbbbbb";

/// One day, in ms: `DAY` and after is the second day of the queries.
const DAY: i64 = 86_400_000;

fn from(source: &str, mut e: NewEvent) -> NewEvent {
    e.source = source.to_owned();
    e
}

fn user_letter(source: &str, id: &str, user: &str) -> DeadLetter {
    let mut d = dead(id, RejectReason::SeqZero);
    d.source = source.to_owned();
    d.user_id = Some(user.to_owned());
    d
}

/// `query` over the first two days of 1970 (UTC), of `source` if given.
fn ask(store: &dyn Store, query: ProductQuery, params: &str, source: Option<&str>) -> Value {
    let mut q = format!("from=1970-01-01T00:00:00Z&to=1970-01-03T00:00:00Z&{params}");
    if let Some(source) = source {
        q.push_str(&format!("&source={source}"));
    }
    answer(store, query, &q).unwrap()
}

/// `(count, people)` of `Open` over the two days, of `source` if given.
fn opens(store: &dyn Store, source: Option<&str>) -> (u64, u64) {
    let v = ask(store, ProductQuery::Events, "event=Open", source);
    (
        v["total"]["count"].as_u64().unwrap(),
        v["total"]["people"].as_u64().unwrap(),
    )
}

/// People active on each of the two days, of `source` if given.
fn active(store: &dyn Store, source: Option<&str>) -> Vec<u64> {
    let v = ask(store, ProductQuery::Active, "window=day", source);
    v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["people"].as_u64().unwrap())
        .collect()
}

/// The message ids of every stored event of `source` (all when `None`),
/// read page by page.
fn exported(store: &dyn Store, source: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .export_page(i64::MIN, i64::MAX, source, after.as_ref(), 2)
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.cursor.clone());
        for e in &page {
            let v: Value = serde_json::from_str(&e.raw).unwrap();
            out.push(v["messageId"].as_str().unwrap().to_owned());
        }
    }
    out.sort();
    out
}

pub(crate) fn queries_export_and_deletion_of_one_source(store: &dyn Store) {
    let batch = vec![
        // Source A: an anonymous event, then the identify linking its
        // anonymous id and install to u1, the user's event on the second
        // day, and an event of the same install under a fresh anonymous
        // id. N = 4 events of u1.
        from(
            KEY_A,
            on_install(track("a-anon", "Open", "anon-a", 50), "inst-a", 1),
        ),
        from(
            KEY_A,
            on_install(
                identify("a-id", "u1", Some("anon-a"), None, 100),
                "inst-a",
                2,
            ),
        ),
        from(
            KEY_A,
            by_user(track("a-user", "Open", "x", DAY + 200), "u1"),
        ),
        from(
            KEY_A,
            on_install(track("a-reset", "Play", "anon-fresh", 300), "inst-a", 3),
        ),
        // Source A, someone else.
        from(KEY_A, by_user(track("a-other", "Open", "x", 400), "u2")),
        // Source B, the same user id: M = 4 events, one of them carrying
        // source A's anonymous id (B's own claim, not A's data).
        from(KEY_B, track("b-anon", "Open", "anon-b", 60)),
        from(KEY_B, identify("b-id", "u1", Some("anon-b"), None, 110)),
        from(KEY_B, by_user(track("b-user", "Open", "x", 210), "u1")),
        from(KEY_B, track("b-cross", "Open", "anon-a", 310)),
    ];
    let letters = [
        user_letter(KEY_A, "a-bad", "u1"),
        user_letter(KEY_B, "b-bad", "u1"),
    ];
    assert_eq!(store.write_batch(&batch, &letters).unwrap(), vec![A; 9]);
    assert_eq!(store.stats().unwrap(), stats(9, 0, 2, 9));

    // Queries: each source counts its own events; people resolve alike.
    // Every source: Open by u1 (a-anon, a-user, b-anon, b-user, b-cross:
    // anon-a is u1's), and u2.
    assert_eq!(opens(store, None), (6, 2));
    assert_eq!(opens(store, Some(KEY_A)), (3, 2));
    assert_eq!(opens(store, Some(KEY_B)), (3, 1));
    assert_eq!(opens(store, Some("wk_nobody")), (0, 0));
    assert_eq!(opens(store, Some("not a key id")), (0, 0));
    // The event count answers alike, by source.
    let counted = |source| {
        let c = store.count_events("Open", None, None, source).unwrap();
        (c.count, c.users)
    };
    assert_eq!(counted(None), (6, 2));
    assert_eq!(counted(Some(KEY_A)), (3, 2));
    assert_eq!(counted(Some(KEY_B)), (3, 1));
    assert_eq!(counted(Some("wk_nobody")), (0, 0));
    // Empty is every source.
    let everyone = answer(
        store,
        ProductQuery::Events,
        "event=Open&from=1970-01-01T00:00:00Z&to=1970-01-03T00:00:00Z&source=",
    )
    .unwrap();
    assert_eq!(everyone["total"]["count"], 6);
    assert_eq!(active(store, None), [2, 1]);
    assert_eq!(active(store, Some(KEY_A)), [2, 1]);
    assert_eq!(active(store, Some(KEY_B)), [1, 0]);
    let top = ask(store, ProductQuery::TopEvents, "", Some(KEY_A));
    assert_eq!(
        top["rows"],
        serde_json::json!([
            {"event": "Open", "count": 3, "people": 2},
            {"event": "Play", "count": 1, "people": 1},
        ])
    );

    // Export: each source's events, counted alike.
    assert_eq!(
        store.count_stored(i64::MIN, i64::MAX, Some(KEY_A)).unwrap(),
        5
    );
    assert_eq!(
        store.count_stored(i64::MIN, i64::MAX, Some(KEY_B)).unwrap(),
        4
    );
    assert_eq!(store.count_stored(i64::MIN, i64::MAX, None).unwrap(), 9);
    assert_eq!(
        exported(store, Some(KEY_A)),
        ["a-anon", "a-id", "a-other", "a-reset", "a-user"]
    );
    assert_eq!(
        exported(store, Some(KEY_B)),
        ["b-anon", "b-cross", "b-id", "b-user"]
    );

    // An access request of u1 within a source reads what a deletion within
    // it would remove: the links its own identify calls made. B's event
    // under A's anonymous id is not reached from B (A's identify linked
    // it), nor from A (B sent it).
    let person = |source: &str| -> Vec<String> {
        let mut ids: Vec<String> = store
            .person_page(PersonKind::User, "u1", Some(source), None, 100)
            .unwrap()
            .iter()
            .map(|e| {
                let v: Value = serde_json::from_str(&e.raw).unwrap();
                v["messageId"].as_str().unwrap().to_owned()
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(person(KEY_A), ["a-anon", "a-id", "a-reset", "a-user"]);
    assert_eq!(person(KEY_B), ["b-anon", "b-id", "b-user"]);

    // Deleting u1 within source A: exactly A's 4 events of u1 and its dead
    // letter; B's 4 events and dead letter stay.
    let report = store
        .delete_person(PersonKind::User, "u1", Some(KEY_A), 1_000)
        .unwrap();
    assert_eq!(report.deleted_events, 4);
    assert_eq!(report.deleted_dead_letters, 1);
    assert_eq!(report.source.as_deref(), Some(KEY_A));
    assert_eq!(
        store.count_stored(i64::MIN, i64::MAX, Some(KEY_A)).unwrap(),
        1
    );
    assert_eq!(
        store.count_stored(i64::MIN, i64::MAX, Some(KEY_B)).unwrap(),
        4
    );
    assert_eq!(exported(store, Some(KEY_A)), ["a-other"]);
    assert_eq!(
        exported(store, Some(KEY_B)),
        ["b-anon", "b-cross", "b-id", "b-user"]
    );
    assert_eq!(store.stats().unwrap(), stats(9, 0, 2, 5));
    let totals = store.dead_letter_totals().unwrap();
    assert_eq!(totals.kept, 1);
    let left = store
        .dead_letters(&DeadLetterQuery {
            limit: 10,
            ..DeadLetterQuery::default()
        })
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].message_id.as_deref(), Some("b-bad"));

    // The queries follow: A keeps u2; B is unchanged; and u1's activity on
    // the second day, which only A's event held, is gone from the rollup.
    assert_eq!(opens(store, Some(KEY_A)), (1, 1));
    assert_eq!(opens(store, Some(KEY_B)), (3, 1));
    assert_eq!(opens(store, None), (4, 2));
    assert_eq!(active(store, None), [2, 0]);
    assert_eq!(active(store, Some(KEY_A)), [1, 0]);

    // Late events: from A, refused as deleted (by user id, by the
    // anonymous id and by the install A's identify linked, under a fresh
    // anonymous id); from B, the same ids are stored.
    let late = vec![
        from(KEY_A, by_user(track("a-late-user", "Open", "x", 500), "u1")),
        from(KEY_A, track("a-late-anon", "Open", "anon-a", 501)),
        from(
            KEY_A,
            on_install(track("a-late-inst", "Open", "anon-new", 502), "inst-a", 4),
        ),
        from(KEY_B, by_user(track("b-late-user", "Open", "x", 503), "u1")),
        from(KEY_B, track("b-late-anon", "Open", "anon-a", 504)),
        from(
            KEY_B,
            on_install(track("b-late-inst", "Open", "anon-new", 505), "inst-a", 4),
        ),
    ];
    assert_eq!(
        store.write_batch(&late, &[]).unwrap(),
        vec![X, X, X, A, A, A]
    );
    assert_eq!(
        store.count_stored(i64::MIN, i64::MAX, Some(KEY_A)).unwrap(),
        1
    );
    assert_eq!(
        store.count_stored(i64::MIN, i64::MAX, Some(KEY_B)).unwrap(),
        7
    );
    assert!(store.is_deleted("u1").unwrap());

    // A scoped deletion of a device in a source that never sent it
    // reaches nothing and refuses nothing of the others.
    let report = store
        .delete_person(PersonKind::Anonymous, "anon-b", Some(KEY_A), 2_000)
        .unwrap();
    assert_eq!(report.deleted_events, 0);
    assert_eq!(
        store
            .write_batch(
                &[from(KEY_B, track("b-anon-2", "Open", "anon-b", 600))],
                &[]
            )
            .unwrap(),
        vec![A]
    );

    // The requests, newest first, with their source.
    let recorded: Vec<(PersonKind, String, u64, Option<String>)> = store
        .deletions(10)
        .unwrap()
        .into_iter()
        .map(|d| (d.kind, d.user_id, d.deleted_events, d.source))
        .collect();
    assert_eq!(
        recorded,
        [
            (
                PersonKind::Anonymous,
                "anon-b".to_owned(),
                0,
                Some(KEY_A.to_owned())
            ),
            (PersonKind::User, "u1".to_owned(), 4, Some(KEY_A.to_owned())),
        ]
    );

    // An unscoped deletion afterwards reaches every source's, as always:
    // all 8 of B's events are u1's (by user id, or by the links of B's
    // identify and A's, which an unscoped deletion follows).
    let report = store.delete_user("u1", 3_000).unwrap();
    assert_eq!(report.source, None);
    assert_eq!(report.deleted_events, 8);
    assert_eq!(
        store.count_stored(i64::MIN, i64::MAX, Some(KEY_B)).unwrap(),
        0
    );
    assert_eq!(exported(store, None), ["a-other"]);
    assert_eq!(
        store
            .write_batch(
                &[from(
                    KEY_B,
                    by_user(track("b-after", "Open", "x", 700), "u1")
                )],
                &[]
            )
            .unwrap(),
        vec![X]
    );
    assert_eq!(store.deletions(1).unwrap()[0].source, None);
}

/// `e` in session `session`, with `properties` in its stored text.
fn detailed(mut e: NewEvent, session: &str, properties: &str) -> NewEvent {
    e.session_id = Some(session.to_owned());
    e.raw = format!(
        r#"{{"type":"track","messageId":"{}","event":"{}","properties":{properties}}}"#,
        e.message_id,
        e.event.as_deref().unwrap_or("")
    );
    e
}

pub(crate) fn every_product_query_takes_a_source(store: &dyn Store) {
    let batch = vec![
        from(
            KEY_A,
            detailed(
                on_install(track("q-a1", "Open", "anon-qa", 1_000), "inst-qa", 1),
                "s-a",
                "{}",
            ),
        ),
        from(
            KEY_A,
            detailed(
                on_install(track("q-a2", "Buy", "anon-qa", 2_000), "inst-qa", 2),
                "s-a",
                r#"{"plan":"pro"}"#,
            ),
        ),
        from(
            KEY_A,
            detailed(
                track("q-a3", "Buy", "anon-qa2", 3_000),
                "s-a2",
                r#"{"plan":"free"}"#,
            ),
        ),
        from(
            KEY_B,
            detailed(
                on_install(track("q-b1", "Open", "anon-qb", 1_500), "inst-qb", 1),
                "s-b",
                "{}",
            ),
        ),
        from(
            KEY_B,
            detailed(
                on_install(track("q-b2", "Buy", "anon-qb", 2_500), "inst-qb", 2),
                "s-b",
                r#"{"plan":"team"}"#,
            ),
        ),
        from(
            KEY_B,
            detailed(
                on_install(track("q-b3", "Open", "anon-qb", DAY + 100), "inst-qb", 3),
                "s-b",
                "{}",
            ),
        ),
    ];
    assert_eq!(store.write_batch(&batch, &[]).unwrap(), vec![A; 6]);
    let sessions = |source| ask(store, ProductQuery::Sessions, "", source)["sessions"].clone();
    assert_eq!(
        (sessions(None), sessions(Some(KEY_A)), sessions(Some(KEY_B))),
        (
            serde_json::json!(3),
            serde_json::json!(2),
            serde_json::json!(1)
        )
    );
    // Buy then Open within a day: only B's person did.
    let funnel = |source| -> Vec<u64> {
        ask(store, ProductQuery::Funnel, "steps=Buy,Open", source)["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["people"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(funnel(None), [3, 1]);
    assert_eq!(funnel(Some(KEY_A)), [2, 0]);
    assert_eq!(funnel(Some(KEY_B)), [1, 1]);
    // One row shown, the rest folded: the shown value's parameter comes
    // after the source's.
    let breakdown = |source| -> Vec<(Value, u64, bool)> {
        ask(
            store,
            ProductQuery::Breakdown,
            "event=Buy&by=properties.plan&limit=1",
            source,
        )["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["value"].clone(),
                    r["count"].as_u64().unwrap(),
                    r["other"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        breakdown(None),
        [
            (serde_json::json!("free"), 1, false),
            (Value::Null, 2, true)
        ]
    );
    assert_eq!(
        breakdown(Some(KEY_A)),
        [
            (serde_json::json!("free"), 1, false),
            (Value::Null, 1, true)
        ]
    );
    assert_eq!(
        breakdown(Some(KEY_B)),
        [(serde_json::json!("team"), 1, false)]
    );
    // Cohorts of first Open: A's person never came back, B's did.
    let retention = |source| {
        let v = ask(store, ProductQuery::Retention, "days=1&event=Open", source);
        (
            v["cohorts"][0]["size"].clone(),
            v["cohorts"][0]["returned"][1].clone(),
        )
    };
    assert_eq!(
        retention(Some(KEY_A)),
        (serde_json::json!(1), serde_json::json!(0))
    );
    assert_eq!(
        retention(Some(KEY_B)),
        (serde_json::json!(1), serde_json::json!(1))
    );
    // Finality judges the source's own installs.
    let installs = |source| {
        ask(store, ProductQuery::Finality, "", source)["days"][0]["active_installs"].clone()
    };
    assert_eq!(
        (installs(None), installs(Some(KEY_A)), installs(Some(KEY_B))),
        (
            serde_json::json!(2),
            serde_json::json!(1),
            serde_json::json!(1)
        )
    );
}

/// What a store upgraded from the schema before sources were recorded in
/// tombstones must do with the tombstone `TOMBSTONE_SQL` wrote there: it
/// refuses the user's and the device's late events from every source.
pub(crate) fn old_tombstones_refuse_every_source(store: &dyn Store) {
    let late = vec![
        from(KEY_A, by_user(track("old-a", "Open", "x", 10), "u-old")),
        from(KEY_B, by_user(track("old-b", "Open", "x", 11), "u-old")),
        from(KEY_B, track("old-anon", "Open", "anon-old", 12)),
        from(
            KEY_B,
            by_user(track("old-other", "Open", "x", 13), "u-kept"),
        ),
    ];
    assert_eq!(store.write_batch(&late, &[]).unwrap(), vec![X, X, X, A]);
    assert!(store.is_deleted("u-old").unwrap());
}

/// A tombstone of `u-old` and its device link, as the schema before
/// sources were recorded in tombstones holds them.
pub(crate) const TOMBSTONE_SQL: &str = "INSERT INTO tombstones (user_id, requested_at) \
    VALUES ('u-old', 1); INSERT INTO tombstone_links (kind, id, user_id) \
    VALUES ('a', 'anon-old', 'u-old');";

macro_rules! scoped_suite {
    ($fresh:path) => {
        #[test]
        fn queries_export_and_deletion_of_one_source() {
            let (store, _guard) = $fresh();
            crate::scoped::queries_export_and_deletion_of_one_source(&*store);
        }

        #[test]
        fn every_product_query_takes_a_source() {
            let (store, _guard) = $fresh();
            crate::scoped::every_product_query_takes_a_source(&*store);
        }
    };
}
