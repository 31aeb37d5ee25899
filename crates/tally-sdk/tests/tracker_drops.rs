//! A message the pipeline itself drops after `track()` accepted it is
//! explained on disk before any later record is: its drop is in the log's
//! drop ledger by the time the next record is durable, not in a state file
//! saved seconds later (a kill in between would leave a seq gap that
//! nothing explains).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_sdk::log::{inspect, Inspection, StdFs};
use tally_sdk::{Consent, ContextProvider, DeviceContext, Props, Tracker};

/// A device whose context is large: 12 KiB of model name. With 23 KiB of
/// properties (under the 24 KiB the call accepts) the message passes the
/// call's checks and is over the 32 KiB message limit once enriched.
#[derive(Debug)]
struct LargeContext;

impl ContextProvider for LargeContext {
    fn device_context(&self) -> DeviceContext {
        DeviceContext {
            model: Some("m".repeat(12 * 1024)),
            ..DeviceContext::default()
        }
    }
}

/// The log as it is on disk now (what a kill -9 would leave).
fn on_disk(dir: &std::path::Path) -> Inspection {
    inspect(&dir.join("log"), Arc::new(StdFs)).unwrap()
}

#[test]
fn a_message_invalid_once_enriched_is_in_the_drop_ledger_before_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::builder("wk", "http://127.0.0.1:9", dir.path())
        .consent(Consent::Granted)
        .context_provider(Arc::new(LargeContext))
        .auto_upload(false)
        .build()
        .unwrap();
    let big = Props::new().with("blob", "x".repeat(23 * 1024));
    assert_eq!(t.track("Too Big Once Enriched", big).unwrap().seq, 1);
    assert_eq!(t.track("Small", Props::new()).unwrap().seq, 2);

    // No flush from the app: the group commit makes seq 2 durable.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut disk = on_disk(dir.path());
    while disk.pending < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        disk = on_disk(dir.path());
    }
    assert_eq!(disk.pending, 1, "seq 2 is durable");
    assert_eq!(
        disk.dropped,
        BTreeMap::from([("invalid:message_too_large".to_owned(), 1)]),
        "seq 1 is explained on disk as soon as seq 2 is there"
    );
    // Counted once, by the log.
    assert_eq!(
        t.health().dropped,
        BTreeMap::from([("invalid:message_too_large".to_owned(), 1)])
    );
    t.shutdown(Duration::from_secs(5)).unwrap();
}

/// An event still on its way through the pipeline when consent is
/// withdrawn is dropped by the pipeline, just before the purge shreds the
/// log: its drop is counted once, by the new ledger, as soon as the
/// consent call returns, and a restart still finds it (the purge moves it
/// from the shredded ledger to the SDK's state).
#[test]
fn a_drop_just_before_a_purge_is_counted_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let consent_denied = BTreeMap::from([("consent_denied".to_owned(), 1)]);
    let t = Tracker::builder("wk", "http://127.0.0.1:9", dir.path())
        .consent(Consent::Granted)
        .auto_upload(false)
        .build()
        .unwrap();
    assert_eq!(t.track("Before", Props::new()).unwrap().seq, 1);
    t.set_consent(Consent::Denied).unwrap();
    assert_eq!(t.health().dropped, consent_denied);
    assert_eq!(t.health().pending, 0);
    t.shutdown(Duration::from_secs(5)).unwrap();
    // The purge took the ledger: the drop now waits to be reported in the
    // SDK's state, and its count with the tracker's.
    let t = Tracker::builder("wk", "http://127.0.0.1:9", dir.path())
        .auto_upload(false)
        .build()
        .unwrap();
    assert_eq!(t.health().dropped, consent_denied);
    assert_eq!(
        t.track("After", Props::new()).unwrap_err().code(),
        "consent_denied"
    );
    t.shutdown(Duration::from_secs(5)).unwrap();
    let state = std::fs::read_to_string(dir.path().join("tally-state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        state["unreported_drops"],
        serde_json::json!([{"reason": "consent_denied", "from": 1, "to": 1}])
    );
}
