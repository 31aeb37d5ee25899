//! The alert sender lease and notification outbox on PostgreSQL (see
//! [`crate::alerts`]): one collector at a time holds the lease, by the
//! server's clock; it queues state changes in the transaction that renews
//! the lease, and records every delivery attempt.

use super::{pg_error, PostgresStore};
use crate::store::outbox::{AlertOutbox, Attempt, QueuedNotification, RuleNotice};
use crate::store::StoreError;
use std::collections::HashMap;
use std::time::Duration;

/// The server's clock in Unix ms: leases compare times of one clock,
/// whatever the collectors' clocks say.
const SERVER_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::int8";

impl AlertOutbox for PostgresStore {
    fn release_alert_lease(&self, holder: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.get()?;
        conn.client
            .execute(
                "UPDATE alert_sender SET expires_at = 0 WHERE holder = $1",
                &[&holder],
            )
            .map(|n| n > 0)
            .map_err(pg_error)
    }

    fn alert_round(
        &self,
        holder: &str,
        lease: Duration,
        rules: &[RuleNotice<'_>],
    ) -> Result<bool, StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.pool.get()?;
        let mut tx = conn.client.transaction().map_err(pg_error)?;
        // The lease row stays locked until the commit, held or not: the
        // rounds of all collectors take turns, so the holder's check and
        // its writes below are one step.
        let held = tx
            .query_opt(
                &format!(
                    "INSERT INTO alert_sender AS s (id, holder, expires_at) \
                     VALUES (1, $1, {SERVER_NOW_MS} + $2) ON CONFLICT (id) DO UPDATE \
                     SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE s.holder = excluded.holder OR s.expires_at <= {SERVER_NOW_MS} \
                     RETURNING holder"
                ),
                &[&holder, &lease_ms],
            )
            .map_err(pg_error)?
            .is_some();
        if held {
            let queued: HashMap<String, String> = tx
                .query("SELECT rule, state FROM alert_states", &[])
                .map_err(pg_error)?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, ::postgres::Error>>()
                .map_err(pg_error)?;
            for notice in rules {
                let last = queued.get(notice.rule).map_or("ok", String::as_str);
                if last == notice.state {
                    continue;
                }
                tx.execute(
                    &format!(
                        "INSERT INTO alert_outbox (rule, body, queued_at) \
                         VALUES ($1, $2, {SERVER_NOW_MS})"
                    ),
                    &[&notice.rule, &notice.body],
                )
                .map_err(pg_error)?;
                tx.execute(
                    "INSERT INTO alert_states (rule, state) VALUES ($1, $2) \
                     ON CONFLICT (rule) DO UPDATE SET state = excluded.state",
                    &[&notice.rule, &notice.state],
                )
                .map_err(pg_error)?;
            }
        }
        tx.commit().map_err(pg_error)?;
        Ok(held)
    }

    fn next_notification(
        &self,
        holder: &str,
        margin: Duration,
    ) -> Result<Option<QueuedNotification>, StoreError> {
        let margin_ms = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.pool.get()?;
        let row = conn
            .client
            .query_opt(
                &format!(
                    "SELECT o.id, o.rule, o.body, o.attempts FROM alert_outbox o \
                     WHERE o.done_at IS NULL AND EXISTS (SELECT 1 FROM alert_sender s \
                     WHERE s.id = 1 AND s.holder = $1 AND s.expires_at > {SERVER_NOW_MS} + $2) \
                     ORDER BY o.id LIMIT 1"
                ),
                &[&holder, &margin_ms],
            )
            .map_err(pg_error)?;
        row.map(|r| {
            Ok(QueuedNotification {
                id: r.try_get(0)?,
                rule: r.try_get(1)?,
                body: r.try_get(2)?,
                attempts: r.try_get::<_, i32>(3)?.max(0) as u32,
            })
        })
        .transpose()
        .map_err(pg_error)
    }

    fn notification_attempted(&self, id: i64, attempt: Attempt) -> Result<bool, StoreError> {
        let (delivered, max_attempts) = match attempt {
            Attempt::Delivered => (true, 0),
            Attempt::Failed { max_attempts } => {
                (false, i32::try_from(max_attempts).unwrap_or(i32::MAX))
            }
        };
        let mut conn = self.pool.get()?;
        let row = conn
            .client
            .query_opt(
                &format!(
                    "UPDATE alert_outbox SET attempts = attempts + 1, delivered = $2, \
                     done_at = CASE WHEN $2 OR attempts + 1 >= $3 THEN {SERVER_NOW_MS} END \
                     WHERE id = $1 AND done_at IS NULL RETURNING done_at IS NOT NULL"
                ),
                &[&id, &delivered, &max_attempts],
            )
            .map_err(pg_error)?;
        match row {
            Some(r) => r.try_get(0).map_err(pg_error),
            // Already done with (recorded by another collector).
            None => Ok(true),
        }
    }
}
