//! How often the SDK's threads wake while the app is idle: a tracker with
//! 20 events tracked and synced to ENDPOINT (a running `tally serve`
//! with the write key `dev-write-key`), or without one pending behind an
//! offline network, then SECONDS of nothing, counting each SDK thread's
//! wake-ups from Linux's per-thread counters.
//!
//! ```text
//! cargo run --release -p tally-sdk --example idle_wakeups -- [SECONDS] [ENDPOINT]
//! ```
//!
//! Prints one JSON line: wake-ups per thread over the window, and per
//! minute in all.

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/threads.rs"]
mod threads;

use std::time::Duration;

use tally_sdk::{Consent, Props, Tracker};

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let endpoint = args.next();
    let offline = endpoint.is_none();
    let dir = std::env::temp_dir().join(format!("tally-idle-{}", std::process::id()));
    let tracker = Tracker::builder(
        "dev-write-key",
        endpoint.as_deref().unwrap_or("http://127.0.0.1:9"),
        &dir,
    )
    .consent(Consent::Granted)
    .build()
    .unwrap();
    tracker.set_network(!offline, false);
    for i in 0..20 {
        tracker.track("Idle", Props::new().with("i", i)).unwrap();
    }
    tracker.flush().unwrap();
    if !offline {
        assert!(tracker.wait_until_synced(Duration::from_secs(30)));
    }
    // Let what is owed after the sync (the log's housekeeping) pass.
    std::thread::sleep(Duration::from_secs(2));
    let before = threads::sdk_thread_switches();
    std::thread::sleep(Duration::from_secs(seconds));
    let woke = threads::wakeups(&before, &threads::sdk_thread_switches());
    let total: u64 = woke.values().sum();
    let per_minute = total as f64 * 60.0 / seconds as f64;
    println!(
        "{}",
        serde_json::json!({
            "seconds": seconds,
            "offline": offline,
            "pending": tracker.health().pending,
            "wakeups": woke,
            "wakeups_per_minute": per_minute,
        })
    );
    tracker.shutdown(Duration::from_secs(5)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
