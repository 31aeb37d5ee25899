//! "Is this day final?": `GET /v1/query/finality`.
//!
//! Offline devices deliver a day's events for days or weeks after it
//! ends, so a count for yesterday may still grow. This answers, per day,
//! how much of it the collector already holds and whether more can come.
//!
//! # The rule
//!
//! An install has **synced past** a day when the store holds one of its
//! events captured after the day ended (corrected time) and the install
//! has no seq gap (every seq up to its highest is stored or reported
//! dropped). A device numbers its events in capture order, so an install
//! with no gap and a later event has delivered, or explained, every event
//! it captured on that day; the gap condition covers the critical lane,
//! whose later events may overtake earlier normal ones.
//!
//! A day is **waiting** on an install that had events on it and has not
//! synced past it, and on an install whose latest `tally.health` beacon
//! reports events pending since before the day ended (captured at or
//! after `at − oldest_pending_age_s`, until `at`) while it has not synced
//! past the day: the beacon reveals devices whose events for the day the
//! store has not seen at all.
//!
//! A day that has ended is **final** (`final_by: "synced"`) when it waits
//! on no install; `final_at` is when that became true: the receipt of the
//! first event that carried the last of its installs past it. A day is
//! also final `horizon` days after it ended (`final_by: "horizon"`,
//! default 30, the SDKs' default `max_age`): a device drops rather than
//! keeps an event older than that, and reports the drop.
//!
//! "Final" is what the collector can know: a device that has sent nothing
//! since before the day, and no beacon, may still hold events of it until
//! the horizon. Events without an install id (third-party clients) have no
//! seq and are not judged.
//!
//! # Cost
//!
//! One scan of the time index from the window's first day to now, grouped
//! by install and 15-minute bucket (every time zone's midnight falls on a
//! quarter hour), plus the completeness ranges and the latest beacons.

use foldhash::{HashMap as FastMap, HashMapExt as _, HashSet, HashSetExt as _};
use serde_json::{json, Value};

use super::time::{self, DAY_MS};
use super::{on_store, window_error, Params, QueryError};
use crate::clock;
use crate::store::Store;

/// Bucket of corrected time the activity is read in: a quarter hour.
const QUANTUM_MS: i64 = 15 * 60_000;

/// Default horizon in days: the SDKs' default `max_age` of a pending event.
pub const DEFAULT_HORIZON_DAYS: usize = 30;

/// Most latest beacons read: installs with events pending.
const MAX_BEACONS: usize = 1_000_000;

/// One install's activity: bucket starts (ascending) and, from each to
/// the end, the earliest receipt of an event in or after it.
struct Install {
    starts: Vec<i64>,
    first_received_from: Vec<i64>,
}

impl Install {
    fn new(mut buckets: Vec<(i64, i64)>) -> Install {
        buckets.sort_unstable();
        let starts: Vec<i64> = buckets.iter().map(|b| b.0).collect();
        let mut first_received_from = vec![i64::MAX; buckets.len()];
        let mut min = i64::MAX;
        for (i, b) in buckets.iter().enumerate().rev() {
            min = min.min(b.1);
            first_received_from[i] = min;
        }
        Install {
            starts,
            first_received_from,
        }
    }

    /// Whether it had an event in `[from, to)`.
    fn active(&self, from: i64, to: i64) -> bool {
        let i = self.starts.partition_point(|s| *s < from);
        self.starts.get(i).is_some_and(|s| *s < to)
    }

    /// The earliest receipt of an event captured at or after `end`.
    fn first_received_after(&self, end: i64) -> Option<i64> {
        let i = self.starts.partition_point(|s| *s < end);
        self.first_received_from.get(i).copied()
    }
}

