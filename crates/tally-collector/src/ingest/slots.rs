//! Ingest slots: what a request holds while its body is read, decoded and
//! stored. There are two pools, so a client without credentials can never
//! take the slots of one that has them.
//!
//! | the key is in | checked | pool | body limit | read cap |
//! |---|---|---|---|---|
//! | a header or the `writeKey` query parameter | before a slot or a body byte is spent | `max_in_flight` slots | [`tally_proto::limits::MAX_BODY_BYTES`] | [`body::BODY_READ_TIMEOUT`] |
//! | the body only (browsers' analytics-next, odd clients) | after the body is read | [`BODY_KEY_SLOTS`], at most [`BODY_KEY_SLOTS_PER_CLIENT`] per client address | [`BODY_KEY_MAX_BYTES`] | [`BODY_KEY_READ_TIMEOUT`] |
//!
//! Both pools answer 429 with `Retry-After` at once when full; both read
//! bodies under the rate rule of [`body`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::body;
use crate::client::AddrBucket;

/// Slots for requests whose key can only be in the body. Such a request is
/// one small message from a browser (analytics-next posts each event
/// alone, about 2 KB, read in milliseconds), so 16 slots serve thousands of
/// requests a second, and a client without a key that holds them all
/// blocks only other body-key clients, for at most [`BODY_KEY_READ_TIMEOUT`].
pub const BODY_KEY_SLOTS: usize = 16;

/// Body-key slots one client address may hold at once: a hostile client
/// needs several addresses to hold the pool, and a browser sends one
/// request at a time (four leaves room for a few tabs behind one NAT).
pub const BODY_KEY_SLOTS_PER_CLIENT: usize = 4;

/// Largest body (as sent) of a request whose key is in the body: the
/// Segment API's batch limit (500 KB), which analytics-next's batching mode
/// stays under.
pub const BODY_KEY_MAX_BYTES: usize = 512 * 1024;

/// Longest a body-key request may take to send its body: 512 KiB needs
/// 420 kbit/s to fit, which a browser that can load the page has.
pub const BODY_KEY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The body-key pool.
#[derive(Debug)]
pub struct BodyKeySlots {
    slots: Arc<Semaphore>,
    /// Slots held per client; an entry exists only while it holds one, so
    /// the map has at most [`BODY_KEY_SLOTS`] entries.
    held: Mutex<HashMap<AddrBucket, usize>>,
}

impl Default for BodyKeySlots {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(BODY_KEY_SLOTS)),
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl BodyKeySlots {
    /// A slot for a request from `client` (`None`: made in-process, counted
    /// in the pool only), or `None` when the pool or the client's share is
    /// full.
    pub fn try_acquire(self: &Arc<Self>, client: Option<AddrBucket>) -> Option<IngestSlot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        if let Some(bucket) = client {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let count = held.entry(bucket).or_insert(0);
            if *count >= BODY_KEY_SLOTS_PER_CLIENT {
                return None;
            }
            *count += 1;
        }
        Some(IngestSlot::BodyKey {
            _permit: permit,
            client: client.map(|bucket| (Arc::clone(self), bucket)),
        })
    }

    fn release(&self, bucket: AddrBucket) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&bucket) {
            *count -= 1;
            if *count == 0 {
                held.remove(&bucket);
            }
        }
    }
}

/// A slot of either pool, released when dropped.
#[derive(Debug)]
pub enum IngestSlot {
    /// A slot of the `max_in_flight` pool.
    Keyed(OwnedSemaphorePermit),
    /// A slot of the body-key pool, and the client share it counts in.
    BodyKey {
        /// The pool's permit.
        _permit: OwnedSemaphorePermit,
        /// The client's share to give back.
        client: Option<(Arc<BodyKeySlots>, AddrBucket)>,
    },
}

impl Drop for IngestSlot {
    fn drop(&mut self) {
        if let Self::BodyKey {
            client: Some((pool, bucket)),
            ..
        } = self
        {
            pool.release(*bucket);
        }
    }
}

/// The limit and read cap of a request's body, by the pool it is in.
pub fn body_bounds(keyed: bool, max_body_bytes: usize) -> (usize, Duration) {
    if keyed {
        (max_body_bytes, body::BODY_READ_TIMEOUT)
    } else {
        (
            max_body_bytes.min(BODY_KEY_MAX_BYTES),
            BODY_KEY_READ_TIMEOUT,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_holds_at_most_its_share_and_gives_it_back() {
        let pool = Arc::new(BodyKeySlots::default());
        let a = AddrBucket::V4([192, 0, 2, 1]);
        let b = AddrBucket::V4([192, 0, 2, 2]);
        let held: Vec<IngestSlot> = (0..BODY_KEY_SLOTS_PER_CLIENT)
            .map(|_| pool.try_acquire(Some(a)).unwrap())
            .collect();
        assert!(pool.try_acquire(Some(a)).is_none());
        // The refused attempt gave its pool permit back.
        assert_eq!(
            pool.slots.available_permits(),
            BODY_KEY_SLOTS - BODY_KEY_SLOTS_PER_CLIENT
        );
        let other = pool.try_acquire(Some(b)).unwrap();
        drop(held);
        assert_eq!(pool.held.lock().unwrap().len(), 1);
        assert!(pool.try_acquire(Some(a)).is_some());
        drop(other);
        assert!(pool.held.lock().unwrap().is_empty());
        assert_eq!(pool.slots.available_permits(), BODY_KEY_SLOTS);
    }

    #[test]
    fn the_pool_is_bounded_for_in_process_requests_too() {
        let pool = Arc::new(BodyKeySlots::default());
        let held: Vec<IngestSlot> = (0..BODY_KEY_SLOTS)
            .map(|_| pool.try_acquire(None).unwrap())
            .collect();
        assert!(pool.try_acquire(None).is_none());
        drop(held);
        assert!(pool.try_acquire(None).is_some());
    }
}
