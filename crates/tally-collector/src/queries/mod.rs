//! Product queries, the contract of `docs/query-api.md` "Product
//! queries" (served by [`crate::api::product`]):
//!
//! | path | answers |
//! |---|---|
//! | `/v1/query/events` | count and people per hour/day bucket, and over the window |
//! | `/v1/query/active` | DAU, WAU or MAU per day |
//! | `/v1/query/sessions` | sessions per bucket of their first event, median length |
//! | `/v1/query/funnel` | people per step of an ordered funnel |
//! | `/v1/query/retention` | first-seen-day cohorts and their returns |
//! | `/v1/query/breakdown` | count and people by a property or context field |
//! | `/v1/query/top-events` | the most frequent events |
//! | `/v1/query/finality` | per day, how much of it has arrived and whether it is final ([`finality`]) |
//!
//! Parameters are parsed and buckets cut in the request's time zone here
//! ([`time`]); the store answers per bucket ([`crate::store::query`]);
//! funnels, cohorts and medians are computed over its rows ([`compute`])
//! so both stores give the same answers.

pub mod compute;
pub mod finality;
pub mod people;
pub mod time;

use std::collections::HashMap;

// Integer keys by the hundred thousand: foldhash, not SipHash.
use foldhash::{HashMap as FastMap, HashMapExt as _, HashSet, HashSetExt as _};

use jiff::tz::TimeZone;
use serde_json::{json, Value};
use tally_proto::parse_timestamp;

use crate::clock;
use crate::store::query::{cut, SlotCut, Span};
use crate::store::{Store, StoreError};
use time::{Interval, WindowError, DAY_MS};

/// Why a product query has no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// A parameter is missing or malformed (400).
    #[error("{0}")]
    BadRequest(&'static str),
    /// The store failed (503 or 500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One product query of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProductQuery {
    /// `/v1/query/events`.
    Events,
    /// `/v1/query/active`.
    Active,
    /// `/v1/query/sessions`.
    Sessions,
    /// `/v1/query/funnel`.
    Funnel,
    /// `/v1/query/retention`.
    Retention,
    /// `/v1/query/breakdown`.
    Breakdown,
    /// `/v1/query/top-events`.
    TopEvents,
    /// `/v1/query/finality`.
    Finality,
}

/// The JSON answer of `query` for the query string `query_string` (as
/// in the URL, without `?`), computed on `store`. Blocks.
pub fn answer(
    store: &dyn Store,
    query: ProductQuery,
    query_string: &str,
) -> Result<Value, QueryError> {
    let p = Params::parse(Some(query_string.to_owned()))?;
    match query {
        ProductQuery::Events => events_answer(store, &p),
        ProductQuery::Active => active_answer(store, &p),
        ProductQuery::Sessions => sessions_answer(store, &p),
        ProductQuery::Funnel => funnel_answer(store, &p),
        ProductQuery::Retention => retention_answer(store, &p),
        ProductQuery::Breakdown => breakdown_answer(store, &p),
        ProductQuery::TopEvents => top_events_answer(store, &p),
        ProductQuery::Finality => finality::finality_answer(store, &p),
    }
}

/// Funnels take 2 to this many steps.
pub const MAX_FUNNEL_STEPS: usize = 10;

/// Longest conversion window of a funnel: 90 days.
pub const MAX_FUNNEL_WINDOW_S: i64 = 90 * 86_400;

/// Default conversion window: one day.
pub const DEFAULT_FUNNEL_WINDOW_S: i64 = 86_400;

/// Default and largest number of breakdown rows before the rest is
/// folded; top events use the same bounds.
pub const DEFAULT_ROWS: usize = 20;
/// See [`DEFAULT_ROWS`].
pub const MAX_ROWS: usize = 1000;

/// Default and largest retention horizon, in days.
pub const DEFAULT_RETENTION_DAYS: usize = 7;
/// See [`DEFAULT_RETENTION_DAYS`].
pub const MAX_RETENTION_DAYS: usize = 90;

/// Default window: the 30 days before `to`.
pub const DEFAULT_WINDOW_DAYS: i64 = 30;

/// Longest dotted path of a breakdown field, in segments.
const MAX_PATH_SEGMENTS: usize = 8;

/// The query string, decoded; a repeated parameter keeps its last value.
struct Params {
    raw: String,
    values: HashMap<String, String>,
}

