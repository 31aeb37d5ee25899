//! Product queries on a hand-built fixture, run against both stores
//! through `queries::answer` (what the HTTP endpoints answer): exact
//! numbers in Europe/Paris across the spring DST change (2026-03-29 has 23
//! hours), stitching of anonymous events sent before `identify`, funnel
//! order and window edges, a retention grid, breakdowns with `(none)` and
//! folding, top events, and deletion reaching the rollups.
//!
//! The window is Paris 2026-03-28 00:00 to 2026-04-02 00:00 (five days,
//! d0..d4). People, after stitching:
//!
//! | person | events (Paris day) |
//! |---|---|
//! | u1 | open, play, buy (d0; open/play sent anonymously as a1/i1 before `identify`), open, play (d1) |
//! | a2 | open, play (d1, 23:30 CEST: UTC's 03-29 too) |
//! | u2 | open, buy (d2), play (d4) |
//! | u3 | open, play (d2), buy exactly 24 h after open (d3) |
//! | u4 | open, play (d2), buy 24 h + 1 ms after open (d3), a `tally.health` |

use super::*;
use serde_json::{json, Value};
use tally_collector::queries::{answer, ProductQuery, QueryError};

fn ms(rfc3339: &str) -> i64 {
    tally_proto::parse_timestamp(rfc3339).unwrap()
}

const FROM: &str = "2026-03-28T00:00:00%2B01:00";
const TO: &str = "2026-04-02T00:00:00%2B02:00";
const T1: &str = "2026-03-28T10:00:00Z";
const T2: &str = "2026-03-28T23:30:00Z";
const T3: &str = "2026-03-29T21:30:00Z";
const T4: &str = "2026-03-29T22:30:00Z";
const T5: &str = "2026-03-30T08:00:00Z";
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// A product event with a session, properties and optional app version.
fn product(
    id: &str,
    name: &str,
    person: (&str, Option<&str>),
    ts: i64,
    session: &str,
    plan: Option<Value>,
    version: Option<&str>,
) -> NewEvent {
    let mut e = track(id, name, "unused", ts);
    match person {
        (user, None) if !user.starts_with('a') => e = by_user(e, user),
        (anon, install) => {
            e.anonymous_id = Some(anon.to_owned());
            e.install_id = install.map(str::to_owned);
        }
    }
    e.session_id = Some(session.to_owned());
    let mut raw =
        json!({"type": "track", "messageId": id, "event": name, "properties": {}, "context": {}});
    if let Some(plan) = plan {
        raw["properties"]["plan"] = plan;
    }
    if let Some(v) = version {
        raw["context"]["app"] = json!({"version": v});
    }
    e.raw = raw.to_string();
    e
}

/// Writes the fixture; the `identify` of u1 comes in a second batch, after
/// the anonymous events it stitches.
fn write_fixture(store: &dyn Store, with_identify: bool) {
    let (t1, t2, t3, t4, t5) = (ms(T1), ms(T2), ms(T3), ms(T4), ms(T5));
    let a1 = ("a1", Some("i1"));
    let events = vec![
        product("e1", "open", a1, t1, "s1", None, None),
        product(
            "e2",
            "play",
            a1,
            t1 + MIN,
            "s1",
            Some(json!("free")),
            Some("1.0"),
        ),
        product("e4", "buy", ("u1", None), t1 + 4 * MIN, "s1", None, None),
        product("e5", "open", ("u1", None), t2, "s2", None, None),
        product(
            "e6",
            "play",
            ("u1", None),
            t2 + 10 * MIN,
            "s2",
            Some(json!("pro")),
            Some("2.0"),
        ),
        product("e7", "open", ("a2", None), t3, "s3", None, None),
        product(
            "e8",
            "play",
            ("a2", None),
            t3 + 1000,
            "s3",
            Some(json!("pro")),
            None,
        ),
        product("e9", "open", ("u2", None), t4, "s4", None, None),
        product("e10", "buy", ("u2", None), t4 + 30 * MIN, "s4", None, None),
        product(
            "e11",
            "play",
            ("u2", None),
            t4 + 2 * DAY,
            "s5",
            Some(json!("free")),
            Some("2.0"),
        ),
        product("e12", "open", ("u3", None), t5, "s6", None, None),
        product(
            "e13",
            "play",
            ("u3", None),
            t5 + HOUR,
            "s6",
            Some(json!("pro")),
            Some("2.0"),
        ),
        product("e14", "buy", ("u3", None), t5 + DAY, "s7", None, None),
        product("e15", "open", ("u4", None), t5, "s8", None, None),
        product(
            "e16",
            "play",
            ("u4", None),
            t5 + MIN,
            "s8",
            Some(json!(7)),
            Some("2.0"),
        ),
        product("e17", "buy", ("u4", None), t5 + DAY + 1, "s9", None, None),
        by_user(track("e18", "tally.health", "unused", t5), "u4"),
    ];
    assert!(store
        .write_batch(&events, &[])
        .unwrap()
        .iter()
        .all(|o| *o == A));
    if with_identify {
        let id = identify("e3", "u1", Some("a1"), Some("i1"), t1 + 3 * MIN);
        assert_eq!(store.write_batch(&[id], &[]).unwrap(), vec![A]);
    }
}

