//! Health a product team can act on: the sync success rate, and counters
//! that survive a restart, against a real HTTP server on 127.0.0.1.

#![allow(clippy::unwrap_used)]

#[path = "support/collector.rs"]
mod collector;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use collector::Collector;
use tally_sdk::{Consent, Health, Props, Tracker};

fn tracker(dir: &Path, url: &str) -> Tracker {
    Tracker::builder("wk", url, dir)
        .consent(Consent::Granted)
        .jitter_seed(7)
        .build()
        .unwrap()
}

/// The counters that must read the same after a restart.
fn lasting(h: &Health) -> (u64, u64, u64, u64, Option<f64>, BTreeMap<String, u64>) {
    (
        h.accepted,
        h.duplicate,
        h.sync_attempts,
        h.sync_successes,
        h.sync_success_rate,
        h.refused.clone(),
    )
}

#[test]
fn the_sync_success_rate_and_the_counters_survive_a_restart() {
    let (collector, url) = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), &url);
    assert_eq!(t.health().sync_success_rate, None, "nothing sent yet");
    // The first send is answered 503 (Retry-After: 1 s), the second 200.
    *collector.refuse_next.lock().unwrap() = Some(1);
    for i in 0..3 {
        t.track("E", Props::new().with("i", i)).unwrap();
    }
    assert!(t.track("Bu\0y", Props::new()).is_err());
    t.flush().unwrap();
    assert!(t.wait_until_synced(Duration::from_secs(20)));
    let before = t.health();
    assert_eq!(collector.requests.load(Ordering::SeqCst), 2);
    assert_eq!(
        lasting(&before),
        (
            3,
            0,
            2,
            1,
            Some(0.5),
            BTreeMap::from([("nul_character".to_owned(), 1)])
        )
    );
    t.shutdown(Duration::from_secs(5)).unwrap();

    let t = tracker(dir.path(), &url);
    let after = t.health();
    assert_eq!(lasting(&after), lasting(&before));
    assert_eq!(after.tracked, 0, "tracked counts this process only");
    t.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(collector.requests.load(Ordering::SeqCst), 2);
}
