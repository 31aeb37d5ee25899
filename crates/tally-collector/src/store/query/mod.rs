//! Product queries over stored events: counts and people over time,
//! active people, sessions, funnel steps, retention activity, breakdowns
//! and top events. The HTTP layer (`crate::queries`) cuts the time zone's
//! buckets and shapes the answers; the stores answer per bucket.
//!
//! # People without rewriting events
//!
//! An event stores the id of its **identity** (`idents`): its user id, or
//! for an anonymous event the pair (anonymous id, install). Each identity
//! holds its current **person** key (`u:USER`, `i:INSTALL`, `a:ANONYMOUS`;
//! the rule of the [store module](super)). A new identity resolves its
//! person from the links at insert; an `identify` or `alias` that links or
//! re-links an id re-resolves only the identities that id names
//! (`identity::repoint_sql`, through indexes on a table of one row per
//! user and per anonymous device). Events are never rewritten, and queries
//! read the person through the identity: stitching is exact at query time
//! whatever order events and identifies arrived in.
//!
//! # Indexes and rollups
//!
//! | structure | maintained | serves |
//! |---|---|---|
//! | `events (event, ts_corrected, ident)` | the insert | one event over a window: count and people read the index alone |
//! | `event_names (name)` | per batch, `ON CONFLICT DO NOTHING` | "all events": one index range per name instead of a table scan |
//! | `active_slots (slot, ident)` | per batch, distinct (15-minute slot, identity) of its product events | DAU/WAU/MAU and retention |
//!
//! A slot is [`SLOT_MS`] long: every UTC offset in use is a multiple of
//! 15 minutes, so the days and hours of any zone are whole slots. Parts of
//! a window that do not cover whole slots (an arbitrary `from`/`to`) are
//! read from the events themselves, so answers are exact.
//!
//! **Product events** are named events (track, page, screen) whose name
//! does not start with `tally.` (the SDK's internal events): they are what
//! counts as activity.

pub(crate) mod postgres;
pub(crate) mod sqlite;

use super::{NewEvent, StoreError};
use std::collections::BTreeSet;

/// Length of an activity slot, in ms (15 minutes; see the module doc).
/// Migration 2 of both stores writes this number literally.
pub const SLOT_MS: i64 = 900_000;

/// A time range `[from, to)` in Unix ms on the corrected timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Inclusive start.
    pub from: i64,
    /// Exclusive end.
    pub to: i64,
}

/// Events and distinct people.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CountPeople {
    /// Events.
    pub count: u64,
    /// Distinct people among them.
    pub people: u64,
}

/// Counts per bucket and over the whole window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSeries {
    /// One entry per bucket asked for, in order.
    pub buckets: Vec<CountPeople>,
    /// Over the window (people distinct over the window).
    pub total: CountPeople,
}

/// One event of a funnel's steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepEvent {
    /// The person key.
    pub person: String,
    /// Corrected time, Unix ms.
    pub ts: i64,
    /// The event name.
    pub event: String,
}

/// One group of a breakdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakdownGroup {
    /// The field's JSON text (`"2.3.0"`, `3`, `true`); `None` when the
    /// event lacks the field or it is JSON `null`.
    pub value: Option<String>,
    /// Events and people of the group.
    pub counts: CountPeople,
}

/// The queries the product API needs from a store. Every method blocks.
pub trait ProductQueries {
    /// Count and people of `event` (all product events when `None`) in
    /// each bucket and over `window`.
    fn event_series(
        &self,
        event: Option<&str>,
        buckets: &[Span],
        window: Span,
    ) -> Result<EventSeries, StoreError>;

    /// Distinct people with a product event in each span.
    fn active_people(&self, spans: &[Span]) -> Result<Vec<u64>, StoreError>;

    /// `(first, last)` corrected time of each session (by
    /// `context.tally.session_id`) over its product events in `window`.
    fn session_spans(&self, window: Span) -> Result<Vec<(i64, i64)>, StoreError>;

