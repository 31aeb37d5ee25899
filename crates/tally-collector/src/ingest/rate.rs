//! A request rate per write key, so one app cannot take the ingest
//! capacity every app shares.
//!
//! Each source (write key, by its id) has a token bucket of `burst`
//! requests, refilled at `per_s` a second. An ingest request takes one
//! token once its key is known: at the gate for a key in a header (before
//! a slot or a body byte is spent), after the envelope for a key in the
//! body or the query. A source whose bucket is empty is answered **429
//! with `Retry-After`** (the seconds until it has a token again) and
//! counted (`tally_ingest_key_limited_total`), and its requests cost the
//! other sources nothing. The SDKs already back off on 429 and keep what
//! they hold, so a limited app loses nothing: it sends later.
//!
//! The limit counts requests, not events: it is known before the body is
//! read, and the SDKs batch (up to 500 events a request), so a well-behaved
//! app sends few requests. It is off by default (`--key-rate`): a
//! collector serving one app has no one to protect from it.
//!
//! The table holds one bucket per source that sent, and sources exist only
//! for configured keys, so it is bounded by the number of keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::throttle::Bucket;

/// Requests a second and burst of one source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyRate {
    /// Tokens added a second.
    pub per_s: f64,
    /// Tokens a bucket holds at most (and starts with).
    pub burst: f64,
}

impl KeyRate {
    /// `per_s` requests a second with a burst of `burst` (at least one).
    pub fn new(per_s: f64, burst: Option<f64>) -> KeyRate {
        let burst = burst.unwrap_or(per_s * 2.0).max(1.0);
        KeyRate { per_s, burst }
    }
}

/// The buckets of every source; no limit when built without a rate.
#[derive(Debug, Default)]
pub struct KeyRates {
    rate: Option<KeyRate>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl KeyRates {
    /// Buckets at `rate`, or no limit.
    pub fn new(rate: Option<KeyRate>) -> KeyRates {
        KeyRates {
            rate: rate.filter(|r| r.per_s > 0.0 && r.per_s.is_finite()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token of `source`'s bucket; when it is empty, the seconds
    /// until it has one (at least 1).
    pub fn take(&self, source: &str) -> Result<(), u64> {
        self.take_at(source, Instant::now())
    }

    /// [`KeyRates::take`] at `now`.
    pub fn take_at(&self, source: &str, now: Instant) -> Result<(), u64> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        // A poisoned lock only means a panic elsewhere mid-update of a
        // number: the table is still usable.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = match buckets.get_mut(source) {
            Some(bucket) => bucket,
            None => buckets
                .entry(source.to_owned())
                .or_insert(Bucket::full(rate.burst, now)),
        };
        bucket.refill(now, rate.per_s, rate.burst);
        bucket.take(rate.per_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let rates = KeyRates::new(Some(KeyRate::new(0.5, Some(3.0))));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rates.take_at("wk_a", t0), Ok(()));
        }
        // Empty: one token comes back after 2 s.
        assert_eq!(rates.take_at("wk_a", t0), Err(2));
        assert_eq!(
            rates.take_at("wk_a", t0 + Duration::from_millis(1_500)),
            Err(1)
        );
        assert_eq!(rates.take_at("wk_a", t0 + Duration::from_secs(2)), Ok(()));
        assert_eq!(rates.take_at("wk_a", t0 + Duration::from_secs(2)), Err(2));
        // Another source has its own bucket.
        for _ in 0..3 {
            assert_eq!(rates.take_at("wk_b", t0 + Duration::from_secs(2)), Ok(()));
        }
        // A long pause refills up to the burst, not past it.
        let later = t0 + Duration::from_secs(3_600);
        for _ in 0..3 {
            assert_eq!(rates.take_at("wk_a", later), Ok(()));
        }
        assert!(rates.take_at("wk_a", later).is_err());
    }

    #[test]
    fn without_a_rate_nothing_is_limited() {
        for rates in [
            KeyRates::new(None),
            KeyRates::new(Some(KeyRate::new(0.0, None))),
            KeyRates::new(Some(KeyRate::new(f64::NAN, None))),
        ] {
            let t0 = Instant::now();
            for _ in 0..10_000 {
                assert_eq!(rates.take_at("wk_a", t0), Ok(()));
            }
        }
    }

    #[test]
    fn the_burst_defaults_to_two_seconds_of_rate_and_at_least_one() {
        assert_eq!(KeyRate::new(50.0, None).burst, 100.0);
        assert_eq!(KeyRate::new(0.1, None).burst, 1.0);
        assert_eq!(KeyRate::new(5.0, Some(0.0)).burst, 1.0);
    }
}
