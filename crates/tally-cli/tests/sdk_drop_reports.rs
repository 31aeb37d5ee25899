//! Drop reports count only once the collector answered for them: a
//! `tally.dropped` report lost on the device before that (here: expired by
//! the log's age bound while the collector could not be reached) is made
//! again, across a restart, and the collector ends with every seq explained.

#![allow(clippy::unwrap_used)]

mod sdk_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sdk_support::{batch_json, sub, tempdir, Server, WRITE_KEY};
use tally_sdk::{
    Consent, HttpTransport, Props, Request, Response, Tracker, Transport, TransportError,
};

/// Refuses (as an unreachable network would) every batch holding a drop
/// report while `closed`, and counts the refused reports of the first
/// log_full range (the one starting at seq 1).
#[derive(Debug)]
struct Gate {
    inner: HttpTransport,
    closed: AtomicBool,
    first_range_refused: AtomicUsize,
}

impl Transport for Gate {
    fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let text = batch_json(request);
        if self.closed.load(Ordering::SeqCst) && text.contains("tally.dropped") {
            if text.contains(r#""reason":"log_full","ranges":[[1,"#) {
                self.first_range_refused.fetch_add(1, Ordering::SeqCst);
            }
            return Err(TransportError::Connect("injected: unreachable".into()));
        }
        self.inner.send(request)
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_report_lost_before_the_collector_answered_is_made_again() {
    let dir = tempdir();
    let server = Server::start(&sub(dir.path(), "server"), 0);
    let device = sub(dir.path(), "device");
    let gate = Arc::new(Gate {
        inner: HttpTransport::new(&server.url),
        closed: AtomicBool::new(true),
        first_range_refused: AtomicUsize::new(0),
    });
    let tracker = Tracker::builder(WRITE_KEY, &server.url, &device)
        .consent(Consent::Granted)
        .transport(gate.clone())
        .log_capacity(u64::MAX, 5)
        .log_max_age(Duration::from_secs(3))
        .build()
        .unwrap();
    // Seqs 1..=10: the log keeps 5, drops 1..=5 as log_full (each report
    // appended later pushes out one more of the oldest).
    for i in 0..10u64 {
        tracker
            .track("Kept Briefly", Props::new().with("i", i))
            .unwrap();
    }
    tracker.flush().unwrap();
    // The report of 1..=5 (seq 11) is durable, and refused by the network.
    wait_for("the first report", || {
        gate.first_range_refused.load(Ordering::SeqCst) >= 1
    });
    // It expires before the collector ever answers for it, so the range
    // from seq 1 is reported again.
    wait_for("the age bound", || {
        tracker.health().dropped.contains_key("expired")
    });
    wait_for("the report made again", || {
        gate.first_range_refused.load(Ordering::SeqCst) >= 2
    });
    assert!(!tracker.wait_until_synced(Duration::from_millis(300)));
    tracker.shutdown(Duration::from_secs(10)).unwrap();

    // After a restart the reports still pending go out and are answered.
    gate.closed.store(false, Ordering::SeqCst);
    let tracker = Tracker::builder(WRITE_KEY, &server.url, &device)
        .consent(Consent::Granted)
        .transport(gate.clone())
        .log_capacity(u64::MAX, 5)
        .build()
        .unwrap();
    assert!(
        tracker.wait_until_synced(Duration::from_secs(60)),
        "{:?}",
        tracker.health()
    );
    let install_id = tracker.install_id().to_owned();
    tracker.shutdown(Duration::from_secs(10)).unwrap();
    let install = server.install(&install_id);
    assert_eq!(
        install["missing"],
        serde_json::json!([]),
        "every dropped seq is explained: {install}"
    );
    let dropped = install["dropped"].as_u64().unwrap();
    assert!(dropped >= 6, "{install}");
    assert_eq!(
        server.stats()["events"].as_u64().unwrap() + dropped,
        install["max_seq"].as_u64().unwrap(),
        "each seq either arrived or was reported dropped: {install}"
    );
}
