//! "Is this day final?" (`/v1/query/finality`) on a hand-built fleet,
//! through `queries::answer`, on both stores.
//!
//! Days d-1 .. d2 are whole UTC days, the first of them 7 days ago:
//!
//! | install | events (day + hour, seq) | what it shows |
//! |---|---|---|
//! | e | d-1 1h (1), d0 5h (2, received d0 6h) | carries d-1 past its end: d-1 is final at d0 6h |
//! | a | d0 1h (1), d1 1h (2), d2 1h (3) | synced past d0 and d1, not d2 |
//! | b | d0 2h (1), d2 3h (3) | seq 2 missing: synced past nothing |
//! | c | d1 2h (1), d1 3h (2), d3 1h (3) | synced past d1 |
//! | d | a beacon at d1 12h (8): 7 events pending, the oldest 20 h old (seqs 1-7 missing) | waits d0 and d1 though it sent no event of d0 |

use super::*;
use serde_json::Value;
use tally_collector::queries::{answer, ProductQuery};

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

fn at(id: &str, install: &str, seq: u64, ts: i64, received: i64) -> NewEvent {
    let mut e = on_install(track(id, "Open", "anon", ts), install, seq);
    e.received_at = received;
    e
}

fn days(store: &dyn Store, query: &str) -> Vec<Value> {
    let v = answer(store, ProductQuery::Finality, query).unwrap();
    v["days"].as_array().unwrap().clone()
}

/// `(active, synced, waiting, pending, status, final_by)` of a day.
fn summary(day: &Value) -> (u64, u64, u64, i64, String, Option<String>) {
    (
        day["active_installs"].as_u64().unwrap(),
        day["synced_installs"].as_u64().unwrap(),
        day["waiting_installs"].as_u64().unwrap(),
        day["pending_events"].as_i64().unwrap(),
        day["status"].as_str().unwrap().to_owned(),
        day["final_by"].as_str().map(str::to_owned),
    )
}

fn waiting(
    active: u64,
    synced: u64,
    waiting: u64,
    pending: i64,
) -> (u64, u64, u64, i64, String, Option<String>) {
    (active, synced, waiting, pending, "waiting".to_owned(), None)
}

pub(super) fn finality_per_day(store: &dyn Store) {
    let now = tally_collector::clock::now_ms();
    let d = |i: i64| (now.div_euclid(DAY) - 6 + i) * DAY;
    let mut beacon = at("d-8", "d", 8, d(1) + 12 * HOUR, d(1) + 12 * HOUR + 5);
    beacon.event = Some("tally.health".to_owned());
    beacon.raw = r#"{"type":"track","messageId":"d-8","event":"tally.health","properties":{"pending":7,"oldest_pending_age_s":72000}}"#.to_owned();
    let batch = [
        at("e-1", "e", 1, d(-1) + HOUR, d(-1) + HOUR),
        at("e-2", "e", 2, d(0) + 5 * HOUR, d(0) + 6 * HOUR),
        at("a-1", "a", 1, d(0) + HOUR, d(0) + HOUR),
        at("a-2", "a", 2, d(1) + HOUR, d(1) + 5 * HOUR),
        at("a-3", "a", 3, d(2) + HOUR, d(2) + 2 * HOUR),
        at("b-1", "b", 1, d(0) + 2 * HOUR, d(0) + 2 * HOUR),
        at("b-3", "b", 3, d(2) + 3 * HOUR, d(2) + 3 * HOUR),
        at("c-1", "c", 1, d(1) + 2 * HOUR, d(1) + 2 * HOUR),
        at("c-2", "c", 2, d(1) + 3 * HOUR, d(1) + 3 * HOUR),
        at("c-3", "c", 3, d(3) + HOUR, d(3) + 6 * HOUR),
        beacon,
    ];
    assert_eq!(store.write_batch(&batch, &[]).unwrap().len(), batch.len());
    let window = format!(
        "from={}&to={}",
        tally_proto::format_timestamp(d(-1)),
        tally_proto::format_timestamp(d(3))
    );
    let got = days(store, &window);
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[0]["day"],
        tally_proto::format_timestamp(d(-1)).replace(".000Z", "+00:00")
    );
    // d-1: e alone, carried past it by e-2 (received d0 6h).
    assert_eq!(
        summary(&got[0]),
        (1, 1, 0, 0, "final".to_owned(), Some("synced".to_owned()))
    );
    assert_eq!(
        got[0]["final_at"],
        tally_proto::format_timestamp(d(0) + 6 * HOUR)
    );
    assert_eq!(got[0]["synced_share"], 1.0);
    // d0: a synced; b (gap) and e (nothing later) wait, and d's beacon
    // says 7 events pending since d0 16h.
    assert_eq!(summary(&got[1]), waiting(3, 1, 3, 7));
    assert_eq!(got[1]["final_at"], Value::Null);
    // d1: a and c synced; d waits with its 7 pending.
    assert_eq!(summary(&got[2]), waiting(3, 2, 1, 7));
    assert!((got[2]["synced_share"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    // d2: a has nothing later, b has a gap.
    assert_eq!(summary(&got[3]), waiting(2, 0, 2, 0));
    assert_eq!(
        got[3]["horizon_at"],
        tally_proto::format_timestamp(d(3) + 30 * DAY)
    );

    // With a one-day horizon every ended day is final; d-1 by its installs.
    let short = days(store, &format!("{window}&horizon_days=1"));
    let by: Vec<Option<String>> = short.iter().map(|d| summary(d).5).collect();
    assert_eq!(
        by,
        [
            Some("synced"),
            Some("horizon"),
            Some("horizon"),
            Some("horizon")
        ]
        .map(|s| s.map(str::to_owned))
    );
    assert_eq!(
        short[3]["final_at"],
        tally_proto::format_timestamp(d(3) + DAY)
    );

    // Today has not ended.
    let today = days(
        store,
        &format!("from={}", tally_proto::format_timestamp(d(6))),
    );
    assert_eq!(today.len(), 1);
    assert_eq!(today[0]["status"], "in_progress");

    for bad in ["horizon_days=0", "horizon_days=366", "tz=Mars/Base"] {
        assert!(answer(store, ProductQuery::Finality, bad).is_err(), "{bad}");
    }
}
