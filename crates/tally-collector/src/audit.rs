//! The audit trail: every read and admin action, and the refused
//! authentications, appended to the store's audit log
//! ([`crate::store::audit`]).
//!
//! # What a row holds
//!
//! | column | holds |
//! |---|---|
//! | `at` | when the request arrived (Unix ms; RFC 3339 in answers) |
//! | `key_id`, `role` | the key that made it (`at_…`, `rt_…`) and its role, when one was recognised |
//! | `action` | method and route template: `GET /v1/export`, `POST /v1/keys/{key_id}/revoke` |
//! | `params` | the path when it holds parameters, the query's parameters, and what the handler notes ([`AuditNote`]: the deleted user, the key made) |
//! | `client` | the client's address (of the TCP peer: see [`crate::client`]) |
//! | `status`, `outcome` | the status answered, and `ok`, `failed` or `denied` |
//! | `count` | 1, or the refusals a `denied` row stands for |
//!
//! Never a secret, never event content: bodies are not recorded (only
//! what a handler notes), a query parameter is recorded with its value
//! only if its name is one the API defines ([`RECORDED_PARAMS`]), and any
//! value or path segment that is a secret the key ring accepts is
//! replaced by `(secret)`. Tokens are read from the `Authorization`
//! header only, never from the query.
//!
//! # When it is written
//!
//! A request made with a recognised key is appended in the store before
//! its answer goes out (an export stream: before its first byte), so an
//! answered action has its row. Refusals (401, 403, 429 before the
//! handler) are not written one by one, since anyone can send them by the
//! thousand: they are counted in memory per (address bucket, action,
//! status) and written every [`DENIED_FLUSH_INTERVAL`] as one row each
//! with its count. At most [`MAX_DENIED_GROUPS`] addresses get groups of
//! their own per window; refusals from further addresses are counted
//! together under `other`. So a flood of failed logins costs a few rows a
//! window, and its size is in their counts.
//!
//! The audit log has its own retention (`[retention] audit_days`, default
//! [`crate::governance::retention::DEFAULT_AUDIT_DAYS`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::client::AddrBucket;
use crate::keyring::{digest, Ring};
use crate::store::audit::{AuditOutcome, AuditRecord};
use crate::store::{Store, StoreError};

/// How often the refusals counted in memory are written.
pub const DENIED_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Addresses with refusal rows of their own per window; the rest are
/// counted together as `other`.
pub const MAX_DENIED_GROUPS: usize = 256;

/// Longest parameter value recorded, in bytes (longer ones are cut).
pub const MAX_PARAM_BYTES: usize = 200;

/// Query parameters the API defines, recorded with their values; any
/// other is recorded by name only.
pub const RECORDED_PARAMS: &[&str] = &[
    "action",
    "after_seq",
    "before_id",
    "horizon_days",
    "by",
    "cursor",
    "days",
    "event",
    "format",
    "from",
    "interval",
    "key_id",
    "kind",
    "limit",
    "outcome",
    "reason",
    "since",
    "source",
    "stalled",
    "steps",
    "to",
    "tz",
    "until",
    "window",
    "window_s",
];

/// What a handler adds to its request's audit row (in the response's
/// extensions): the deleted user, the key made or changed.
#[derive(Debug, Clone, Default)]
pub struct AuditNote(pub Map<String, Value>);

impl AuditNote {
    /// A note of one field.
    pub fn of(name: &str, value: impl Into<Value>) -> AuditNote {
        let mut map = Map::new();
        map.insert(name.to_owned(), value.into());
        AuditNote(map)
    }

    /// The same note with another field.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> AuditNote {
        self.0.insert(name.to_owned(), value.into());
        self
    }
}

/// The address a row names: the IPv4 address, or the IPv6 /64.
pub fn client_text(bucket: Option<AddrBucket>) -> String {
    match bucket {
        None => "local".to_owned(),
        Some(AddrBucket::V4(o)) => std::net::Ipv4Addr::from(o).to_string(),
        Some(AddrBucket::V6(prefix)) => {
            let mut full = [0u8; 16];
            full[..8].copy_from_slice(&prefix);
            format!("{}/64", std::net::Ipv6Addr::from(full))
        }
    }
}

