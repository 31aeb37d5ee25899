//! The audit log, against both stores: rows appended and read back
//! newest first, filtered and paged by id, and expired by their own
//! retention in chunks.

use super::*;
use tally_collector::governance::retention::DEFAULT_AUDIT_DAYS;
use tally_collector::store::audit::{AuditFilter, AuditOutcome, AuditRecord};

const DAY: i64 = 24 * 60 * 60 * 1000;

fn record(at: i64, key: Option<&str>, action: &str, outcome: AuditOutcome) -> AuditRecord {
    AuditRecord {
        at,
        key_id: key.map(str::to_owned),
        role: key.map(|_| "admin".to_owned()),
        action: action.to_owned(),
        params: r#"{"query":{"limit":"5"}}"#.to_owned(),
        client: "192.0.2.7".to_owned(),
        status: if outcome == AuditOutcome::Denied {
            401
        } else {
            200
        },
        outcome,
        count: if outcome == AuditOutcome::Denied {
            10_000
        } else {
            1
        },
    }
}

pub(crate) fn audit_pages_filters_and_expiry(store: &dyn Store) {
    let now = 1_800_000_000_000;
    let old = now - (i64::from(DEFAULT_AUDIT_DAYS) + 1) * DAY;
    let rows = [
        record(old, Some("at_a"), "GET /v1/stats", AuditOutcome::Ok),
        record(old + 1, None, "GET /v1/stats", AuditOutcome::Denied),
        record(
            now - DAY,
            Some("at_a"),
            "POST /v1/deletions",
            AuditOutcome::Ok,
        ),
        record(now - 2, Some("rt_b"), "GET /v1/export", AuditOutcome::Ok),
        record(
            now - 1,
            Some("rt_b"),
            "GET /v1/export",
            AuditOutcome::Failed,
        ),
    ];
    store.append_audit(&rows[..2]).unwrap();
    store.append_audit(&rows[2..]).unwrap();
    store.append_audit(&[]).unwrap();
    let all = store.audit_page(&AuditFilter::default(), 100).unwrap();
    assert_eq!(all.len(), 5);
    // Newest first, ids growing with appends, every column read back.
    let read: Vec<AuditRecord> = all.iter().rev().map(|r| r.record.clone()).collect();
    assert_eq!(read, rows);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    let ids = |f: &AuditFilter, limit| -> Vec<i64> {
        store
            .audit_page(f, limit)
            .unwrap()
            .iter()
            .map(|r| r.record.at)
            .collect()
    };
    let by_key = AuditFilter {
        key_id: Some("rt_b".into()),
        ..AuditFilter::default()
    };
    assert_eq!(ids(&by_key, 100), [now - 1, now - 2]);
    let denied = AuditFilter {
        outcome: Some(AuditOutcome::Denied),
        ..AuditFilter::default()
    };
    assert_eq!(ids(&denied, 100), [old + 1]);
    let window = AuditFilter {
        from: Some(now - DAY),
        to: Some(now - 1),
        ..AuditFilter::default()
    };
    assert_eq!(ids(&window, 100), [now - 2, now - DAY]);
    let action = AuditFilter {
        action: Some("POST /v1/deletions".into()),
        ..AuditFilter::default()
    };
    assert_eq!(ids(&action, 100), [now - DAY]);
    // Pages: two, then from the last id on.
    let first = store.audit_page(&AuditFilter::default(), 2).unwrap();
    let next = AuditFilter {
        before_id: Some(first[1].id),
        ..AuditFilter::default()
    };
    assert_eq!(ids(&next, 2), [now - DAY, old + 1]);

    // Retention: the two rows past a year go, in chunks of one.
    let before = now - i64::from(DEFAULT_AUDIT_DAYS) * DAY;
    assert_eq!(store.expire_audit(before, 1).unwrap(), 1);
    assert_eq!(store.expire_audit(before, 1).unwrap(), 1);
    assert_eq!(store.expire_audit(before, 1).unwrap(), 0);
    assert_eq!(
        ids(&AuditFilter::default(), 100),
        [now - 1, now - 2, now - DAY]
    );
}

macro_rules! audit_suite {
    ($fresh:path) => {
        #[test]
        fn audit_pages_filters_and_expiry() {
            let (store, _guard) = $fresh();
            crate::audit::audit_pages_filters_and_expiry(&*store);
        }
    };
}
