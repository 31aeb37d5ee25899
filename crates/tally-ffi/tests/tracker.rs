//! The tracker as the bindings see it, without a collector: typed errors
//! with the SDK's codes, exact health counts, and a key store the app
//! implements.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tally_ffi::{
    BackgroundOutcome, Consent, Durability, KeyStore, KeyStoreError, MeteredPolicy, PropValue,
    TallyConfig, TallyError, TallyTracker, TrackOptions,
};

/// A port nothing listens on: uploads fail, events stay pending.
const NOWHERE: &str = "http://127.0.0.1:9";

fn config(dir: &std::path::Path) -> TallyConfig {
    TallyConfig {
        metered_policy: Some(MeteredPolicy::SendAll),
        durability: Some(Durability::Synced),
        ..support::config(NOWHERE, dir)
    }
}

fn text(s: &str) -> PropValue {
    PropValue::Text { value: s.into() }
}

#[test]
fn bad_arguments_are_typed_errors_with_the_sdk_codes() {
    let dir = tempfile::tempdir().unwrap();
    let t = TallyTracker::new(config(dir.path()), None).unwrap();
    let long = "x".repeat(1_000);
    let cases: Vec<(Result<u64, TallyError>, &str)> = vec![
        (t.track(String::new(), None, None), "missing_event_name"),
        (t.track(long.clone(), None, None), "event_name_too_long"),
        (t.identify(String::new(), None), "missing_identity"),
        (t.group(String::new(), None), "missing_group_id"),
        (
            t.track_json("E".into(), "[1]".into(), None),
            "invalid_properties",
        ),
        (
            t.track_json("E".into(), "{".into(), None),
            "invalid_properties",
        ),
        (
            t.track(
                "E".into(),
                Some(HashMap::from([(
                    "x".into(),
                    PropValue::Double { value: f64::NAN },
                )])),
                None,
            ),
            "invalid_properties",
        ),
        (
            t.track(
                "E".into(),
                Some((0..256).map(|i| (format!("k{i}"), text("v"))).collect()),
                None,
            ),
            "too_many_properties",
        ),
        (
            t.track(
                "E".into(),
                None,
                Some(TrackOptions {
                    dedup_key: Some(long),
                    ..TrackOptions::default()
                }),
            ),
            "id_too_long",
        ),
    ];
    for (i, (result, code)) in cases.into_iter().enumerate() {
        assert_eq!(result.unwrap_err().code(), code, "case {i}");
    }
    // The refusals the SDK counts are counted under the same codes; the
    // arguments refused before reaching it (bad JSON, NaN) are not.
    let h = t.health().unwrap();
    let refused: BTreeMap<_, _> = h.refused.into_iter().collect();
    assert_eq!(
        refused,
        BTreeMap::from([
            ("event_name_too_long".into(), 1),
            ("id_too_long".into(), 1),
            ("missing_event_name".into(), 1),
            ("missing_group_id".into(), 1),
            ("missing_identity".into(), 1),
            ("too_many_properties".into(), 1),
        ])
    );
    assert_eq!(h.tracked, 0);
    t.shutdown(5_000).unwrap();
}