fn ask(store: &dyn Store, query: ProductQuery, q: &str) -> Value {
    answer(store, query, q).unwrap()
}

fn column(v: &Value, key: &str) -> Vec<Value> {
    v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[key].clone())
        .collect()
}

pub fn event_series_in_paris_across_dst(store: &dyn Store) {
    write_fixture(store, true);
    let v = ask(
        store,
        ProductQuery::Events,
        &format!("event=play&tz=Europe/Paris&from={FROM}&to={TO}"),
    );
    assert_eq!(
        column(&v, "bucket"),
        vec![
            json!("2026-03-28T00:00:00+01:00"),
            json!("2026-03-29T00:00:00+01:00"),
            json!("2026-03-30T00:00:00+02:00"),
            json!("2026-03-31T00:00:00+02:00"),
            json!("2026-04-01T00:00:00+02:00"),
        ]
    );
    assert_eq!(
        column(&v, "count"),
        vec![json!(1), json!(2), json!(2), json!(0), json!(1)]
    );
    assert_eq!(
        column(&v, "people"),
        vec![json!(1), json!(2), json!(2), json!(0), json!(1)]
    );
    assert_eq!(v["total"], json!({"count": 6, "people": 5}));
    assert_eq!(
        (v["event"].as_str(), v["tz"].as_str()),
        (Some("play"), Some("Europe/Paris"))
    );

    // The same window in UTC days: e6 (23:40Z) moves to the 28th.
    let utc = ask(
        store,
        ProductQuery::Events,
        "event=play&from=2026-03-28T00:00:00Z&to=2026-04-01T00:00:00Z",
    );
    assert_eq!(
        column(&utc, "count"),
        vec![json!(2), json!(1), json!(2), json!(1)]
    );

    // Hours of the DST day: 23 buckets, 02:00 is skipped.
    let hours = ask(
        store,
        ProductQuery::Events,
        "event=open&interval=hour&tz=Europe/Paris&from=2026-03-29T00:00:00%2B01:00&to=2026-03-30T00:00:00%2B02:00",
    );
    let labels = column(&hours, "bucket");
    assert_eq!(labels.len(), 23);
    assert_eq!(labels[1], json!("2026-03-29T01:00:00+01:00"));
    assert_eq!(labels[2], json!("2026-03-29T03:00:00+02:00"));
    let counts = column(&hours, "count");
    assert_eq!(counts[0], json!(1)); // e5 at 00:30 CET
    assert_eq!(counts[22], json!(1)); // e7 at 23:30 CEST
    assert_eq!(hours["total"], json!({"count": 2, "people": 2}));

    // All product events: tally.* and identify are not counted.
    let all = ask(
        store,
        ProductQuery::Events,
        &format!("tz=Europe/Paris&from={FROM}&to={TO}"),
    );
    assert_eq!(all["total"], json!({"count": 16, "people": 5}));
    assert_eq!(all["event"], Value::Null);
    assert_eq!(
        column(&all, "count"),
        vec![json!(3), json!(4), json!(6), json!(2), json!(1)]
    );
}

