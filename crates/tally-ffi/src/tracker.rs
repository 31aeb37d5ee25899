//! [`TallyTracker`]: the Rust SDK's `Tracker` behind UniFFI.
//!
//! Every method returns a value or a [`TallyError`]; none panics. The
//! tracker sits in a read-write lock only so that `shutdown` can take it
//! out while other threads keep calling: a `track()` takes the read side
//! (one uncontended atomic operation), and after shutdown every call is
//! refused as [`TallyError::ShutDown`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tally_sdk::{Props, TrackOptions as SdkTrackOptions, Tracker, WhenFull};

use crate::error::TallyError;
use crate::keys::{KeyStore, PlatformKeys};
use crate::types::{
    BackgroundSync, Consent, Health, Priority, PropValue, TallyConfig, TrackOptions,
};

/// The SDK's entry point for Kotlin, Swift and Python: cheap to call from
/// any thread.
#[derive(Debug, uniffi::Object)]
pub struct TallyTracker {
    tracker: RwLock<Option<Tracker>>,
    critical_events: HashSet<String>,
}

fn invalid_config(field: &str, detail: &str) -> TallyError {
    TallyError::InvalidConfig {
        field: field.to_owned(),
        detail: detail.to_owned(),
    }
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// A property value as JSON, refusing what JSON cannot write.
fn json_value(value: PropValue) -> Result<Value, TallyError> {
    Ok(match value {
        PropValue::Null => Value::Null,
        PropValue::Bool { value } => Value::Bool(value),
        PropValue::Int { value } => Value::from(value),
        PropValue::Double { value } => serde_json::Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| TallyError::InvalidProperties {
                detail: format!("{value} is not a finite number"),
            })?,
        PropValue::Text { value } => Value::String(value),
        PropValue::Items { value } => Value::Array(
            value
                .into_iter()
                .map(json_value)
                .collect::<Result<_, _>>()?,
        ),
        PropValue::Members { value } => Value::Object(
            sorted(value)
                .into_iter()
                .map(|(k, v)| Ok((k, json_value(v)?)))
                .collect::<Result<_, TallyError>>()?,
        ),
    })
}

/// Map members in key order, so the same map always makes the same JSON.
fn sorted(map: HashMap<String, PropValue>) -> Vec<(String, PropValue)> {
    let mut members: Vec<_> = map.into_iter().collect();
    members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    members
}

/// The SDK's properties from a map of typed values (none: empty).
pub(crate) fn to_props(map: Option<HashMap<String, PropValue>>) -> Result<Props, TallyError> {
    let mut props = Props::new();
    for (key, value) in sorted(map.unwrap_or_default()) {
        props.insert(&key, &json_value(value)?)?;
    }
    Ok(props)
}

impl TallyTracker {
    fn builder(
        config: TallyConfig,
        key_store: Option<Box<dyn KeyStore>>,
    ) -> Result<tally_sdk::TrackerBuilder, TallyError> {
        if config.write_key.is_empty() {
            return Err(invalid_config("write_key", "is empty"));
        }
        if config.endpoint.is_empty() {
            return Err(invalid_config("endpoint", "is empty"));
        }
        if config.data_dir.is_empty() {
            return Err(invalid_config("data_dir", "is empty"));
        }
        let mut b = Tracker::builder(
            config.write_key,
            config.endpoint,
            PathBuf::from(config.data_dir),
        )
        .store_nothing_while_pending(config.store_nothing_while_pending)
        .auto_upload(config.auto_upload)
        .metered_policy(config.metered_policy.unwrap_or_default().into())
        .durability(config.durability.unwrap_or_default().into());
        if let Some(consent) = config.consent {
            b = b.consent(consent.into());
        }
        if config.max_log_bytes.is_some() || config.max_log_events.is_some() {
            b = b.log_capacity(
                config
                    .max_log_bytes
                    .unwrap_or(tally_sdk::log::DEFAULT_MAX_BYTES),
                config
                    .max_log_events
                    .unwrap_or(tally_sdk::log::DEFAULT_MAX_EVENTS),
            );
        }
        if let Some(age) = config.max_log_age_ms {
            b = b.log_max_age(ms(age));
        }
        if let Some(budget) = config.queue_budget_bytes {
            b = b.queue_budget(usize::try_from(budget).unwrap_or(usize::MAX));
        }
        if let Some(wait) = config.queue_full_wait_ms {
            b = b.when_full(WhenFull::Block(wait));
        }
        if let Some(timeout) = config.session_timeout_ms {
            b = b.session_timeout(ms(timeout));
        }
        if let Some(every) = config.health_beacon_ms {
            b = b.health_beacon(ms(every));
        }
        if let Some(pem) = config.trusted_ca_pem {
            b = b.trust_ca_pem(pem.as_bytes());
        }
        if let Some(store) = key_store {
            b = b.key_provider(Arc::new(PlatformKeys::new(store)));
        }
        Ok(b)
    }

