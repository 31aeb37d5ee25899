//! Data quality: what the tracking plan found in the events a store took,
//! counted in the store so the answer is the fleet's (several collectors
//! share a PostgreSQL store) and survives restarts.
//!
//! | table | key | holds |
//! |---|---|---|
//! | `quality_counts` | hour, source, event, version, finding, rule, path | events accepted with the finding, events rejected for it, first and last seen |
//! | `quality_examples` | the same key but the hour | the [`MAX_EXAMPLES`] newest: message id, received time, the finding's detail |
//!
//! `finding` is the plan's code (`plan_violation`, `unplanned`,
//! `unknown_version`, `deprecated`); `rule` and `path` are the first
//! violation's schema keyword and JSON pointer (empty for the others). An
//! unplanned event is counted under the name it was sent with. An example
//! keeps the detail a dead letter keeps (the rule and where, never a
//! property's value).
//!
//! Findings are counted in the transaction that stores the batch: one on
//! an event only if the store accepted it (a duplicate, a retried batch
//! included, is not counted again); one on a message rejected by the plan
//! (`enforce`) with its dead letter, each time it is rejected (as the
//! `rejected` total counts it: a rejected message is not stored, so a
//! sender that sends it again is told again).
//!
//! The violations among them (`plan_violation`, flagged or rejected) are
//! also added to the `plan_violations` counter of the batch's counter row
//! (each backend's `write_quality`), which is never pruned: the cumulative total the
//! alert on the violation rate takes deltas of, beside `accepted` and
//! `rejected` ([`super::HealthTotals`]).
//!
//! Both tables are pruned with the health figures
//! ([`HealthStore::prune_health`](super::HealthStore::prune_health), after
//! [`super::health::HEALTH_RETENTION_MS`]): unplanned names are whatever a
//! client sends, so the rows they make must not stay forever.

use super::{StoreError, WriteOutcome};

/// Examples kept per counted key.
pub const MAX_EXAMPLES: i64 = 3;

/// An hour, in ms.
const HOUR_MS: i64 = 3_600_000;

/// The finding of an event that breaks its version's schema.
pub const PLAN_VIOLATION: &str = "plan_violation";

/// What the plan found in one message of a batch, for the store to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualityFinding {
    /// The index of its event in the batch's events, or `None` when the
    /// message was rejected (its dead letter is in the batch).
    pub event_index: Option<usize>,
    /// The source (write key id).
    pub source: String,
    /// The event's name as sent.
    pub event: String,
    /// The version it was judged by (0 if none).
    pub version: u32,
    /// The finding's code.
    pub finding: &'static str,
    /// The first violation's schema keyword, or empty.
    pub rule: String,
    /// The first violation's JSON pointer, or empty.
    pub path: String,
    /// The message id, if it had one.
    pub message_id: Option<String>,
    /// Collector clock at receipt, Unix ms.
    pub received_at: i64,
    /// The finding in words (no values).
    pub detail: String,
}

impl QualityFinding {
    /// Whether the message was rejected for it.
    pub fn rejected(&self) -> bool {
        self.event_index.is_none()
    }

    /// The hour its counts go to (Unix ms, start of the hour).
    pub(crate) fn hour(&self) -> i64 {
        self.received_at.div_euclid(HOUR_MS) * HOUR_MS
    }
}

/// The findings of a batch a store counts, given its events' outcomes,
/// sorted by key (the order PostgreSQL transactions lock the rows in).
pub(crate) fn counted<'f>(
    findings: &'f [QualityFinding],
    outcomes: &[WriteOutcome],
) -> Vec<&'f QualityFinding> {
    let mut counted: Vec<&QualityFinding> = findings
        .iter()
        .filter(|f| match f.event_index {
            None => true,
            Some(i) => outcomes.get(i) == Some(&WriteOutcome::Accepted),
        })
        .collect();
    counted.sort_by(|a, b| {
        (
            a.hour(),
            &a.source,
            &a.event,
            a.version,
            a.finding,
            &a.rule,
            &a.path,
        )
            .cmp(&(
                b.hour(),
                &b.source,
                &b.event,
                b.version,
                b.finding,
                &b.rule,
                &b.path,
            ))
    });
    counted
}

/// The plan violations among the findings a batch counts (see
/// [`counted`]): what it adds to the `plan_violations` counter.
pub(crate) fn violations(counted: &[&QualityFinding]) -> i64 {
    counted
        .iter()
        .filter(|f| f.finding == PLAN_VIOLATION)
        .count() as i64
}

/// Adds one finding: `$1` hour, `$2` source, `$3` event, `$4` version,
/// `$5` finding, `$6` rule, `$7` path, `$8` accepted, `$9` rejected, `$10`
/// received time. Written once for both stores.
pub(crate) const UPSERT_COUNT_SQL: &str = "INSERT INTO quality_counts (hour, source, event, \
    version, finding, rule, path, accepted, rejected, first_seen, last_seen) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
    ON CONFLICT (hour, source, event, version, finding, rule, path) DO UPDATE SET \
    accepted = quality_counts.accepted + excluded.accepted, \
    rejected = quality_counts.rejected + excluded.rejected, \
    first_seen = CASE WHEN excluded.first_seen < quality_counts.first_seen \
        THEN excluded.first_seen ELSE quality_counts.first_seen END, \
    last_seen = CASE WHEN excluded.last_seen > quality_counts.last_seen \
        THEN excluded.last_seen ELSE quality_counts.last_seen END";

