//! Data quality counts, against both stores: the tracking plan's findings
//! counted in the batch's transaction (an accepted event's only if the
//! store accepted it, so a retried batch counts nothing twice; a rejected
//! message's with its dead letter), unplanned events under the name they
//! were sent with, by hour so a window selects them, and the newest
//! examples of each key, at most three. The plan violations among them
//! add up in a cumulative total that pruning leaves alone.

use super::*;
use tally_collector::store::quality::{QualityFinding, QualityQuery, QualityRow};

/// The start of an hour, Unix ms.
const HOUR: i64 = 1_700_002_800_000;

fn finding(at: Option<usize>, id: &str, event: &str, kind: &'static str, t: i64) -> QualityFinding {
    let violation = kind == "plan_violation";
    QualityFinding {
        event_index: at,
        source: SOURCE.to_owned(),
        event: event.to_owned(),
        version: if kind == "unplanned" { 0 } else { 1 },
        finding: kind,
        rule: if violation { "required" } else { "" }.to_owned(),
        path: if violation { "/sku" } else { "" }.to_owned(),
        message_id: Some(id.to_owned()),
        received_at: t,
        detail: format!("{event} v1: required at /sku"),
    }
}

fn received(mut e: NewEvent, t: i64) -> NewEvent {
    e.received_at = t;
    e
}

/// `(event, finding, flagged, rejected, first, last, example ids)`.
type Summary = (String, String, u64, u64, i64, i64, Vec<String>);

fn summary(rows: Vec<QualityRow>) -> Vec<Summary> {
    rows.into_iter()
        .map(|r| {
            let ids = r
                .examples
                .iter()
                .map(|e| e.message_id.clone().unwrap_or_default())
                .collect();
            (
                r.event,
                r.finding,
                r.flagged,
                r.rejected,
                r.first_seen,
                r.last_seen,
                ids,
            )
        })
        .collect()
}

/// The store's cumulative plan violations (flagged and rejected).
fn violations(store: &dyn Store) -> u64 {
    store
        .pipeline_health(HOUR, HOUR + 1, HOUR)
        .unwrap()
        .totals
        .plan_violations
}

fn row(e: &str, f: &str, n: (u64, u64), seen: (i64, i64), ids: &[&str]) -> Summary {
    let ids = ids.iter().map(|s| (*s).to_owned()).collect();
    (e.to_owned(), f.to_owned(), n.0, n.1, seen.0, seen.1, ids)
}

pub(crate) fn findings_counted_once_with_bounded_examples(store: &dyn Store) {
    let t = HOUR + 1_000;
    let events = [
        received(track("q1", "Item Added", "a", 1), t),
        received(track("q2", "Item Added", "a", 2), t + 1),
        received(track("q3", "Mystery", "a", 3), t + 2),
    ];
    let letters = [dead("q4", RejectReason::PlanViolation)];
    let findings = [
        finding(Some(0), "q1", "Item Added", "plan_violation", t),
        finding(Some(1), "q2", "Item Added", "plan_violation", t + 1),
        finding(Some(2), "q3", "Mystery", "unplanned", t + 2),
        finding(None, "q4", "Item Added", "plan_violation", t + 3),
    ];
    let outcomes = store.write_judged(&events, &letters, &findings).unwrap();
    assert_eq!(outcomes, [A, A, A]);
    // The same accepted events again (a retry): duplicates, not counted.
    let retry = store.write_judged(&events, &[], &findings[..3]).unwrap();
    assert_eq!(retry, [D, D, D]);
    // Two flagged and one rejected; the unplanned event is no violation.
    assert_eq!(violations(store), 3);
    let all = QualityQuery::default();
    assert_eq!(
        summary(store.quality(&all).unwrap()),
        [
            row(
                "Item Added",
                "plan_violation",
                (2, 1),
                (t, t + 3),
                &["q4", "q2", "q1"]
            ),
            row("Mystery", "unplanned", (1, 0), (t + 2, t + 2), &["q3"]),
        ]
    );
    let first = &store.quality(&all).unwrap()[0];
    assert_eq!(
        (first.version, first.rule.as_str(), first.path.as_str()),
        (1, "required", "/sku")
    );
    assert!(first.examples[0].rejected && !first.examples[1].rejected);
    assert_eq!(first.examples[0].detail, "Item Added v1: required at /sku");
    assert_eq!(first.examples[0].source, SOURCE);

    // Five more in the next hour: counted, and only the 3 newest kept.
    let later = HOUR + 3_600_000 + 10;
    let events: Vec<NewEvent> = (0..5)
        .map(|i| {
            received(
                track(&format!("r{i}"), "Item Added", "a", 10 + i),
                later + i,
            )
        })
        .collect();
    let findings: Vec<QualityFinding> = (0..5)
        .map(|i| {
            let id = format!("r{i}");
            finding(
                Some(i),
                &id,
                "Item Added",
                "plan_violation",
                later + i as i64,
            )
        })
        .collect();
    assert_eq!(store.write_judged(&events, &[], &findings).unwrap(), [A; 5]);
    assert_eq!(violations(store), 8);
    assert_eq!(
        summary(store.quality(&all).unwrap())[0],
        row(
            "Item Added",
            "plan_violation",
            (7, 1),
            (t, later + 4),
            &["r4", "r3", "r2"]
        )
    );

    // A window of the first hour; one event; another source.
    let first_hour = QualityQuery {
        from: Some(HOUR),
        to: Some(HOUR + 3_600_000),
        ..QualityQuery::default()
    };
    assert_eq!(
        summary(store.quality(&first_hour).unwrap()),
        [
            row("Item Added", "plan_violation", (2, 1), (t, t + 3), &[]),
            row("Mystery", "unplanned", (1, 0), (t + 2, t + 2), &["q3"]),
        ]
    );
    let mystery = QualityQuery {
        event: Some("Mystery".to_owned()),
        ..QualityQuery::default()
    };
    assert_eq!(summary(store.quality(&mystery).unwrap()).len(), 1);
    let other = QualityQuery {
        source: Some("wk_other".to_owned()),
        ..QualityQuery::default()
    };
    assert_eq!(store.quality(&other).unwrap(), []);

    // Pruned with the health figures: the first hour's counts, and the
    // examples received before the second hour, go.
    // (The count returned includes the batches' health rows.)
    assert!(store.prune_health(HOUR + 3_600_000).unwrap() >= 3);
    assert_eq!(
        summary(store.quality(&all).unwrap()),
        [row(
            "Item Added",
            "plan_violation",
            (5, 0),
            (later, later + 4),
            &["r4", "r3", "r2"]
        )]
    );
    // The unplanned event seen only in the first hour is gone too.
    assert_eq!(store.quality(&mystery).unwrap(), []);
    // The cumulative total is not pruned.
    assert_eq!(violations(store), 8);
}

macro_rules! quality_suite {
    ($fresh:path) => {
        #[test]
        fn findings_counted_once_with_bounded_examples() {
            let (store, _guard) = $fresh();
            crate::quality::findings_counted_once_with_bounded_examples(&*store);
        }
    };
}