/// `GET /v1/query/finality[?from&to&tz&horizon_days=N]`.
pub(super) fn finality_answer(store: &dyn Store, p: &Params) -> Result<Value, QueryError> {
    let window = p.window()?;
    let (tz_name, tz) = p.tz()?;
    let horizon_days = p.number(
        "horizon_days",
        DEFAULT_HORIZON_DAYS,
        1..=365,
        "horizon_days must be 1 to 365",
    )?;
    let horizon_ms = horizon_days as i64 * DAY_MS;
    let now = clock::now_ms();
    let starts = time::day_starts(window.from, window.to, &tz).map_err(window_error)?;
    let first = starts.first().copied().unwrap_or(window.from);

    let source = p.source();
    let rows = on_store(store, |s| s.install_activity(first, QUANTUM_MS, source))?;
    let mut by_install: FastMap<String, Vec<(i64, i64)>> = FastMap::new();
    for (install, bucket, received) in rows {
        by_install
            .entry(install)
            .or_default()
            .push((bucket.saturating_mul(QUANTUM_MS), received));
    }
    let installs: Vec<(String, Install)> = by_install
        .into_iter()
        .map(|(id, buckets)| (id, Install::new(buckets)))
        .collect();
    let index: FastMap<&str, usize> = installs
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str(), i))
        .collect();
    // Of one source: its installs' gaps and beacons (an install's beacon
    // and completeness are its owner's).
    let owned: Option<HashSet<String>> = match source {
        Some(source) => Some(
            on_store(store, |s| s.installs_of(source))?
                .into_iter()
                .collect(),
        ),
        None => None,
    };
    let ours = |id: &str| owned.as_ref().is_none_or(|o| o.contains(id));
    let gaps: HashSet<String> = on_store(store, |s| s.installs_with_gaps())?
        .into_iter()
        .filter(|id| ours(id))
        .collect();
    let mut beacons = on_store(store, |s| s.stalled_installs(-1.0, MAX_BEACONS))?;
    beacons.retain(|b| ours(&b.install_id));

    let synced_past = |id: &str, end: i64| -> bool {
        !gaps.contains(id)
            && index
                .get(id)
                .and_then(|&i| installs[i].1.first_received_after(end))
                .is_some()
    };
    let mut days = Vec::with_capacity(starts.len().saturating_sub(1));
    for pair in starts.windows(2) {
        let (start, end) = (pair[0], pair[1]);
        let mut active = 0u64;
        let mut synced = 0u64;
        let mut waiting: HashSet<&str> = HashSet::new();
        let mut last_carried = end;
        for (id, install) in &installs {
            if !install.active(start, end) {
                continue;
            }
            active += 1;
            match install.first_received_after(end) {
                Some(at) if !gaps.contains(id) => {
                    synced += 1;
                    last_carried = last_carried.max(at);
                }
                _ => {
                    waiting.insert(id);
                }
            }
        }
        let mut pending_events = 0i64;
        for b in &beacons {
            let oldest = b.at - (b.oldest_pending_age_s * 1_000.0) as i64;
            let overlaps = oldest < end && b.at >= start;
            if overlaps && !synced_past(&b.install_id, end) {
                pending_events += b.pending;
                waiting.insert(&b.install_id);
            }
        }
        let (status, final_by, final_at) = if end > now {
            ("in_progress", None, None)
        } else if waiting.is_empty() {
            ("final", Some("synced"), Some(last_carried))
        } else if now >= end + horizon_ms {
            ("final", Some("horizon"), Some(end + horizon_ms))
        } else {
            ("waiting", None, None)
        };
        days.push(json!({
            "day": time::label(start, &tz),
            "active_installs": active,
            "synced_installs": synced,
            "synced_share": if active > 0 { json!(synced as f64 / active as f64) } else { Value::Null },
            "waiting_installs": waiting.len(),
            "pending_events": pending_events,
            "status": status,
            "final_by": final_by,
            "final_at": final_at.map(tally_proto::format_timestamp),
            "horizon_at": tally_proto::format_timestamp(end + horizon_ms),
        }));
    }
    Ok(json!({
        "tz": tz_name,
        "horizon_days": horizon_days,
        "installs_with_gaps": gaps.len(),
        "days": days,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_install_knows_its_days_and_first_receipt_after_one() {
        // Buckets at 0, 100 and 300, received at 50, 400 and 350.
        let i = Install::new(vec![(300, 350), (0, 50), (100, 400)]);
        assert!(i.active(0, 100));
        assert!(i.active(50, 150));
        assert!(!i.active(150, 300));
        assert_eq!(i.first_received_after(0), Some(50));
        // After 100: buckets 100 (received 400) and 300 (received 350).
        assert_eq!(i.first_received_after(100), Some(350));
        assert_eq!(i.first_received_after(301), None);
    }
}
