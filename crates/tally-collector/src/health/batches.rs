//! Ingest requests that reach no write transaction: refused before the
//! store (401, 400, 413, 429, 503, ...) or empty. They are counted here,
//! in memory and per hour, and added to the store's request counts by
//! [`BatchCounter::flush`] (the health task calls it every refresh, the
//! pipeline endpoint before it reads, and `tally serve` at shutdown). A
//! request that writes is counted by its own write transaction instead.
//!
//! Loss window: the counts of the last refresh interval are lost if the
//! process is killed; a failed flush keeps them for the next one.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::store::health::hour_of;
use crate::store::{Store, StoreError};

/// Requests not yet in the store, by hour: (requests, answered 200).
#[derive(Debug, Default)]
pub struct BatchCounter {
    pending: Mutex<BTreeMap<i64, (u64, u64)>>,
}

impl BatchCounter {
    /// Counts one request received at `at` (Unix ms).
    pub fn record(&self, at: i64, succeeded: bool) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending.entry(hour_of(at)).or_default();
        entry.0 += 1;
        entry.1 += u64::from(succeeded);
    }

    /// Requests counted and not yet flushed.
    pub fn unflushed(&self) -> u64 {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.values().map(|v| v.0).sum()
    }

    /// Adds the counted requests to the store. What could not be written
    /// is kept for the next flush.
    pub fn flush(&self, store: &dyn Store) -> Result<(), StoreError> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let mut failure = None;
        let mut left = BTreeMap::new();
        for (hour, (batches, succeeded)) in taken {
            if failure.is_some() {
                left.insert(hour, (batches, succeeded));
                continue;
            }
            if let Err(e) = store.add_batches(hour, batches, succeeded) {
                left.insert(hour, (batches, succeeded));
                failure = Some(e);
            }
        }
        if !left.is_empty() {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (hour, (batches, succeeded)) in left {
                let entry = pending.entry(hour).or_default();
                entry.0 += batches;
                entry.1 += succeeded;
            }
        }
        failure.map_or(Ok(()), Err)
    }
}
