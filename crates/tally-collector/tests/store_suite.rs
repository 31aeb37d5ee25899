//! One suite of store tests, run against both stores: SQLite on a real
//! file in a temporary directory, PostgreSQL on a database created for
//! each test (from `TALLY_TEST_DATABASE_URL`) and dropped after it, also
//! when the test fails.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the assertion

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tally_collector::governance::retention::{self, RetentionSettings, Stop};
use tally_collector::metrics::Metrics;
use tally_collector::queries::{answer, ProductQuery};
use tally_collector::store::{
    DeadLetter, DeadLetterQuery, DeletionRecord, DeletionStatus, DroppedRange, EventCount,
    ExpiryScope, ExportedEvent, InstallEvent, InstallReport, NewEvent, PersonKind, Stats, Store,
    WriteOutcome,
};
use tally_proto::{MessageType, Priority, RejectReason};

use WriteOutcome::{Accepted as A, Duplicate as D};

/// Refused because the person was deleted.
const X: WriteOutcome = WriteOutcome::Rejected(RejectReason::DeletedUser);

/// The source of the suite's events (one write key).
const SOURCE: &str = "wk_suite";

#[macro_use]
#[path = "store_suite/queries.rs"]
mod queries;

#[macro_use]
#[path = "store_suite/keys.rs"]
mod keys;

#[macro_use]
#[path = "store_suite/audit.rs"]
mod audit;

#[macro_use]
#[path = "store_suite/erasure.rs"]
mod erasure;

#[macro_use]
#[path = "store_suite/scoped.rs"]
mod scoped;

#[macro_use]
#[path = "store_suite/quality.rs"]
mod quality;

#[path = "support/test_db.rs"]
mod test_db;

#[path = "store_suite/finality.rs"]
mod finality;

