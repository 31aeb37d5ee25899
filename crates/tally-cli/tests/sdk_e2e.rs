//! The SDK against a real `tally serve` on loopback: long offline periods
//! with restarts, bursts from several threads, consent, clock skew, TLS
//! under a private CA.

#![allow(clippy::unwrap_used)]

mod sdk_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sdk_support::{free_port, sub, tempdir, Server, TlsFiles, WRITE_KEY};
use tally_proto::{decode_json, decompress, format_timestamp, ContentEncoding, DecodeLimits};
use tally_sdk::log::{Log, LogConfig};
use tally_sdk::{
    BuildError, Consent, HttpTransport, Props, Refusal, Request, Response, SystemClock, Tracker,
    Transport, TransportError,
};

/// Wraps the real HTTP transport and records the `seq` of every message
/// sent, in send order.
#[derive(Debug)]
struct Recording {
    inner: HttpTransport,
    seqs: Mutex<Vec<u64>>,
}

impl Transport for Recording {
    fn send(&self, request: &Request) -> Result<Response, TransportError> {
        if request.path == "/v1/batch" {
            let json = decompress(
                &request.body,
                ContentEncoding::Zstd,
                &DecodeLimits::default(),
            )
            .unwrap();
            let body = decode_json(&json, &DecodeLimits::default()).unwrap();
            let mut seqs = self.seqs.lock().unwrap();
            for m in &body.messages {
                let msg = m.parsed.as_ref().unwrap();
                seqs.push(msg.tally().unwrap().seq.unwrap());
            }
        }
        self.inner.send(request)
    }
}

const OFFLINE_EVENTS: u64 = 50_000;
const OFFLINE_RUNS: u64 = 4;

#[test]
fn long_offline_with_restarts_then_exactly_once_in_order() {
    let dir = tempdir();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let device = sub(dir.path(), "device");
    let props = || {
        Props::new()
            .with("screen", "home")
            .with("button", "buy")
            .with("variant", "b")
    };
    let mut install_id = String::new();
    // Four app runs (three restarts) with the collector down: the uploader
    // keeps failing to connect and backs off; every event stays on disk.
    for run in 0..OFFLINE_RUNS {
        let tracker = Tracker::builder(WRITE_KEY, &endpoint, &device)
            .consent(Consent::Granted)
            .build()
            .unwrap();
        install_id = tracker.install_id().to_owned();
        for i in 0..OFFLINE_EVENTS / OFFLINE_RUNS {
            let accepted = tracker.track("Offline Tap", props()).unwrap();
            assert_eq!(accepted.seq, run * (OFFLINE_EVENTS / OFFLINE_RUNS) + i + 1);
        }
        tracker.flush().unwrap();
        let h = tracker.health();
        assert_eq!(h.pending, (run + 1) * OFFLINE_EVENTS / OFFLINE_RUNS);
        assert_eq!(h.accepted, 0);
        tracker.shutdown(Duration::from_secs(10)).unwrap();
    }
    // The collector comes up where the device expects it.
    let server = Server::start(&sub(dir.path(), "server"), port);
    let recording = Arc::new(Recording {
        inner: HttpTransport::new(&endpoint),
        seqs: Mutex::new(Vec::new()),
    });
    let tracker = Tracker::builder(WRITE_KEY, &endpoint, &device)
        .transport(recording.clone())
        .build()
        .unwrap();
    assert_eq!(
        tracker.install_id(),
        install_id,
        "the install survives restarts"
    );
    assert!(
        tracker.wait_until_synced(Duration::from_secs(120)),
        "{:?}",
        tracker.health()
    );
    let h = tracker.health();
    assert_eq!((h.pending, h.accepted, h.duplicate), (0, OFFLINE_EVENTS, 0));
    assert!(h.dropped.is_empty() && h.rejected.is_empty(), "{h:?}");
    tracker.shutdown(Duration::from_secs(10)).unwrap();

    let sent = recording.seqs.lock().unwrap().clone();
    assert_eq!(
        sent,
        (1..=OFFLINE_EVENTS).collect::<Vec<_>>(),
        "each seq once, in order"
    );
    let stats = server.stats();
    assert_eq!(stats["accepted"], OFFLINE_EVENTS);
    assert_eq!(stats["events"], OFFLINE_EVENTS);
    assert_eq!(stats["duplicate"], 0);
    let install = server.install(&install_id);
    assert_eq!(install["max_seq"], OFFLINE_EVENTS);
    assert_eq!(install["missing"], serde_json::json!([]));
    assert_eq!(install["dropped"], 0);
}

