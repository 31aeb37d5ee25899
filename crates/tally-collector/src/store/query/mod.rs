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
//! | `event_names (name)` | per batch, `ON CONFLICT DO NOTHING`; on SQLite a retention chunk deletes the names it left without events | "all events": one index range per name instead of a table scan |
//! | `active_slots (slot, ident)` | per batch, distinct (15-minute slot, identity) of its product events; a retention chunk deletes the rows it left without a product event (`Expired`) | DAU/WAU/MAU and retention |
//!
//! A slot is [`SLOT_MS`] long: every UTC offset in use is a multiple of
//! 15 minutes, so the days and hours of any zone are whole slots. Parts of
//! a window that do not cover whole slots (an arbitrary `from`/`to`) are
//! read from the events themselves, so answers are exact.
//!
//! **Product events** are named events (track, page, screen) whose name
//! does not start with `tally.` (the SDK's internal events): they are what
//! counts as activity.

use super::{NewEvent, StoreError};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CountPeople {
    /// Events.
    pub count: u64,
    /// Distinct people among them.
    pub people: u64,
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
///
/// `source` restricts the events read to those one source (write key id)
/// sent; `None` reads every source's. Identities and their persons are
/// shared by all sources: a person is resolved the same way whichever
/// source's events name them.
pub trait ProductQueries {
    /// `(first, last)` corrected time of each session (by
    /// `context.tally.session_id`) over its product events in `window`.
    fn session_spans(
        &self,
        window: Span,
        source: Option<&str>,
    ) -> Result<Vec<(i64, i64)>, StoreError>;

    /// `(person, time)` of activity in `window`: events of `event`, or any
    /// product event when `None` (then, unless `source` is given, a time
    /// may be the start of a 15-minute slot in which the person was
    /// active). Repeated pairs may be collapsed.
    fn activity(
        &self,
        event: Option<&str>,
        window: Span,
        source: Option<&str>,
    ) -> Result<Vec<(String, i64)>, StoreError>;

    /// Groups of `event` in `window` by the JSON field at `path`.
    fn breakdown_groups(
        &self,
        event: &str,
        path: &[String],
        window: Span,
        source: Option<&str>,
    ) -> Result<Vec<BreakdownGroup>, StoreError>;

    /// Count and people of `event` in `window` whose field at `path` is
    /// none of `shown` (`None` there stands for "no value").
    fn breakdown_rest(
        &self,
        event: &str,
        path: &[String],
        window: Span,
        source: Option<&str>,
        shown: &[Option<String>],
    ) -> Result<CountPeople, StoreError>;

    /// `(time, identity)` of each event of `event` (all product events
    /// when `None`) in `window`, in no particular order.
    fn event_idents(
        &self,
        event: Option<&str>,
        window: Span,
        source: Option<&str>,
    ) -> Result<Vec<(i64, i64)>, StoreError>;

    /// `(slot, identity)` of the active slots `[first, end)`, all sources
    /// (the rollup does not record them: a query of one source reads its
    /// events instead).
    fn slot_idents(&self, first: i64, end: i64) -> Result<Vec<(i64, i64)>, StoreError>;

    /// `(identity, time, event)` of the events named in `steps` in
    /// `window`.
    fn step_idents(
        &self,
        steps: &[String],
        window: Span,
        source: Option<&str>,
    ) -> Result<Vec<(i64, i64, String)>, StoreError>;

    /// The person of each of `idents` that has one.
    fn persons(&self, idents: &[i64]) -> Result<Vec<(i64, Arc<str>)>, StoreError>;

    /// The identity of every product event in `window`, grouped by event
    /// name (no identity reads as 0), in no particular order. One range of
    /// the covering index per name; people are resolved by the caller
    /// (top events), as for [`ProductQueries::event_idents`].
    fn name_idents(
        &self,
        window: Span,
        source: Option<&str>,
    ) -> Result<Vec<(String, Vec<i64>)>, StoreError>;

    /// Activity of installs since `from` (Unix ms, corrected time, through
    /// now): per install and per `quantum_ms` bucket of corrected time
    /// (`ts_corrected / quantum_ms`), the earliest receipt of its events;
    /// internal events count (a beacon is activity too). Scans the time
    /// index from `from` (see [`crate::queries::finality`]).
    fn install_activity(
        &self,
        from: i64,
        quantum_ms: i64,
        source: Option<&str>,
    ) -> Result<Vec<(String, i64, i64)>, StoreError>;

    /// The installs with a seq neither stored nor reported dropped.
    fn installs_with_gaps(&self) -> Result<Vec<String>, StoreError>;

    /// The installs `source` owns (the first source that sent for them).
    fn installs_of(&self, source: &str) -> Result<Vec<String>, StoreError>;

    /// Fills what the queries keep in memory, so the first query after a
    /// start does not pay for it; returns how many entries that took. A
    /// store without such a cache does nothing.
    fn warm(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// Adds `ident` to `name`'s group: rows arrive one name's range after
/// another, so the last group is almost always the one.
pub(crate) fn push_name_ident(groups: &mut Vec<(String, Vec<i64>)>, name: &str, ident: i64) {
    let at = match groups.iter().rposition(|(n, _)| n == name) {
        Some(at) => at,
        None => {
            groups.push((name.to_owned(), Vec::new()));
            groups.len() - 1
        }
    };
    groups[at].1.push(ident);
}

/// Whether a name is one of the SDK's internal events.
pub fn is_internal(name: &str) -> bool {
    tally_proto::is_internal_event(name)
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

/// What one retention chunk deleted that the rollups may still hold: the
/// names of the deleted events, by slot the identities of the deleted
/// product events, every slot it deleted from, and its latest corrected
/// time. Per-name rules expire some events of a slot and keep others, so
/// a deleted event does not mean an emptied slot: [`SLOT_SURVIVORS_SQL`]
/// tells which identities still have a product event in it.
#[derive(Debug, Default)]
pub(crate) struct Expired {
    pub names: BTreeSet<String>,
    pub slots: BTreeMap<i64, BTreeSet<i64>>,
    /// Every slot a deleted event was in, product or not.
    pub touched: BTreeSet<i64>,
    /// The latest corrected time deleted.
    pub last: Option<i64>,
}

impl Expired {
    /// Records a deleted event: its corrected time, identity and name.
    pub fn add(&mut self, ts_corrected: i64, ident: Option<i64>, event: Option<String>) {
        self.touched.insert(slot_of(ts_corrected));
        self.last = Some(self.last.map_or(ts_corrected, |t| t.max(ts_corrected)));
        let Some(name) = event else {
            return;
        };
        if let (false, Some(ident)) = (is_internal(&name), ident) {
            self.slots
                .entry(slot_of(ts_corrected))
                .or_default()
                .insert(ident);
        }
        self.names.insert(name);
    }

    /// The `(slot, identity)` pairs of `slot` that `survivors` (the
    /// identities with a product event left in it) no longer hold.
    pub fn emptied(&self, slot: i64, survivors: &HashSet<i64>) -> Vec<(i64, i64)> {
        self.slots
            .get(&slot)
            .into_iter()
            .flatten()
            .filter(|ident| !survivors.contains(ident))
            .map(|ident| (slot, *ident))
            .collect()
    }

    /// For a chunk deleted in corrected-time order: `[from, to)`, the rest
    /// of its last slot that its rule's cutoff `before` also covers. If an
    /// expired event of the rule is left there, the chunk stopped inside
    /// that slot and the next chunk starts in it.
    pub fn rest_of_last_slot(&self, before: i64) -> Option<(i64, i64)> {
        let last = self.last?;
        let (_, end) = slot_span(slot_of(last));
        Some((last, end.min(before)))
    }

    /// The slots a chunk deleted in corrected-time order has finished with,
    /// so their rollup rows can be settled: every slot it deleted from,
    /// but its last one when expired events of the rule are left there
    /// (`more_in_last`; the next chunk starts in that slot and finishes it
    /// or leaves it to the one after). Reading a slot's survivors costs its
    /// remaining events, so a slot larger than a chunk is read once, not
    /// once per chunk.
    pub fn finished_slots(&self, more_in_last: bool) -> Vec<i64> {
        let open = self.last.filter(|_| more_in_last).map(slot_of);
        self.touched
            .iter()
            .copied()
            .filter(|slot| Some(*slot) != open)
            .collect()
    }
}

/// `[from, to)` in ms of a slot, for [`SLOT_SURVIVORS_SQL`].
pub(crate) fn slot_span(slot: i64) -> (i64, i64) {
    let from = slot.saturating_mul(SLOT_MS);
    (from, from.saturating_add(SLOT_MS))
}

/// The identities with a product event in `[$1, $2)` (one slot): one
/// range of the covering index per name, as the "all events" queries
/// read it. It reads every product event left in the slot, whoever's: a
/// retention chunk pays for the events around the ones it deleted.
pub(crate) const SLOT_SURVIVORS_SQL: &str = "SELECT DISTINCT e.ident FROM event_names n \
    JOIN events e ON e.event = n.name AND e.ts_corrected >= $1 AND e.ts_corrected < $2 \
    WHERE substr(n.name, 1, 6) <> 'tally.' AND e.ident IS NOT NULL";

/// The condition restricting events (aliased `e`) to one source, the
/// parameter `param`, to append to a `WHERE` clause; nothing for every
/// source, so an unscoped statement is the same as before sources could be
/// asked for.
pub(crate) fn source_cond(param: Option<&str>) -> String {
    param.map_or_else(String::new, |p| format!(" AND e.source = {p}"))
}

/// The `n`th parameter (`$n`) when `scoped`.
fn nth(scoped: bool, n: usize) -> Option<String> {
    scoped.then(|| format!("${n}"))
}

/// A `FROM` clause over events of one name (`event_param`) or over all
/// product events (`None`, one index range per name through
/// `event_names`), each with `time` (a condition on `e.ts_corrected`), of
/// the source `source_param` if given, the person as `p.person`, and
/// ending in a `WHERE` clause callers may extend with `AND`.
pub(crate) fn events_from(
    event_param: Option<&str>,
    time: &str,
    source_param: Option<&str>,
) -> String {
    const PERSON: &str = "LEFT JOIN idents p ON p.id = e.ident";
    let source = source_cond(source_param);
    match event_param {
        Some(param) => format!("events e {PERSON} WHERE e.event = {param} AND {time}{source}"),
        None => format!(
            "event_names n JOIN events e ON e.event = n.name AND {time}{source} {PERSON} \
             WHERE substr(n.name, 1, 6) <> 'tally.'"
        ),
    }
}

/// The window condition with `$1` from and `$2` to.
pub(crate) const WINDOW: &str = "e.ts_corrected >= $1 AND e.ts_corrected < $2";

/// A span cut into whole slots and the raw parts around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotCut {
    /// Whole slots `[first, end)` (empty when equal).
    pub slots: (i64, i64),
    /// Raw range before the slots.
    pub head: Span,
    /// Raw range after the slots.
    pub tail: Span,
}

/// Cuts `span` into whole slots and raw head and tail.
pub fn cut(span: Span) -> SlotCut {
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

/// [`ProductQueries::activity`] of any product event: `(person, time)`;
/// of one source (`$1`) when `scoped`, read from its events (the active
/// slots hold every source's).
pub(crate) fn any_activity_sql(window: Span, scoped: bool) -> String {
    let raw = |s: Span, source: Option<&str>| {
        format!(
            "SELECT p.person, e.ts_corrected FROM {} AND p.person IS NOT NULL",
            events_from(
                None,
                &format!("e.ts_corrected >= {} AND e.ts_corrected < {}", s.from, s.to),
                source
            )
        )
    };
    if scoped {
        return format!(
            "SELECT DISTINCT q.person, q.ts_corrected FROM ({}) q",
            raw(window, Some("$1"))
        );
    }
    let c = cut(window);
    format!(
        "SELECT DISTINCT p.person, a.slot * {SLOT_MS} FROM active_slots a \
         JOIN idents p ON p.id = a.ident \
         WHERE a.slot >= {} AND a.slot < {} AND p.person IS NOT NULL UNION ALL {} UNION ALL {}",
        c.slots.0,
        c.slots.1,
        raw(c.head, None),
        raw(c.tail, None)
    )
}

/// [`ProductQueries::activity`] of one event (`$3`): `(person, time)`; of
/// one source (`$4`) when `scoped`.
pub(crate) fn event_activity_sql(scoped: bool) -> String {
    format!(
        "SELECT p.person, e.ts_corrected FROM {} AND p.person IS NOT NULL",
        events_from(Some("$3"), WINDOW, nth(scoped, 4).as_deref())
    )
}

/// [`ProductQueries::session_spans`]; of one source (`$3`) when `scoped`.
///
/// Every row of the window is read for its session, so the scan is one
/// range of the time index, with no join: neither the names' index ranges
/// (which serve the covering reads) nor people (sessions count none). The
/// product filter is the same as the names' (an unnamed message fails it).
pub(crate) fn sessions_sql(scoped: bool) -> String {
    format!(
        "SELECT MIN(e.ts_corrected), MAX(e.ts_corrected) FROM events e \
         WHERE {WINDOW}{} AND substr(e.event, 1, 6) <> 'tally.' AND e.session_id IS NOT NULL \
         GROUP BY e.session_id",
        source_cond(nth(scoped, 3).as_deref())
    )
}

/// [`ProductQueries::install_activity`]: `$1` from, `$2` quantum (ms);
/// `$3` the source when `scoped`.
pub(crate) fn install_activity_sql(scoped: bool) -> String {
    format!(
        "SELECT e.install_id, e.ts_corrected / $2, \
         MIN(e.received_at) FROM events e WHERE e.ts_corrected >= $1 AND e.install_id IS NOT NULL{} \
         GROUP BY 1, 2",
        source_cond(nth(scoped, 3).as_deref())
    )
}

/// [`ProductQueries::installs_of`]: `$1` the source.
pub(crate) const INSTALLS_OF_SQL: &str = "SELECT install_id FROM installs WHERE source = $1";

/// [`ProductQueries::name_idents`]: `$1` from, `$2` to; `$3` the source
/// when `scoped`.
pub(crate) fn name_idents_sql(scoped: bool) -> String {
    format!(
        "SELECT n.name, e.ident FROM event_names n JOIN events e ON e.event = n.name \
         AND {WINDOW}{} WHERE substr(n.name, 1, 6) <> 'tally.'",
        source_cond(nth(scoped, 3).as_deref())
    )
}

/// A breakdown's grouping key over the stored JSON: SQL yielding the
/// field's JSON text or NULL (absent or JSON `null`), per store.
pub(crate) type FieldSql = fn(path_param: &str) -> String;

/// [`ProductQueries::breakdown_groups`]: `$1` from, `$2` to, `$3` the
/// event, `$4` the path (store-specific form); `$5` the source when
/// `scoped`.
pub(crate) fn breakdown_sql(field: FieldSql, scoped: bool) -> String {
    format!(
        "SELECT v, COUNT(*), COUNT(DISTINCT person) FROM (SELECT {} AS v, p.person AS person FROM {}) g \
         GROUP BY v",
        field("$4"),
        events_from(Some("$3"), WINDOW, nth(scoped, 5).as_deref())
    )
}

/// [`ProductQueries::breakdown_rest`]: `$5` the source when `scoped`, then
/// the values excluded, and the missing value too when `none_shown`.
pub(crate) fn breakdown_rest_sql(
    field: FieldSql,
    shown: usize,
    none_shown: bool,
    scoped: bool,
) -> String {
    let first = 5 + usize::from(scoped);
    let params: Vec<String> = (0..shown).map(|i| format!("${}", i + first)).collect();
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
        events_from(Some("$3"), WINDOW, nth(scoped, 5).as_deref()),
        keep.join(" OR ")
    )
}

/// [`ProductQueries::event_idents`]: `$1` from, `$2` to, `$3` the event
/// when `named`, then the source when `scoped`. Reads the covering index
/// only when not scoped.
pub(crate) fn event_idents_sql(named: bool, scoped: bool) -> String {
    let source = source_cond(nth(scoped, 3 + usize::from(named)).as_deref());
    if named {
        format!(
            "SELECT e.ts_corrected, e.ident FROM events e WHERE e.event = $3 AND {WINDOW}{source}"
        )
    } else {
        format!(
            "SELECT e.ts_corrected, e.ident FROM event_names n JOIN events e ON e.event = n.name \
             AND {WINDOW}{source} WHERE substr(n.name, 1, 6) <> 'tally.'"
        )
    }
}

/// [`ProductQueries::slot_idents`]: slots `[$1, $2)`.
pub(crate) const SLOT_IDENTS_SQL: &str =
    "SELECT a.slot, a.ident FROM active_slots a WHERE a.slot >= $1 AND a.slot < $2";

/// [`ProductQueries::step_idents`] for `steps` names (`$3`...), then the
/// source when `scoped`.
pub(crate) fn step_idents_sql(steps: usize, scoped: bool) -> String {
    let params: Vec<String> = (0..steps).map(|i| format!("${}", i + 3)).collect();
    format!(
        "SELECT e.ident, e.ts_corrected, e.event FROM events e \
         WHERE e.event IN ({}) AND {WINDOW}{} AND e.ident IS NOT NULL",
        params.join(", "),
        source_cond(nth(scoped, 3 + steps).as_deref())
    )
}