    /// Runs `f` on the live tracker.
    fn with<T>(&self, f: impl FnOnce(&Tracker) -> Result<T, TallyError>) -> Result<T, TallyError> {
        let guard = self.tracker.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(tracker) => f(tracker),
            None => Err(TallyError::ShutDown),
        }
    }

    fn options(&self, name: &str, options: Option<TrackOptions>) -> SdkTrackOptions {
        let options = options.unwrap_or_default();
        let default = if self.critical_events.contains(name) {
            Priority::Critical
        } else {
            Priority::Normal
        };
        SdkTrackOptions {
            priority: options.priority.unwrap_or(default).into(),
            dedup_key: options.dedup_key,
            event_version: options.event_version,
        }
    }
}

#[uniffi::export]
impl TallyTracker {
    /// Opens the data directory and starts the SDK's threads. `key_store`
    /// keeps the log's keys in the platform's store; without one they are
    /// 0600 files in the data directory.
    #[uniffi::constructor(default(key_store = None))]
    pub fn new(
        config: TallyConfig,
        key_store: Option<Box<dyn KeyStore>>,
    ) -> Result<Arc<Self>, TallyError> {
        let critical_events = config.critical_events.iter().cloned().collect();
        let tracker = Self::builder(config, key_store)?.build()?;
        Ok(Arc::new(Self {
            tracker: RwLock::new(Some(tracker)),
            critical_events,
        }))
    }
    /// Tracks event `name`; returns its per-install sequence number. Never
    /// waits on disk or network.
    #[uniffi::method(default(props = None, options = None))]
    pub fn track(
        &self,
        name: String,
        props: Option<HashMap<String, PropValue>>,
        options: Option<TrackOptions>,
    ) -> Result<u64, TallyError> {
        let props = to_props(props)?;
        let options = self.options(&name, options);
        self.with(|t| Ok(t.track_with(&name, props, options)?.seq))
    }

    /// Tracks event `name` with properties given as a JSON object's text.
    #[uniffi::method(default(options = None))]
    pub fn track_json(
        &self,
        name: String,
        props_json: String,
        options: Option<TrackOptions>,
    ) -> Result<u64, TallyError> {
        let props = Props::from_json(&props_json)?;
        let options = self.options(&name, options);
        self.with(|t| Ok(t.track_with(&name, props, options)?.seq))
    }
    /// A screen view.
    #[uniffi::method(default(props = None))]
    pub fn screen(
        &self,
        name: String,
        props: Option<HashMap<String, PropValue>>,
    ) -> Result<u64, TallyError> {
        let props = to_props(props)?;
        self.with(|t| Ok(t.screen(&name, props)?.seq))
    }

    /// A page view.
    #[uniffi::method(default(props = None))]
    pub fn page(
        &self,
        name: String,
        props: Option<HashMap<String, PropValue>>,
    ) -> Result<u64, TallyError> {
        let props = to_props(props)?;
        self.with(|t| Ok(t.page(&name, props)?.seq))
    }

    /// Names the user from this message on.
    #[uniffi::method(default(traits = None))]
    pub fn identify(
        &self,
        user_id: String,
        traits: Option<HashMap<String, PropValue>>,
    ) -> Result<u64, TallyError> {
        let traits = to_props(traits)?;
        self.with(|t| Ok(t.identify(&user_id, traits)?.seq))
    }

    /// Links the user to group `group_id`.
    #[uniffi::method(default(traits = None))]
    pub fn group(
        &self,
        group_id: String,
        traits: Option<HashMap<String, PropValue>>,
    ) -> Result<u64, TallyError> {
        let traits = to_props(traits)?;
        self.with(|t| Ok(t.group(&group_id, traits)?.seq))
    }
    /// Says the current identity and `user_id` are one person.
    pub fn alias(&self, user_id: String) -> Result<u64, TallyError> {
        self.with(|t| Ok(t.alias(&user_id)?.seq))
    }

    /// Logout: forgets the user, starts a new anonymous identity and
    /// session.
    pub fn reset(&self) -> Result<(), TallyError> {
        self.with(|t| Ok(t.reset()?))
    }