/// A track event `name` by anonymous id `anon` at corrected time `ts`.
fn track(id: &str, name: &str, anon: &str, ts: i64) -> NewEvent {
    NewEvent {
        source: SOURCE.to_owned(),
        message_id: id.to_owned(),
        kind: MessageType::Track,
        event: Some(name.to_owned()),
        user_id: None,
        anonymous_id: Some(anon.to_owned()),
        group_id: None,
        previous_id: None,
        install_id: None,
        seq: None,
        session_id: None,
        session_index: None,
        dedup_key: None,
        priority: Priority::Normal,
        timestamp: Some(ts),
        sent_at: Some(ts + 10),
        received_at: ts + 20,
        ts_corrected: ts,
        clamped: false,
        drops: Vec::new(),
        raw: format!(r#"{{"type":"track","messageId":"{id}","event":"{name}"}}"#),
    }
}

fn by_user(mut e: NewEvent, user: &str) -> NewEvent {
    e.user_id = Some(user.to_owned());
    e.anonymous_id = None;
    e
}

fn identify(id: &str, user: &str, anon: Option<&str>, install: Option<&str>, ts: i64) -> NewEvent {
    let mut e = track(id, "x", anon.unwrap_or("unused"), ts);
    e.kind = MessageType::Identify;
    e.event = None;
    e.user_id = Some(user.to_owned());
    e.anonymous_id = anon.map(str::to_owned);
    e.install_id = install.map(str::to_owned);
    e
}

fn alias(id: &str, previous: &str, user: &str, ts: i64) -> NewEvent {
    let mut e = identify(id, user, None, None, ts);
    e.kind = MessageType::Alias;
    e.previous_id = Some(previous.to_owned());
    e
}

fn on_install(mut e: NewEvent, install: &str, seq: u64) -> NewEvent {
    e.install_id = Some(install.to_owned());
    e.seq = Some(seq);
    e
}

fn dead(id: &str, reason: RejectReason) -> DeadLetter {
    DeadLetter {
        source: SOURCE.to_owned(),
        message_id: Some(id.to_owned()),
        reason,
        detail: "test rule".into(),
        received_at: 7,
        raw: format!(r#"{{"messageId":"{id}"}}"#),
        user_id: None,
        anonymous_id: None,
        install_id: None,
    }
}

fn stats(accepted: u64, duplicate: u64, rejected: u64, events: u64) -> Stats {
    Stats {
        accepted,
        duplicate,
        rejected,
        events,
    }
}

fn count(count: u64, users: u64) -> EventCount {
    EventCount { count, users }
}

fn accepted_then_duplicate_across_batches(store: &dyn Store) {
    let a = track("m-a", "Open", "anon-1", 100);
    let b = track("m-b", "Open", "anon-1", 110);
    let c = track("m-c", "Open", "anon-1", 120);
    assert_eq!(store.write_batch(&[a, b.clone()], &[]).unwrap(), vec![A, A]);
    assert_eq!(store.write_batch(&[b, c], &[]).unwrap(), vec![D, A]);
    assert_eq!(store.stats().unwrap(), stats(3, 1, 0, 3));
    assert_eq!(
        store.count_events("Open", None, None, None).unwrap(),
        count(3, 1)
    );
}

fn duplicate_within_one_batch(store: &dyn Store) {
    let a = track("m-a", "Open", "anon-1", 100);
    let b = track("m-b", "Open", "anon-2", 100);
    let out = store
        .write_batch(&[a.clone(), a.clone(), b, a], &[])
        .unwrap();
    assert_eq!(out, vec![A, D, A, D]);
    assert_eq!(store.stats().unwrap(), stats(2, 2, 0, 2));
}

fn dedup_key_first_writer_wins(store: &dyn Store) {
    let mut first = track("m-1", "Order", "anon-1", 100);
    first.dedup_key = Some("order-77".into());
    let mut second = track("m-2", "Order", "anon-2", 90);
    second.dedup_key = Some("order-77".into());
    let mut other = track("m-3", "Order", "anon-3", 100);
    other.dedup_key = Some("order-78".into());
    assert_eq!(
        store.write_batch(&[first, second.clone()], &[]).unwrap(),
        vec![A, D]
    );
    second.message_id = "m-4".into();
    assert_eq!(
        store.write_batch(&[second, other], &[]).unwrap(),
        vec![D, A]
    );
    // Only the first writer's row is stored: one person per order.
    assert_eq!(
        store.count_events("Order", None, None, None).unwrap(),
        count(2, 2)
    );
    assert_eq!(store.stats().unwrap(), stats(2, 2, 0, 2));
}

fn dead_letters_kept_with_reason(store: &dyn Store) {
    let ok = track("m-ok", "Open", "anon-1", 100);
    let out = store
        .write_batch(
            &[ok],
            &[
                dead("bad-1", RejectReason::MissingEventName),
                dead("bad-2", RejectReason::SeqZero),
            ],
        )
        .unwrap();
    assert_eq!(out, vec![A]);
    let mut no_id = dead("x", RejectReason::MalformedMessage);
    no_id.message_id = None;
    no_id.raw = "[1,2]".into();
    assert_eq!(store.write_batch(&[], &[no_id]).unwrap(), vec![]);
    assert_eq!(store.stats().unwrap(), stats(1, 0, 3, 1));
    let letters = store.dead_letters(&DeadLetterQuery::newest(10)).unwrap();
    let summary: Vec<(Option<&str>, &str, &str, &str)> = letters
        .iter()
        .map(|d| {
            (
                d.message_id.as_deref(),
                d.reason.as_str(),
                d.detail.as_str(),
                d.raw.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (None, "malformed_message", "test rule", "[1,2]"),
            (
                Some("bad-2"),
                "seq_zero",
                "test rule",
                r#"{"messageId":"bad-2"}"#
            ),
            (
                Some("bad-1"),
                "missing_event_name",
                "test rule",
                r#"{"messageId":"bad-1"}"#
            ),
        ]
    );
    assert_eq!(letters[0].received_at, 7);
    assert_eq!(
        store
            .dead_letters(&DeadLetterQuery::newest(1))
            .unwrap()
            .len(),
        1
    );

    // Filtered and paged: by reason, by receipt time, before a row id.
    let mut later = dead("bad-3", RejectReason::SeqZero);
    later.received_at = 50;
    assert_eq!(store.write_batch(&[], &[later]).unwrap(), vec![]);
    let ids = |q: DeadLetterQuery| -> Vec<Option<String>> {
        store
            .dead_letters(&q)
            .unwrap()
            .into_iter()
            .map(|d| d.message_id)
            .collect()
    };
    let some = |ids: &[&str]| -> Vec<Option<String>> {
        ids.iter().map(|i| Some((*i).to_owned())).collect()
    };
    let reason = |r: RejectReason| DeadLetterQuery {
        reason: Some(r.as_str().to_owned()),
        ..DeadLetterQuery::newest(10)
    };
    assert_eq!(
        ids(reason(RejectReason::SeqZero)),
        some(&["bad-3", "bad-2"])
    );
    let since = DeadLetterQuery {
        since: Some(8),
        ..DeadLetterQuery::newest(10)
    };
    assert_eq!(ids(since), some(&["bad-3"]));
    let until = DeadLetterQuery {
        until: Some(50),
        ..reason(RejectReason::SeqZero)
    };
    assert_eq!(ids(until), some(&["bad-2"]), "until is exclusive");
    let page = store.dead_letters(&DeadLetterQuery::newest(2)).unwrap();
    assert_eq!(page.len(), 2);
    let rest = DeadLetterQuery {
        before: Some(page[1].id),
        ..DeadLetterQuery::newest(10)
    };
    assert_eq!(
        ids(rest),
        vec![Some("bad-2".to_owned()), Some("bad-1".to_owned())]
    );
    assert!(page[0].id > page[1].id);
}

/// A fixture database of each released schema version
/// (`tests/fixtures/STORE/vN.sql`, written by `scripts/store-fixtures.py`):
/// the dump of every version, in order, one for each migration of the
/// store. A migration without its fixture fails here.
fn fixtures(store: &str, migrations: usize) -> Vec<(usize, String)> {
    (1..=migrations)
        .map(|version| {
            let path = format!(
                "{}/tests/fixtures/{store}/v{version}.sql",
                env!("CARGO_MANIFEST_DIR")
            );
            let dump = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("the fixture of schema version {version}: {path}: {e}"));
            (version, dump)
        })
        .collect()
}

/// What every fixture holds (one accepted event of an install, one dead
/// letter, stored before sources were recorded) reads back from `store`,
/// opened on the fixture of schema version `from` and so upgraded; and the
/// store goes on: the event's id is still taken, the install still counts.
fn fixture_reads_back(store: &dyn Store, from: usize) {
    const TS: i64 = 1_700_000_000_000;
    let at = format!("upgraded from schema version {from}");
    assert_eq!(store.stats().unwrap(), stats(1, 0, 1, 1), "{at}");
    assert_eq!(
        store.count_events("Open", None, None, None).unwrap(),
        count(1, 1),
        "{at}"
    );
    let install = store.install("inst-fixture").unwrap();
    assert_eq!(
        install.as_ref().map(|i| (i.max_seq, i.missing.len())),
        Some((1, 0)),
        "{at}"
    );
    let page = store
        .export_page(i64::MIN, i64::MAX, None, None, 10)
        .unwrap();
    assert_eq!(page.len(), 1, "{at}");
    assert_eq!(page[0].ts_corrected, TS, "{at}");
    assert!(page[0].raw.contains(r#""messageId":"fixture-1""#), "{at}");
    let letters = store.dead_letters(&DeadLetterQuery::newest(10)).unwrap();
    assert_eq!(letters.len(), 1, "{at}");
    assert_eq!(
        letters[0].message_id.as_deref(),
        Some("fixture-bad"),
        "{at}"
    );

    let again = on_install(
        track("fixture-1", "Open", "anon-fixture", TS),
        "inst-fixture",
        1,
    );
    let next = on_install(
        track("fixture-2", "Open", "anon-fixture", TS + 1),
        "inst-fixture",
        2,
    );
    assert_eq!(
        store.write_batch(&[again, next], &[]).unwrap(),
        [D, A],
        "{at}"
    );
    assert_eq!(
        store.count_events("Open", None, None, None).unwrap(),
        count(2, 1),
        "{at}"
    );
    let install = store.install("inst-fixture").unwrap();
    assert_eq!(
        install.as_ref().map(|i| (i.max_seq, i.missing.len())),
        Some((2, 0)),
        "{at}"
    );
}

fn count_window_and_people_with_stitching(store: &dyn Store) {
    // Anonymous events first; the identify arrives later.
    let batch1 = vec![
        track("e1", "Open", "anon-1", 100),
        track("e2", "Open", "anon-1", 200),
        track("e3", "Open", "anon-2", 300),
        by_user(track("e4", "Open", "anon-x", 400), "u1"),
        track("e5", "Close", "anon-1", 150),
    ];
    assert_eq!(store.write_batch(&batch1, &[]).unwrap(), vec![A; 5]);
    // anon-1, anon-2, u1.
    assert_eq!(
        store.count_events("Open", None, None, None).unwrap(),
        count(4, 3)
    );
    store
        .write_batch(&[identify("i1", "u1", Some("anon-1"), None, 500)], &[])
        .unwrap();
    // anon-1's earlier events now count for u1.
    assert_eq!(
        store.count_events("Open", None, None, None).unwrap(),
        count(4, 2)
    );
    // Window: from inclusive, to exclusive, on the corrected time.
    assert_eq!(
        store.count_events("Open", Some(200), None, None).unwrap(),
        count(3, 2)
    );
    assert_eq!(
        store
            .count_events("Open", Some(200), Some(400), None)
            .unwrap(),
        count(2, 2)
    );
    assert_eq!(
        store.count_events("Open", None, Some(200), None).unwrap(),
        count(1, 1)
    );
    assert_eq!(
        store.count_events("Close", None, None, None).unwrap(),
        count(1, 1)
    );
    assert_eq!(
        store.count_events("Missing", None, None, None).unwrap(),
        count(0, 0)
    );

    // alias: anon-2 is u1 too.
    store
        .write_batch(&[alias("al1", "anon-2", "u1", 600)], &[])
        .unwrap();
    assert_eq!(
        store.count_events("Open", None, None, None).unwrap(),
        count(4, 1)
    );

    // An alias of a user id that has events of its own is refused: two
    // identified users are never merged, so "old" stays a person.
    let old = by_user(track("e6", "Buy", "n", 700), "old");
    let new = by_user(track("e7", "Buy", "n", 710), "u2");
    store.write_batch(&[old, new], &[]).unwrap();
    assert_eq!(
        store.count_events("Buy", None, None, None).unwrap(),
        count(2, 2)
    );
    assert_eq!(
        store
            .write_batch(&[alias("al2", "old", "u2", 720)], &[])
            .unwrap(),
        vec![WriteOutcome::Rejected(RejectReason::AliasOfIdentifiedUser)]
    );
    assert_eq!(
        store.count_events("Buy", None, None, None).unwrap(),
        count(2, 2)
    );
    // An alias of a user id no event has carried yet is what an alias is
    // for: that id's later events count for u2.
    store
        .write_batch(&[alias("al3", "temp", "u2", 730)], &[])
        .unwrap();
    let by_temp = by_user(track("e20", "Buy", "n", 740), "temp");
    store.write_batch(&[by_temp], &[]).unwrap();
    assert_eq!(
        store.count_events("Buy", None, None, None).unwrap(),
        count(3, 2)
    );

    // An install linked by identify: its anonymous events follow it.
    let on_phone = on_install(track("e8", "Play", "anon-9", 800), "inst-9", 1);
    store.write_batch(&[on_phone], &[]).unwrap();
    store
        .write_batch(&[identify("i2", "u3", None, Some("inst-9"), 900)], &[])
        .unwrap();
    let by_u3 = by_user(track("e9", "Play", "anon-z", 910), "u3");
    store.write_batch(&[by_u3], &[]).unwrap();
    assert_eq!(
        store.count_events("Play", None, None, None).unwrap(),
        count(2, 1)
    );

    // Without links, the install is the person, before the anonymous id.
    let a = on_install(track("e10", "Tap", "anon-a", 1000), "inst-t", 1);
    let b = on_install(track("e11", "Tap", "anon-b", 1001), "inst-t", 2);
    store.write_batch(&[a, b], &[]).unwrap();
    assert_eq!(
        store.count_events("Tap", None, None, None).unwrap(),
        count(2, 1)
    );
}

fn link_conflict_earliest_wins(store: &dyn Store) {
    store
        .write_batch(&[track("e1", "Open", "anon-5", 100)], &[])
        .unwrap();
    store
        .write_batch(&[by_user(track("e2", "Open", "n", 100), "u4")], &[])
        .unwrap();
    // The later identify arrives first; the earlier one, arriving second, wins.
    store
        .write_batch(&[identify("i1", "u3", Some("anon-5"), None, 500)], &[])
        .unwrap();
    assert_eq!(
        store.count_events("Open", None, None, None).unwrap(),
        count(2, 2)
    );
    store
        .write_batch(&[identify("i2", "u4", Some("anon-5"), None, 400)], &[])
        .unwrap();
    assert_eq!(
        store.count_events("Open", None, None, None).unwrap(),
        count(2, 1)
    );
    // A later one does not move it back.
    store
        .write_batch(&[identify("i3", "u3", Some("anon-5"), None, 450)], &[])
        .unwrap();
    assert_eq!(
        store.count_events("Open", None, None, None).unwrap(),
        count(2, 1)
    );
}

fn report(max_seq: u64, missing: &[[u64; 2]], drops: &[(&str, u64)]) -> InstallReport {
    let dropped_by_reason: BTreeMap<String, u64> =
        drops.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect();
    InstallReport {
        max_seq,
        missing: missing.to_vec(),
        dropped: dropped_by_reason.values().sum(),
        dropped_by_reason,
        dropped_ranges: Vec::new(),
    }
}

/// `r` with the seq ranges the device reported dropped, stored or not.
fn with_ranges(mut r: InstallReport, dropped_ranges: &[[u64; 2]]) -> InstallReport {
    r.dropped_ranges = dropped_ranges.to_vec();
    r
}

fn install_completeness(store: &dyn Store) {
    assert_eq!(store.install("inst-1").unwrap(), None);
    let evs: Vec<NewEvent> = [1u64, 2, 3, 6, 7, 10]
        .iter()
        .map(|&s| on_install(track(&format!("s{s}"), "Open", "anon-1", 100), "inst-1", s))
        .collect();
    store.write_batch(&evs[3..], &[]).unwrap();
    assert_eq!(
        store.install("inst-1").unwrap(),
        Some(report(10, &[[1, 5], [8, 9]], &[]))
    );
    store.write_batch(&evs[..3], &[]).unwrap();
    assert_eq!(
        store.install("inst-1").unwrap(),
        Some(report(10, &[[4, 5], [8, 9]], &[]))
    );
    // A duplicate changes nothing.
    assert_eq!(store.write_batch(&evs[..1], &[]).unwrap(), vec![D]);
    assert_eq!(
        store.install("inst-1").unwrap(),
        Some(report(10, &[[4, 5], [8, 9]], &[]))
    );

    // The device reports 8..=9 dropped by policy, and 12..=13 too.
    let mut notice = on_install(track("s11", "tally.dropped", "anon-1", 100), "inst-1", 11);
    notice.drops = vec![
        DroppedRange {
            from: 8,
            to: 9,
            reason: "queue_full".into(),
        },
        DroppedRange {
            from: 12,
            to: 13,
            reason: "too_old".into(),
        },
    ];
    store.write_batch(&[notice.clone()], &[]).unwrap();
    let want = with_ranges(
        report(13, &[[4, 5]], &[("queue_full", 2), ("too_old", 2)]),
        &[[8, 9], [12, 13]],
    );
    assert_eq!(store.install("inst-1").unwrap(), Some(want.clone()));
    // The same notice again is a duplicate: drops are not counted twice.
    assert_eq!(store.write_batch(&[notice], &[]).unwrap(), vec![D]);
    assert_eq!(store.install("inst-1").unwrap(), Some(want));

    let late: Vec<NewEvent> = [4u64, 5, 14]
        .iter()
        .map(|&s| on_install(track(&format!("s{s}"), "Open", "anon-1", 100), "inst-1", s))
        .collect();
    store.write_batch(&late, &[]).unwrap();
    assert_eq!(
        store.install("inst-1").unwrap(),
        Some(with_ranges(
            report(14, &[], &[("queue_full", 2), ("too_old", 2)]),
            &[[8, 9], [12, 13]]
        ))
    );
    // Another install is separate.
    store
        .write_batch(
            &[on_install(track("o3", "Open", "anon-2", 1), "inst-2", 3)],
            &[],
        )
        .unwrap();
    assert_eq!(
        store.install("inst-2").unwrap(),
        Some(report(3, &[[1, 2]], &[]))
    );
}

/// A device that sent records, lost the answers and then dropped them
/// from a full log reports seqs the store holds: the install report and
/// the fleet's completeness count each of them once, as stored.
fn a_drop_report_over_stored_seqs_counts_them_once(store: &dyn Store) {
    let open = |install: &str, seq: u64| {
        on_install(
            track(&format!("{install}-{seq}"), "Open", "anon-d", 100),
            install,
            seq,
        )
    };
    let notice = |install: &str, seq: u64, from: u64, to: u64| {
        let mut n = on_install(
            track(&format!("{install}-{seq}"), "tally.dropped", "anon-d", 100),
            install,
            seq,
        );
        n.drops = vec![DroppedRange {
            from,
            to,
            reason: "log_full".into(),
        }];
        n
    };
    // i1 stored 1..=6 and 9; the device then reports 3..=8 dropped: 3..=6
    // are stored, only 7 and 8 are dropped.
    let mut batch: Vec<NewEvent> = [1, 2, 3, 4, 5, 6, 9]
        .iter()
        .map(|&s| open("i1", s))
        .collect();
    batch.push(notice("i1", 10, 3, 8));
    // i2 stored 1 and 4, reports 1..=2 dropped: 1 is stored, 2 dropped,
    // 3 missing.
    batch.extend([open("i2", 1), open("i2", 4), notice("i2", 5, 1, 2)]);
    store.write_batch(&batch, &[]).unwrap();

    let i1 = store.install("i1").unwrap().unwrap();
    assert_eq!(
        i1,
        with_ranges(report(10, &[], &[("log_full", 2)]), &[[3, 8]])
    );
    // Stored (8 events with the notice) + dropped is every seq, once; the
    // overlap is the reported length less dropped.
    assert_eq!(8 + i1.dropped, i1.max_seq);
    assert_eq!(6 - i1.dropped, 4);
    assert_eq!(
        store.install("i2").unwrap(),
        Some(with_ranges(
            report(5, &[[3, 3]], &[("log_full", 1)]),
            &[[1, 2]]
        ))
    );
    let f = store.pipeline_health(0, 3_600_000, 0).unwrap();
    assert_eq!(
        (
            f.completeness.installs,
            f.completeness.installs_with_gaps,
            f.completeness.missing
        ),
        (2, 1, 1)
    );
    assert_eq!(store.installs_with_gaps().unwrap(), vec!["i2".to_owned()]);
}

/// Completeness of a batch carrying many installs (more than one
/// multi-row chunk of the SQLite write), each of whose stored ranges
/// grows, moves its start, or joins another.
fn install_completeness_of_many_installs_per_batch(store: &dyn Store) {
    const INSTALLS: usize = 150;
    let batch = |seqs: &[u64], tag: &str| -> Vec<NewEvent> {
        (0..INSTALLS)
            .flat_map(|i| {
                seqs.iter().map(move |&s| {
                    on_install(
                        track(&format!("{tag}-{i}-{s}"), "Open", &format!("anon-{i}"), 100),
                        &format!("inst-{i}"),
                        s,
                    )
                })
            })
            .collect()
    };
    // Stored: 1..=2 and 5..=6 of every install.
    let first = batch(&[1, 2, 5, 6], "a");
    assert!(store
        .write_batch(&first, &[])
        .unwrap()
        .iter()
        .all(|o| *o == A));
    for i in 0..INSTALLS {
        assert_eq!(
            store.install(&format!("inst-{i}")).unwrap(),
            Some(report(6, &[[3, 4]], &[])),
            "inst-{i}"
        );
    }
    // 4 moves the start of 5..=6, 8 opens a range, 10 extends nothing yet.
    store.write_batch(&batch(&[4, 8, 10], "b"), &[]).unwrap();
    for i in 0..INSTALLS {
        assert_eq!(
            store.install(&format!("inst-{i}")).unwrap(),
            Some(report(10, &[[3, 3], [7, 7], [9, 9]], &[])),
            "inst-{i}"
        );
    }
    // 3, 7 and 9 join every range into one.
    store.write_batch(&batch(&[3, 7, 9], "c"), &[]).unwrap();
    for i in 0..INSTALLS {
        assert_eq!(
            store.install(&format!("inst-{i}")).unwrap(),
            Some(report(10, &[], &[])),
            "inst-{i}"
        );
    }
    let total = (INSTALLS * 10) as u64;
    assert_eq!(store.stats().unwrap(), stats(total, 0, 0, total));
}

fn deletion_and_tombstone(store: &dyn Store) {
    let batch = vec![
        track("a1", "Open", "anon-1", 100),
        on_install(track("a2", "Open", "anon-7", 110), "inst-1", 1),
        by_user(track("a3", "Open", "n", 120), "u1"),
        by_user(track("a4", "Open", "n", 130), "u2"),
        identify("a5", "u1", Some("anon-1"), Some("inst-1"), 140),
        by_user(track("a6", "Buy", "n", 150), "old-u1"),
        // An id no event carried yet, merged into u1.
        alias("a7", "pre-u1", "u1", 160),
        // Own user id, alive: kept even though anon-1 belongs to u1.
        {
            let mut e = track("a8", "Open", "anon-1", 170);
            e.user_id = Some("u2".into());
            e
        },
        by_user(track("a9", "Buy", "n", 180), "pre-u1"),
    ];
    assert_eq!(store.write_batch(&batch, &[]).unwrap(), vec![A; 9]);
    let letter = |id: &str, user: Option<&str>, anon: Option<&str>| DeadLetter {
        user_id: user.map(str::to_owned),
        anonymous_id: anon.map(str::to_owned),
        ..dead(id, RejectReason::MissingEventName)
    };
    let letters = [
        letter("d1", Some("u1"), None),
        letter("d2", None, Some("anon-1")),
        letter("d3", Some("u2"), Some("anon-1")),
    ];
    store.write_batch(&[], &letters).unwrap();
    assert_eq!(store.stats().unwrap(), stats(9, 0, 3, 9));
    assert_eq!(
        store.count_events("Buy", None, None, None).unwrap(),
        count(2, 2)
    );
    assert!(!store.is_deleted("u1").unwrap());

    let report = store.delete_user("u1", 1_000).unwrap();
    // a1 (anonymous id linked to u1), a2 (its anonymous id has no link, its
    // install is u1's), a3, a5 (the identify) and a7 (the alias) carry
    // u1's own id. Never a4, a6, a8 or a9, which carry another user's id:
    // pre-u1 was merged into u1 by an alias, which proves nothing about
    // whose data it is, so the report names it instead.
    assert_eq!(report.deleted_events, 5);
    assert_eq!(report.deleted_dead_letters, 2);
    assert_eq!(report.aliased_user_ids, vec!["pre-u1".to_owned()]);
    assert!(store.is_deleted("u1").unwrap());
    assert!(!store.is_deleted("u2").unwrap());
    assert_eq!(store.stats().unwrap(), stats(9, 0, 3, 4));
    assert_eq!(
        store.count_events("Open", None, None, None).unwrap(),
        count(2, 1)
    );
    // The alias is gone with u1: pre-u1 is a person of its own again.
    assert_eq!(
        store.count_events("Buy", None, None, None).unwrap(),
        count(2, 2)
    );
    let kept: Vec<Option<String>> = store
        .dead_letters(&DeadLetterQuery::newest(10))
        .unwrap()
        .into_iter()
        .map(|d| d.message_id)
        .collect();
    assert_eq!(kept, vec![Some("d3".to_owned())]);

    // Later events of that person are refused and counted, never kept.
    let later = vec![
        by_user(track("b1", "Open", "n", 2_000), "u1"),
        track("b2", "Open", "anon-1", 2_000),
        on_install(track("b3", "Open", "anon-new", 2_000), "inst-1", 2),
        by_user(track("b4", "Open", "n", 2_000), "pre-u1"),
        by_user(track("b5", "Open", "n", 2_000), "u2"),
        track("a1", "Open", "anon-1", 100),
    ];
    assert_eq!(
        store.write_batch(&later, &[]).unwrap(),
        vec![X, X, X, A, A, X]
    );
    assert_eq!(store.stats().unwrap(), stats(11, 0, 7, 6));
    let letters = store.dead_letters(&DeadLetterQuery::newest(10)).unwrap();
    assert_eq!(letters.len(), 5);
    let refused: Vec<_> = letters
        .iter()
        .filter(|d| d.reason == "deleted_user")
        .collect();
    assert_eq!(refused.len(), 4);
    assert!(refused.iter().all(|d| d.raw.is_empty()));
    let mut ids: Vec<&str> = refused
        .iter()
        .filter_map(|d| d.message_id.as_deref())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["a1", "b1", "b2", "b3"]);
    // Deleting again finds no events, removes the refusals' records (they
    // carry u1's ids) and keeps the counters exact.
    let again = store.delete_user("u1", 3_000).unwrap();
    assert_eq!((again.deleted_events, again.deleted_dead_letters), (0, 4));
    assert_eq!(store.stats().unwrap(), stats(11, 0, 7, 6));
    // An identify for the deleted user is refused too: no new link.
    let relink = identify("c1", "u1", Some("anon-fresh"), None, 4_000);
    assert_eq!(
        store
            .write_batch(&[relink, track("c2", "Open", "anon-fresh", 4_001)], &[])
            .unwrap(),
        vec![X, A]
    );
    // The install of the deleted user, identified by a new user: its
    // anonymous events are that user's, and no longer refused.
    let reused = on_install(identify("c3", "u4", None, None, 5_000), "inst-1", 3);
    let anon = on_install(track("c4", "Open", "anon-next", 5_001), "inst-1", 4);
    assert_eq!(store.write_batch(&[reused], &[]).unwrap(), vec![A]);
    assert_eq!(store.write_batch(&[anon], &[]).unwrap(), vec![A]);
}

/// A write key is public: what one source sends never answers for, nor
/// suppresses, another source's data. Dedup is exact within a source; an
/// install's completeness and drop reports are its own source's.
fn sources_are_apart(store: &dyn Store) {
    let from = |source: &str, mut e: NewEvent| {
        e.source = source.to_owned();
        e
    };
    let keyed = |id: &str, key: &str| {
        let mut e = track(id, "Buy", "anon-s", 100);
        e.dedup_key = Some(key.to_owned());
        e
    };
    // The same message id and business key from two sources: each is
    // stored once per source.
    let a = [
        from("wk_a", track("same-id", "Open", "anon-s", 100)),
        from("wk_a", keyed("k-a", "order-1")),
    ];
    let b = [
        from("wk_b", track("same-id", "Open", "anon-s", 100)),
        from("wk_b", keyed("k-b", "order-1")),
    ];
    assert_eq!(store.write_batch(&a, &[]).unwrap(), vec![A, A]);
    assert_eq!(store.write_batch(&b, &[]).unwrap(), vec![A, A]);
    assert_eq!(store.write_batch(&b, &[]).unwrap(), vec![D, D]);
    assert_eq!(store.stats().unwrap(), stats(4, 2, 0, 4));

    // inst-s belongs to wk_a, which sent for it first.
    let mine: Vec<NewEvent> = (1..=3)
        .map(|n| {
            from(
                "wk_a",
                on_install(track(&format!("s{n}"), "Open", "anon-s", 100), "inst-s", n),
            )
        })
        .collect();
    assert_eq!(store.write_batch(&mine, &[]).unwrap(), vec![A; 3]);
    // Another source's events for it are its own data: stored, but they
    // mark nothing seen; its drop report for the install is refused.
    let mut forged = from(
        "wk_b",
        on_install(track("f2", "tally.dropped", "anon-s", 100), "inst-s", 9),
    );
    forged.drops = vec![DroppedRange {
        from: 4,
        to: 8,
        reason: "queue_full".into(),
    }];
    let theirs = from(
        "wk_b",
        on_install(track("f1", "Open", "anon-s", 100), "inst-s", 12),
    );
    assert_eq!(
        store.write_batch(&[theirs, forged], &[]).unwrap(),
        vec![A, WriteOutcome::Rejected(RejectReason::InvalidDropReport)]
    );
    assert_eq!(store.install("inst-s").unwrap(), Some(report(3, &[], &[])));
    // The owner's own report counts.
    let mut own = from(
        "wk_a",
        on_install(track("r1", "tally.dropped", "anon-s", 100), "inst-s", 6),
    );
    own.drops = vec![DroppedRange {
        from: 4,
        to: 5,
        reason: "queue_full".into(),
    }];
    assert_eq!(store.write_batch(&[own], &[]).unwrap(), vec![A]);
    assert_eq!(
        store.install("inst-s").unwrap(),
        Some(with_ranges(report(6, &[], &[("queue_full", 2)]), &[[4, 5]]))
    );
}

fn concurrent_overlapping_writers(store: Arc<dyn Store>) {
    const THREADS: usize = 4;
    const BATCHES: usize = 20;
    const BATCH: usize = 50;
    const DISTINCT: usize = 1_000;
    let sent = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for b in 0..BATCHES {
                    // Each thread walks the same id space from a different
                    // offset, so batches overlap across threads.
                    let batch: Vec<NewEvent> = (0..BATCH)
                        .map(|i| {
                            let n = (t * 250 + b * BATCH + i) % DISTINCT;
                            let mut e = track(
                                &format!("m-{n:05}"),
                                "Load",
                                &format!("anon-{}", n % 7),
                                n as i64,
                            );
                            if n % 10 == 0 {
                                e.dedup_key = Some(format!("k-{}", n / 20));
                            }
                            e
                        })
                        .collect();
                    sent.fetch_add(batch.len(), Ordering::SeqCst);
                    outcomes.extend(store.write_batch(&batch, &[]).unwrap());
                }
                outcomes
            })
        })
        .collect();
    let all: Vec<WriteOutcome> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let accepted = all.iter().filter(|o| **o == A).count() as u64;
    let duplicate = all.iter().filter(|o| **o == D).count() as u64;
    // Ids covered: thread t starts at t*250 and walks 1000 ids: all 1000.
    // dedup keys k-j for n = 20j and 20j+10 collide: 50 of them lose.
    assert_eq!(accepted, (DISTINCT - DISTINCT / 20) as u64);
    assert_eq!(accepted + duplicate, sent.load(Ordering::SeqCst) as u64);
    assert_eq!(
        store.stats().unwrap(),
        stats(accepted, duplicate, 0, accepted)
    );
    assert_eq!(
        store.count_events("Load", None, None, None).unwrap(),
        count(accepted, 7)
    );
}