/// Keeps one example: `$1` source … `$6` path as the key (no hour), `$7`
/// message id, `$8` received time, `$9` detail, `$10` rejected (0 or 1).
pub(crate) const INSERT_EXAMPLE_SQL: &str = "INSERT INTO quality_examples (source, event, \
    version, finding, rule, path, message_id, received_at, detail, rejected) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Deletes the examples of one key (`$1`..`$6`) past the newest
/// [`MAX_EXAMPLES`] (`$7`).
pub(crate) const PRUNE_EXAMPLES_SQL: &str = "DELETE FROM quality_examples \
    WHERE source = $1 AND event = $2 AND version = $3 AND finding = $4 AND rule = $5 \
    AND path = $6 AND example_id NOT IN (SELECT example_id FROM quality_examples \
    WHERE source = $1 AND event = $2 AND version = $3 AND finding = $4 AND rule = $5 \
    AND path = $6 ORDER BY received_at DESC, example_id DESC LIMIT $7)";

/// The counts of a window: `$1` from hour, `$2` to (exclusive), `$3`
/// source, `$4` event; a NULL parameter filters nothing. Summed over
/// sources and hours.
pub(crate) const COUNTS_SQL: &str = "SELECT event, version, finding, rule, path, \
    CAST(SUM(accepted) AS BIGINT), CAST(SUM(rejected) AS BIGINT), MIN(first_seen), MAX(last_seen) FROM quality_counts \
    WHERE (CAST($1 AS BIGINT) IS NULL OR hour >= $1) \
      AND (CAST($2 AS BIGINT) IS NULL OR hour < $2) \
      AND (CAST($3 AS TEXT) IS NULL OR source = $3) \
      AND (CAST($4 AS TEXT) IS NULL OR event = $4) \
    GROUP BY event, version, finding, rule, path \
    ORDER BY event, version, finding, rule, path";

/// The newest examples of one counted row (`$1` event .. `$5` path)
/// received in the window (`$6` from, `$7` to) of `$8` source, at most
/// `$9`.
pub(crate) const EXAMPLES_SQL: &str = "SELECT message_id, source, received_at, detail, \
    rejected FROM quality_examples \
    WHERE event = $1 AND version = $2 AND finding = $3 AND rule = $4 AND path = $5 \
      AND (CAST($6 AS BIGINT) IS NULL OR received_at >= $6) \
      AND (CAST($7 AS BIGINT) IS NULL OR received_at < $7) \
      AND (CAST($8 AS TEXT) IS NULL OR source = $8) \
    ORDER BY received_at DESC, example_id DESC LIMIT $9";

/// Which findings to read (`GET /v1/quality`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QualityQuery {
    /// Received at or after this (Unix ms; counts are kept by the hour, so
    /// the window is rounded out to whole hours for them).
    pub from: Option<i64>,
    /// Received before this (Unix ms).
    pub to: Option<i64>,
    /// Only this source's events.
    pub source: Option<String>,
    /// Only events of this name.
    pub event: Option<String>,
}

impl QualityQuery {
    /// `from` rounded down to its hour.
    pub(crate) fn start_hour(&self) -> Option<i64> {
        self.from.map(|f| f.div_euclid(HOUR_MS) * HOUR_MS)
    }

    /// `to` rounded up to an hour.
    pub(crate) fn end_hour(&self) -> Option<i64> {
        self.to
            .map(|t| t.div_euclid(HOUR_MS) * HOUR_MS + if t % HOUR_MS == 0 { 0 } else { HOUR_MS })
    }
}

/// One kept example of a finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct QualityExample {
    /// The message id, if it had one.
    pub message_id: Option<String>,
    /// The source that sent it.
    pub source: String,
    /// Collector clock at receipt, Unix ms.
    pub received_at: i64,
    /// The finding in words: the rule and where, never a value.
    pub detail: String,
    /// Whether it was rejected (`enforce`) rather than accepted and flagged.
    pub rejected: bool,
}

/// One finding of one event version, counted over the window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct QualityRow {
    /// The event's name as sent.
    pub event: String,
    /// The version it was judged by (0 if none).
    pub version: u32,
    /// `plan_violation`, `unplanned`, `unknown_version` or `deprecated`.
    pub finding: String,
    /// The schema keyword of a violation (`required`, `type`, ...), else
    /// empty.
    pub rule: String,
    /// Where a violation is (JSON pointer), else empty.
    pub path: String,
    /// Events accepted with it (`warn`, and every finding but a violation).
    pub flagged: u64,
    /// Events rejected for it (`enforce`).
    pub rejected: u64,
    /// First seen, Unix ms (collector clock).
    pub first_seen: i64,
    /// Last seen, Unix ms.
    pub last_seen: i64,
    /// The newest examples, newest first, at most [`MAX_EXAMPLES`].
    pub examples: Vec<QualityExample>,
}

/// Reading the quality counts back.
pub trait QualityStore {
    /// Every counted finding `q` selects, by event, version, finding, rule
    /// and path, with the newest examples of each.
    fn quality(&self, q: &QualityQuery) -> Result<Vec<QualityRow>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_rounds_out_to_whole_hours() {
        let q = QualityQuery {
            from: Some(HOUR_MS + 5),
            to: Some(2 * HOUR_MS + 1),
            ..QualityQuery::default()
        };
        assert_eq!(q.start_hour(), Some(HOUR_MS));
        assert_eq!(q.end_hour(), Some(3 * HOUR_MS));
        let exact = QualityQuery {
            to: Some(2 * HOUR_MS),
            ..QualityQuery::default()
        };
        assert_eq!(exact.end_hour(), Some(2 * HOUR_MS));
    }
}