impl Params {
    fn parse(query: Option<String>) -> Result<Params, QueryError> {
        let raw = query.unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&raw)
            .map_err(|_| QueryError::BadRequest("malformed query string"))?;
        Ok(Params {
            raw,
            values: pairs.into_iter().collect(),
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `from`, `to` (default: now and 30 days before) and checks.
    fn window(&self) -> Result<Span, QueryError> {
        let time = |name: &str, what: &'static str| -> Result<Option<i64>, QueryError> {
            self.get(name)
                .map(|t| parse_timestamp(t).ok_or(QueryError::BadRequest(what)))
                .transpose()
        };
        let to = time("to", "to is not an RFC 3339 date-time")?.unwrap_or_else(clock::now_ms);
        let from = time("from", "from is not an RFC 3339 date-time")?
            .unwrap_or(to.saturating_sub(DEFAULT_WINDOW_DAYS * DAY_MS));
        if from >= to {
            return Err(QueryError::BadRequest("from must be before to"));
        }
        if to - from > time::MAX_WINDOW_MS {
            return Err(QueryError::BadRequest(
                "the window is longer than ten years",
            ));
        }
        Ok(Span { from, to })
    }

    /// `source`: the write key id whose events alone are read; absent or
    /// empty reads every source's. Any other text is taken as an id, so
    /// one no key has matches no event.
    fn source(&self) -> Option<&str> {
        self.get("source")
    }

    fn tz(&self) -> Result<(String, TimeZone), QueryError> {
        let name = self.get("tz").unwrap_or("UTC");
        let tz = TimeZone::get(name)
            .map_err(|_| QueryError::BadRequest("tz is not a known IANA time zone"))?;
        Ok((name.to_owned(), tz))
    }

    fn interval(&self) -> Result<Interval, QueryError> {
        match self.get("interval").unwrap_or("day") {
            "day" => Ok(Interval::Day),
            "hour" => Ok(Interval::Hour),
            _ => Err(QueryError::BadRequest("interval must be hour or day")),
        }
    }

    fn number(
        &self,
        name: &str,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
        what: &'static str,
    ) -> Result<usize, QueryError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or(QueryError::BadRequest(what)),
        }
    }

    /// The comma-separated `steps`, split before decoding so `%2C` stays
    /// inside a name.
    fn steps(&self) -> Result<Vec<String>, QueryError> {
        let raw = self
            .raw
            .split('&')
            .filter_map(|pair| pair.strip_prefix("steps="))
            .next_back()
            .ok_or(QueryError::BadRequest("the steps parameter is required"))?;
        let steps: Vec<String> = raw
            .split(',')
            .map(|part| {
                form_urlencoded::parse(format!("s={part}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .filter(|v| !v.is_empty())
                    .ok_or(QueryError::BadRequest("a funnel step is empty"))
            })
            .collect::<Result<_, _>>()?;
        if !(2..=MAX_FUNNEL_STEPS).contains(&steps.len()) {
            return Err(QueryError::BadRequest("a funnel has 2 to 10 steps"));
        }
        Ok(steps)
    }
}

fn window_error(e: WindowError) -> QueryError {
    match e {
        WindowError::TooManyBuckets => QueryError::BadRequest(
            "the window holds too many buckets; shorten it or use interval=day",
        ),
        WindowError::OutOfRange => QueryError::BadRequest("date-time out of range"),
    }
}

/// `GET /v1/query/events?event=NAME[&interval&from&to&tz]`.
fn events_answer(store: &dyn Store, p: &Params) -> Result<Value, QueryError> {
    let window = p.window()?;
    let (tz_name, tz) = p.tz()?;
    let interval = p.interval()?;
    if p.values.contains_key("event") && p.get("event").is_none() {
        return Err(QueryError::BadRequest("event is empty"));
    }
    let event = p.get("event").map(str::to_owned);
    let buckets = time::buckets(window, interval, &tz).map_err(window_error)?;
    let source = p.source();
    let rows = on_store(store, |s| s.event_idents(event.as_deref(), window, source))?;
    let mut counts = vec![0u64; buckets.len()];
    let mut pairs: HashSet<(usize, i64)> = HashSet::new();
    for (ts, ident) in &rows {
        let i = buckets.partition_point(|b| b.span.to <= *ts);
        if let Some(n) = counts.get_mut(i) {
            *n += 1;
            pairs.insert((i, *ident));
        }
    }
    let persons = on_store(store, |s| people::resolve(s, rows.iter().map(|r| r.1)))?;
    let mut per_bucket: HashSet<(usize, u32)> = HashSet::new();
    let mut everyone: HashSet<u32> = HashSet::new();
    for (i, ident) in &pairs {
        if let Some(person) = persons.get(ident) {
            per_bucket.insert((*i, *person));
            everyone.insert(*person);
        }
    }
    let mut people_in = vec![0u64; buckets.len()];
    for (i, _) in &per_bucket {
        people_in[*i] += 1;
    }
    let series: Vec<Value> = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            json!({"bucket": time::label(b.start, &tz), "count": counts[i], "people": people_in[i]})
        })
        .collect();
    Ok(json!({
        "event": event,
        "interval": interval.as_str(),
        "tz": tz_name,
        "series": series,
        "total": {"count": rows.len(), "people": everyone.len()},
    }))
}

