//! Exponential backoff with full jitter.
//!
//! After the n-th consecutive failure (n from 1) the ceiling is
//! `min(MAX_BACKOFF, BASE_BACKOFF · 2^(n−1))` and the delay is drawn
//! uniformly from `[MIN_BACKOFF, ceiling]` ("full jitter", which spreads a
//! fleet of devices coming back online instead of synchronising them). A
//! success resets the count. A server's `Retry-After` replaces the drawn
//! delay, bounded by [`super::policy::MAX_RETRY_AFTER_MS`].

use super::policy::{BASE_BACKOFF_MS, MAX_BACKOFF_MS, MIN_BACKOFF_MS};

/// Backoff state of one uploader.
#[derive(Debug)]
pub struct Backoff {
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// A backoff drawing jitter from `rng` (seeded in tests).
    pub fn new(rng: fastrand::Rng) -> Self {
        Self { failures: 0, rng }
    }

    /// The ceiling for the `failures`-th consecutive failure (1-based).
    pub fn ceiling_ms(failures: u32) -> u64 {
        let exp = failures.saturating_sub(1).min(32);
        BASE_BACKOFF_MS
            .saturating_mul(1u64 << exp)
            .min(MAX_BACKOFF_MS)
    }

    /// Records a failure and returns how long to wait before the next try.
    pub fn fail(&mut self) -> u64 {
        self.failures = self.failures.saturating_add(1);
        let ceiling = Self::ceiling_ms(self.failures);
        self.rng.u64(MIN_BACKOFF_MS..=ceiling)
    }

    /// Records a failure whose wait the server set (`Retry-After`).
    pub fn fail_with(&mut self, retry_after_ms: u64) -> u64 {
        self.failures = self.failures.saturating_add(1);
        retry_after_ms.min(super::policy::MAX_RETRY_AFTER_MS)
    }

    /// Records a success.
    pub fn succeed(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_one_second_to_five_minutes() {
        let ceilings: Vec<u64> = (1..=11).map(Backoff::ceiling_ms).collect();
        assert_eq!(
            ceilings,
            vec![
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000,
                300_000
            ]
        );
        assert_eq!(Backoff::ceiling_ms(u32::MAX), 300_000);
    }

    #[test]
    fn delays_stay_within_bounds_and_reset_on_success() {
        let mut b = Backoff::new(fastrand::Rng::with_seed(7));
        for n in 1..=40 {
            let d = b.fail();
            assert!(
                (MIN_BACKOFF_MS..=Backoff::ceiling_ms(n)).contains(&d),
                "{n}: {d}"
            );
        }
        assert_eq!(b.failures(), 40);
        b.succeed();
        assert_eq!(b.failures(), 0);
        assert!(b.fail() <= 1_000);
        assert_eq!(b.fail_with(7_000), 7_000);
        assert_eq!(
            b.fail_with(u64::MAX),
            super::super::policy::MAX_RETRY_AFTER_MS
        );
    }
}