const BURST_THREADS: u64 = 4;
const BURST_PER_THREAD: u64 = 25_000;

#[test]
fn burst_from_four_threads_loses_nothing_unaccounted() {
    let dir = tempdir();
    let server = Server::start(&sub(dir.path(), "server"), 0);
    let tracker = Arc::new(
        Tracker::builder(WRITE_KEY, &server.url, sub(dir.path(), "device"))
            .consent(Consent::Granted)
            .build()
            .unwrap(),
    );
    let handles: Vec<_> = (0..BURST_THREADS)
        .map(|t| {
            let tracker = Arc::clone(&tracker);
            std::thread::spawn(move || {
                let (mut ok, mut full) = (0u64, 0u64);
                for i in 0..BURST_PER_THREAD {
                    let props = Props::new()
                        .with("thread", t)
                        .with("i", i)
                        .with("kind", "tap");
                    match tracker.track("Rapid Tap", props) {
                        Ok(_) => ok += 1,
                        Err(Refusal::QueueFull) => full += 1,
                        Err(other) => panic!("unexpected refusal {other}"),
                    }
                }
                (ok, full)
            })
        })
        .collect();
    let (mut ok, mut full) = (0, 0);
    for h in handles {
        let (o, f) = h.join().unwrap();
        ok += o;
        full += f;
    }
    assert_eq!(ok + full, BURST_THREADS * BURST_PER_THREAD);
    assert!(
        tracker.wait_until_synced(Duration::from_secs(120)),
        "{:?}",
        tracker.health()
    );
    let h = tracker.health();
    assert_eq!(h.tracked, ok);
    assert_eq!(
        h.refused.get("queue_full").copied().unwrap_or(0),
        full,
        "every refusal is counted"
    );
    assert_eq!(h.accepted, ok);
    let stats = server.stats();
    assert_eq!(stats["events"], ok);
    let install = server.install(tracker.install_id());
    assert_eq!(install["max_seq"], ok, "refused calls take no seq");
    assert_eq!(install["missing"], serde_json::json!([]));
}

#[test]
fn nothing_leaves_before_consent_and_denial_shreds_the_log() {
    let dir = tempdir();
    let server = Server::start(&sub(dir.path(), "server"), 0);
    let device = sub(dir.path(), "device");
    let tracker = Tracker::builder(WRITE_KEY, &server.url, &device)
        .build()
        .unwrap();
    assert_eq!(
        tracker.health().consent,
        Consent::Pending,
        "opt-in by default"
    );
    for i in 0..10 {
        tracker
            .track("Before Consent", Props::new().with("i", i))
            .unwrap();
    }
    assert!(!tracker.wait_until_synced(Duration::from_millis(1_500)));
    assert_eq!(
        server.stats()["events"],
        0,
        "nothing is sent while consent is pending"
    );
    assert_eq!(tracker.health().pending, 10);

    tracker.set_consent(Consent::Granted).unwrap();
    assert!(tracker.wait_until_synced(Duration::from_secs(30)));
    assert_eq!(server.stats()["events"], 10);

    // Withdraw consent with events still on the device.
    tracker.set_consent(Consent::Pending).unwrap();
    for _ in 0..5 {
        tracker
            .track("Secret", Props::new().with("note", "MARKER-7f3a"))
            .unwrap();
    }
    tracker.flush().unwrap();
    assert_eq!(tracker.health().pending, 5);
    tracker.set_consent(Consent::Denied).unwrap();
    assert_eq!(
        tracker.track("After Denial", Props::new()),
        Err(Refusal::ConsentDenied)
    );
    assert_eq!(tracker.health().pending, 0);
    assert_eq!(tracker.health().dropped.get("consent_denied"), Some(&5));
    tracker.shutdown(Duration::from_secs(10)).unwrap();

    // Nothing readable is left: the log reopens empty, and no file holds
    // the marker in clear.
    let log = Log::open(LogConfig::new(device.join("log"))).unwrap();
    assert_eq!(log.read_pending(usize::MAX, usize::MAX).unwrap(), vec![]);
    drop(log);
    for entry in walk(&device) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"MARKER-7f3a"),
            "{} holds event content",
            entry.display()
        );
    }
    assert_eq!(server.stats()["events"], 10, "the denied events never left");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

const HOUR_MS: i64 = 3_600_000;