    /// Sets consent. `Denied` refuses new messages and shreds everything
    /// stored before it returns.
    pub fn set_consent(&self, consent: Consent) -> Result<(), TallyError> {
        self.with(|t| Ok(t.set_consent(consent.into())?))
    }

    /// The durability barrier: returns once every message accepted before
    /// the call is on disk.
    pub fn flush(&self) -> Result<(), TallyError> {
        self.with(|t| Ok(t.flush()?))
    }

    /// Asks the uploader to try now (skips a backoff wait).
    pub fn sync_now(&self) -> Result<(), TallyError> {
        self.with(|t| {
            t.sync_now();
            Ok(())
        })
    }

    /// Flushes, syncs now and waits up to `timeout_ms` until nothing is
    /// pending; says whether nothing is. Blocks: not for the UI thread.
    pub fn wait_until_synced(&self, timeout_ms: u64) -> Result<bool, TallyError> {
        self.with(|t| Ok(t.wait_until_synced(ms(timeout_ms))))
    }

    /// The health report.
    pub fn health(&self) -> Result<Health, TallyError> {
        self.with(|t| Ok(t.health().into()))
    }

    /// This install's id.
    pub fn install_id(&self) -> Result<String, TallyError> {
        self.with(|t| Ok(t.install_id().to_owned()))
    }

    /// From the app's connectivity callback (Android
    /// `ConnectivityManager.NetworkCallback`, iOS `NWPathMonitor`). Offline,
    /// nothing is attempted; going online, or to an unmetered network,
    /// cancels the backoff wait and syncs at once. Cheap, never blocks.
    pub fn set_network(&self, online: bool, metered: bool) -> Result<(), TallyError> {
        self.with(|t| {
            t.set_network(online, metered);
            Ok(())
        })
    }

    /// Low-power mode (Android power saver, iOS Low Power Mode): uploads
    /// are batched over a minute instead of following every group commit.
    pub fn set_low_power(&self, on: bool) -> Result<(), TallyError> {
        self.with(|t| {
            t.set_low_power(on);
            Ok(())
        })
    }

    /// For a background task with `within_ms` to run (WorkManager,
    /// BGTaskScheduler): sends what fits, returns by the deadline with what
    /// was sent and what is left. Blocks: call it from the task's thread.
    pub fn run_background_sync(&self, within_ms: u64) -> Result<BackgroundSync, TallyError> {
        self.with(|t| Ok(t.run_background_sync(ms(within_ms)).into()))
    }

    /// Seals events from now on under a new key.
    pub fn rotate_key(&self) -> Result<(), TallyError> {
        self.with(|t| Ok(t.rotate_key()?))
    }

    /// Flushes, stops the SDK's threads and waits up to `timeout_ms` for
    /// them. Every later call is refused as `ShutDown`; a second shutdown
    /// does nothing.
    pub fn shutdown(&self, timeout_ms: u64) -> Result<(), TallyError> {
        let tracker = self
            .tracker
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match tracker {
            Some(t) => Ok(t.shutdown(ms(timeout_ms))?),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> PropValue {
        PropValue::Text {
            value: s.to_owned(),
        }
    }

    #[test]
    fn typed_values_make_json_in_key_order() {
        let nested = HashMap::from([
            ("b".to_owned(), PropValue::Int { value: -3 }),
            ("a".to_owned(), PropValue::Null),
        ]);
        let map = HashMap::from([
            ("total".to_owned(), PropValue::Double { value: 42.5 }),
            ("sku".to_owned(), text("sku-1")),
            ("gift".to_owned(), PropValue::Bool { value: true }),
            (
                "tags".to_owned(),
                PropValue::Items {
                    value: vec![text("x"), PropValue::Int { value: 7 }],
                },
            ),
            ("meta".to_owned(), PropValue::Members { value: nested }),
        ]);
        let p = to_props(Some(map)).unwrap();
        assert_eq!(
            p.as_json(),
            r#"{"gift":true,"meta":{"a":null,"b":-3},"sku":"sku-1","tags":["x",7],"total":42.5}"#
        );
        assert_eq!(p.len(), 5);
    }

    #[test]
    fn values_json_cannot_write_are_refused() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let deep = PropValue::Items {
                value: vec![PropValue::Double { value: bad }],
            };
            let err = to_props(Some(HashMap::from([("x".to_owned(), deep)]))).unwrap_err();
            assert_eq!(err.code(), "invalid_properties", "{bad}");
        }
    }
}
