//! The audit log in the store ([`AuditStore`]): rows appended by the
//! collector's audit layer ([`crate::audit`]), read newest first in pages
//! with filters, and expired by their own retention.

use super::StoreError;

/// What became of an audited request.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// Answered with success (2xx).
    Ok,
    /// Authenticated, and answered with an error (4xx other than the
    /// refusals below, or 5xx).
    Failed,
    /// Refused before the handler: no credential, an unknown, revoked or
    /// expired one, one short of the route's role, or a throttled client
    /// (401, 403, 429). Such rows aggregate a window of refusals.
    Denied,
}

impl AuditOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Denied => "denied",
        }
    }

    pub(crate) fn from_stored(code: &str) -> Result<Self, StoreError> {
        match code {
            "ok" => Ok(Self::Ok),
            "failed" => Ok(Self::Failed),
            "denied" => Ok(Self::Denied),
            other => Err(StoreError::Backend(format!(
                "unknown audit outcome {other:?} in the store"
            ))),
        }
    }
}

/// One audit row to append.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// When the request arrived (or the refusal window ended), Unix ms.
    pub at: i64,
    /// The id of the key that made it, when one was recognised.
    pub key_id: Option<String>,
    /// That key's role (`read`, `admin`).
    pub role: Option<String>,
    /// Method and route template: `GET /v1/export`.
    pub action: String,
    /// The request's parameters as a JSON object (never event content,
    /// never a secret: see [`crate::audit`]).
    pub params: String,
    /// The client's address (for refusals: its address bucket).
    pub client: String,
    /// The HTTP status answered.
    pub status: u16,
    /// What became of it.
    pub outcome: AuditOutcome,
    /// Requests this row stands for: 1, or the refusals of a window.
    pub count: u64,
}

/// An audit row as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    /// Its position: ids grow with appends.
    pub id: i64,
    /// The row.
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// Which rows [`AuditStore::audit_page`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// At or after, Unix ms.
    pub from: Option<i64>,
    /// Before, Unix ms.
    pub to: Option<i64>,
    /// Of this key.
    pub key_id: Option<String>,
    /// With this outcome.
    pub outcome: Option<AuditOutcome>,
    /// With this action (`GET /v1/export`).
    pub action: Option<String>,
    /// With an id below this (the previous page's last id).
    pub before_id: Option<i64>,
}

/// The audit log.
pub trait AuditStore {
    /// Appends `records` in one transaction.
    fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError>;

    /// Rows matching `filter`, newest (highest id) first, at most `limit`.
    fn audit_page(&self, filter: &AuditFilter, limit: usize) -> Result<Vec<AuditRow>, StoreError>;

    /// Deletes at most `limit` rows older than `before` (Unix ms), in one
    /// short transaction; returns how many.
    fn expire_audit(&self, before: i64, limit: usize) -> Result<u64, StoreError>;
}

/// The `WHERE` clause of a page, with placeholders `p(1)..p(6)` for from,
/// to, key id, outcome, action and before id (each `NULL` when unset), and
/// `p(7)` for the limit.
pub(crate) fn page_sql(p: impl Fn(usize) -> String) -> String {
    format!(
        "SELECT row_id, at, key_id, role, action, params, client, status, outcome, count \
         FROM audit_log WHERE ({a} IS NULL OR at >= {a}) AND ({b} IS NULL OR at < {b}) \
         AND ({c} IS NULL OR key_id = {c}) AND ({d} IS NULL OR outcome = {d}) \
         AND ({e} IS NULL OR action = {e}) AND ({f} IS NULL OR row_id < {f}) \
         ORDER BY row_id DESC LIMIT {g}",
        a = p(1),
        b = p(2),
        c = p(3),
        d = p(4),
        e = p(5),
        f = p(6),
        g = p(7),
    )
}

/// A stored row's columns, read alike by both stores.
pub(crate) type AuditColumns = (
    i64,
    i64,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
    i64,
    String,
    i64,
);

pub(crate) fn row(c: AuditColumns) -> Result<AuditRow, StoreError> {
    let (id, at, key_id, role, action, params, client, status, outcome, count) = c;
    Ok(AuditRow {
        id,
        record: AuditRecord {
            at,
            key_id,
            role,
            action,
            params,
            client,
            status: u16::try_from(status).unwrap_or(0),
            outcome: AuditOutcome::from_stored(&outcome)?,
            count: count.max(0) as u64,
        },
    })
}