fn deletion_during_ingest_leaves_nothing_behind(store: Arc<dyn Store>) {
    const THREADS: usize = 3;
    const BATCHES: usize = 30;
    const BATCH: usize = 40;
    let deleted_at_batch = BATCHES / 3;
    let started = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            let started = Arc::clone(&started);
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for b in 0..BATCHES {
                    let batch: Vec<NewEvent> = (0..BATCH)
                        .map(|i| {
                            let id = format!("t{t}-b{b}-e{i}");
                            if i % 2 == 0 {
                                by_user(track(&id, "Doomed", "n", i as i64), "u-del")
                            } else {
                                by_user(track(&id, "Kept", "n", i as i64), "u-keep")
                            }
                        })
                        .collect();
                    outcomes.extend(store.write_batch(&batch, &[]).unwrap());
                    started.fetch_add(1, Ordering::SeqCst);
                }
                outcomes
            })
        })
        .collect();
    while started.load(Ordering::SeqCst) < deleted_at_batch * THREADS {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let deleted = store.delete_user("u-del", 1).unwrap().deleted_events;
    let all: Vec<WriteOutcome> = writers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let accepted = all.iter().filter(|o| **o == A).count() as u64;
    let refused = all.iter().filter(|o| **o == X).count() as u64;
    let kept = (THREADS * BATCHES * BATCH / 2) as u64;
    // Whatever the interleaving: every event of the deleted user written
    // before the deletion was removed, every one after it refused.
    assert_eq!(
        store.count_events("Doomed", None, None, None).unwrap(),
        count(0, 0)
    );
    assert_eq!(
        store.count_events("Kept", None, None, None).unwrap(),
        count(kept, 1)
    );
    assert_eq!(accepted, kept + deleted);
    assert_eq!(refused, kept - deleted);
    assert!(deleted > 0, "the deletion came after some batches");
    assert_eq!(store.stats().unwrap(), stats(accepted, 0, refused, kept));
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn retention_expires_in_chunks_and_keeps_the_counter_exact(store: &dyn Store) {
    let mut batch: Vec<NewEvent> = (0..10)
        .map(|i| track(&format!("song-{i:02}"), "Song", "anon-1", 1_000 + i))
        .collect();
    batch.extend((0..3).map(|i| track(&format!("song-new-{i}"), "Song", "anon-1", 9_000 + i)));
    batch.extend((0..4).map(|i| track(&format!("open-{i}"), "Open", "anon-2", 1_000 + i)));
    batch.extend((0..2).map(|i| track(&format!("keep-{i}"), "Keep", "anon-2", 1_000 + i)));
    batch.push(identify("ident-old", "u1", Some("anon-2"), None, 1_000));
    batch.push(track("open-new", "Open", "anon-2", 9_000));
    assert_eq!(store.write_batch(&batch, &[]).unwrap(), vec![A; 21]);

    // One name, in chunks of 4: 4, 4, 2, then nothing.
    let song = ExpiryScope::Event("Song");
    let chunks: Vec<u64> = (0..4)
        .map(|_| store.expire_events(song, 5_000, 4).unwrap())
        .collect();
    assert_eq!(chunks, [4, 4, 2, 0]);
    assert_eq!(
        store.count_events("Song", None, None, None).unwrap(),
        count(3, 1)
    );
    assert_eq!(store.stats().unwrap(), stats(21, 0, 0, 11));

    // Everything else but Song and Keep, the identify (no name) included.
    let except = ["Song".to_owned(), "Keep".to_owned()];
    let all = ExpiryScope::AllExcept(&except);
    assert_eq!(store.expire_events(all, 5_000, 100).unwrap(), 5);
    assert_eq!(store.expire_events(all, 5_000, 100).unwrap(), 0);
    assert_eq!(
        store.count_events("Open", None, None, None).unwrap(),
        count(1, 1)
    );
    assert_eq!(
        store.count_events("Keep", None, None, None).unwrap(),
        count(2, 1)
    );
    assert_eq!(store.stats().unwrap(), stats(21, 0, 0, 6));
    // The identify expired but its link stays: anon-2's events are u1's.
    assert_eq!(
        store.count_events("Keep", None, None, None).unwrap(),
        count(2, 1)
    );
    assert!(store
        .export_page(i64::MIN, i64::MAX, None, None, 100)
        .unwrap()
        .iter()
        .all(|e| e.ts_corrected >= 1_000 && !e.raw.contains("ident-old")));

    // Dedup holds for stored events only: a resent expired message is new.
    assert_eq!(
        store
            .write_batch(&[track("song-00", "Song", "anon-1", 1_000)], &[])
            .unwrap(),
        vec![A]
    );
    assert_eq!(store.stats().unwrap(), stats(22, 0, 0, 7));
}

fn retention_pass_applies_named_rules_and_the_default(store: &dyn Store) {
    let now = 1_000 * DAY_MS;
    let at = |days: i64| now - days * DAY_MS;
    let batch = vec![
        track("song-40d", "Song Played", "a", at(40)),
        track("song-20d", "Song Played", "a", at(20)),
        track("order-500d", "Order Completed", "a", at(500)),
        track("order-3000d", "Order Completed", "a", at(3_000)),
        track("open-100d", "Open", "a", at(100)),
        track("open-10d", "Open", "a", at(10)),
        identify("ident-100d", "u1", Some("a"), None, at(100)),
    ];
    assert_eq!(store.write_batch(&batch, &[]).unwrap(), vec![A; 7]);
    let policy = RetentionSettings {
        default_days: Some(90),
        events: Some(BTreeMap::from([
            ("Song Played".to_owned(), 30),
            ("Order Completed".to_owned(), 2_555),
        ])),
        chunk_rows: Some(1),
        ..RetentionSettings::default()
    }
    .resolve()
    .unwrap();
    let metrics = Metrics::new();
    let report = retention::pass(store, &policy, now, &metrics, &Stop::default()).unwrap();
    // song-40d, order-3000d, open-100d, ident-100d; a chunk of one row
    // each, and one short chunk per rule to see the end (and one each for
    // the dead letters and the audit log: none).
    assert_eq!(report.expired, 4);
    assert_eq!(report.dead_letters, 0);
    assert_eq!(report.chunks, 9);
    assert_eq!(store.stats().unwrap(), stats(7, 0, 0, 3));
    let left: Vec<i64> = store
        .export_page(i64::MIN, i64::MAX, None, None, 100)
        .unwrap()
        .iter()
        .map(|e| (now - e.ts_corrected) / DAY_MS)
        .collect();
    assert_eq!(left, [500, 20, 10]);
    assert!(metrics
        .encode()
        .lines()
        .any(|l| l == "tally_retention_expired_events_total 4"));
    // A second pass finds nothing; a stopped job does nothing.
    let again = retention::pass(store, &policy, now, &metrics, &Stop::default()).unwrap();
    assert_eq!(again.expired, 0);
    let stop = Stop::default();
    stop.set();
    let stopped = retention::pass(store, &policy, now + 1_000 * DAY_MS, &metrics, &stop).unwrap();
    assert_eq!(stopped.chunks, 0);
    assert_eq!(store.stats().unwrap(), stats(7, 0, 0, 3));
}

fn retention_during_ingest_keeps_the_counter_exact(store: Arc<dyn Store>) {
    const THREADS: usize = 2;
    const BATCHES: usize = 25;
    const BATCH: usize = 40;
    const OLD: usize = 3_000;
    let old: Vec<NewEvent> = (0..OLD)
        .map(|i| track(&format!("old-{i:05}"), "Old", "anon-o", i as i64))
        .collect();
    for chunk in old.chunks(500) {
        store.write_batch(chunk, &[]).unwrap();
    }
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for b in 0..BATCHES {
                    let batch: Vec<NewEvent> = (0..BATCH)
                        .map(|i| track(&format!("new-{t}-{b}-{i}"), "New", "anon-n", 1_000_000))
                        .collect();
                    assert_eq!(store.write_batch(&batch, &[]).unwrap(), vec![A; BATCH]);
                }
            })
        })
        .collect();
    let mut expired = 0;
    loop {
        let n = store
            .expire_events(ExpiryScope::AllExcept(&[]), 500_000, 250)
            .unwrap();
        expired += n;
        if n == 0 {
            break;
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    let new = (THREADS * BATCHES * BATCH) as u64;
    assert_eq!(expired, OLD as u64);
    assert_eq!(
        store.count_events("Old", None, None, None).unwrap(),
        count(0, 0)
    );
    assert_eq!(
        store.count_events("New", None, None, None).unwrap(),
        count(new, 1)
    );
    assert_eq!(store.stats().unwrap(), stats(OLD as u64 + new, 0, 0, new));
}

fn retention_expires_dead_letters_by_receipt_time(store: &dyn Store) {
    let now = 1_000 * DAY_MS;
    let received = |id: &str, days: i64| DeadLetter {
        received_at: now - days * DAY_MS,
        ..dead(id, RejectReason::MissingEventName)
    };
    let letters = vec![
        received("dl-40a", 40),
        received("dl-40b", 40),
        received("dl-40c", 40),
        received("dl-31a", 31),
        received("dl-31b", 31),
        received("dl-30", 30),
        received("dl-29", 29),
        received("dl-1", 1),
    ];
    assert!(store.write_batch(&[], &letters).unwrap().is_empty());
    let ids = |store: &dyn Store| -> Vec<String> {
        store
            .dead_letters(&DeadLetterQuery::newest(100))
            .unwrap()
            .into_iter()
            .map(|d| d.message_id.unwrap())
            .collect()
    };
    assert_eq!(ids(store).len(), 8);
    assert_eq!(store.stats().unwrap(), stats(0, 0, 8, 0));

    // One chunk by hand: at most the limit, strictly before the cutoff.
    let cutoff = now - 30 * DAY_MS;
    assert_eq!(store.expire_dead_letters(cutoff, 2).unwrap(), 2);
    assert_eq!(ids(store).len(), 6);

    // The job (30 days by default) deletes the rest in chunks of 2: 2, 1.
    let policy = RetentionSettings {
        chunk_rows: Some(2),
        ..RetentionSettings::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(policy.dead_letters_days, 30);
    let metrics = Metrics::new();
    let report = retention::pass(store, &policy, now, &metrics, &Stop::default()).unwrap();
    assert_eq!(report.dead_letters, 3);
    assert_eq!(report.expired, 0);
    // Two of dead letters, one of the (empty) audit log.
    assert_eq!(report.chunks, 3);
    assert_eq!(ids(store), ["dl-1", "dl-29", "dl-30"]);
    assert!(metrics
        .encode()
        .lines()
        .any(|l| l == "tally_retention_expired_dead_letters_total 3"));
    // The rejected total counts messages ever rejected: it stays.
    assert_eq!(store.stats().unwrap(), stats(0, 0, 8, 0));
    let again = retention::pass(store, &policy, now, &metrics, &Stop::default()).unwrap();
    // One empty chunk of dead letters, one of the audit log.
    assert_eq!((again.dead_letters, again.chunks), (0, 2));

    // A policy of its own: 7 days leaves the newest only.
    let week = RetentionSettings {
        dead_letters_days: Some(7),
        ..RetentionSettings::default()
    }
    .resolve()
    .unwrap();
    let report = retention::pass(store, &week, now, &metrics, &Stop::default()).unwrap();
    assert_eq!(report.dead_letters, 2);
    assert_eq!(ids(store), ["dl-1"]);
}

/// People active per UTC day from `from` (Unix ms, midnight) for `days`
/// days, as `/v1/query/active` answers (through the `active_slots`
/// rollup: the window is whole slots).
fn dau(store: &dyn Store, from: i64, days: i64) -> Vec<u64> {
    let q = format!(
        "tz=UTC&from={}&to={}",
        tally_proto::format_timestamp(from),
        tally_proto::format_timestamp(from + days * DAY_MS)
    );
    let answer = answer(store, ProductQuery::Active, &q).unwrap();
    answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["people"].as_u64().unwrap())
        .collect()
}

/// Every `active_slots` row: `(slot, identity)`, sorted.
fn active_slots(store: &dyn Store) -> Vec<(i64, i64)> {
    let mut rows = store.slot_idents(i64::MIN, i64::MAX).unwrap();
    rows.sort_unstable();
    rows
}

/// `days` counts: 1 on the days of `active`, else 0.
fn days_with(days: usize, active: &[usize]) -> Vec<u64> {
    (0..days).map(|d| u64::from(active.contains(&d))).collect()
}

const SLOT: i64 = 15 * 60 * 1000;

fn retention_removes_the_activity_of_expired_events(store: &dyn Store) {
    // u1 is active in one slot of day 0 (two events) and one of day 40;
    // now is day 50 and events are kept 30 days.
    let day0 = 20_000 * DAY_MS;
    let old = day0 + 10 * 60 * 60 * 1000;
    let new = day0 + 40 * DAY_MS + 9 * 60 * 60 * 1000;
    let now = day0 + 50 * DAY_MS;
    let batch = vec![
        by_user(track("old-open", "Open", "n", old + 60_000), "u1"),
        by_user(track("old-play", "Play", "n", old + 5 * 60_000), "u1"),
        by_user(track("new-open", "Open", "n", new), "u1"),
    ];
    assert_eq!(store.write_batch(&batch, &[]).unwrap(), vec![A; 3]);
    let rows = active_slots(store);
    let ident = rows[0].1;
    assert_eq!(rows, [(old / SLOT, ident), (new / SLOT, ident)]);
    assert_eq!(dau(store, day0, 41), days_with(41, &[0, 40]));

    // One chunk of one event: the other event of the slot keeps it.
    let cutoff = now - 30 * DAY_MS;
    let all = ExpiryScope::AllExcept(&[]);
    assert_eq!(store.expire_events(all, cutoff, 1).unwrap(), 1);
    assert_eq!(
        active_slots(store),
        [(old / SLOT, ident), (new / SLOT, ident)]
    );
    assert_eq!(dau(store, day0, 41), days_with(41, &[0, 40]));

    // The job deletes the last one: the slot goes with it.
    let policy = RetentionSettings {
        default_days: Some(30),
        chunk_rows: Some(1),
        ..RetentionSettings::default()
    }
    .resolve()
    .unwrap();
    let report = retention::pass(store, &policy, now, &Metrics::new(), &Stop::default()).unwrap();
    assert_eq!(report.expired, 1);
    assert_eq!(active_slots(store), [(new / SLOT, ident)]);
    assert_eq!(dau(store, day0, 41), days_with(41, &[40]));
    assert_eq!(store.stats().unwrap(), stats(3, 0, 0, 1));

    // A message resent into the emptied slot is activity again.
    assert_eq!(
        store
            .write_batch(
                &[by_user(track("old-open", "Open", "n", old + 60_000), "u1")],
                &[]
            )
            .unwrap(),
        vec![A]
    );
    assert_eq!(
        active_slots(store),
        [(old / SLOT, ident), (new / SLOT, ident)]
    );
    assert_eq!(dau(store, day0, 41), days_with(41, &[0, 40]));
}

/// A per-name rule expires some events of a slot: a surviving product
/// event keeps the slot, an SDK-internal one does not.
/// A slot holding more expired events than a chunk is settled by the
/// chunk that finishes it, whichever chunk deleted a person's last event
/// there, even when that last chunk deletes only internal events; a full
/// chunk that ends at the end of a slot settles that slot at once.
fn retention_settles_a_slot_larger_than_a_chunk(store: &dyn Store) {
    let day0 = 20_000 * DAY_MS;
    let s = day0 + 10 * 60 * 60 * 1000; // a slot boundary
    let t = s + 4 * SLOT;
    let min = 60_000;
    let batch = vec![
        by_user(track("s-u1", "Open", "n", s + min), "u1"),
        by_user(track("s-u2-a", "Play", "n", s + 2 * min), "u2"),
        by_user(track("s-u2-b", "Play", "n", s + 3 * min), "u2"),
        by_user(track("s-u2-c", "Play", "n", s + 4 * min), "u2"),
        by_user(track("s-internal", "tally.dropped", "n", s + 5 * min), "u3"),
        by_user(track("t-u4", "Open", "n", t + min), "u4"),
        by_user(track("t-u5", "Open", "n", t + 2 * min), "u5"),
        by_user(track("kept-u6", "Open", "n", t + SLOT + min), "u6"),
    ];
    assert_eq!(store.write_batch(&batch, &[]).unwrap(), vec![A; 8]);
    let rows = active_slots(store);
    assert_eq!(rows.len(), 5, "{rows:?}");
    let kept: Vec<(i64, i64)> = rows
        .iter()
        .copied()
        .filter(|(slot, _)| *slot == (t + SLOT) / SLOT)
        .collect();
    assert_eq!(kept.len(), 1);

    // Slot s in chunks of two: u1's only event goes in the first, u2's
    // last in the second, and the third deletes the internal event alone.
    let all = ExpiryScope::AllExcept(&[]);
    let cutoff = s + 5 * min + 1;
    assert_eq!(store.expire_events(all, cutoff, 2).unwrap(), 2);
    assert_eq!(store.expire_events(all, cutoff, 2).unwrap(), 2);
    assert_eq!(store.expire_events(all, cutoff, 2).unwrap(), 1);
    let rows = active_slots(store);
    assert!(rows.iter().all(|(slot, _)| *slot != s / SLOT), "{rows:?}");
    assert_eq!(rows.len(), 3, "{rows:?}");

    // Slot t exactly fills a full chunk: settled by it, no later chunk.
    let cutoff = t + SLOT + 1;
    assert_eq!(store.expire_events(all, cutoff, 2).unwrap(), 2);
    assert_eq!(active_slots(store), kept);
    assert_eq!(store.stats().unwrap(), stats(8, 0, 0, 1));
}

fn retention_keeps_a_slot_with_a_surviving_event(store: &dyn Store) {
    let day0 = 20_000 * DAY_MS;
    let kept = day0 + 10 * 60 * 60 * 1000;
    let internal = day0 + DAY_MS + 11 * 60 * 60 * 1000;
    let recent = day0 + 40 * DAY_MS;
    let now = day0 + 50 * DAY_MS;
    let batch = vec![
        by_user(track("song-1", "Song Played", "n", kept + 60_000), "u1"),
        by_user(
            track("order-1", "Order Completed", "n", kept + 2 * 60_000),
            "u1",
        ),
        by_user(track("song-2", "Song Played", "n", internal), "u1"),
        by_user(
            track("health-2", "tally.health", "n", internal + 60_000),
            "u1",
        ),
        by_user(track("open-3", "Open", "n", recent), "u1"),
    ];
    assert_eq!(store.write_batch(&batch, &[]).unwrap(), vec![A; 5]);
    let ident = active_slots(store)[0].1;
    assert_eq!(
        active_slots(store),
        [
            (kept / SLOT, ident),
            (internal / SLOT, ident),
            (recent / SLOT, ident)
        ]
    );
    assert_eq!(dau(store, day0, 41), days_with(41, &[0, 1, 40]));

    let policy = RetentionSettings {
        default_days: Some(395),
        events: Some(BTreeMap::from([
            ("Song Played".to_owned(), 30),
            ("Order Completed".to_owned(), 2_555),
        ])),
        ..RetentionSettings::default()
    }
    .resolve()
    .unwrap();
    let report = retention::pass(store, &policy, now, &Metrics::new(), &Stop::default()).unwrap();
    assert_eq!(report.expired, 2);
    assert_eq!(
        store.count_events("Song Played", None, None, None).unwrap(),
        count(0, 0)
    );
    assert_eq!(
        active_slots(store),
        [(kept / SLOT, ident), (recent / SLOT, ident)]
    );
    assert_eq!(dau(store, day0, 41), days_with(41, &[0, 40]));
    assert_eq!(store.stats().unwrap(), stats(5, 0, 0, 3));
}

fn deletions_are_listed_newest_first(store: &dyn Store) {
    let batch = vec![
        by_user(track("d1", "Open", "n", 1), "u1"),
        by_user(track("d2", "Open", "n", 2), "u1"),
        by_user(track("d3", "Open", "n", 3), "u2"),
    ];
    assert_eq!(store.write_batch(&batch, &[]).unwrap(), vec![A; 3]);
    assert!(store.deletions(10).unwrap().is_empty());
    assert_eq!(store.delete_user("u1", 1_000).unwrap().deleted_events, 2);
    assert_eq!(store.delete_user("u9", 2_000).unwrap().deleted_events, 0);
    assert_eq!(store.delete_user("u1", 3_000).unwrap().deleted_events, 0);
    let record = |user: &str, at: i64, deleted: u64| DeletionRecord {
        kind: PersonKind::User,
        user_id: user.to_owned(),
        requested_at: at,
        status: DeletionStatus::Done,
        deleted_events: deleted,
        source: None,
    };
    assert_eq!(
        store.deletions(10).unwrap(),
        [
            record("u1", 3_000, 0),
            record("u9", 2_000, 0),
            record("u1", 1_000, 2)
        ]
    );
    assert_eq!(store.deletions(1).unwrap(), [record("u1", 3_000, 0)]);
    assert_eq!(store.stats().unwrap(), stats(3, 0, 0, 1));
}

fn export_pages_follow_corrected_time(store: &dyn Store) {
    // Written out of time order; ties on the time are written in id order
    // (SQLite breaks ties by row, PostgreSQL by message id: both agree).
    let batch = vec![
        track("x-e", "Open", "a", 500),
        track("x-a", "Open", "a", 100),
        track("x-c", "Open", "a", 300),
        track("x-d", "Open", "a", 300),
        track("x-f", "Open", "a", 300),
        track("x-b", "Open", "a", 200),
        track("x-g", "Open", "a", 900),
    ];
    assert_eq!(store.write_batch(&batch, &[]).unwrap(), vec![A; 7]);
    let ids = |events: &[ExportedEvent]| -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(&e.raw).unwrap();
                v["messageId"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .export_page(200, 900, None, cursor.as_ref(), 2)
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|e| e.cursor.clone());
        pages.push(ids(&page));
    }
    assert_eq!(
        pages,
        [vec!["x-b", "x-c"], vec!["x-d", "x-f"], vec!["x-e"],]
    );
    let all = store
        .export_page(i64::MIN, i64::MAX, None, None, 100)
        .unwrap();
    assert_eq!(ids(&all), ["x-a", "x-b", "x-c", "x-d", "x-f", "x-e", "x-g"]);
    let first = &all[0];
    assert_eq!(
        (first.ts_corrected, first.received_at, first.raw.as_str()),
        (
            100,
            120,
            r#"{"type":"track","messageId":"x-a","event":"Open"}"#
        )
    );
    assert_eq!(store.count_stored(200, 900, None).unwrap(), 5);
    assert_eq!(store.count_stored(i64::MIN, i64::MAX, None).unwrap(), 7);
    assert_eq!(store.count_stored(901, 1_000, None).unwrap(), 0);
    assert!(store
        .export_page(901, 1_000, None, None, 10)
        .unwrap()
        .is_empty());
}