pub fn stitching_counts_anonymous_events_for_the_user(store: &dyn Store) {
    write_fixture(store, false);
    let q = format!("event=play&from={FROM}&to={TO}");
    // Before identify: a1/i1's play is the install's person.
    assert_eq!(
        ask(store, ProductQuery::Events, &q)["total"],
        json!({"count": 6, "people": 6})
    );
    let funnel = format!("steps=open,play,buy&from={FROM}&to={TO}");
    let people = |v: &Value| -> Vec<Value> {
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["people"].clone())
            .collect()
    };
    assert_eq!(
        people(&ask(store, ProductQuery::Funnel, &funnel)),
        vec![json!(6), json!(5), json!(1)]
    );
    let identify = identify("e3", "u1", Some("a1"), Some("i1"), ms(T1) + 3 * MIN);
    assert_eq!(store.write_batch(&[identify], &[]).unwrap(), vec![A]);
    assert_eq!(
        ask(store, ProductQuery::Events, &q)["total"],
        json!({"count": 6, "people": 5})
    );
    // u1 now did open, play (anonymously) then buy within a day.
    assert_eq!(
        people(&ask(store, ProductQuery::Funnel, &funnel)),
        vec![json!(5), json!(4), json!(2)]
    );
    let dau = ask(
        store,
        ProductQuery::Active,
        &format!("tz=Europe/Paris&from={FROM}&to={TO}"),
    );
    assert_eq!(
        column(&dau, "people"),
        vec![json!(1), json!(2), json!(3), json!(2), json!(1)]
    );
}

pub fn funnel_order_and_window_edges(store: &dyn Store) {
    write_fixture(store, true);
    let v = ask(
        store,
        ProductQuery::Funnel,
        &format!("steps=open,play,buy&from={FROM}&to={TO}"),
    );
    assert_eq!(
        v,
        json!({"window_s": 86400, "steps": [
            {"event": "open", "people": 5, "conversion": 1.0},
            {"event": "play", "people": 4, "conversion": 0.8},
            {"event": "buy", "people": 2, "conversion": 0.4}]})
    );
    // One second shorter: u3's buy, exactly 24 h after open, drops out.
    let v = ask(
        store,
        ProductQuery::Funnel,
        &format!("steps=open,play,buy&window_s=86399&from={FROM}&to={TO}"),
    );
    assert_eq!(v["steps"][2]["people"], json!(1));
    // Order matters: open,buy,play over 2 days. u1 played 13 h after
    // buying, u2 exactly 2 days after opening (the edge counts); u3 and u4
    // played before buying.
    let v = ask(
        store,
        ProductQuery::Funnel,
        &format!("steps=open,buy,play&window_s=172800&from={FROM}&to={TO}"),
    );
    let people: Vec<Value> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["people"].clone())
        .collect();
    assert_eq!(people, vec![json!(5), json!(4), json!(2)]);
}

pub fn active_windows_sessions_and_edges(store: &dyn Store) {
    write_fixture(store, true);
    let base = format!("tz=Europe/Paris&from={FROM}&to={TO}");
    let dau = ask(store, ProductQuery::Active, &base);
    assert_eq!(dau["window"], json!("day"));
    assert_eq!(
        column(&dau, "people"),
        vec![json!(1), json!(2), json!(3), json!(2), json!(1)]
    );
    let wau = ask(store, ProductQuery::Active, &format!("window=week&{base}"));
    assert_eq!(
        column(&wau, "people"),
        vec![json!(1), json!(2), json!(5), json!(5), json!(5)]
    );
    let mau = ask(store, ProductQuery::Active, &format!("window=month&{base}"));
    assert_eq!(
        column(&mau, "people"),
        vec![json!(1), json!(2), json!(5), json!(5), json!(5)]
    );
    // A window starting mid-slot, after u1's last event of d0 (10:04Z):
    // the rollup's slot 10:00-10:15 must not count u1.
    let edge = ask(
        store,
        ProductQuery::Active,
        &format!("tz=Europe/Paris&from=2026-03-28T10:04:10Z&to={TO}"),
    );
    assert_eq!(column(&edge, "people")[0], json!(0));
    let edge = ask(
        store,
        ProductQuery::Active,
        "tz=Europe/Paris&from=2026-03-28T10:03:59Z&to=2026-03-28T10:04:01Z",
    );
    assert_eq!(column(&edge, "people"), vec![json!(1)]);

    let sessions = ask(store, ProductQuery::Sessions, &base);
    assert_eq!(sessions["sessions"], json!(9));
    // Lengths 0,0,0,1,60,240,600,1800,3600 s.
    assert_eq!(sessions["median_length_s"], json!(60.0));
    assert_eq!(
        column(&sessions, "sessions"),
        vec![json!(1), json!(2), json!(3), json!(2), json!(1)]
    );
}

