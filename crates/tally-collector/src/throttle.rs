//! Throttling failed authentication on the admin paths, per client.
//!
//! Each client address ([`AddrBucket`]: an IPv4 address or an IPv6 /64)
//! has a token bucket of [`FAILED_AUTH_BURST`] tokens, refilled one per
//! [`FAILED_AUTH_REFILL`]. A request that presents a wrong token (or a
//! write key) takes one; a request that presents the right one takes none.
//! While a client's bucket is empty every request of its that presents a
//! credential is answered 429 with `Retry-After`, right or wrong, so the
//! answer tells nothing about the guess; a correct token from another
//! address is unaffected. A request without credentials is not a guess and
//! is never throttled (the dashboard asks for the token that way).
//!
//! The table holds at most [`MAX_TRACKED_CLIENTS`] clients. A new client
//! takes the place of one whose bucket has refilled (it is then the same as
//! absent); when none has, it shares one overflow bucket with every other
//! client past the bound, so many addresses guessing at once are throttled
//! together rather than forgotten.
//!
//! Wrong write keys are not throttled: write keys are public, so there is
//! nothing to guess, a wrong one costs a 401 and no slot or body byte, and
//! a throttle would turn a misconfigured fleet behind one NAT into retries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client::AddrBucket;

/// Wrong tokens a client may present in a burst: a person mistyping, or a
/// script with a stale token retrying a few times, is never slowed.
pub const FAILED_AUTH_BURST: f64 = 10.0;

/// One more wrong token per this long once the burst is spent: 10 a
/// minute, 14,400 a day per address. A 16-character token has at least
/// 26^16 ≈ 4·10^22 values, so guessing stays hopeless even for many
/// addresses sharing the overflow bucket.
pub const FAILED_AUTH_REFILL: Duration = Duration::from_secs(6);

/// Clients tracked at most: about 64 bytes each, so under 1 MiB.
pub const MAX_TRACKED_CLIENTS: usize = 10_000;

/// What a request that presented a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on: its answer is the credential's.
    Allowed,
    /// Refused: come back after this many seconds.
    Throttled {
        /// Seconds until the client has a token again.
        retry_after_s: u64,
    },
}

/// A token bucket: `burst` tokens at most, `per_s` more each second. The
/// failed-auth throttle here and the per-key ingest rate
/// ([`crate::ingest::rate`]) both count with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A bucket holding `burst` tokens at `now`.
    pub(crate) fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    /// Adds what `now` earned since the last refill, up to `burst`.
    pub(crate) fn refill(&mut self, now: Instant, per_s: f64, burst: f64) {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * per_s;
        self.tokens = (self.tokens + gained).min(burst);
        self.at = now;
    }

    /// Takes a token when there is one; otherwise the whole seconds until
    /// there is (at least 1). Refill first.
    pub(crate) fn take(&mut self, per_s: f64) -> Result<(), u64> {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait_s(per_s))
        }
    }

    /// Whole seconds until the bucket holds a token (at least 1).
    fn wait_s(&self, per_s: f64) -> u64 {
        ((1.0 - self.tokens) / per_s).ceil().max(1.0) as u64
    }

    fn is_full(&self, now: Instant) -> bool {
        let mut b = *self;
        b.refill(now, FAILED_AUTH_PER_S, FAILED_AUTH_BURST);
        b.tokens >= FAILED_AUTH_BURST
    }
}

/// Tokens a client earns a second: one per [`FAILED_AUTH_REFILL`].
const FAILED_AUTH_PER_S: f64 = 1.0 / FAILED_AUTH_REFILL.as_secs_f64();

/// The per-client buckets.
#[derive(Debug)]
pub struct AuthThrottle {
    inner: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    clients: HashMap<Option<AddrBucket>, Bucket>,
    overflow: Bucket,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Table {
                clients: HashMap::new(),
                overflow: Bucket::full(FAILED_AUTH_BURST, Instant::now()),
            }),
        }
    }
}

impl AuthThrottle {
    /// Decides on a request from `client` (`None`: made in-process) whose
    /// credential was `correct` or not, and takes a token for a wrong one.
    pub fn judge(&self, client: Option<AddrBucket>, correct: bool) -> Verdict {
        self.judge_at(client, correct, Instant::now())
    }