    /// The events named in `steps` in `window`, with their person.
    fn step_events(&self, steps: &[String], window: Span) -> Result<Vec<StepEvent>, StoreError>;

    /// `(person, time)` of activity in `window`: events of `event`, or any
    /// product event when `None` (then a time may be the start of a
    /// 15-minute slot in which the person was active). Repeated pairs may
    /// be collapsed.
    fn activity(&self, event: Option<&str>, window: Span)
        -> Result<Vec<(String, i64)>, StoreError>;

    /// Groups of `event` in `window` by the JSON field at `path`.
    fn breakdown_groups(
        &self,
        event: &str,
        path: &[String],
        window: Span,
    ) -> Result<Vec<BreakdownGroup>, StoreError>;

    /// Count and people of `event` in `window` whose field at `path` is
    /// none of `shown` (`None` there stands for "no value").
    fn breakdown_rest(
        &self,
        event: &str,
        path: &[String],
        window: Span,
        shown: &[Option<String>],
    ) -> Result<CountPeople, StoreError>;

    /// The `limit` product events with most events in `window`, by count
    /// descending then name.
    fn top_events(
        &self,
        limit: usize,
        window: Span,
    ) -> Result<Vec<(String, CountPeople)>, StoreError>;
}

/// Whether a name is one of the SDK's internal events.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("tally.")
}

/// The slot holding `ts`.
pub fn slot_of(ts: i64) -> i64 {
    ts.div_euclid(SLOT_MS)
}

/// What a batch adds to `event_names` and `active_slots`, sorted (the
/// order PostgreSQL transactions meet the keys in).
#[derive(Debug, Default)]
pub(crate) struct Activity<'a> {
    pub names: BTreeSet<&'a str>,
    pub slots: BTreeSet<(i64, i64)>,
}

impl<'a> Activity<'a> {
    /// Records an accepted event stored with identity `ident`.
    pub fn add(&mut self, event: &'a NewEvent, ident: i64) {
        if let Some(name) = event.event.as_deref() {
            self.names.insert(name);
            if !is_internal(name) {
                self.slots.insert((slot_of(event.ts_corrected), ident));
            }
        }
    }
}

/// A `FROM` clause over events of one name (`event_param`) or over all
/// product events (`None`, one index range per name through
/// `event_names`), each with `time` (a condition on `e.ts_corrected`), the
/// person as `p.person`, and ending in a `WHERE` clause callers may
/// extend with `AND`. `lead` is joined first (the bucket list `b`).
pub(crate) fn events_from(lead: Option<&str>, event_param: Option<&str>, time: &str) -> String {
    const PERSON: &str = "LEFT JOIN idents p ON p.id = e.ident";
    const PRODUCT: &str = "substr(n.name, 1, 6) <> 'tally.'";
    match (lead, event_param) {
        (None, Some(param)) => {
            format!("events e {PERSON} WHERE e.event = {param} AND {time}")
        }
        (Some(lead), Some(param)) => {
            format!("{lead} JOIN events e ON e.event = {param} AND {time} {PERSON} WHERE TRUE")
        }
        (None, None) => format!(
            "event_names n JOIN events e ON e.event = n.name AND {time} {PERSON} WHERE {PRODUCT}"
        ),
        (Some(lead), None) => format!(
            "{lead} JOIN event_names n ON {PRODUCT} JOIN events e ON e.event = n.name AND {time} \
             {PERSON} WHERE TRUE"
        ),
    }
}

