//! The collector's clock: every time it stamps (receipt, answers, queries'
//! "now", the health task's evaluations) comes from [`now_ms`].

use std::time::{SystemTime, UNIX_EPOCH};

/// The collector's clock, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