/// `value`, unless it is a secret the ring knows (then `(secret)`), cut to
/// [`MAX_PARAM_BYTES`].
fn safe(value: &str, ring: &Ring) -> String {
    if ring.find(&digest(value), i64::MIN).is_some() {
        return "(secret)".to_owned();
    }
    let mut end = value.len().min(MAX_PARAM_BYTES);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// The `params` of a row (see the module doc): `path` when it differs from
/// the template, the query's parameters, then the handler's note.
pub fn params(
    template: &str,
    path: &str,
    query: Option<&str>,
    note: Option<&AuditNote>,
    ring: &Ring,
) -> String {
    let mut out = Map::new();
    if path != template {
        let segments: Vec<String> = path.split('/').map(|s| safe(s, ring)).collect();
        out.insert("path".to_owned(), Value::String(segments.join("/")));
    }
    let pairs: Vec<(String, String)> = query
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    if !pairs.is_empty() {
        let mut q = Map::new();
        for (name, value) in pairs {
            let name = safe(&name, ring);
            let value = if RECORDED_PARAMS.contains(&name.as_str()) {
                safe(&value, ring)
            } else {
                "(not recorded)".to_owned()
            };
            q.insert(name, Value::String(value));
        }
        out.insert("query".to_owned(), Value::Object(q));
    }
    if let Some(note) = note {
        for (name, value) in &note.0 {
            let value = match value {
                Value::String(s) => Value::String(safe(s, ring)),
                other => other.clone(),
            };
            out.insert(name.clone(), value);
        }
    }
    Value::Object(out).to_string()
}

/// The refusals of the current window, by (address, action, status).
#[derive(Debug, Default)]
struct Window {
    groups: HashMap<(String, String, u16), u64>,
    addresses: std::collections::HashSet<String>,
}

/// Refusals counted in memory until written (see the module doc).
#[derive(Debug, Default)]
pub struct DeniedCounts {
    window: Mutex<Window>,
}

impl DeniedCounts {
    /// Counts one refusal of `action` with `status` from `client`.
    pub fn count(&self, client: Option<AddrBucket>, action: &str, status: u16) {
        let mut client = client_text(client);
        let mut window = match self.window.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !window.addresses.contains(&client) {
            if window.addresses.len() < MAX_DENIED_GROUPS {
                window.addresses.insert(client.clone());
            } else {
                client = "other".to_owned();
            }
        }
        *window
            .groups
            .entry((client, action.to_owned(), status))
            .or_insert(0) += 1;
    }

    /// The window's refusals as rows at `now`, and a new window.
    pub fn take(&self, now: i64) -> Vec<AuditRecord> {
        let window = {
            let mut window = match self.window.lock() {
                Ok(w) => w,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::take(&mut *window)
        };
        let mut rows: Vec<AuditRecord> = window
            .groups
            .into_iter()
            .map(|((client, action, status), count)| AuditRecord {
                at: now,
                key_id: None,
                role: None,
                action,
                params: "{}".to_owned(),
                client,
                status,
                outcome: AuditOutcome::Denied,
                count,
            })
            .collect();
        rows.sort_by(|a, b| {
            (&a.client, &a.action, a.status).cmp(&(&b.client, &b.action, b.status))
        });
        rows
    }

    /// Puts rows that could not be written back, to be written with the
    /// next window.
    fn restore(&self, rows: Vec<AuditRecord>) {
        let mut window = match self.window.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        for row in rows {
            window.addresses.insert(row.client.clone());
            *window
                .groups
                .entry((row.client, row.action, row.status))
                .or_insert(0) += row.count;
        }
    }

    /// Writes the window's refusals to `store` now (a store that fails
    /// gets them again next time).
    pub fn flush(&self, store: &dyn Store, now: i64) -> Result<(), StoreError> {
        let rows = self.take(now);
        if rows.is_empty() {
            return Ok(());
        }
        store
            .append_audit(&rows)
            .inspect_err(|_| self.restore(rows.clone()))
    }
}

/// Writes the counted refusals every `interval` until the runtime stops.
pub fn spawn_flusher(
    store: Arc<dyn Store>,
    denied: Arc<DeniedCounts>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let (store, denied) = (Arc::clone(&store), Arc::clone(&denied));
            let flushed = tokio::task::spawn_blocking(move || {
                denied.flush(store.as_ref(), crate::clock::now_ms())
            })
            .await;
            match flushed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "refused authentications not written to the audit log yet")
                }
                Err(e) => tracing::error!(error = %e, "the audit flush panicked"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::keys::KeyKind;

    #[test]
    fn params_keep_the_api_parameters_and_never_a_secret() {
        let ring = Ring::configured(&[(KeyKind::Admin, digest("the-admin-token-123"))]);
        let p = params(
            "/v1/installs/{install_id}/events",
            "/v1/installs/the-admin-token-123/events",
            Some("limit=5&token=the-admin-token-123&event=the-admin-token-123&q=x&from=2026"),
            Some(&AuditNote::of("userId", "u-1").with("n", 3)),
            &ring,
        );
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "path": "/v1/installs/(secret)/events",
                "query": {"limit": "5", "token": "(not recorded)", "event": "(secret)",
                          "q": "(not recorded)", "from": "2026"},
                "userId": "u-1",
                "n": 3,
            })
        );
        assert!(!p.contains("the-admin-token-123"));
        assert_eq!(params("/v1/stats", "/v1/stats", None, None, &ring), "{}");
        let long = "é".repeat(150);
        let cut = params("/x", "/x", Some(&format!("event={long}")), None, &ring);
        let v: Value = serde_json::from_str(&cut).unwrap();
        assert_eq!(v["query"]["event"].as_str().unwrap().len(), 200);
    }

    #[test]
    fn refusals_group_by_address_and_overflow_into_other() {
        let counts = DeniedCounts::default();
        let v4 = |n: u32| Some(AddrBucket::V4(n.to_be_bytes()));
        for _ in 0..10_000 {
            counts.count(v4(1), "GET /v1/stats", 401);
        }
        counts.count(v4(1), "GET /v1/stats", 429);
        for n in 0..(MAX_DENIED_GROUPS as u32 + 50) {
            counts.count(v4(1_000 + n), "GET /v1/export", 401);
        }
        let rows = counts.take(7);
        // One row per address that had one, one for the 10,000 and one
        // for the throttled, and one `other` for the 51 past the limit.
        assert_eq!(rows.len(), MAX_DENIED_GROUPS + 2);
        let of = |client: &str, status: u16| {
            rows.iter()
                .find(|r| r.client == client && r.status == status)
                .map(|r| r.count)
        };
        assert_eq!(of("0.0.0.1", 401), Some(10_000));
        assert_eq!(of("0.0.0.1", 429), Some(1));
        assert_eq!(of("other", 401), Some(51));
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 10_001 + 306);
        assert!(rows
            .iter()
            .all(|r| r.outcome == AuditOutcome::Denied && r.at == 7));
        assert!(counts.take(8).is_empty());
        assert_eq!(
            client_text(Some(AddrBucket::V6([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2]))),
            "2001:db8:1:2::/64"
        );
    }
}