fn install_events_in_seq_order_with_their_person(store: &dyn Store) {
    assert_eq!(store.install_events("inst-e", 0, 100).unwrap(), vec![]);
    let ev = |seq: u64, kind: &str, event: Option<&str>, person: &str| InstallEvent {
        seq,
        kind: kind.to_owned(),
        event: event.map(str::to_owned),
        person: person.to_owned(),
    };
    // Stored out of seq order, before the identify: they count for the
    // install.
    let e3 = on_install(track("e3", "Open", "anon-e", 300), "inst-e", 3);
    let e1 = on_install(track("e1", "View", "anon-e", 100), "inst-e", 1);
    let mut no_seq = track("n1", "Open", "anon-e", 100);
    no_seq.install_id = Some("inst-e".into());
    let other = on_install(track("o1", "Open", "anon-o", 100), "inst-o", 2);
    store.write_batch(&[e3, e1, no_seq, other], &[]).unwrap();
    assert_eq!(
        store.install_events("inst-e", 0, 100).unwrap(),
        vec![
            ev(1, "track", Some("View"), "inst-e"),
            ev(3, "track", Some("Open"), "inst-e"),
        ]
    );
    // The identify links the install: every event now counts for the user.
    let id2 = on_install(identify("e2", "user-e", None, None, 200), "inst-e", 2);
    store.write_batch(&[id2], &[]).unwrap();
    let all = vec![
        ev(1, "track", Some("View"), "user-e"),
        ev(2, "identify", None, "user-e"),
        ev(3, "track", Some("Open"), "user-e"),
    ];
    assert_eq!(store.install_events("inst-e", 0, 100).unwrap(), all);
    // Pages: after a seq, at most a limit.
    assert_eq!(store.install_events("inst-e", 1, 1).unwrap(), all[1..2]);
    assert_eq!(store.install_events("inst-e", 3, 100).unwrap(), vec![]);
    // The user has events of its own now: an alias merging it into
    // another user is refused, and its events stay its own.
    assert_eq!(
        store
            .write_batch(&[alias("al", "user-e", "user-f", 400)], &[])
            .unwrap(),
        vec![WriteOutcome::Rejected(RejectReason::AliasOfIdentifiedUser)]
    );
    assert_eq!(store.install_events("inst-e", 0, 100).unwrap(), all);
    // An alias of a user id no event carried yet resolves one hop further
    // once that id shows up.
    store
        .write_batch(&[alias("al2", "user-g", "user-h", 400)], &[])
        .unwrap();
    let g1 = on_install(identify("g1", "user-g", None, None, 500), "inst-g", 1);
    store.write_batch(&[g1], &[]).unwrap();
    assert_eq!(
        store.install_events("inst-g", 0, 100).unwrap(),
        vec![ev(1, "identify", None, "user-h")]
    );
    assert_eq!(
        store.install_events("inst-o", 0, 100).unwrap(),
        vec![ev(2, "track", Some("Open"), "inst-o")]
    );
}