/// `GET /v1/query/active?window=day|week|month[&from&to&tz]`: one row per
/// day of the window; a week or month row counts the 7 or 30 days ending
/// with that day (reaching before `from`), never past `to`.
fn active_answer(store: &dyn Store, p: &Params) -> Result<Value, QueryError> {
    let window = p.window()?;
    let (tz_name, tz) = p.tz()?;
    let (name, days_back) = match p.get("window").unwrap_or("day") {
        "day" => ("day", 1usize),
        "week" => ("week", 7),
        "month" => ("month", 30),
        _ => return Err(QueryError::BadRequest("window must be day, week or month")),
    };
    let days = time::buckets(window, Interval::Day, &tz).map_err(window_error)?;
    // Whole days before the window that a week or month row reaches.
    let mut lookback = 0;
    let mut from = window.from;
    if let Some(first) = days.first() {
        if days_back > 1 {
            from = first.start;
            for _ in 1..days_back {
                from = time::day_start(from - 1, &tz).map_err(window_error)?;
                lookback += 1;
            }
        }
    }
    let all_days = time::buckets(
        Span {
            from,
            to: window.to,
        },
        Interval::Day,
        &tz,
    )
    .map_err(window_error)?;
    let active = on_store(store, |s| active_by_day(s, &all_days, p.source()))?;
    let mut series = Vec::with_capacity(days.len());
    // Sliding union of the last `days_back` days: person -> days seen.
    let mut seen: FastMap<u32, usize> = FastMap::new();
    for (i, day) in active.iter().enumerate() {
        for person in day {
            *seen.entry(*person).or_default() += 1;
        }
        if i >= days_back {
            for person in &active[i - days_back] {
                if let Some(n) = seen.get_mut(person) {
                    *n -= 1;
                    if *n == 0 {
                        seen.remove(person);
                    }
                }
            }
        }
        if i >= lookback {
            if let Some(d) = days.get(i - lookback) {
                series.push(json!({"bucket": time::label(d.start, &tz), "people": seen.len()}));
            }
        }
    }
    Ok(json!({"window": name, "tz": tz_name, "series": series}))
}

/// The distinct people active in each of `days`: active slots for the
/// whole slots of a day, its product events for the rest. The slots hold
/// every source's activity, so for one `source` the days are read from
/// its product events whole.
fn active_by_day(
    store: &dyn Store,
    days: &[time::Bucket],
    source: Option<&str>,
) -> Result<Vec<Vec<u32>>, StoreError> {
    let cuts: Vec<_> = days
        .iter()
        .map(|d| match source {
            None => cut(d.span),
            Some(_) => SlotCut {
                slots: (0, 0),
                head: d.span,
                tail: Span {
                    from: d.span.to,
                    to: d.span.to,
                },
            },
        })
        .collect();
    let mut pairs: Vec<(usize, i64)> = Vec::new();
    if let (None, Some(first), Some(last)) = (source, cuts.first(), cuts.last()) {
        for (slot, ident) in store.slot_idents(first.slots.0, last.slots.1)? {
            let i = cuts.partition_point(|c| c.slots.1 <= slot);
            if cuts.get(i).is_some_and(|c| c.slots.0 <= slot) {
                pairs.push((i, ident));
            }
        }
    }
    for (i, c) in cuts.iter().enumerate() {
        for raw in [c.head, c.tail] {
            if raw.from < raw.to {
                pairs.extend(
                    store
                        .event_idents(None, raw, source)?
                        .into_iter()
                        .map(|(_, id)| (i, id)),
                );
            }
        }
    }
    let persons = people::resolve(store, pairs.iter().map(|p| p.1))?;
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); days.len()];
    for (i, ident) in pairs {
        if let Some(person) = persons.get(&ident) {
            out[i].push(*person);
        }
    }
    for day in &mut out {
        day.sort_unstable();
        day.dedup();
    }
    Ok(out)
}