    fn judge_at(&self, client: Option<AddrBucket>, correct: bool, now: Instant) -> Verdict {
        let mut table = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = table.bucket(client, now);
        bucket.refill(now, FAILED_AUTH_PER_S, FAILED_AUTH_BURST);
        if bucket.tokens < 1.0 {
            return Verdict::Throttled {
                retry_after_s: bucket.wait_s(FAILED_AUTH_PER_S),
            };
        }
        if !correct {
            // There is a token: this cannot fail.
            let _ = bucket.take(FAILED_AUTH_PER_S);
        }
        Verdict::Allowed
    }
}

impl Table {
    fn bucket(&mut self, client: Option<AddrBucket>, now: Instant) -> &mut Bucket {
        if !self.clients.contains_key(&client) && self.clients.len() >= MAX_TRACKED_CLIENTS {
            let refilled = self
                .clients
                .iter()
                .find(|(_, b)| b.is_full(now))
                .map(|(k, _)| *k);
            match refilled {
                Some(k) => {
                    self.clients.remove(&k);
                }
                None => return &mut self.overflow,
            }
        }
        self.clients
            .entry(client)
            .or_insert_with(|| Bucket::full(FAILED_AUTH_BURST, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<AddrBucket> = Some(AddrBucket::V4([192, 0, 2, 1]));
    const B: Option<AddrBucket> = Some(AddrBucket::V4([192, 0, 2, 2]));

    #[test]
    fn a_burst_of_wrong_tokens_then_one_per_refill_and_others_unaffected() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(t.judge_at(A, false, now), Verdict::Allowed);
        }
        // Spent: right or wrong, the client is refused, for 6 s.
        assert_eq!(
            t.judge_at(A, false, now),
            Verdict::Throttled { retry_after_s: 6 }
        );
        assert_eq!(
            t.judge_at(A, true, now),
            Verdict::Throttled { retry_after_s: 6 }
        );
        assert_eq!(
            t.judge_at(A, false, now + Duration::from_secs(3)),
            Verdict::Throttled { retry_after_s: 3 }
        );
        // Another address with the right token, or a wrong one, is judged
        // on its own.
        assert_eq!(t.judge_at(B, true, now), Verdict::Allowed);
        assert_eq!(t.judge_at(B, false, now), Verdict::Allowed);
        // One token back after 6 s: one more guess.
        let later = now + FAILED_AUTH_REFILL;
        assert_eq!(t.judge_at(A, false, later), Verdict::Allowed);
        assert!(matches!(
            t.judge_at(A, false, later),
            Verdict::Throttled { .. }
        ));
        // The right token takes nothing: any number of them pass.
        let refilled = now + FAILED_AUTH_REFILL * 20;
        for _ in 0..100 {
            assert_eq!(t.judge_at(A, true, refilled), Verdict::Allowed);
        }
    }

    #[test]
    fn past_the_bound_new_clients_share_the_overflow_bucket() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        let client = |i: usize| Some(AddrBucket::V4((i as u32).to_be_bytes()));
        for i in 0..MAX_TRACKED_CLIENTS {
            assert_eq!(t.judge_at(client(i), false, now), Verdict::Allowed);
        }
        // Every tracked bucket has spent a token: newcomers share one.
        for i in 0..10 {
            assert_eq!(
                t.judge_at(client(MAX_TRACKED_CLIENTS + i), false, now),
                Verdict::Allowed
            );
        }
        assert!(matches!(
            t.judge_at(client(MAX_TRACKED_CLIENTS + 10), false, now),
            Verdict::Throttled { .. }
        ));
        assert_eq!(t.inner.lock().unwrap().clients.len(), MAX_TRACKED_CLIENTS);
        // Once a tracked bucket has refilled, a newcomer takes its place.
        let later = now + FAILED_AUTH_REFILL;
        assert_eq!(
            t.judge_at(client(MAX_TRACKED_CLIENTS + 11), false, later),
            Verdict::Allowed
        );
        assert_eq!(t.inner.lock().unwrap().clients.len(), MAX_TRACKED_CLIENTS);
    }
}