/// Instantiates every suite test for one store kind. `$fresh` makes an
/// empty store and a guard that cleans up when dropped.
macro_rules! store_suite {
    ($fresh:path) => {
        #[test]
        fn accepted_then_duplicate_across_batches() {
            let (store, _guard) = $fresh();
            super::accepted_then_duplicate_across_batches(&*store);
        }
        #[test]
        fn duplicate_within_one_batch() {
            let (store, _guard) = $fresh();
            super::duplicate_within_one_batch(&*store);
        }
        #[test]
        fn dedup_key_first_writer_wins() {
            let (store, _guard) = $fresh();
            super::dedup_key_first_writer_wins(&*store);
        }
        #[test]
        fn dead_letters_kept_with_reason() {
            let (store, _guard) = $fresh();
            super::dead_letters_kept_with_reason(&*store);
        }
        #[test]
        fn count_window_and_people_with_stitching() {
            let (store, _guard) = $fresh();
            super::count_window_and_people_with_stitching(&*store);
        }
        #[test]
        fn link_conflict_earliest_wins() {
            let (store, _guard) = $fresh();
            super::link_conflict_earliest_wins(&*store);
        }
        #[test]
        fn install_completeness() {
            let (store, _guard) = $fresh();
            super::install_completeness(&*store);
        }
        #[test]
        fn a_drop_report_over_stored_seqs_counts_them_once() {
            let (store, _guard) = $fresh();
            super::a_drop_report_over_stored_seqs_counts_them_once(&*store);
        }
        #[test]
        fn install_completeness_of_many_installs_per_batch() {
            let (store, _guard) = $fresh();
            super::install_completeness_of_many_installs_per_batch(&*store);
        }
        #[test]
        fn deletion_and_tombstone() {
            let (store, _guard) = $fresh();
            super::deletion_and_tombstone(&*store);
        }
        #[test]
        fn sources_are_apart() {
            let (store, _guard) = $fresh();
            super::sources_are_apart(&*store);
        }
        #[test]
        fn concurrent_overlapping_writers() {
            let (store, _guard) = $fresh();
            super::concurrent_overlapping_writers(store);
        }
        #[test]
        fn deletion_during_ingest_leaves_nothing_behind() {
            let (store, _guard) = $fresh();
            super::deletion_during_ingest_leaves_nothing_behind(store);
        }
        #[test]
        fn retention_expires_in_chunks_and_keeps_the_counter_exact() {
            let (store, _guard) = $fresh();
            super::retention_expires_in_chunks_and_keeps_the_counter_exact(&*store);
        }
        #[test]
        fn retention_pass_applies_named_rules_and_the_default() {
            let (store, _guard) = $fresh();
            super::retention_pass_applies_named_rules_and_the_default(&*store);
        }
        #[test]
        fn retention_during_ingest_keeps_the_counter_exact() {
            let (store, _guard) = $fresh();
            super::retention_during_ingest_keeps_the_counter_exact(store);
        }
        #[test]
        fn retention_expires_dead_letters_by_receipt_time() {
            let (store, _guard) = $fresh();
            super::retention_expires_dead_letters_by_receipt_time(&*store);
        }
        #[test]
        fn retention_removes_the_activity_of_expired_events() {
            let (store, _guard) = $fresh();
            super::retention_removes_the_activity_of_expired_events(&*store);
        }
        #[test]
        fn retention_settles_a_slot_larger_than_a_chunk() {
            let (store, _guard) = $fresh();
            super::retention_settles_a_slot_larger_than_a_chunk(&*store);
        }
        #[test]
        fn retention_keeps_a_slot_with_a_surviving_event() {
            let (store, _guard) = $fresh();
            super::retention_keeps_a_slot_with_a_surviving_event(&*store);
        }
        #[test]
        fn deletions_are_listed_newest_first() {
            let (store, _guard) = $fresh();
            super::deletions_are_listed_newest_first(&*store);
        }
        #[test]
        fn export_pages_follow_corrected_time() {
            let (store, _guard) = $fresh();
            super::export_pages_follow_corrected_time(&*store);
        }
        #[test]
        fn ping_answers() {
            let (store, _guard) = $fresh();
            store.ping().unwrap();
        }
        #[test]
        fn install_events_in_seq_order_with_their_person() {
            let (store, _guard) = $fresh();
            super::install_events_in_seq_order_with_their_person(&*store);
        }
        #[test]
        fn finality_per_day() {
            let (store, _guard) = $fresh();
            super::finality::finality_per_day(&*store);
        }
    };
}