#[test]
fn a_device_an_hour_behind_is_corrected_within_the_measured_latency() {
    let dir = tempdir();
    let server = Server::start(&sub(dir.path(), "server"), 0);
    let tracker = Tracker::builder(WRITE_KEY, &server.url, sub(dir.path(), "device"))
        .consent(Consent::Granted)
        .clock(Arc::new(SystemClock::with_offset(-HOUR_MS)))
        .build()
        .unwrap();
    let before = SystemClock::default();
    let t_before = tally_sdk_wall(&before);
    tracker.track("Skewed", Props::new()).unwrap();
    assert!(tracker.wait_until_synced(Duration::from_secs(30)));
    let t_after = tally_sdk_wall(&before);
    let h = tracker.health();
    let offset = h.clock_offset_ms.unwrap();
    let rtt = h.clock_offset_rtt_ms.unwrap();
    assert!(
        (offset + HOUR_MS).abs() <= rtt + 1,
        "offset {offset} rtt {rtt}"
    );
    // The corrected time lies between the real capture and the answer.
    let window = |from: i64, to: i64| {
        let (status, body) = server.get(&format!(
            "/v1/events/count?event=Skewed&from={}&to={}",
            format_timestamp(from),
            format_timestamp(to)
        ));
        assert_eq!(status, 200, "{body}");
        body["count"].as_u64().unwrap()
    };
    assert_eq!(window(t_before, t_after + 1), 1);
    assert_eq!(
        window(t_before - HOUR_MS - 60_000, t_before),
        0,
        "not left at device time"
    );
}

fn tally_sdk_wall(clock: &SystemClock) -> i64 {
    use tally_sdk::Clock;
    clock.wall_ms()
}

#[test]
fn a_wrong_key_stops_sending_and_keeps_the_data() {
    let dir = tempdir();
    let server = Server::start(&sub(dir.path(), "server"), 0);
    let device = sub(dir.path(), "device");
    let tracker = Tracker::builder("not-a-key", &server.url, &device)
        .consent(Consent::Granted)
        .build()
        .unwrap();
    tracker.track("Kept", Props::new()).unwrap();
    assert!(!tracker.wait_until_synced(Duration::from_secs(2)));
    let h = tracker.health();
    assert!(h.auth_failed);
    assert_eq!(h.pending, 1);
    tracker.shutdown(Duration::from_secs(10)).unwrap();
    let start = Instant::now();
    let fixed = Tracker::builder(WRITE_KEY, &server.url, &device)
        .build()
        .unwrap();
    assert!(fixed.wait_until_synced(Duration::from_secs(30)));
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(server.stats()["events"], 1);
}

