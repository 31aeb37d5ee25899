//! Alert notifications shared by the collectors of one store: a sender
//! lease and an outbox (see [`crate::alerts`] for the design).
//!
//! Only a store several collectors share needs them: the PostgreSQL store
//! implements [`AlertOutbox`]; SQLite (one collector) has none and its
//! collector POSTs state changes straight from memory.

use std::time::Duration;

use super::StoreError;

/// What one collector's rules stand at, as a notification would say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleNotice<'a> {
    /// The rule.
    pub rule: &'a str,
    /// Its state (`ok`, `pending`, `firing`).
    pub state: &'a str,
    /// The JSON body to POST if this state is news.
    pub body: &'a str,
}

/// A notification the sender owes the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedNotification {
    /// Its place in the outbox; notifications go out in this order.
    pub id: i64,
    /// The rule it is about.
    pub rule: String,
    /// The JSON body.
    pub body: String,
    /// Attempts made so far, by any collector.
    pub attempts: u32,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The webhook answered 2xx.
    Delivered,
    /// It did not; the notification is given up after `max_attempts`.
    Failed {
        /// Attempts allowed in all.
        max_attempts: u32,
    },
}

/// The alert sender lease and the notification outbox of a shared store.
pub trait AlertOutbox: Send + Sync {
    /// One evaluation's turn, in one transaction: takes or renews the
    /// sender lease for `holder` for `lease` (it can be taken from
    /// another holder only once it expired), and while `holder` holds it,
    /// queues a notification for each rule whose state differs from the
    /// last state queued for it (none: `ok`). Returns whether `holder` is
    /// the sender.
    fn alert_round(
        &self,
        holder: &str,
        lease: Duration,
        rules: &[RuleNotice<'_>],
    ) -> Result<bool, StoreError>;

    /// The oldest notification neither delivered nor given up, if
    /// `holder` holds the lease for at least `margin` more (the longest
    /// an attempt takes): no other collector can take over before an
    /// attempt started now has ended.
    fn next_notification(
        &self,
        holder: &str,
        margin: Duration,
    ) -> Result<Option<QueuedNotification>, StoreError>;

    /// Records an attempt at notification `id`; returns whether it is
    /// done with (delivered, or given up after its last attempt).
    fn notification_attempted(&self, id: i64, attempt: Attempt) -> Result<bool, StoreError>;

    /// Ends `holder`'s lease now, if it holds it: the next collector to
    /// evaluate takes it over. Only for a sender that has stopped sending
    /// (no attempt in flight). Returns whether it held the lease.
    fn release_alert_lease(&self, holder: &str) -> Result<bool, StoreError>;
}
