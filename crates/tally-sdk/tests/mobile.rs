//! What a phone needs, against a real HTTP server on 127.0.0.1 that counts
//! every request: offline sends nothing, going online ends the backoff
//! wait, a metered network carries only critical events under that
//! policy, a background sync fits its deadline and says what is left, and
//! low-power mode holds a trickle of events.

#![allow(clippy::unwrap_used)]

#[path = "support/collector.rs"]
mod collector;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use collector::Collector;
use tally_sdk::{
    BackgroundOutcome, Consent, MeteredPolicy, Priority, Props, TrackOptions, Tracker,
    VirtualClock, LOW_POWER_HOLD_MS,
};

/// Polls `done` for up to 30 s (a bound for a slow machine, not a timing).
fn eventually(what: &str, done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < until, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn track(tracker: &Tracker, name: &str, n: u64, priority: Priority) {
    for i in 0..n {
        let options = TrackOptions {
            priority,
            ..TrackOptions::default()
        };
        tracker
            .track_with(name, Props::new().with("i", i), options)
            .unwrap();
    }
}

#[test]
fn offline_sends_nothing_and_going_online_ends_the_backoff_wait() {
    let (collector, url) = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::builder("k", &url, dir.path())
        .consent(Consent::Granted)
        .build()
        .unwrap();
    // The first send is answered 503 with an hour's Retry-After.
    *collector.refuse_next.lock().unwrap() = Some(3_600);
    track(&tracker, "Before", 3, Priority::Normal);
    tracker.flush().unwrap();
    eventually("the refused send", || {
        tracker.health().backoff_ms >= 3_600_000
    });
    assert_eq!(collector.requests.load(Ordering::SeqCst), 1);

    tracker.set_network(false, false);
    track(&tracker, "Offline", 4, Priority::Normal);
    tracker.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(collector.requests.load(Ordering::SeqCst), 1);
    assert_eq!(tracker.health().pending, 7);

    // Online: sent at once, though the hour's backoff has not passed and
    // nobody called sync_now.
    tracker.set_network(true, false);
    eventually("the backlog sent", || collector.answered() == 7);
    eventually("acked", || tracker.health().pending == 0);
    assert_eq!(collector.requests.load(Ordering::SeqCst), 2);

    // Offline, not even an explicit sync makes a request.
    tracker.set_network(false, true);
    track(&tracker, "Offline Again", 2, Priority::Normal);
    assert!(!tracker.wait_until_synced(Duration::from_millis(500)));
    assert_eq!(collector.requests.load(Ordering::SeqCst), 2);
    tracker.set_network(true, true);
    eventually("sent when back online", || collector.answered() == 9);
    tracker.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_metered_network_carries_only_critical_events_under_that_policy() {
    let (collector, url) = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::builder("k", &url, dir.path())
        .consent(Consent::Granted)
        .metered_policy(MeteredPolicy::CriticalOnly)
        .build()
        .unwrap();
    tracker.set_network(true, true);
    track(&tracker, "Browse", 3, Priority::Normal);
    track(&tracker, "Purchase", 2, Priority::Critical);
    tracker.flush().unwrap();
    eventually("the critical events sent", || collector.answered() == 2);
    eventually("their answers read", || tracker.health().accepted == 2);
    let bg = tracker.run_background_sync(Duration::from_secs(10));
    assert_eq!(
        (bg.sent, bg.remaining, bg.outcome),
        (0, 3, BackgroundOutcome::Held)
    );
    assert!(collector
        .messages
        .lock()
        .unwrap()
        .iter()
        .all(|(event, critical)| event == "Purchase" && *critical));
    assert_eq!(tracker.health().pending, 3);

    tracker.set_network(true, false);
    eventually("the rest sent on Wi-Fi", || collector.answered() == 5);
    tracker.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_background_sync_sends_what_fits_and_reports_what_is_left() {
    const EVENTS: u64 = 4_000;
    let (collector, url) = Collector::start();
    // Each answer takes 400 ms: the deadline fits a few batches, not all.
    collector.delay_ms.store(400, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::builder("k", &url, dir.path())
        .consent(Consent::Granted)
        .auto_upload(false)
        .build()
        .unwrap();
    track(&tracker, "Queued", EVENTS, Priority::Normal);
    let first = tracker.run_background_sync(Duration::from_secs(2));
    assert_eq!(first.outcome, BackgroundOutcome::DeadlineReached);
    assert!(first.sent > 0 && first.remaining > 0, "{first:?}");
    assert_eq!(first.sent + first.remaining, EVENTS);
    // It stopped cleanly: nothing in flight, nothing sent after it.
    assert_eq!(collector.in_flight.load(Ordering::SeqCst), 0);
    assert_eq!(collector.answered() as u64, first.sent);
    let requests = collector.requests.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(collector.requests.load(Ordering::SeqCst), requests);

    collector.delay_ms.store(0, Ordering::SeqCst);
    let second = tracker.run_background_sync(Duration::from_secs(30));
    assert_eq!(
        (second.sent, second.remaining, second.outcome),
        (first.remaining, 0, BackgroundOutcome::Done)
    );
    assert_eq!(collector.answered() as u64, EVENTS);

    tracker.set_network(false, false);
    track(&tracker, "Later", 1, Priority::Normal);
    let offline = tracker.run_background_sync(Duration::from_secs(5));
    assert_eq!(
        (offline.sent, offline.remaining, offline.outcome),
        (0, 1, BackgroundOutcome::Offline)
    );
    tracker.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn low_power_holds_a_trickle_until_the_hold_ends() {
    let (collector, url) = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = VirtualClock::starting_at(1_700_000_000_000);
    let tracker = Tracker::builder("k", &url, dir.path())
        .consent(Consent::Granted)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    tracker.set_low_power(true);
    // Offline while the trickle is written: the virtual clock ends a hold
    // at once, so an uploader woken by the first event could otherwise
    // send it before the other two are on disk.
    tracker.set_network(false, false);
    track(&tracker, "Trickle", 3, Priority::Normal);
    tracker.flush().unwrap();
    tracker.set_network(true, false);
    eventually("the held events sent", || collector.answered() == 3);
    assert_eq!(
        collector.requests.load(Ordering::SeqCst),
        1,
        "one request for the trickle"
    );
    assert!(
        clock.waits().contains(&LOW_POWER_HOLD_MS),
        "the uploader held the events for the low-power interval: {:?}",
        clock.waits()
    );

    // Out of low-power mode a flush is followed by a send without a hold.
    tracker.set_low_power(false);
    let holds = clock.waits().len();
    track(&tracker, "Normal", 2, Priority::Normal);
    tracker.flush().unwrap();
    eventually("sent at once", || collector.answered() == 5);
    assert!(clock.waits()[holds..]
        .iter()
        .all(|&w| w < LOW_POWER_HOLD_MS));
    tracker.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_pending_event_still_expires_while_the_sdk_sleeps() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::builder("k", "http://127.0.0.1:9", dir.path())
        .consent(Consent::Granted)
        .log_max_age(Duration::from_secs(1))
        .build()
        .unwrap();
    tracker.set_network(false, false);
    track(&tracker, "Short Lived", 1, Priority::Normal);
    tracker.flush().unwrap();
    // No call, no append: only the writer's timer for the age bound.
    eventually("the event expired", || {
        tracker.health().dropped.get("expired") == Some(&1)
    });
    assert_eq!(tracker.health().pending, 0);
    tracker.shutdown(Duration::from_secs(5)).unwrap();
}