/// `GET /v1/query/sessions[?from&to&interval&tz]`.
fn sessions_answer(store: &dyn Store, p: &Params) -> Result<Value, QueryError> {
    let window = p.window()?;
    let (tz_name, tz) = p.tz()?;
    let interval = p.interval()?;
    let buckets = time::buckets(window, interval, &tz).map_err(window_error)?;
    let spans = on_store(store, |s| s.session_spans(window, p.source()))?;
    let mut per_bucket = vec![0u64; buckets.len()];
    let mut lengths: Vec<f64> = Vec::with_capacity(spans.len());
    for (first, last) in &spans {
        let i = buckets.partition_point(|b| b.span.to <= *first);
        if let Some(n) = per_bucket.get_mut(i) {
            *n += 1;
        }
        lengths.push((last - first) as f64 / 1000.0);
    }
    let rows: Vec<Value> = buckets
        .iter()
        .zip(&per_bucket)
        .map(|(b, n)| json!({"bucket": time::label(b.start, &tz), "sessions": n}))
        .collect();
    Ok(json!({
        "sessions": spans.len(),
        "median_length_s": compute::median(&mut lengths),
        "interval": interval.as_str(),
        "tz": tz_name,
        "series": rows,
    }))
}

/// `GET /v1/query/funnel?steps=A,B,C[&window_s&from&to]`: every step's
/// event must lie in `[from, to)`.
fn funnel_answer(store: &dyn Store, p: &Params) -> Result<Value, QueryError> {
    let window = p.window()?;
    let steps = p.steps()?;
    let window_s = match p.get("window_s") {
        None => DEFAULT_FUNNEL_WINDOW_S,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|s| (1..=MAX_FUNNEL_WINDOW_S).contains(s))
            .ok_or(QueryError::BadRequest(
                "window_s must be a whole number of seconds from 1 to 90 days",
            ))?,
    };
    let names = steps.clone();
    let reached = on_store(store, |s| {
        let mut distinct = names.clone();
        distinct.sort();
        distinct.dedup();
        let rows = s.step_idents(&distinct, window, p.source())?;
        let persons = people::resolve(s, rows.iter().map(|r| r.0))?;
        let events = rows
            .into_iter()
            .filter_map(|(ident, ts, event)| persons.get(&ident).map(|p| (*p, ts, event)));
        Ok(compute::funnel(&names, events, window_s * 1000))
    })?;
    let first = reached.first().copied().unwrap_or(0);
    let rows: Vec<Value> = steps
        .iter()
        .zip(&reached)
        .map(|(name, n)| {
            let conversion = if first == 0 {
                0.0
            } else {
                *n as f64 / first as f64
            };
            json!({"event": name, "people": n, "conversion": conversion})
        })
        .collect();
    Ok(json!({"window_s": window_s, "steps": rows}))
}

/// `GET /v1/query/retention?[days=N&event=NAME&from&to&tz]`.
fn retention_answer(store: &dyn Store, p: &Params) -> Result<Value, QueryError> {
    let window = p.window()?;
    let (tz_name, tz) = p.tz()?;
    let horizon = p.number(
        "days",
        DEFAULT_RETENTION_DAYS,
        1..=MAX_RETENTION_DAYS,
        "days must be a number from 1 to 90",
    )?;
    if p.values.contains_key("event") && p.get("event").is_none() {
        return Err(QueryError::BadRequest("event is empty"));
    }
    let event = p.get("event").map(str::to_owned);
    let starts = time::day_starts(window.from, window.to, &tz).map_err(window_error)?;
    let days_in_window = starts.len().saturating_sub(1);
    let (first, active) = on_store(store, |s| {
        let active = s.activity(None, window, p.source())?;
        let first = match event.as_deref() {
            Some(name) => s.activity(Some(name), window, p.source())?,
            None => active.clone(),
        };
        Ok((first, active))
    })?;
    // Activity times lie in the window (a slot's start only for slots
    // wholly inside it), and days start on slot boundaries.
    let day_of = |ts: i64| -> Option<usize> {
        let i = starts.partition_point(|s| *s <= ts);
        i.checked_sub(1).filter(|i| *i < days_in_window)
    };
    let cohorts = compute::retention(&first, &active, day_of, days_in_window, horizon);
    let rows: Vec<Value> = cohorts
        .iter()
        .map(|c| {
            let day = time::label(starts[c.day], &tz);
            let date = day.get(..10).unwrap_or(&day).to_owned();
            json!({"day": date, "size": c.size, "returned": c.returned})
        })
        .collect();
    Ok(json!({"tz": tz_name, "days": horizon, "cohorts": rows}))
}

