//! The log's policies as the tracker's builder exposes them: what each
//! full policy keeps and drops, and the critical lane's own age bound.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tally_sdk::log::{Log, LogConfig};
use tally_sdk::{Consent, FullPolicy, Priority, Props, TrackOptions, Tracker, TrackerBuilder};

fn builder(dir: &Path) -> TrackerBuilder {
    Tracker::builder("wk", "http://127.0.0.1:9", dir)
        .consent(Consent::Granted)
        .auto_upload(false)
}

/// The seqs the log in `dir` holds, and its drops, once the tracker is gone.
fn stored(dir: &Path) -> (Vec<u64>, BTreeMap<String, u64>) {
    let log = Log::open(LogConfig::new(dir.join("log"))).unwrap();
    let mut seqs: Vec<u64> = log
        .read_pending(usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    seqs.sort_unstable();
    let dropped = log.stats().dropped;
    log.close().unwrap();
    (seqs, dropped)
}

/// Tracks five events into a log of three, one flush each (so each is
/// stored before the next arrives), with `policy`.
fn five_into_three(policy: Option<FullPolicy>) -> (Vec<u64>, BTreeMap<String, u64>) {
    let dir = tempfile::tempdir().unwrap();
    let mut b = builder(dir.path()).log_capacity(u64::MAX / 2, 3);
    if let Some(policy) = policy {
        b = b.log_full_policy(policy);
    }
    let t = b.build().unwrap();
    for i in 1..=5u64 {
        assert_eq!(t.track("E", Props::new()).unwrap().seq, i);
        t.flush().unwrap();
    }
    t.shutdown(Duration::from_secs(5)).unwrap();
    stored(dir.path())
}

#[test]
fn each_full_policy_keeps_what_it_says_and_counts_the_rest() {
    let full = |n| BTreeMap::from([("log_full".to_owned(), n)]);
    assert_eq!(five_into_three(None), (vec![3, 4, 5], full(2)));
    assert_eq!(
        five_into_three(Some(FullPolicy::DropOldest)),
        (vec![3, 4, 5], full(2))
    );
    assert_eq!(
        five_into_three(Some(FullPolicy::RejectNew)),
        (vec![1, 2, 3], full(2))
    );
    assert_eq!(
        five_into_three(Some(FullPolicy::Block {
            timeout: Duration::from_millis(50)
        })),
        (vec![1, 2, 3], full(2))
    );
}

/// Tracks a normal event (seq 1) and a critical one (seq 2) with the
/// builder `configure` makes, stops, lets 600 ms pass, and starts again
/// (the bounds apply at start): what the log then holds, and its drops.
fn aged(configure: impl Fn(TrackerBuilder) -> TrackerBuilder) -> (Vec<u64>, BTreeMap<String, u64>) {
    let dir = tempfile::tempdir().unwrap();
    let critical = TrackOptions {
        priority: Priority::Critical,
        ..TrackOptions::default()
    };
    let t = configure(builder(dir.path())).build().unwrap();
    assert_eq!(t.track("Normal", Props::new()).unwrap().seq, 1);
    assert_eq!(
        t.track_with("Purchase", Props::new(), critical)
            .unwrap()
            .seq,
        2
    );
    t.flush().unwrap();
    t.shutdown(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let t = configure(builder(dir.path())).build().unwrap();
    let dropped = t.health().dropped;
    t.shutdown(Duration::from_secs(5)).unwrap();
    let (seqs, in_log) = stored(dir.path());
    assert_eq!(in_log, dropped);
    (seqs, dropped)
}

#[test]
fn critical_events_are_kept_longer_in_age_too() {
    let expired = BTreeMap::from([("expired".to_owned(), 1)]);
    // Past the normal bound, well within the critical default (90 days).
    assert_eq!(
        aged(|b| b.log_max_age(Duration::from_millis(300))),
        (vec![2], expired.clone())
    );
    // A critical bound of its own applies to the critical lane only.
    assert_eq!(
        aged(|b| b
            .log_max_age(Duration::from_secs(3600))
            .log_critical_max_age(Duration::from_millis(300))),
        (vec![1], expired)
    );
}