mod sqlite {
    use super::*;
    use tally_collector::store::{
        AdminStore, HealthStore, IngestStore, QueryStore, SqliteOptions, SqliteStore, StoreError,
        Synchronous,
    };

    pub(super) fn fresh() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("tally.db")).unwrap();
        (Arc::new(store), dir)
    }

    store_suite!(fresh);
    query_suite!(fresh);
    keys_suite!(fresh);
    audit_suite!(fresh);
    erasure_suite!(fresh);
    scoped_suite!(fresh);
    quality_suite!(fresh);

    /// SQLite's writer is alone: a chunk also deletes the names it left
    /// without events, exactly (PostgreSQL keeps them: see its store).
    #[test]
    fn retention_deletes_names_left_without_events() {
        let (store, dir) = fresh();
        super::retention_keeps_a_slot_with_a_surviving_event(&*store);
        let conn = rusqlite::Connection::open(dir.path().join("tally.db")).unwrap();
        let names: Vec<String> = conn
            .prepare("SELECT name FROM event_names ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, ["Open", "Order Completed", "tally.health"]);
    }

    /// Tombstones written before they named a source keep refusing every
    /// source after the upgrade.
    #[test]
    fn tombstones_before_sources_refuse_every_source() {
        let migrations = tally_collector::store::sqlite::MIGRATIONS.len();
        let (_, dump) = super::fixtures("sqlite", migrations)
            .into_iter()
            .find(|(v, _)| *v == 9)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&dump).unwrap();
        conn.execute_batch(crate::scoped::TOMBSTONE_SQL).unwrap();
        drop(conn);
        let store = SqliteStore::open(&path).unwrap();
        crate::scoped::old_tombstones_refuse_every_source(&store);
    }

    #[test]
    fn every_released_schema_upgrades_and_its_data_reads_back() {
        let migrations = tally_collector::store::sqlite::MIGRATIONS.len();
        for (version, dump) in super::fixtures("sqlite", migrations) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tally.db");
            rusqlite::Connection::open(&path)
                .unwrap()
                .execute_batch(&dump)
                .unwrap();
            let store = SqliteStore::open(&path).unwrap();
            assert_eq!(store.schema_version().unwrap() as usize, migrations);
            super::fixture_reads_back(&store, version);
        }
    }

    #[test]
    fn reopen_keeps_everything_and_migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            let evs = vec![
                on_install(track("m1", "Open", "anon-1", 100), "inst-1", 1),
                on_install(track("m2", "Open", "anon-1", 100), "inst-1", 3),
                identify("m3", "u1", Some("anon-1"), None, 200),
            ];
            store
                .write_batch(&evs, &[dead("bad", RejectReason::SeqZero)])
                .unwrap();
            store.delete_user("u9", 1).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.schema_version().unwrap() as usize,
            tally_collector::store::sqlite::MIGRATIONS.len()
        );
        assert_eq!(store.stats().unwrap(), stats(3, 0, 1, 3));
        assert_eq!(
            store.count_events("Open", None, None, None).unwrap(),
            count(2, 1)
        );
        assert_eq!(
            store.install("inst-1").unwrap(),
            Some(report(3, &[[2, 2]], &[]))
        );
        assert!(store.is_deleted("u9").unwrap());
        assert_eq!(
            store
                .write_batch(&[track("m1", "Open", "anon-1", 100)], &[])
                .unwrap(),
            vec![D]
        );
        assert_eq!(
            store
                .write_batch(&[by_user(track("m9", "Open", "n", 1), "u9")], &[])
                .unwrap(),
            vec![X]
        );
        drop(store);
        // Full durability opens the same file.
        let opts = SqliteOptions {
            synchronous: Synchronous::Full,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open_with(&path, opts).unwrap();
        assert_eq!(store.stats().unwrap(), stats(3, 1, 2, 3));
    }

    /// Batch `b` of the kill -9 test: 100 events with ids of their own.
    fn kill_batch(b: usize) -> Vec<NewEvent> {
        (0..100)
            .map(|i| {
                on_install(
                    track(&format!("k{b}-{i}"), "Open", "anon", b as i64),
                    "inst-k",
                    (b * 100 + i + 1) as u64,
                )
            })
            .collect()
    }

    /// The child side of the kill -9 test: writes batches until killed and
    /// prints `acked B` after `write_batch` returned for batch `B`.
    fn kill_child(path: &str) {
        use std::io::Write;
        let store = SqliteStore::open(std::path::Path::new(path)).unwrap();
        let mut out = std::io::stdout();
        for b in 0..100_000 {
            store.write_batch(&kill_batch(b), &[]).unwrap();
            writeln!(out, "acked {b}").unwrap();
            out.flush().unwrap();
        }
    }

    #[test]
    fn kill_9_loses_no_acknowledged_batch() {
        use std::io::BufRead;
        if let Ok(path) = std::env::var("TALLY_STORE_KILL_CHILD") {
            kill_child(&path);
            return;
        }
        const KILL_AFTER: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.db");
        // The test binary itself, running only this test in child mode.
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sqlite::kill_9_loses_no_acknowledged_batch",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TALLY_STORE_KILL_CHILD", &path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut acked = None;
        for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
            if let Some(b) = line.unwrap().strip_prefix("acked ") {
                acked = Some(b.parse::<usize>().unwrap());
                if acked == Some(KILL_AFTER) {
                    break;
                }
            }
        }
        // SIGKILL, mid-write of the next batch.
        child.kill().unwrap();
        child.wait().unwrap();
        let last = acked.unwrap();
        let store = SqliteStore::open(&path).unwrap();
        for b in 0..=last {
            assert_eq!(
                store.write_batch(&kill_batch(b), &[]).unwrap(),
                vec![D; 100],
                "batch {b}"
            );
        }
        // The child may have committed more batches after its last answer
        // reached the pipe (how many depends on the machine's load): those
        // form an unbroken run of whole batches, and the first batch it
        // never committed is new, as is every one after it.
        const AFTER: usize = 20;
        let mut committed = true;
        for b in last + 1..=last + AFTER {
            let again = store.write_batch(&kill_batch(b), &[]).unwrap();
            if committed && again == vec![D; 100] {
                continue;
            }
            committed = false;
            assert_eq!(again, vec![A; 100], "batch {b} split or out of order");
        }
        assert!(
            !committed,
            "the child ran {AFTER} batches past its last answer"
        );
        assert_eq!(
            store.install("inst-k").unwrap(),
            Some(report(((last + AFTER + 1) * 100) as u64, &[], &[]))
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE schema_version SET version = 999", [])
            .unwrap();
        drop(conn);
        match SqliteStore::open(&path) {
            Err(StoreError::Migration(m)) => assert!(m.contains("newer than this binary"), "{m}"),
            other => panic!("expected a migration error, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        match SqliteStore::open(&path) {
            Err(StoreError::Backend(m)) => {
                assert!(m.contains("cannot open SQLite database at"), "{m}");
                assert!(m.contains("not a database"), "{m}");
            }
            other => panic!("expected a backend error, got {other:?}"),
        }
    }

    #[test]
    fn unwritable_location_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the data directory should be: even root
        // cannot create a database under it.
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"x").unwrap();
        match tally_collector::store::open(&blocker.join("data"), None) {
            Err(StoreError::Backend(m)) => {
                assert!(m.contains("cannot create data directory"), "{m}")
            }
            other => panic!("expected a backend error, got {:?}", other.map(|_| ())),
        }
        match SqliteStore::open(&blocker.join("tally.db")) {
            Err(StoreError::Backend(m)) => {
                assert!(m.contains("cannot open SQLite database at"), "{m}")
            }
            other => panic!("expected a backend error, got {other:?}"),
        }
    }

    #[test]
    fn open_creates_the_data_dir_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a").join("b");
        let store = tally_collector::store::open(&data, None).unwrap();
        assert_eq!(
            store
                .write_batch(&[track("m1", "Open", "anon", 1)], &[])
                .unwrap(),
            vec![A]
        );
        assert!(data.join("tally.db").is_file());
    }

    #[test]
    fn busy_database_is_unavailable_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.db");
        let opts = SqliteOptions {
            busy_timeout: std::time::Duration::from_millis(50),
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open_with(&path, opts).unwrap();
        // Another process (here: another connection) holds the write lock.
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        match store.write_batch(&[track("m1", "Open", "anon", 1)], &[]) {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("expected unavailable, got {other:?}"),
        }
        other.execute_batch("COMMIT").unwrap();
        assert_eq!(
            store
                .write_batch(&[track("m1", "Open", "anon", 1)], &[])
                .unwrap(),
            vec![A]
        );
        assert_eq!(store.stats().unwrap(), stats(1, 0, 0, 1));
    }
}

mod postgres {
    use super::*;
    use tally_collector::store::{HealthStore, IngestStore, PostgresStore, StoreError};

    pub use super::test_db::TestDb;

    pub(super) fn fresh() -> (Arc<dyn Store>, TestDb) {
        let db = TestDb::new();
        let store = PostgresStore::connect(&db.url).unwrap();
        (Arc::new(store), db)
    }

    store_suite!(fresh);
    query_suite!(fresh);
    keys_suite!(fresh);
    audit_suite!(fresh);
    erasure_suite!(fresh);
    scoped_suite!(fresh);
    quality_suite!(fresh);

    /// The collector's cache of persons sees a change made by a
    /// transaction that was still running when it last caught up, once
    /// that transaction commits (and not before).
    #[test]
    fn warming_reads_every_identity_once() {
        let (store, _db) = fresh();
        store
            .write_batch(
                &[
                    track("w1", "Open", "a1", 1_000),
                    track("w2", "Open", "a2", 2_000),
                    track("w3", "Open", "a2", 3_000),
                    by_user(track("w4", "Open", "n", 4_000), "u1"),
                ],
                &[],
            )
            .unwrap();
        assert_eq!(store.warm().unwrap(), 3);
        store
            .write_batch(&[track("w5", "Open", "a3", 5_000)], &[])
            .unwrap();
        assert_eq!(store.warm().unwrap(), 4, "a later warm catches up");
    }

    #[test]
    fn the_cache_of_persons_catches_up_with_a_late_commit() {
        use tally_collector::queries::{answer, ProductQuery};
        let (store, db) = fresh();
        let people = |store: &dyn Store| {
            let v = answer(
                store,
                ProductQuery::Events,
                "event=Open&from=1970-01-01T00:00:00Z&to=1970-01-02T00:00:00Z",
            )
            .unwrap();
            v["total"]["people"].as_u64().unwrap()
        };
        store
            .write_batch(
                &[
                    track("c1", "Open", "a1", 1_000),
                    track("c2", "Open", "a2", 2_000),
                ],
                &[],
            )
            .unwrap();
        assert_eq!(people(&*store), 2);

        // A transaction merges the two and stays open while the cache
        // catches up past a later commit.
        let mut slow = db.client();
        let mut tx = slow.transaction().unwrap();
        tx.execute(
            "UPDATE idents SET person = 'u:merged' WHERE anonymous_id IN ('a1', 'a2')",
            &[],
        )
        .unwrap();
        store
            .write_batch(&[track("c3", "Open", "a3", 3_000)], &[])
            .unwrap();
        assert_eq!(people(&*store), 3, "the merge is not committed yet");
        tx.commit().unwrap();
        assert_eq!(people(&*store), 2, "a1 and a2 are one person now");
    }