/// `WITH b(cols) AS (VALUES ...)` from integer rows: the buckets travel in
/// the statement (numbers only) in the syntax both stores accept.
pub(crate) fn values_cte(cols: &str, rows: &[Vec<i64>]) -> String {
    let body: Vec<String> = rows
        .iter()
        .map(|r| {
            let cells: Vec<String> = r.iter().map(i64::to_string).collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    format!("b({cols}) AS (VALUES {})", body.join(", "))
}

/// The per-bucket statement of [`ProductQueries::event_series`]; `$1` is
/// the event name when `named`.
pub(crate) fn series_sql(named: bool, buckets: &[Span]) -> String {
    let rows: Vec<Vec<i64>> = buckets
        .iter()
        .enumerate()
        .map(|(i, s)| vec![i as i64, s.from, s.to])
        .collect();
    format!(
        "WITH {} SELECT CAST(b.i AS BIGINT), COUNT(*), COUNT(DISTINCT p.person) FROM {} GROUP BY b.i",
        values_cte("i, lo, hi", &rows),
        events_from(
            Some("b"),
            named.then_some("$1"),
            "e.ts_corrected >= b.lo AND e.ts_corrected < b.hi"
        )
    )
}

/// The window condition with `$1` from and `$2` to.
pub(crate) const WINDOW: &str = "e.ts_corrected >= $1 AND e.ts_corrected < $2";

/// The window total of [`ProductQueries::event_series`]: `$1` from, `$2`
/// to, `$3` the event name when `named`.
pub(crate) fn total_sql(named: bool) -> String {
    format!(
        "SELECT COUNT(*), COUNT(DISTINCT p.person) FROM {}",
        events_from(None, named.then_some("$3"), WINDOW)
    )
}

/// A span cut into whole slots and the raw parts around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotCut {
    /// Whole slots `[first, end)` (empty when equal).
    pub slots: (i64, i64),
    /// Raw range before the slots.
    pub head: Span,
    /// Raw range after the slots.
    pub tail: Span,
}

/// Cuts `span` into whole slots and raw head and tail.
pub(crate) fn cut(span: Span) -> SlotCut {
    let first = span.from.div_euclid(SLOT_MS) + i64::from(span.from.rem_euclid(SLOT_MS) != 0);
    let end = span.to.div_euclid(SLOT_MS);
    if first >= end {
        return SlotCut {
            slots: (first, first),
            head: span,
            tail: Span {
                from: span.to,
                to: span.to,
            },
        };
    }
    SlotCut {
        slots: (first, end),
        head: Span {
            from: span.from,
            to: first * SLOT_MS,
        },
        tail: Span {
            from: end * SLOT_MS,
            to: span.to,
        },
    }
}

/// `x(i, ident)`: activity per span, active slots for the whole slots and
/// product events for the raw parts.
fn activity_cte(spans: &[Span]) -> String {
    let rows: Vec<Vec<i64>> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let c = cut(*s);
            vec![
                i as i64,
                c.slots.0,
                c.slots.1,
                c.head.from,
                c.head.to,
                c.tail.from,
                c.tail.to,
            ]
        })
        .collect();
    let raw = |lo: &str, hi: &str| {
        format!(
            "SELECT b.i, e.ident FROM b JOIN event_names n ON substr(n.name, 1, 6) <> 'tally.' \
             JOIN events e ON e.event = n.name AND e.ts_corrected >= b.{lo} AND e.ts_corrected < b.{hi}"
        )
    };
    format!(
        "WITH {}, x(i, ident) AS (SELECT b.i, a.ident FROM b JOIN active_slots a \
         ON a.slot >= b.slo AND a.slot < b.shi UNION ALL {} UNION ALL {})",
        values_cte("i, slo, shi, hlo, hhi, tlo, thi", &rows),
        raw("hlo", "hhi"),
        raw("tlo", "thi")
    )
}

/// [`ProductQueries::active_people`].
pub(crate) fn active_sql(spans: &[Span]) -> String {
    format!(
        "{} SELECT CAST(x.i AS BIGINT), COUNT(DISTINCT p.person) FROM x \
         JOIN idents p ON p.id = x.ident GROUP BY x.i",
        activity_cte(spans)
    )
}