/// The dotted path of a breakdown: `properties.X...`, `context.X...` or
/// `traits.X...`; segments without `"`.
fn field_path(by: &str) -> Result<Vec<String>, QueryError> {
    let segments: Vec<String> = by.split('.').map(str::to_owned).collect();
    let valid = segments.len() >= 2
        && segments.len() <= MAX_PATH_SEGMENTS
        && matches!(segments[0].as_str(), "properties" | "context" | "traits")
        && segments.iter().all(|s| !s.is_empty() && !s.contains('"'));
    if !valid {
        return Err(QueryError::BadRequest(
            "by must be a dotted path under properties, context or traits",
        ));
    }
    Ok(segments)
}

/// `GET /v1/query/breakdown?event=NAME&by=PATH[&limit&from&to]`.
fn breakdown_answer(store: &dyn Store, p: &Params) -> Result<Value, QueryError> {
    let window = p.window()?;
    let event = p
        .get("event")
        .ok_or(QueryError::BadRequest("the event parameter is required"))?
        .to_owned();
    let by = p
        .get("by")
        .ok_or(QueryError::BadRequest("the by parameter is required"))?
        .to_owned();
    let path = field_path(&by)?;
    let limit = p.number(
        "limit",
        DEFAULT_ROWS,
        1..=MAX_ROWS,
        "limit must be a number from 1 to 1000",
    )?;
    let name = event.clone();
    let (shown, rest) = on_store(store, |s| {
        let mut groups = s.breakdown_groups(&name, &path, window, p.source())?;
        groups.sort_by(|a, b| {
            b.counts
                .count
                .cmp(&a.counts.count)
                .then_with(|| a.value.cmp(&b.value))
        });
        let rest = if groups.len() > limit {
            let shown: Vec<Option<String>> =
                groups[..limit].iter().map(|g| g.value.clone()).collect();
            Some(s.breakdown_rest(&name, &path, window, p.source(), &shown)?)
        } else {
            None
        };
        groups.truncate(limit);
        Ok((groups, rest))
    })?;
    let mut rows: Vec<Value> = shown
        .iter()
        .map(|g| {
            json!({"value": compute::display_value(g.value.as_deref()), "count": g.counts.count,
                   "people": g.counts.people, "other": false})
        })
        .collect();
    if let Some(rest) = rest {
        rows.push(
            json!({"value": null, "count": rest.count, "people": rest.people, "other": true}),
        );
    }
    Ok(json!({"event": event, "by": by, "rows": rows}))
}

/// `GET /v1/query/top-events?[limit&from&to]`.
fn top_events_answer(store: &dyn Store, p: &Params) -> Result<Value, QueryError> {
    let window = p.window()?;
    let limit = p.number(
        "limit",
        DEFAULT_ROWS,
        1..=MAX_ROWS,
        "limit must be a number from 1 to 1000",
    )?;
    // Counted here, as the events view counts: each name's identities from
    // its index range, their persons resolved once for all names.
    let groups = on_store(store, |s| s.name_idents(window, p.source()))?;
    let persons = on_store(store, |s| {
        people::resolve(
            s,
            groups.iter().flat_map(|(_, idents)| idents.iter().copied()),
        )
    })?;
    let mut top: Vec<(&str, usize, usize)> = groups
        .iter()
        .map(|(name, idents)| {
            let people: HashSet<u32> = idents
                .iter()
                .filter_map(|i| persons.get(i).copied())
                .collect();
            (name.as_str(), idents.len(), people.len())
        })
        .collect();
    top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    top.truncate(limit);
    let rows: Vec<Value> = top
        .iter()
        .map(|(name, count, people)| json!({"event": name, "count": count, "people": people}))
        .collect();
    Ok(json!({"rows": rows}))
}

/// Runs `f` on the store, its error a [`QueryError`].
fn on_store<T>(
    store: &dyn Store,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
) -> Result<T, QueryError> {
    f(store).map_err(QueryError::Store)
}