    /// Tombstones written before they named a source keep refusing every
    /// source after the upgrade.
    #[test]
    fn tombstones_before_sources_refuse_every_source() {
        let migrations = tally_collector::store::postgres::MIGRATIONS.len();
        let (_, dump) = super::fixtures("postgres", migrations)
            .into_iter()
            .find(|(v, _)| *v == 11)
            .unwrap();
        let db = TestDb::new();
        db.client().batch_execute(&dump).unwrap();
        db.client()
            .batch_execute(crate::scoped::TOMBSTONE_SQL)
            .unwrap();
        let store = PostgresStore::connect(&db.url).unwrap();
        crate::scoped::old_tombstones_refuse_every_source(&store);
    }

    #[test]
    fn every_released_schema_upgrades_and_its_data_reads_back() {
        let migrations = tally_collector::store::postgres::MIGRATIONS.len();
        for (version, dump) in super::fixtures("postgres", migrations) {
            let db = TestDb::new();
            db.client().batch_execute(&dump).unwrap();
            let store = PostgresStore::connect(&db.url).unwrap();
            assert_eq!(store.schema_version().unwrap() as usize, migrations);
            super::fixture_reads_back(&store, version);
        }
    }

    #[test]
    fn migrations_are_idempotent_and_concurrent() {
        let db = TestDb::new();
        // Two collectors starting together.
        let url = db.url.clone();
        let other = std::thread::spawn(move || PostgresStore::connect(&url).map(|_| ()));
        let store = PostgresStore::connect(&db.url).unwrap();
        other.join().unwrap().unwrap();
        store
            .write_batch(&[track("m1", "Open", "anon", 1)], &[])
            .unwrap();
        drop(store);
        let store = PostgresStore::connect(&db.url).unwrap();
        assert_eq!(
            store.schema_version().unwrap() as usize,
            tally_collector::store::postgres::MIGRATIONS.len()
        );
        assert_eq!(store.stats().unwrap(), stats(1, 0, 0, 1));
        assert_eq!(
            store
                .write_batch(&[track("m1", "Open", "anon", 1)], &[])
                .unwrap(),
            vec![D]
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let db = TestDb::new();
        drop(PostgresStore::connect(&db.url).unwrap());
        db.client()
            .batch_execute("UPDATE schema_version SET version = 999")
            .unwrap();
        match PostgresStore::connect(&db.url) {
            Err(StoreError::Migration(m)) => assert!(m.contains("newer than this binary"), "{m}"),
            other => panic!("expected a migration error, got {other:?}"),
        }
    }

    #[test]
    fn server_down_is_unavailable() {
        // A port with no server behind it: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://postgres@127.0.0.1:{port}/test");
        match PostgresStore::connect(&url) {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("expected unavailable, got {other:?}"),
        }
        match tally_collector::store::open(std::path::Path::new("unused"), Some(&url)) {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("expected unavailable, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn lost_connections_are_replaced() {
        let db = TestDb::new();
        let store = PostgresStore::connect(&db.url).unwrap();
        store
            .write_batch(&[track("m1", "Open", "anon", 1)], &[])
            .unwrap();
        // The server drops every connection of the store (a restart, a
        // failover, an administrator).
        let mut admin = db.client();
        let killed: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db.name],
            )
            .unwrap()
            .get(0);
        assert!(killed >= 1, "the store had a connection open");
        // The pool notices the dead connection and opens a new one.
        assert_eq!(
            store
                .write_batch(&[track("m2", "Open", "anon", 2)], &[])
                .unwrap(),
            vec![A]
        );
        assert_eq!(
            store
                .write_batch(&[track("m1", "Open", "anon", 1)], &[])
                .unwrap(),
            vec![D]
        );
        assert_eq!(store.stats().unwrap(), stats(2, 1, 0, 2));
    }

    #[test]
    fn a_full_pool_is_unavailable_and_recovers() {
        use tally_collector::store::postgres::{CHECKOUT_TIMEOUT, MAX_CONNECTIONS};
        let db = TestDb::new();
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&db.url).unwrap());
        // The pool opens its connections in the background: all of them,
        // before the lock below (preparing statements would wait on it).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let open: i64 = db
                .client()
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                     AND application_name = 'tally-collector' AND state = 'idle'",
                    &[&db.name],
                )
                .unwrap()
                .get(0);
            if open as usize == MAX_CONNECTIONS {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{open} connections open"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Another session holds a lock every write needs: each write keeps
        // its connection busy until the lock goes.
        let mut admin = db.client();
        admin
            .batch_execute("BEGIN; LOCK TABLE tombstones IN ACCESS EXCLUSIVE MODE")
            .unwrap();
        let blocked: Vec<_> = (0..MAX_CONNECTIONS)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    store.write_batch(&[track(&format!("held-{t}"), "Open", "anon", 1)], &[])
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let waiting: i64 = db
                .client()
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                    &[&db.name],
                )
                .unwrap()
                .get(0);
            if waiting as usize == MAX_CONNECTIONS {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{waiting} writers blocked"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let asked = std::time::Instant::now();
        match store.write_batch(&[track("one-more", "Open", "anon", 1)], &[]) {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("busy"), "{m}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
        assert!(asked.elapsed() >= CHECKOUT_TIMEOUT);
        admin.batch_execute("COMMIT").unwrap();
        for handle in blocked {
            assert_eq!(handle.join().unwrap().unwrap(), vec![A]);
        }
        assert_eq!(
            store
                .write_batch(&[track("one-more", "Open", "anon", 1)], &[])
                .unwrap(),
            vec![A]
        );
        assert_eq!(
            store.stats().unwrap(),
            stats(MAX_CONNECTIONS as u64 + 1, 0, 0, MAX_CONNECTIONS as u64 + 1)
        );
    }

    #[test]
    fn two_stores_on_one_database_count_each_message_once() {
        let db = TestDb::new();
        let first: Arc<dyn Store> = Arc::new(PostgresStore::connect(&db.url).unwrap());
        let second: Arc<dyn Store> = Arc::new(PostgresStore::connect(&db.url).unwrap());
        const THREADS: usize = 6;
        const BATCHES: usize = 10;
        const BATCH: usize = 100;
        const DISTINCT: usize = 1_000;
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = if t % 2 == 0 {
                    Arc::clone(&first)
                } else {
                    Arc::clone(&second)
                };
                std::thread::spawn(move || {
                    let mut outcomes = Vec::new();
                    for b in 0..BATCHES {
                        // Threads walk the same ids from different offsets
                        // and in opposite directions: batches overlap, in
                        // different orders.
                        let batch: Vec<NewEvent> = (0..BATCH)
                            .map(|i| {
                                let step = b * BATCH + i;
                                let n = if t % 3 == 0 {
                                    (t * 170 + step) % DISTINCT
                                } else {
                                    (t * 170 + DISTINCT - 1 - step) % DISTINCT
                                };
                                let mut e = on_install(
                                    track(
                                        &format!("m-{n:05}"),
                                        "Load",
                                        &format!("anon-{}", n % 9),
                                        n as i64,
                                    ),
                                    "inst-shared",
                                    n as u64 + 1,
                                );
                                if n % 10 == 0 {
                                    e.dedup_key = Some(format!("k-{}", n / 20));
                                }
                                e
                            })
                            .collect();
                        outcomes.extend(store.write_batch(&batch, &[]).unwrap());
                    }
                    outcomes
                })
            })
            .collect();
        let all: Vec<WriteOutcome> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let accepted = all.iter().filter(|o| **o == A).count() as u64;
        let duplicate = all.iter().filter(|o| **o == D).count() as u64;
        assert_eq!(accepted, (DISTINCT - DISTINCT / 20) as u64);
        assert_eq!(accepted + duplicate, (THREADS * BATCHES * BATCH) as u64);
        assert_eq!(
            first.stats().unwrap(),
            stats(accepted, duplicate, 0, accepted)
        );
        // One install, no identify: the install is the one person.
        assert_eq!(
            second.count_events("Load", None, None, None).unwrap(),
            count(accepted, 1)
        );
        let stored: i64 = db
            .client()
            .query_one("SELECT count(*) FROM events", &[])
            .unwrap()
            .get(0);
        assert_eq!(stored as u64, accepted);
        // Every seq 1..=1000 was seen across the two stores' writes.
        assert_eq!(
            first.install("inst-shared").unwrap(),
            Some(report(1_000, &[], &[]))
        );
    }

    /// `(slot, identity)` of every product event, sorted: what
    /// `active_slots` must hold exactly.
    fn implied_slots(db: &TestDb) -> Vec<(i64, i64)> {
        db.client()
            .query(
                "SELECT DISTINCT ts_corrected / 900000, ident FROM events \
                 WHERE event IS NOT NULL AND substr(event, 1, 6) <> 'tally.' ORDER BY 1, 2",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Backends of the test database waiting for a lock.
    fn lock_waiters(db: &TestDb) -> i64 {
        db.client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&db.name],
            )
            .unwrap()
            .get(0)
    }

    /// A batch that adds an event to a (slot, person) whose last expiring
    /// event a retention chunk deletes meanwhile: the batch has upserted
    /// the slot row and is held before its commit (another session locks
    /// its install's row) while the chunk runs. The chunk must not delete
    /// the row the batch's event needs: it waits for the batch, then sees
    /// its event.
    #[test]
    fn retention_chunk_during_a_batch_of_the_same_slot_keeps_the_slot() {
        let db = TestDb::new();
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&db.url).unwrap());
        let day0 = 20_000 * DAY_MS;
        let at = day0 + 10 * 60 * 60 * 1000;
        let song = on_install(
            by_user(track("song-1", "Song Played", "n", at), "u1"),
            "i1",
            1,
        );
        assert_eq!(store.write_batch(&[song], &[]).unwrap(), vec![A]);
        let ident = active_slots(&*store)[0].1;
        assert_eq!(active_slots(&*store), [(at / SLOT, ident)]);

        // Holds the batch after its activity rows, before its commit.
        let mut holder = db.client();
        holder
            .batch_execute("BEGIN; SELECT 1 FROM installs WHERE install_id = 'i1' FOR UPDATE")
            .unwrap();
        let batch = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let order = track("order-1", "Order Completed", "n", at + 60_000);
                store.write_batch(&[on_install(by_user(order, "u1"), "i1", 2)], &[])
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while lock_waiters(&db) < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the batch never blocked"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // "Song Played" is kept 30 days: its one event expires.
        let chunk = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                store.expire_events(ExpiryScope::Event("Song Played"), day0 + DAY_MS, 100)
            })
        };
        // The chunk either finishes (it did not wait for the batch) or
        // waits for the batch's lock.
        while !chunk.is_finished() && lock_waiters(&db) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the chunk neither ran nor waited"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        holder.batch_execute("COMMIT").unwrap();
        assert_eq!(batch.join().unwrap().unwrap(), vec![A]);
        assert_eq!(chunk.join().unwrap().unwrap(), 1);

        assert_eq!(active_slots(&*store), [(at / SLOT, ident)]);
        assert_eq!(active_slots(&*store), implied_slots(&db));
        assert_eq!(dau(&*store, day0, 1), [1]);
        assert_eq!(
            store.count_events("Song Played", None, None, None).unwrap(),
            count(0, 0)
        );
        assert_eq!(
            store
                .count_events("Order Completed", None, None, None)
                .unwrap(),
            count(1, 1)
        );
        assert_eq!(store.stats().unwrap(), stats(2, 0, 0, 1));
    }

    /// The same race left to the scheduler, many times over: batches and
    /// retention chunks on the same (slot, person) started together, in
    /// both orders. `active_slots` ends exactly as the stored events imply.
    #[test]
    fn retention_racing_batches_of_the_same_slots_leaves_exact_slots() {
        // One day of slots, a person each.
        const ROUNDS: i64 = 96;
        let db = TestDb::new();
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&db.url).unwrap());
        let day0 = 20_000 * DAY_MS;
        let at = move |round: i64| day0 + round * SLOT + 60_000;
        for round in 0..ROUNDS {
            let user = format!("u{round}");
            let old = by_user(
                track(&format!("song-{round}"), "Song Played", "n", at(round)),
                &user,
            );
            assert_eq!(store.write_batch(&[old], &[]).unwrap(), vec![A]);
        }
        for round in 0..ROUNDS {
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let batch = {
                let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let user = format!("u{round}");
                    let order = track(
                        &format!("order-{round}"),
                        "Order Completed",
                        "n",
                        at(round) + 1,
                    );
                    let order = by_user(order, &user);
                    barrier.wait();
                    store.write_batch(&[order], &[])
                })
            };
            barrier.wait();
            let expired = store
                .expire_events(ExpiryScope::Event("Song Played"), at(round) + 1, 100)
                .unwrap();
            assert_eq!(expired, 1);
            assert_eq!(batch.join().unwrap().unwrap(), vec![A]);
        }
        assert_eq!(active_slots(&*store).len(), ROUNDS as usize);
        assert_eq!(active_slots(&*store), implied_slots(&db));
        assert_eq!(dau(&*store, day0, 1), [ROUNDS as u64]);
        assert_eq!(
            store.stats().unwrap(),
            stats(2 * ROUNDS as u64, 0, 0, ROUNDS as u64)
        );
    }
}