/// [`ProductQueries::activity`] of any product event: `(person, time)`.
pub(crate) fn any_activity_sql(window: Span) -> String {
    let c = cut(window);
    let raw = |s: Span| {
        format!(
            "SELECT p.person, e.ts_corrected FROM {} AND p.person IS NOT NULL",
            events_from(
                None,
                None,
                &format!("e.ts_corrected >= {} AND e.ts_corrected < {}", s.from, s.to)
            )
        )
    };
    format!(
        "SELECT DISTINCT p.person, a.slot * {SLOT_MS} FROM active_slots a \
         JOIN idents p ON p.id = a.ident \
         WHERE a.slot >= {} AND a.slot < {} AND p.person IS NOT NULL UNION ALL {} UNION ALL {}",
        c.slots.0,
        c.slots.1,
        raw(c.head),
        raw(c.tail)
    )
}

/// [`ProductQueries::activity`] of one event (`$3`): `(person, time)`.
pub(crate) fn event_activity_sql() -> String {
    format!(
        "SELECT p.person, e.ts_corrected FROM {} AND p.person IS NOT NULL",
        events_from(None, Some("$3"), WINDOW)
    )
}

/// [`ProductQueries::session_spans`].
pub(crate) fn sessions_sql() -> String {
    format!(
        "SELECT MIN(e.ts_corrected), MAX(e.ts_corrected) FROM {} AND e.session_id IS NOT NULL \
         GROUP BY e.session_id",
        events_from(None, None, WINDOW)
    )
}

/// [`ProductQueries::step_events`] for `steps` names (`$3`...).
pub(crate) fn steps_sql(steps: usize) -> String {
    let params: Vec<String> = (0..steps).map(|i| format!("${}", i + 3)).collect();
    format!(
        "SELECT p.person, e.ts_corrected, e.event FROM events e JOIN idents p ON p.id = e.ident \
         WHERE e.event IN ({}) AND {WINDOW} AND p.person IS NOT NULL",
        params.join(", ")
    )
}

/// [`ProductQueries::top_events`]; `$3` the limit.
pub(crate) fn top_sql() -> String {
    format!(
        "SELECT n.name, COUNT(*), COUNT(DISTINCT p.person) FROM {} GROUP BY n.name \
         ORDER BY COUNT(*) DESC, n.name LIMIT $3",
        events_from(None, None, WINDOW)
    )
}

/// A breakdown's grouping key over the stored JSON: SQL yielding the
/// field's JSON text or NULL (absent or JSON `null`), per store.
pub(crate) type FieldSql = fn(path_param: &str) -> String;

/// [`ProductQueries::breakdown_groups`]: `$1` from, `$2` to, `$3` the
/// event, `$4` the path (store-specific form).
pub(crate) fn breakdown_sql(field: FieldSql) -> String {
    format!(
        "SELECT v, COUNT(*), COUNT(DISTINCT person) FROM (SELECT {} AS v, p.person AS person FROM {}) g \
         GROUP BY v",
        field("$4"),
        events_from(None, Some("$3"), WINDOW)
    )
}

/// [`ProductQueries::breakdown_rest`]: the values `$5...` excluded, and
/// the missing value too when `none_shown`.
pub(crate) fn breakdown_rest_sql(field: FieldSql, shown: usize, none_shown: bool) -> String {
    let params: Vec<String> = (0..shown).map(|i| format!("${}", i + 5)).collect();
    let mut keep = Vec::new();
    if !none_shown {
        keep.push("v IS NULL".to_owned());
    }
    keep.push(if params.is_empty() {
        "v IS NOT NULL".to_owned()
    } else {
        format!("v NOT IN ({})", params.join(", "))
    });
    format!(
        "SELECT COUNT(*), COUNT(DISTINCT person) FROM (SELECT {} AS v, p.person AS person FROM {}) g \
         WHERE {}",
        field("$4"),
        events_from(None, Some("$3"), WINDOW),
        keep.join(" OR ")
    )
}
