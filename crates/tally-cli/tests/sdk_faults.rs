//! The uploader through a fault-injecting transport that wraps the real
//! HTTP one, against a real `tally serve`: exact counts whatever the
//! faults, and the retry schedule read from a virtual clock.

#![allow(clippy::unwrap_used)]

mod sdk_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sdk_support::{batch_json, sub, tempdir, Server, WRITE_KEY};
use tally_proto::{decode_json, DecodeLimits};
use tally_sdk::upload::backoff::Backoff;
use tally_sdk::upload::policy::MIN_BACKOFF_MS;
use tally_sdk::{
    Clock, Consent, HttpTransport, Props, Request, Response, Tracker, Transport, TransportError,
    VirtualClock,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// Sent and answered normally.
    Pass,
    /// Never reaches the server: connection refused.
    Drop,
    /// Reaches the server after this many (virtual) ms.
    Delay(u64),
    /// The server commits the batch, then the connection resets before
    /// the answer arrives.
    ResetAfterCommit,
    /// The batch is delivered twice; the client sees the second answer.
    Duplicate,
    /// 500 without reaching the store.
    Status500,
    /// 429 with `Retry-After: 2`.
    Status429,
    /// 413 for any batch of more than one message.
    Status413,
    /// 503 with `Retry-After` as an HTTP-date about 3 s after the
    /// (virtual) time of the answer.
    Status503Date,
}

/// The script, cycled: runs of consecutive failures make the backoff
/// ceiling grow (1 s, 2 s, 4 s, 8 s) before a success resets it.
const SCRIPT: &[Fault] = &[
    Fault::Pass,
    Fault::Drop,
    Fault::Drop,
    Fault::Status500,
    Fault::ResetAfterCommit,
    Fault::Pass,
    Fault::Status429,
    Fault::Duplicate,
    Fault::Status503Date,
    Fault::Pass,
    Fault::Delay(1_500),
    Fault::Status413,
    Fault::Pass,
    Fault::ResetAfterCommit,
    Fault::Pass,
];

#[derive(Debug)]
struct Sent {
    at_ms: u64,
    fault: Fault,
    messages: usize,
    /// The wait a `Retry-After` date asked for, from the answer's time.
    date_wait_ms: u64,
}

#[derive(Debug)]
struct Faulty {
    inner: HttpTransport,
    clock: VirtualClock,
    calls: AtomicUsize,
    sent: Mutex<Vec<Sent>>,
}

fn status(code: u16, retry_after: Option<&str>) -> Result<Response, TransportError> {
    Ok(Response {
        status: code,
        retry_after: retry_after.map(str::to_owned),
        body: br#"{"code":"injected","message":"injected fault"}"#.to_vec(),
    })
}

impl Transport for Faulty {
    fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let json = batch_json(request);
        let messages = decode_json(json.as_bytes(), &DecodeLimits::default())
            .unwrap()
            .messages
            .len();
        let fault = SCRIPT[self.calls.fetch_add(1, Ordering::SeqCst) % SCRIPT.len()];
        let fault = if fault == Fault::Status413 && messages == 1 {
            Fault::Pass
        } else {
            fault
        };
        // A whole second (HTTP-dates have no fraction) 2 to 3 s ahead.
        let now_ms = self.clock.wall_ms();
        let date_s = now_ms.div_euclid(1_000) + 3;
        let date_wait_ms = u64::try_from(date_s * 1_000 - now_ms).unwrap();
        self.sent.lock().unwrap().push(Sent {
            at_ms: self.clock.mono_ms(),
            fault,
            messages,
            date_wait_ms,
        });
        match fault {
            Fault::Pass => self.inner.send(request),
            Fault::Drop => Err(TransportError::Connect("injected: refused".into())),
            Fault::Delay(ms) => {
                self.clock.advance(ms);
                self.inner.send(request)
            }
            Fault::ResetAfterCommit => {
                let answer = self.inner.send(request)?;
                assert_eq!(answer.status, 200);
                Err(TransportError::Io("injected: reset after commit".into()))
            }
            Fault::Duplicate => {
                let _ = self.inner.send(request)?;
                self.inner.send(request)
            }
            Fault::Status500 => status(500, None),
            Fault::Status429 => status(429, Some("2")),
            Fault::Status413 => status(413, None),
            Fault::Status503Date => {
                let at =
                    std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(date_s).unwrap());
                status(503, Some(&httpdate::fmt_http_date(at)))
            }
        }
    }
}

const EVENTS: u64 = 3_000;

