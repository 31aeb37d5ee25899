//! The app chooses where the log's keys live, and can rotate them: events
//! are sealed under the provider's keys (none of them lands in the data
//! directory), a rotation adds a key, and every event sealed before and
//! after it stays readable until acknowledged. No collector is needed:
//! nothing is uploaded.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tally_sdk::log::{KeyProvider, MemKeyProvider};
use tally_sdk::{Consent, Props, Tracker};

fn tracker(dir: &Path, keys: &MemKeyProvider) -> Tracker {
    Tracker::builder("wk", "http://127.0.0.1:9", dir)
        .consent(Consent::Granted)
        .auto_upload(false)
        .key_provider(Arc::new(keys.clone()))
        .build()
        .unwrap()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn a_rotated_key_seals_new_events_and_old_ones_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let keys = MemKeyProvider::new();
    let t = tracker(dir.path(), &keys);
    for i in 0..5 {
        t.track("Before", Props::new().with("i", i)).unwrap();
    }
    t.flush().unwrap();
    assert_eq!(keys.list().unwrap().len(), 1);

    t.rotate_key().unwrap();
    for i in 0..3 {
        t.track("After", Props::new().with("i", i)).unwrap();
    }
    t.flush().unwrap();
    assert_eq!(keys.list().unwrap().len(), 2);
    assert_eq!(t.health().pending, 8);
    t.shutdown(Duration::from_secs(5)).unwrap();

    // The keys live in the provider only: no key file in the data directory.
    let files = files_under(dir.path());
    assert!(
        files.iter().all(|f| !f.starts_with("key-")),
        "key files on disk: {files:?}"
    );

    // Reopened with the same provider, every event is still readable.
    let t = tracker(dir.path(), &keys);
    let health = t.health();
    assert_eq!(health.pending, 8);
    assert_eq!(health.corrupt, 0);
    t.shutdown(Duration::from_secs(5)).unwrap();

    // Without the keys, nothing is readable: every record counts as corrupt.
    let t = tracker(dir.path(), &MemKeyProvider::new());
    let health = t.health();
    assert_eq!(health.pending, 0);
    assert_eq!(health.corrupt, 8);
    t.shutdown(Duration::from_secs(5)).unwrap();
}
