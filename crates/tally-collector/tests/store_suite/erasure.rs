//! Deletion of a person who never identified, by anonymous id and by
//! install id, against both stores: what carries the id without a user
//! id goes (events, dead letters, activity), the rest stays, the counters
//! stay exact, the tombstone refuses that device's late anonymous events
//! (an offline device syncing after the request), the users an identify
//! linked are reported, and each request is recorded with its kind; and
//! the access request's read of one person, before.

use super::*;

fn anon_letter(id: &str, anon: &str) -> DeadLetter {
    let mut d = dead(id, RejectReason::SeqZero);
    d.anonymous_id = Some(anon.to_owned());
    d.raw = format!(r#"{{"messageId":"{id}","anonymousId":"{anon}"}}"#);
    d
}

pub(crate) fn deletion_by_anonymous_id_and_install(store: &dyn Store) {
    let batch = vec![
        // A never-identified person, on two installs.
        on_install(track("n1", "Open", "anon-gone", 1), "inst-a", 1),
        on_install(track("n2", "Play", "anon-gone", 2), "inst-b", 1),
        // Someone else, and a user who signed in on the same device
        // (their events carry their user id: they are theirs).
        track("k1", "Open", "anon-kept", 3),
        {
            let mut e = by_user(track("u1", "Open", "x", 4), "user-1");
            e.anonymous_id = Some("anon-gone".into());
            e
        },
        // An install whose anonymous events are deleted by install id.
        on_install(track("i1", "Open", "anon-i1", 5), "inst-gone", 1),
        on_install(track("i2", "Open", "anon-i2", 6), "inst-gone", 2),
        // An anonymous id an identify linked to a user.
        track("l1", "Open", "anon-linked", 7),
        identify("l2", "user-2", Some("anon-linked"), None, 8),
    ];
    let letters = [
        anon_letter("bad-1", "anon-gone"),
        anon_letter("bad-2", "anon-kept"),
    ];
    assert_eq!(store.write_batch(&batch, &letters).unwrap(), vec![A; 8]);
    assert_eq!(store.stats().unwrap(), stats(8, 0, 2, 8));

    // Access requests read what a deletion would reach, page by page.
    let scoped = |kind: PersonKind, id: &str, source: Option<&str>| -> Vec<String> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .person_page(kind, id, source, after.as_ref(), 1)
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.cursor.clone());
            out.extend(page.iter().map(|e| e.raw.clone()));
        }
        out.iter()
            .map(|raw| {
                let v: serde_json::Value = serde_json::from_str(raw).unwrap();
                v["messageId"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let person = |kind: PersonKind, id: &str| scoped(kind, id, None);
    assert_eq!(person(PersonKind::Anonymous, "anon-gone"), ["n1", "n2"]);
    // Scoped to a source: the suite's own, or another that sent nothing.
    assert_eq!(
        scoped(PersonKind::Anonymous, "anon-gone", Some(SOURCE)),
        ["n1", "n2"]
    );
    assert!(scoped(PersonKind::User, "user-2", Some("wk_other")).is_empty());
    assert_eq!(person(PersonKind::Install, "inst-gone"), ["i1", "i2"]);
    assert_eq!(person(PersonKind::User, "user-2"), ["l1", "l2"]);
    assert_eq!(person(PersonKind::User, "user-1"), ["u1"]);
    assert!(person(PersonKind::User, "nobody").is_empty());

    let report = store
        .delete_device(PersonKind::Anonymous, "anon-gone", 1_000)
        .unwrap();
    assert_eq!(report.deleted_events, 2);
    assert_eq!(report.deleted_dead_letters, 1);
    assert!(report.linked_user_ids.is_empty());
    assert_eq!(store.stats().unwrap(), stats(8, 0, 2, 6));
    assert_eq!(store.dead_letter_totals().unwrap().kept, 1);
    let left: Vec<String> = store
        .export_page(i64::MIN, i64::MAX, None, None, 100)
        .unwrap()
        .iter()
        .map(|e| e.raw.clone())
        .collect();
    assert_eq!(left.len(), 6);
    assert!(left
        .iter()
        .all(|r| !r.contains("\"n1\"") && !r.contains("\"n2\"")));

    // The device comes back online with what it tracked offline: refused.
    // Another person's events, and a user's carrying the id, are not.
    let late = vec![
        track("n3", "Open", "anon-gone", 20),
        on_install(track("n4", "Open", "anon-gone", 21), "inst-a", 2),
        track("k2", "Open", "anon-kept", 22),
        {
            let mut e = by_user(track("u2", "Open", "x", 23), "user-1");
            e.anonymous_id = Some("anon-gone".into());
            e
        },
    ];
    assert_eq!(store.write_batch(&late, &[]).unwrap(), vec![X, X, A, A]);

    // By install id.
    let report = store
        .delete_device(PersonKind::Install, "inst-gone", 2_000)
        .unwrap();
    assert_eq!(report.deleted_events, 2);
    let late = vec![
        on_install(track("i3", "Open", "anon-new", 30), "inst-gone", 3),
        on_install(track("i4", "Open", "anon-new", 31), "inst-other", 1),
    ];
    assert_eq!(store.write_batch(&late, &[]).unwrap(), vec![X, A]);

    // An anonymous id linked to a user: its anonymous event goes, the
    // user's identify stays, and the user is named in the report.
    let report = store
        .delete_device(PersonKind::Anonymous, "anon-linked", 3_000)
        .unwrap();
    assert_eq!(report.deleted_events, 1);
    assert_eq!(report.linked_user_ids, ["user-2"]);
    // accepted 8 + 2 + 1, rejected 2 letters + 3 refused; stored 11 - 5.
    assert_eq!(store.stats().unwrap(), stats(11, 0, 5, 6));

    let kinds: Vec<(PersonKind, String, u64)> = store
        .deletions(10)
        .unwrap()
        .into_iter()
        .map(|d| (d.kind, d.user_id, d.deleted_events))
        .collect();
    assert_eq!(
        kinds,
        [
            (PersonKind::Anonymous, "anon-linked".to_owned(), 1),
            (PersonKind::Install, "inst-gone".to_owned(), 2),
            (PersonKind::Anonymous, "anon-gone".to_owned(), 2),
        ]
    );
    // A device's deletion is no user's tombstone.
    assert!(!store.is_deleted("anon-gone").unwrap());
}

macro_rules! erasure_suite {
    ($fresh:path) => {
        #[test]
        fn deletion_by_anonymous_id_and_install() {
            let (store, _guard) = $fresh();
            crate::erasure::deletion_by_anonymous_id_and_install(&*store);
        }
    };
}