#[test]
fn exact_counts_and_backoff_bounds_under_every_fault() {
    let dir = tempdir();
    let server = Server::start(&sub(dir.path(), "server"), 0);
    let clock = VirtualClock::starting_at(tally_sdk_now());
    let faulty = Arc::new(Faulty {
        inner: HttpTransport::new(&server.url),
        clock: clock.clone(),
        calls: AtomicUsize::new(0),
        sent: Mutex::new(Vec::new()),
    });
    let tracker = Tracker::builder(WRITE_KEY, &server.url, sub(dir.path(), "device"))
        .consent(Consent::Granted)
        .transport(faulty.clone())
        .clock(Arc::new(clock.clone()))
        .jitter_seed(11)
        .auto_upload(false)
        .build()
        .unwrap();
    for i in 0..EVENTS {
        tracker
            .track("Flaky", Props::new().with("i", i).with("screen", "cart"))
            .unwrap();
    }
    assert!(
        tracker.wait_until_synced(Duration::from_secs(120)),
        "{:?}",
        tracker.health()
    );
    let h = tracker.health();
    tracker.shutdown(Duration::from_secs(10)).unwrap();

    // Exact counts: every event once, duplicates recognised, nothing lost.
    let stats = server.stats();
    assert_eq!(stats["events"], EVENTS);
    assert_eq!(stats["accepted"], EVENTS);
    assert_eq!(
        h.accepted + h.duplicate,
        EVENTS,
        "each event answered for once on the device"
    );
    assert!(
        h.duplicate > 0,
        "reset-after-commit and duplicate delivery were answered as duplicates"
    );
    assert!(h.rejected.is_empty() && h.dropped.is_empty(), "{h:?}");
    let install = server.install(&h.install_id);
    assert_eq!(install["max_seq"], EVENTS);
    assert_eq!(install["missing"], serde_json::json!([]));

    // Every fault happened, and the schedule obeyed the backoff bounds.
    let sent = faulty.sent.lock().unwrap();
    let mut seen: BTreeMap<Fault, usize> = BTreeMap::new();
    for s in sent.iter() {
        *seen
            .entry(match s.fault {
                Fault::Delay(_) => Fault::Delay(0),
                f => f,
            })
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 9, "every fault kind was injected: {seen:?}");
    let mut consecutive = 0u32;
    let mut checked = 0;
    for pair in sent.windows(2) {
        let (this, next) = (&pair[0], &pair[1]);
        let gap = next.at_ms - this.at_ms;
        match this.fault {
            Fault::Drop | Fault::ResetAfterCommit | Fault::Status500 => {
                consecutive += 1;
                let ceiling = Backoff::ceiling_ms(consecutive);
                assert!(
                    (MIN_BACKOFF_MS..=ceiling).contains(&gap),
                    "failure {consecutive}: waited {gap} ms, bounds {MIN_BACKOFF_MS}..={ceiling}"
                );
                checked += 1;
            }
            Fault::Status429 => {
                consecutive += 1;
                assert_eq!(gap, 2_000, "Retry-After is obeyed exactly");
                checked += 1;
            }
            Fault::Status503Date => {
                consecutive += 1;
                assert!((2_001..=3_000).contains(&this.date_wait_ms));
                assert_eq!(
                    gap, this.date_wait_ms,
                    "a Retry-After date is obeyed to the millisecond"
                );
                checked += 1;
            }
            Fault::Status413 => {
                assert!(this.messages > 1);
                assert_eq!(gap, 0, "a 413 is split and resent at once");
                assert!(next.messages <= this.messages / 2 + 1);
            }
            Fault::Pass | Fault::Duplicate => consecutive = 0,
            Fault::Delay(ms) => {
                consecutive = 0;
                assert_eq!(
                    gap, ms,
                    "a slow success is followed by the next batch at once"
                );
            }
        }
    }
    assert!(checked >= 6, "{checked} retry gaps checked");
    let waits = clock.waits();
    assert!(
        waits.iter().all(|&w| w <= Backoff::ceiling_ms(u32::MAX)),
        "{waits:?}"
    );
}

fn tally_sdk_now() -> i64 {
    tally_sdk::SystemClock::default().wall_ms()
}

/// Forwards to the real transport, except that any batch holding a message
/// whose properties carry `"poison":<kind>` gets the answer that kind
/// names, as a collector that cannot take that one message would.
#[derive(Debug)]
struct Poisoned {
    inner: HttpTransport,
}

impl Transport for Poisoned {
    fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let text = batch_json(request);
        for (marker, code) in [
            ("\"poison\":\"400\"", 400),
            ("\"poison\":\"413\"", 413),
            ("\"poison\":\"500\"", 500),
        ] {
            if text.contains(marker) {
                return status(code, None);
            }
        }
        self.inner.send(request)
    }
}

#[test]
fn a_poison_message_is_isolated_and_its_neighbours_delivered() {
    let dir = tempdir();
    let server = Server::start(&sub(dir.path(), "server"), 0);
    let clock = VirtualClock::starting_at(tally_sdk_now());
    let tracker = Tracker::builder(WRITE_KEY, &server.url, sub(dir.path(), "device"))
        .consent(Consent::Granted)
        .transport(Arc::new(Poisoned {
            inner: HttpTransport::new(&server.url),
        }))
        .clock(Arc::new(clock.clone()))
        .jitter_seed(3)
        .auto_upload(false)
        .build()
        .unwrap();
    for i in 0..30u64 {
        let props = match i {
            7 => Props::new().with("poison", "400"),
            15 => Props::new().with("poison", "413"),
            23 => Props::new().with("poison", "500"),
            _ => Props::new().with("i", i),
        };
        tracker.track("Maybe Poison", props).unwrap();
    }
    assert!(
        tracker.wait_until_synced(Duration::from_secs(120)),
        "{:?}",
        tracker.health()
    );
    let h = tracker.health();
    tracker.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(
        h.accepted, 30,
        "every neighbour of a poison message was delivered"
    );
    let rejected: Vec<(&str, u64)> = h.rejected.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        rejected,
        vec![("server_error", 1), ("too_large", 1), ("undecodable", 1)]
    );
    let install = server.install(&h.install_id);
    assert_eq!(
        install["missing"],
        serde_json::json!([]),
        "quarantined seqs are reported, not missing"
    );
    assert_eq!(install["dropped"], 3);
    // 27 neighbours, and one tally.dropped report per quarantine reason.
    assert_eq!(server.stats()["events"], 30);
    assert!(
        clock.waits().iter().any(|&w| w > 1_000),
        "the 5xx poison was retried with backoff before it was quarantined"
    );
}