/// Pipeline-health figures (`Store::pipeline_health`), exact, on both
/// stores; and across two stores sharing one PostgreSQL database.
mod health_suite {
    use super::*;
    use tally_collector::store::health::{self, Histogram, HOUR_MS};
    use tally_collector::store::{Completeness, Fleet, HealthTotals, PipelineFigures};

    /// 2026-11-01T10:00:00Z: the hour the fixture's first batches arrive in.
    const H: i64 = 1_793_527_200_000;

    /// A track received at `received` whose corrected time is `lag` ms
    /// earlier.
    fn arrived(id: &str, name: &str, received: i64, lag: i64) -> NewEvent {
        let mut e = track(id, name, "anon-1", received - lag);
        e.received_at = received;
        e
    }

    fn beacon(id: &str, install: &str, seq: u64, received: i64, at: i64, props: &str) -> NewEvent {
        let mut e = on_install(
            arrived(id, "tally.health", received, received - at),
            install,
            seq,
        );
        e.raw = format!(
            r#"{{"type":"track","messageId":"{id}","event":"tally.health","properties":{props}}}"#
        );
        e
    }

    fn histogram(buckets: &[(i64, u64)]) -> Histogram {
        Histogram(buckets.iter().copied().collect())
    }

    /// Writes the fixture and returns `now` for the fleet.
    fn write_fixture(a: &dyn Store, b: &dyn Store) -> i64 {
        let now = H + 3 * HOUR_MS;
        let e1 = on_install(arrived("e1", "Open", H + 1_000, 100), "i1", 1);
        let e2 = on_install(arrived("e2", "Open", H + 1_000, 100), "i1", 2);
        let e3 = on_install(arrived("e3", "Open", H + 1_000, 5_000), "i1", 4);
        let f1 = on_install(arrived("f1", "Open", H + 1_000, 0), "i4", 1);
        let mut f6 = on_install(arrived("f6", "tally.dropped", H + 1_000, 0), "i4", 6);
        f6.drops = vec![
            DroppedRange {
                from: 2,
                to: 3,
                reason: "queue_full".into(),
            },
            DroppedRange {
                from: 5,
                to: 7,
                reason: "too_old".into(),
            },
        ];
        let mut late = dead("bad-1", RejectReason::SeqZero);
        late.received_at = H + 1_000;
        assert_eq!(
            a.write_batch(&[e1.clone(), e2, e3, e1, f1, f6], &[late])
                .unwrap(),
            vec![A, A, A, D, A, A]
        );
        // Beacons: i1's says its queue is stale and failing; i2's has a
        // string number, a wrong type and no sync latencies (all lenient).
        let b1 = beacon(
            "b1",
            "i1",
            5,
            H + 2_000,
            H,
            r#"{"pending":5,"oldest_pending_age_s":90000.5,"consecutive_failures":2,"backoff_ms":0,"persistence_errors":1,"sync_latency_p50_ms":70,"sync_latency_p99_ms":500}"#,
        );
        let b2 = beacon(
            "b2",
            "i2",
            1,
            H + 2_000,
            H + 2_000,
            r#"{"pending":"3","oldest_pending_age_s":10,"persistence_errors":"x","consecutive_failures":null}"#,
        );
        assert_eq!(b.write_batch(&[b1, b2], &[]).unwrap(), vec![A, A]);
        // Two hours later: an older beacon of i1 (captured before b1: it
        // must not replace it), a beacon captured 8 days ago (left out of
        // the fleet), and a request refused before the store.
        let old = beacon(
            "b0",
            "i1",
            6,
            H + 2 * HOUR_MS,
            H - 1_000,
            r#"{"pending":999}"#,
        );
        let stale = beacon(
            "b3",
            "i3",
            1,
            H + 2 * HOUR_MS,
            now - 8 * 24 * HOUR_MS,
            r#"{"pending":7,"oldest_pending_age_s":1e9}"#,
        );
        let mut deleted = dead("bad-2", RejectReason::BadTimestamp);
        deleted.received_at = H + 2 * HOUR_MS;
        assert_eq!(
            a.write_batch(&[old, stale], &[deleted]).unwrap(),
            vec![A, A]
        );
        b.add_batches(H + 5, 3, 1).unwrap();
        now
    }

    fn check(store: &dyn Store, now: i64) {
        let completeness = Completeness {
            installs: 4,
            installs_with_gaps: 2,
            missing: 2,
        };
        let fleet = Fleet {
            installs_reporting: 2,
            pending_events: 8,
            oldest_pending_age_s: 90000.5,
            installs_with_persistence_errors: 1,
            installs_in_backoff: 1,
            installs_oldest_pending_over_24h: 1,
        };
        let totals = HealthTotals {
            batches: 6,
            batches_ok: 4,
            accepted: 9,
            duplicate: 1,
            rejected: 2,
            plan_violations: 0,
        };
        let first_hour = store.pipeline_health(H + 10, H + 20, now).unwrap();
        let mut want = PipelineFigures {
            totals,
            completeness,
            fleet,
            ..PipelineFigures::default()
        };
        want.window.from = H;
        want.window.to = H + HOUR_MS;
        want.window.batches = 5;
        want.window.batches_ok = 3;
        want.window.accepted = 7;
        want.window.duplicate = 1;
        want.window.rejected = 1;
        want.window.rejections = [("seq_zero".to_owned(), 1)].into_iter().collect();
        // Lags 100, 100, 5000, 0, 0 (batch 1) and 2000, 0 (the beacons).
        want.window.ingest_lag = histogram(&[(0, 3), (100, 2), (2_000, 1), (5_000, 1)]);
        want.window.sync_p50 = histogram(&[(70, 1)]);
        want.window.sync_p99 = histogram(&[(500, 1)]);
        assert_eq!(first_hour, want);
        assert_eq!(first_hour.window.ingest_lag.quantile(0.5), Some(100));
        assert_eq!(first_hour.window.ingest_lag.quantile(0.9), Some(5_000));

        let both = store.pipeline_health(H, H + 3 * HOUR_MS, now).unwrap();
        assert_eq!((both.window.from, both.window.to), (H, H + 3 * HOUR_MS));
        assert_eq!(
            (
                both.window.batches,
                both.window.batches_ok,
                both.window.accepted
            ),
            (6, 4, 9)
        );
        assert_eq!(
            both.window.rejections,
            [("seq_zero".to_owned(), 1), ("bad_timestamp".to_owned(), 1)]
                .into_iter()
                .collect()
        );
        // The later hour alone: two beacons with their lags, one rejection.
        let later = store
            .pipeline_health(H + 2 * HOUR_MS, H + 3 * HOUR_MS, now)
            .unwrap();
        assert_eq!(
            (
                later.window.batches,
                later.window.accepted,
                later.window.rejected
            ),
            (1, 2, 1)
        );
        assert_eq!(later.window.ingest_lag.count(), 2);
        // Completeness agrees with the per-install report; seq 6 (the
        // report itself, stored) is inside its own too_old range, and a
        // stored seq is never also counted dropped.
        assert_eq!(
            store.install("i4").unwrap(),
            Some(with_ranges(
                report(7, &[[4, 4]], &[("queue_full", 2), ("too_old", 2)]),
                &[[2, 3], [5, 7]]
            ))
        );
        assert_eq!(store.install("i1").unwrap().unwrap().missing, vec![[3, 3]]);
    }

    /// The installs whose latest beacon shows a queue older than the
    /// threshold (`Store::stalled_installs`) in the fixture.
    fn stalled(store: &dyn Store, older_than_s: f64, limit: usize) -> Vec<(String, i64, f64)> {
        store
            .stalled_installs(older_than_s, limit)
            .unwrap()
            .into_iter()
            .map(|b| (b.install_id, b.pending, b.oldest_pending_age_s))
            .collect()
    }

    fn check_stalled(store: &dyn Store) {
        // Stalled queues: every kept beacon, the oldest queue first; i3's
        // (captured 8 days ago, out of the fleet) included, i1's older
        // beacon (pending 999) never replacing its latest.
        let day = health::STALE_QUEUE_AGE_S;
        assert_eq!(
            stalled(store, day, 10),
            [("i3".to_owned(), 7, 1e9), ("i1".to_owned(), 5, 90000.5)]
        );
        assert_eq!(
            stalled(store, 9.5, 10),
            [
                ("i3".to_owned(), 7, 1e9),
                ("i1".to_owned(), 5, 90000.5),
                ("i2".to_owned(), 3, 10.0)
            ]
        );
        assert_eq!(
            stalled(store, 10.0, 10).len(),
            2,
            "longer than, not as long as"
        );
        assert_eq!(stalled(store, 0.0, 1), [("i3".to_owned(), 7, 1e9)]);
        let i1 = store.stalled_installs(day, 10).unwrap().remove(1);
        assert_eq!(
            (
                i1.at,
                i1.received_at,
                i1.consecutive_failures,
                i1.persistence_errors
            ),
            (H, H + 2_000, 2, 1)
        );
        assert_eq!(
            (i1.sync_latency_p50_ms, i1.sync_latency_p99_ms),
            (Some(70.0), Some(500.0))
        );
    }

    #[test]
    fn sqlite_figures_are_exact_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.db");
        let store = tally_collector::store::SqliteStore::open(&path).unwrap();
        let now = write_fixture(&store, &store);
        check(&store, now);
        check_stalled(&store);
        drop(store);
        let store = tally_collector::store::SqliteStore::open(&path).unwrap();
        check(&store, now);
    }

    #[test]
    fn postgres_figures_are_exact_across_two_collectors() {
        let db = super::postgres::TestDb::new();
        let a = tally_collector::store::PostgresStore::connect(&db.url).unwrap();
        let b = tally_collector::store::PostgresStore::connect(&db.url).unwrap();
        let now = write_fixture(&a, &b);
        check(&a, now);
        check(&b, now);
        check_stalled(&a);
    }

    /// Pruning deletes the hours before its bound and the beacons
    /// captured before it, nothing else.
    fn prune(store: &dyn Store) {
        let now = write_fixture(store, store);
        // Before the first hour: only b3's beacon row, captured 8 days
        // before `now` (the fleet already ignored it).
        assert_eq!(store.prune_health(H).unwrap(), 1);
        check(store, now);
        assert_eq!(
            stalled(store, health::STALE_QUEUE_AGE_S, 10),
            [("i1".to_owned(), 5, 90000.5)],
            "i3's beacon was pruned"
        );
        // The first hour's rows go, and the beacons captured in it (b1,
        // b2); b0 (captured before b1) never replaced b1.
        assert!(store.prune_health(H + HOUR_MS).unwrap() > 0);
        let f = store.pipeline_health(H, H + 3 * HOUR_MS, now).unwrap();
        assert_eq!((f.window.batches, f.window.accepted), (1, 2));
        assert_eq!(f.window.ingest_lag.count(), 2);
        assert_eq!(f.fleet, Fleet::default());
        // Totals and completeness are not figures by hour: they stay.
        assert_eq!(f.totals.batches, 6);
        assert_eq!(f.completeness.missing, 2);
    }

    #[test]
    fn prune_on_sqlite() {
        let (store, _guard) = super::sqlite::fresh();
        prune(&*store);
    }

    #[test]
    fn prune_on_postgres() {
        let (store, _guard) = super::postgres::fresh();
        prune(&*store);
    }

    #[test]
    fn an_empty_store_reports_zeros() {
        for (store, _guard) in [
            {
                let (s, g) = super::sqlite::fresh();
                (s, Box::new(g) as Box<dyn std::any::Any>)
            },
            {
                let (s, g) = super::postgres::fresh();
                (s, Box::new(g) as Box<dyn std::any::Any>)
            },
        ] {
            let f = store.pipeline_health(H, H + 1, H).unwrap();
            assert_eq!(f.totals, HealthTotals::default());
            assert_eq!(f.completeness, Completeness::default());
            assert_eq!(f.fleet, Fleet::default());
            assert_eq!(f.window.ingest_lag.quantile(0.5), None);
        }
    }
}