pub fn retention_grid(store: &dyn Store) {
    write_fixture(store, true);
    let v = ask(
        store,
        ProductQuery::Retention,
        &format!("days=3&tz=Europe/Paris&from={FROM}&to={TO}"),
    );
    assert_eq!(
        v,
        json!({"tz": "Europe/Paris", "days": 3, "cohorts": [
            {"day": "2026-03-28", "size": 1, "returned": [1, 1, 0, 0]},
            {"day": "2026-03-29", "size": 1, "returned": [1, 0, 0, 0]},
            {"day": "2026-03-30", "size": 3, "returned": [3, 2, 1, null]}]})
    );
    let v = ask(
        store,
        ProductQuery::Retention,
        &format!("days=3&event=buy&tz=Europe/Paris&from={FROM}&to={TO}"),
    );
    assert_eq!(
        v["cohorts"],
        json!([
            {"day": "2026-03-28", "size": 1, "returned": [1, 1, 0, 0]},
            {"day": "2026-03-30", "size": 1, "returned": [1, 0, 1, null]},
            {"day": "2026-03-31", "size": 2, "returned": [2, 0, null, null]}])
    );
}

pub fn breakdowns_and_top_events(store: &dyn Store) {
    write_fixture(store, true);
    let w = format!("from={FROM}&to={TO}");
    let v = ask(
        store,
        ProductQuery::Breakdown,
        &format!("event=play&by=properties.plan&{w}"),
    );
    assert_eq!(
        v,
        json!({"event": "play", "by": "properties.plan", "rows": [
            {"value": "pro", "count": 3, "people": 3, "other": false},
            {"value": "free", "count": 2, "people": 2, "other": false},
            {"value": "7", "count": 1, "people": 1, "other": false}]})
    );
    // Folded: u1 is in "pro" and in the rest; people are not added up.
    let v = ask(
        store,
        ProductQuery::Breakdown,
        &format!("event=play&by=properties.plan&limit=1&{w}"),
    );
    assert_eq!(
        v["rows"],
        json!([
            {"value": "pro", "count": 3, "people": 3, "other": false},
            {"value": null, "count": 3, "people": 3, "other": true}])
    );
    let v = ask(
        store,
        ProductQuery::Breakdown,
        &format!("event=play&by=context.app.version&{w}"),
    );
    assert_eq!(
        v["rows"],
        json!([
            {"value": "2.0", "count": 4, "people": 4, "other": false},
            {"value": "(none)", "count": 1, "people": 1, "other": false},
            {"value": "1.0", "count": 1, "people": 1, "other": false}])
    );
    // (none) shown, the rest folded.
    let v = ask(
        store,
        ProductQuery::Breakdown,
        &format!("event=play&by=context.app.version&limit=2&{w}"),
    );
    assert_eq!(
        v["rows"][2],
        json!({"value": null, "count": 1, "people": 1, "other": true})
    );
    // Folding the missing value itself.
    let v = ask(
        store,
        ProductQuery::Breakdown,
        &format!("event=play&by=context.app.version&limit=1&{w}"),
    );
    assert_eq!(
        v["rows"][1],
        json!({"value": null, "count": 2, "people": 2, "other": true})
    );

    let v = ask(store, ProductQuery::TopEvents, &w);
    assert_eq!(
        v,
        json!({"rows": [
            {"event": "open", "count": 6, "people": 5},
            {"event": "play", "count": 6, "people": 5},
            {"event": "buy", "count": 4, "people": 4}]})
    );
    let v = ask(store, ProductQuery::TopEvents, &format!("limit=1&{w}"));
    assert_eq!(v["rows"].as_array().unwrap().len(), 1);
}

pub fn deletion_reaches_queries(store: &dyn Store) {
    write_fixture(store, true);
    store.delete_user("u1", 1).unwrap();
    let base = format!("tz=Europe/Paris&from={FROM}&to={TO}");
    let dau = ask(store, ProductQuery::Active, &base);
    assert_eq!(
        column(&dau, "people"),
        vec![json!(0), json!(1), json!(3), json!(2), json!(1)]
    );
    let v = ask(store, ProductQuery::Events, &format!("event=play&{base}"));
    assert_eq!(v["total"], json!({"count": 4, "people": 4}));
}

