//! Reading dead letters back: which ones ([`DeadLetterQuery`]: by reason,
//! by time of receipt, a page at a time) and the one statement both stores
//! run for it.
//!
//! Pages are read newest first by a keyset cursor on the row id: a page
//! ends with the id of its last row, and the next page asks for rows
//! `before` it, so a page costs the same however deep it is, and rows
//! written while an operator pages do not shift what the next page holds.
//! The table is bounded by rows and bytes (see
//! [`super::DeadLetterLimits`]), so a filter by reason walks at most that
//! many rows; the filter by time uses the index on the receipt time.

/// Which dead letters to read, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterQuery {
    /// Only those rejected for this reason code.
    pub reason: Option<String>,
    /// Only those received at or after this (Unix ms, collector clock).
    pub since: Option<i64>,
    /// Only those received before this (Unix ms, collector clock).
    pub until: Option<i64>,
    /// Only those older than this row id (the previous page's last `id`).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

impl DeadLetterQuery {
    /// The `limit` most recent dead letters, unfiltered.
    pub fn newest(limit: usize) -> DeadLetterQuery {
        DeadLetterQuery {
            limit,
            ..DeadLetterQuery::default()
        }
    }
}

/// A dead letter as stored (read back for inspection).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct StoredDeadLetter {
    /// The row id: the cursor for the next page (`before`).
    pub id: i64,
    /// The `messageId`, if one could be read.
    pub message_id: Option<String>,
    /// The reason code ([`tally_proto::RejectReason::as_str`]).
    pub reason: String,
    /// Which rule, in words.
    pub detail: String,
    /// Collector clock at receipt, Unix ms.
    pub received_at: i64,
    /// The message JSON as received (as far as it was kept).
    pub raw: String,
}

/// The page [`DeadLetterQuery`] asks for: `$1` reason, `$2` since, `$3`
/// until, `$4` before, `$5` limit; a NULL parameter filters nothing.
/// Written once for both stores (`CAST` is the syntax both accept).
pub(crate) const PAGE_SQL: &str =
    "SELECT row_id, message_id, reason, detail, received_at, raw FROM dead_letters \
     WHERE (CAST($1 AS TEXT) IS NULL OR reason = $1) \
       AND (CAST($2 AS BIGINT) IS NULL OR received_at >= $2) \
       AND (CAST($3 AS BIGINT) IS NULL OR received_at < $3) \
       AND (CAST($4 AS BIGINT) IS NULL OR row_id < $4) \
     ORDER BY row_id DESC LIMIT $5";

/// `limit` as the statement's parameter.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