#[test]
fn drops_by_a_full_log_are_reported_and_explain_the_gap() {
    let dir = tempdir();
    let server = Server::start(&sub(dir.path(), "server"), 0);
    let tracker = Tracker::builder(WRITE_KEY, &server.url, sub(dir.path(), "device"))
        .consent(Consent::Granted)
        .auto_upload(false)
        .log_capacity(u64::MAX, 100)
        .build()
        .unwrap();
    for i in 0..150 {
        tracker.track("Crowded", Props::new().with("i", i)).unwrap();
    }
    tracker.flush().unwrap();
    assert_eq!(tracker.health().dropped.get("log_full"), Some(&50));
    assert!(
        tracker.wait_until_synced(Duration::from_secs(30)),
        "{:?}",
        tracker.health()
    );
    let install = server.install(tracker.install_id());
    let events = server.stats()["events"].as_u64().unwrap();
    let dropped = install["dropped"].as_u64().unwrap();
    // Each report is itself an event in the still-full log and may push
    // out one more old event, which the next report explains in turn.
    assert!(dropped >= 50, "{install}");
    assert_eq!(install["max_seq"], events + dropped, "{install}");
    assert_eq!(
        install["missing"],
        serde_json::json!([]),
        "every dropped seq is explained, none missing"
    );
    let h = tracker.health();
    assert_eq!(h.dropped.get("log_full"), Some(&dropped));
    assert_eq!(h.pending, 0);
    tracker.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn health_beacons_reach_the_collector() {
    let dir = tempdir();
    let server = Server::start(&sub(dir.path(), "server"), 0);
    let tracker = Tracker::builder(WRITE_KEY, &server.url, sub(dir.path(), "device"))
        .consent(Consent::Granted)
        .health_beacon(Duration::from_millis(200))
        .build()
        .unwrap();
    tracker.track("Heartbeat Host", Props::new()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let beacons = loop {
        let (status, body) = server.get("/v1/events/count?event=tally.health");
        assert_eq!(status, 200, "{body}");
        let n = body["count"].as_u64().unwrap();
        if n > 0 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(beacons >= 1);
    tracker.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_deleted_user_is_purged_from_the_device() {
    let dir = tempdir();
    let server = Server::start(&sub(dir.path(), "server"), 0);
    let tracker = Tracker::builder(WRITE_KEY, &server.url, sub(dir.path(), "device"))
        .consent(Consent::Granted)
        .auto_upload(false)
        .build()
        .unwrap();
    tracker.identify("doomed", Props::new()).unwrap();
    tracker.track("Before Deletion", Props::new()).unwrap();
    assert!(tracker.wait_until_synced(Duration::from_secs(30)));
    let answer = HttpTransport::new(&server.url)
        .send(&Request {
            method: tally_sdk::Method::Post,
            path: "/v1/deletions".to_owned(),
            headers: vec![
                (
                    "Authorization",
                    format!("Bearer {}", sdk_support::ADMIN_TOKEN),
                ),
                ("Content-Type", "application/json".to_owned()),
            ],
            body: br#"{"userId":"doomed"}"#.to_vec(),
        })
        .unwrap();
    assert_eq!(answer.status, 202);
    // Still identified as the deleted user: the first batch is refused
    // with deleted_user and names the user; the rest is purged unsent.
    const AFTER: u64 = 600;
    for _ in 0..AFTER {
        tracker.track("After Deletion", Props::new()).unwrap();
    }
    assert!(
        tracker.wait_until_synced(Duration::from_secs(60)),
        "{:?}",
        tracker.health()
    );
    let h = tracker.health();
    tracker.shutdown(Duration::from_secs(10)).unwrap();
    let rejected = h.rejected.get("deleted_user").copied().unwrap_or(0);
    let purged = h.dropped.get("deleted_user").copied().unwrap_or(0);
    // The collector also refuses the install's report of the purge: every
    // event from an install linked to a deleted person is refused.
    assert_eq!(rejected + purged, AFTER + 1, "{h:?}");
    assert!(
        purged > 0,
        "pending events of the deleted user were purged: {h:?}"
    );
    let (status, body) = server.get("/v1/events/count?event=After%20Deletion");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 0);
    let (_, reports) = server.get("/v1/events/count?event=tally.dropped");
    assert_eq!(reports["count"], 0);
}

#[test]
fn a_tracker_sends_over_https_to_a_collector_under_a_private_ca() {
    let dir = tempdir();
    let tls = TlsFiles::generate(&sub(dir.path(), "tls"));
    let server = Server::start_tls(&sub(dir.path(), "server"), &tls);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let tracker = Tracker::builder(WRITE_KEY, &server.url, sub(dir.path(), "device"))
        .consent(Consent::Granted)
        .trust_ca_pem(&tls.ca_pem)
        .build()
        .unwrap();
    for i in 0..250u64 {
        tracker
            .track("Over TLS", Props::new().with("i", i).with("screen", "cart"))
            .unwrap();
    }
    assert!(
        tracker.wait_until_synced(Duration::from_secs(60)),
        "{:?}",
        tracker.health()
    );
    let h = tracker.health();
    tracker.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!((h.accepted, h.duplicate), (250, 0));
    assert_eq!(server.stats()["events"], 250);
    let install = server.install(&h.install_id);
    assert_eq!(install["max_seq"], 250);
    assert_eq!(install["missing"], serde_json::json!([]));

    // A tracker that trusts only the public roots gets no answer: the
    // events stay pending on the device, none arrive.
    let untrusting = Tracker::builder(WRITE_KEY, &server.url, sub(dir.path(), "device2"))
        .consent(Consent::Granted)
        .build()
        .unwrap();
    untrusting.track("Not Trusted", Props::new()).unwrap();
    assert!(!untrusting.wait_until_synced(Duration::from_secs(3)));
    let h = untrusting.health();
    assert_eq!((h.accepted, h.pending), (0, 1));
    assert!(h.consecutive_failures >= 1, "{h:?}");
    untrusting.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(server.stats()["events"], 250);

    // A CA file without a certificate is refused at build time.
    let bad = Tracker::builder(WRITE_KEY, &server.url, sub(dir.path(), "device3"))
        .trust_ca_pem(b"not a certificate")
        .build();
    assert!(matches!(bad, Err(BuildError::Tls(_))), "{bad:?}");
}
