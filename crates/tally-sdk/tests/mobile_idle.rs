//! No idle wake-ups: with nothing pending, offline with events pending,
//! or after a sync, none of the SDK's threads wakes (see `tally_sdk::mobile`). Alone in its
//! test binary so no other tracker's threads are counted.

#![allow(clippy::unwrap_used)]

#[path = "support/collector.rs"]
mod collector;
#[path = "support/threads.rs"]
mod threads;

use std::collections::BTreeMap;
use std::time::Duration;

use tally_sdk::{Consent, Props, Tracker};

/// Long enough for what the SDK still owes after a sync to be done: the
/// writer's housekeeping after the last ack, at most a second later.
const SETTLE: Duration = Duration::from_millis(1_500);

/// The window wake-ups are counted over: before, the pipeline alone woke
/// 5 times a second, the writer once, the uploader once every 5 s.
const WINDOW: Duration = Duration::from_secs(3);

fn idle_wakeups() -> BTreeMap<String, u64> {
    std::thread::sleep(SETTLE);
    let before = threads::sdk_thread_switches();
    std::thread::sleep(WINDOW);
    threads::wakeups(&before, &threads::sdk_thread_switches())
}

#[test]
fn idle_sdk_threads_do_not_wake() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, url) = collector::Collector::start();
    let tracker = Tracker::builder("k", &url, dir.path())
        .consent(Consent::Granted)
        .build()
        .unwrap();
    let zero: BTreeMap<String, u64> = ["tally-log-write", "tally-pipeline", "tally-upload"]
        .iter()
        .map(|n| ((*n).to_owned(), 0))
        .collect();

    // Nothing tracked yet: nothing pending, nothing due.
    assert_eq!(idle_wakeups(), zero, "idle with nothing pending");

    // Offline with events pending: still nothing due (the age bound of
    // the oldest pending event is a month away).
    tracker.set_network(false, false);
    for i in 0..20 {
        tracker.track("Pending", Props::new().with("i", i)).unwrap();
    }
    tracker.flush().unwrap();
    assert_eq!(idle_wakeups(), zero, "offline with events pending");
    assert_eq!(tracker.health().pending, 20);

    // Back online: synced, acknowledged, and idle again once the log's
    // housekeeping after the acks is done.
    tracker.set_network(true, false);
    assert!(tracker.wait_until_synced(Duration::from_secs(30)));
    assert_eq!(collector.answered(), 20);
    assert_eq!(idle_wakeups(), zero, "synced, nothing pending");
    tracker.shutdown(Duration::from_secs(5)).unwrap();
}