pub fn bad_parameters_are_refused(store: &dyn Store) {
    for (query, q) in [
        (ProductQuery::Events, "tz=Mars/Olympus"),
        (ProductQuery::Events, "interval=week"),
        (ProductQuery::Events, "from=yesterday"),
        (
            ProductQuery::Events,
            "from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
        ),
        (
            ProductQuery::Events,
            "interval=hour&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        ),
        (ProductQuery::Active, "window=year"),
        (ProductQuery::Funnel, "steps=only"),
        (ProductQuery::Funnel, "steps=a,,b"),
        (ProductQuery::Funnel, "steps=a,b&window_s=0"),
        (ProductQuery::Retention, "days=0"),
        (ProductQuery::Breakdown, "event=play"),
        (ProductQuery::Breakdown, "event=play&by=raw"),
        (ProductQuery::Breakdown, "event=play&by=properties.a%22b"),
        (ProductQuery::TopEvents, "limit=1001"),
    ] {
        match answer(store, query, q) {
            Err(QueryError::BadRequest(_)) => {}
            other => panic!("{query:?} {q}: expected a bad request, got {other:?}"),
        }
    }
    // A comma inside a step name travels as %2C.
    let v = answer(store, ProductQuery::Funnel, "steps=a%2Cb,c").unwrap();
    assert_eq!(v["steps"][0]["event"], json!("a,b"));
}

/// Thousands of people: the store resolves people for a busy window as a
/// range of identities it filters (PostgreSQL), as well as by probes. 3,000
/// anonymous people open the app; two in three of them also play, so the
/// range read for `play` holds identities it must leave out; ten players
/// then sign in as one user.
pub fn people_of_a_busy_window_are_exact(store: &dyn Store) {
    let t = ms(T1);
    let mut events: Vec<NewEvent> = Vec::new();
    for k in 0..3_000 {
        let anon = format!("busy-{k}");
        events.push(track(&format!("o{k}"), "open", &anon, t + k));
        if k % 3 != 0 {
            events.push(track(&format!("p{k}"), "play", &anon, t + k));
        }
    }
    for chunk in events.chunks(500) {
        store.write_batch(chunk, &[]).unwrap();
    }
    let q =
        |event: &str| format!("event={event}&from=2026-03-28T00:00:00Z&to=2026-03-29T00:00:00Z");
    let total = |event: &str| ask(store, ProductQuery::Events, &q(event))["total"].clone();
    assert_eq!(total("open"), json!({"count": 3000, "people": 3000}));
    assert_eq!(total("play"), json!({"count": 2000, "people": 2000}));

    let signed_in: Vec<NewEvent> = (1..=10)
        .map(|k| {
            identify(
                &format!("i{k}"),
                "u-busy",
                Some(&format!("busy-{k}")),
                None,
                t + 5_000,
            )
        })
        .collect();
    store.write_batch(&signed_in, &[]).unwrap();
    // busy-3, busy-6 and busy-9 never played: 7 players become one.
    assert_eq!(total("play"), json!({"count": 2000, "people": 1994}));
    assert_eq!(total("open"), json!({"count": 3000, "people": 2991}));
}

/// Instantiates the query tests for one store kind.
macro_rules! query_suite {
    ($fresh:path) => {
        mod queries {
            use super::*;
            #[test]
            fn event_series_in_paris_across_dst() {
                let (store, _guard) = $fresh();
                crate::queries::event_series_in_paris_across_dst(&*store);
            }
            #[test]
            fn stitching_counts_anonymous_events_for_the_user() {
                let (store, _guard) = $fresh();
                crate::queries::stitching_counts_anonymous_events_for_the_user(&*store);
            }
            #[test]
            fn funnel_order_and_window_edges() {
                let (store, _guard) = $fresh();
                crate::queries::funnel_order_and_window_edges(&*store);
            }
            #[test]
            fn active_windows_sessions_and_edges() {
                let (store, _guard) = $fresh();
                crate::queries::active_windows_sessions_and_edges(&*store);
            }
            #[test]
            fn retention_grid() {
                let (store, _guard) = $fresh();
                crate::queries::retention_grid(&*store);
            }
            #[test]
            fn breakdowns_and_top_events() {
                let (store, _guard) = $fresh();
                crate::queries::breakdowns_and_top_events(&*store);
            }
            #[test]
            fn deletion_reaches_queries() {
                let (store, _guard) = $fresh();
                crate::queries::deletion_reaches_queries(&*store);
            }
            #[test]
            fn people_of_a_busy_window_are_exact() {
                let (store, _guard) = $fresh();
                crate::queries::people_of_a_busy_window_are_exact(&*store);
            }
            #[test]
            fn bad_parameters_are_refused() {
                let (store, _guard) = $fresh();
                crate::queries::bad_parameters_are_refused(&*store);
            }
        }
    };
}