#[test]
fn an_empty_setting_is_a_config_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for field in ["write_key", "endpoint", "data_dir"] {
        let mut c = config(dir.path());
        match field {
            "write_key" => c.write_key.clear(),
            "endpoint" => c.endpoint.clear(),
            _ => c.data_dir.clear(),
        }
        match TallyTracker::new(c, None).unwrap_err() {
            TallyError::InvalidConfig { field: f, .. } => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn every_kind_of_message_is_kept_offline_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let t = TallyTracker::new(config(dir.path()), None).unwrap();
    let props = HashMap::from([("screen".to_owned(), text("home"))]);
    let seqs = [
        t.track("Opened".into(), Some(props.clone()), None).unwrap(),
        t.track_json("Clicked".into(), r#"{"n":1}"#.into(), None)
            .unwrap(),
        t.screen("Home".into(), None).unwrap(),
        t.page("/home".into(), Some(props)).unwrap(),
        t.identify("user-1".into(), None).unwrap(),
        t.alias("user-2".into()).unwrap(),
        t.group("team-1".into(), None).unwrap(),
    ];
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
    t.flush().unwrap();
    let h = t.health().unwrap();
    assert_eq!((h.tracked, h.pending, h.accepted), (7, 7, 0));
    assert!(!t.install_id().unwrap().is_empty());
    t.reset().unwrap();
    t.rotate_key().unwrap();
    t.set_low_power(true).unwrap();
    t.set_network(false, false).unwrap();
    let bg = t.run_background_sync(5_000).unwrap();
    assert_eq!(
        (bg.sent, bg.remaining, bg.outcome),
        (0, 7, BackgroundOutcome::Offline)
    );
    t.shutdown(5_000).unwrap();

    // A restart finds them, and numbers on.
    let t = TallyTracker::new(config(dir.path()), None).unwrap();
    assert_eq!(t.health().unwrap().pending, 7);
    assert_eq!(t.track("Again".into(), None, None).unwrap(), 8);
    t.shutdown(5_000).unwrap();
}

#[test]
fn consent_denied_stores_nothing_and_shutdown_refuses_later_calls() {
    let dir = tempfile::tempdir().unwrap();
    let t = TallyTracker::new(config(dir.path()), None).unwrap();
    t.track("Before".into(), None, None).unwrap();
    t.set_consent(Consent::Denied).unwrap();
    let err = t.track("After".into(), None, None).unwrap_err();
    assert_eq!(err, TallyError::ConsentDenied);
    t.flush().unwrap();
    let h = t.health().unwrap();
    assert_eq!(h.pending, 0, "the event before the denial was shredded");
    assert_eq!(h.dropped.get("consent_denied"), Some(&1));
    assert_eq!(h.refused.get("consent_denied"), Some(&1));
    assert_eq!(h.consent, Consent::Denied);
    t.shutdown(5_000).unwrap();
    assert_eq!(
        t.track("Late".into(), None, None).unwrap_err(),
        TallyError::ShutDown
    );
    assert_eq!(t.health().unwrap_err(), TallyError::ShutDown);
    t.shutdown(5_000).unwrap();
}

/// An app's key store, in memory, with every call it got (cloned, it is
/// the same store).
#[derive(Debug, Default, Clone)]
struct AppKeys(Arc<Held>);

#[derive(Debug, Default)]
struct Held {
    keys: Mutex<BTreeMap<u32, Vec<u8>>>,
    calls: Mutex<Vec<String>>,
}

impl std::ops::Deref for AppKeys {
    type Target = Held;
    fn deref(&self) -> &Held {
        &self.0
    }
}

impl KeyStore for AppKeys {
    fn load(&self, id: u32) -> Result<Option<Vec<u8>>, KeyStoreError> {
        self.calls.lock().unwrap().push(format!("load {id}"));
        Ok(self.keys.lock().unwrap().get(&id).cloned())
    }
    fn store(&self, id: u32, key: Vec<u8>) -> Result<(), KeyStoreError> {
        self.calls.lock().unwrap().push(format!("store {id}"));
        self.keys.lock().unwrap().insert(id, key);
        Ok(())
    }
    fn list(&self) -> Result<Vec<u32>, KeyStoreError> {
        Ok(self.keys.lock().unwrap().keys().copied().collect())
    }
    fn delete(&self, id: u32) -> Result<(), KeyStoreError> {
        self.calls.lock().unwrap().push(format!("delete {id}"));
        self.keys.lock().unwrap().remove(&id);
        Ok(())
    }
}

#[test]
fn the_app_key_store_holds_every_key_and_the_files_none() {
    let dir = tempfile::tempdir().unwrap();
    let keys = AppKeys::default();
    let t = TallyTracker::new(config(dir.path()), Some(Box::new(keys.clone()))).unwrap();
    t.track("Sealed".into(), None, None).unwrap();
    t.flush().unwrap(); // sealed under key 1 before the rotation
    t.rotate_key().unwrap();
    t.track("Sealed again".into(), None, None).unwrap();
    t.shutdown(5_000).unwrap();
    let held: Vec<u32> = keys.keys.lock().unwrap().keys().copied().collect();
    assert_eq!(held, vec![1, 2], "both keys seal pending events");
    assert!(keys.keys.lock().unwrap().values().all(|k| k.len() == 32));
    assert!(keys.calls.lock().unwrap().contains(&"store 1".to_owned()));
    let key_files = walk(dir.path())
        .into_iter()
        .filter(|p| p.contains("key-"))
        .count();
    assert_eq!(key_files, 0, "no key is written to the app's files");

    // Reopened with the same store: both events are readable.
    let t = TallyTracker::new(config(dir.path()), Some(Box::new(keys.clone()))).unwrap();
    let h = t.health().unwrap();
    assert_eq!((h.pending, h.corrupt), (2, 0));
    t.shutdown(5_000).unwrap();
}

#[derive(Debug)]
struct Locked;

impl KeyStore for Locked {
    fn load(&self, _: u32) -> Result<Option<Vec<u8>>, KeyStoreError> {
        Err(KeyStoreError::Unavailable {
            detail: "device locked".into(),
        })
    }
    fn store(&self, id: u32, _: Vec<u8>) -> Result<(), KeyStoreError> {
        self.load(id).map(|_| ())
    }
    fn list(&self) -> Result<Vec<u32>, KeyStoreError> {
        self.load(0).map(|_| vec![])
    }
    fn delete(&self, id: u32) -> Result<(), KeyStoreError> {
        self.load(id).map(|_| ())
    }
}

#[test]
fn a_key_store_that_fails_is_a_storage_error_at_build() {
    let dir = tempfile::tempdir().unwrap();
    match TallyTracker::new(config(dir.path()), Some(Box::new(Locked))).unwrap_err() {
        TallyError::Storage { detail } => assert!(detail.contains("device locked"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}
