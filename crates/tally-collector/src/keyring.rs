//! The key ring: the secrets a collector accepts right now, kept in
//! memory and followed from the store while the collector runs.
//!
//! A request is authenticated against the ring alone, so no request
//! waits on the store. The ring is built from the collector's
//! configuration (flags, environment, `tally.toml`) and, once a store is
//! attached, from the keys stored there ([`crate::store::keys`]):
//!
//! - a secret made through the API is valid while its key is not revoked
//!   and its expiry (a rotation's grace period) has not passed;
//! - a configured secret is valid while this collector is configured
//!   with it, unless the store revoked its key or expired it;
//! - a configured key the store does not hold (no store attached yet) is
//!   valid as configured.
//!
//! [`spawn_poller`] reads the store's key version every
//! [`KEY_POLL_INTERVAL`] and reloads the ring when it moved, so a key
//! revoked or rotated on any collector sharing the store is refused here
//! within about that long, without a restart; a collector that changed a
//! key reloads at once. While the store cannot be read the ring stays as
//! it was (logged once per outage).
//!
//! Secrets are compared as SHA-256 digests in constant time against every
//! entry of the ring ([`Ring::find`]).

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use crate::store::keys::{KeyKind, SecretDigest, StoredKey};
use crate::store::{Store, StoreError};

/// How often a collector reads the store's key version: a revoked key is
/// refused by every collector sharing the store within about this long.
pub const KEY_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The grace period of a rotation unless the request names one: a day,
/// long enough to roll the new secret out to every client configured
/// with the old one.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest grace period a rotation may give the old secret.
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The SHA-256 digest of a secret.
pub fn digest(secret: &str) -> SecretDigest {
    Sha256::digest(secret.as_bytes()).into()
}

/// The id of a configured key of `kind`: its kind's prefix and 16 hex
/// digits of its digest. For a write key this is the source id events
/// have recorded since sources exist, so configured sources keep theirs.
pub fn configured_id(kind: KeyKind, digest: &SecretDigest) -> String {
    let mut id = String::with_capacity(3 + 16);
    id.push_str(kind.id_prefix());
    for byte in &digest[..8] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// Why a new key or secret could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

/// A new key id of `kind` (its prefix and 16 random hex digits).
pub fn new_key_id(kind: KeyKind) -> Result<String, RandomError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
    let mut id = kind.id_prefix().to_owned();
    for byte in bytes {
        id.push_str(&format!("{byte:02x}"));
    }
    Ok(id)
}

/// A new secret of `kind`: `tally_<kind>_` and 32 random bytes in
/// base64url (256 bits; the prefix lets secret scanners find leaked ones).
pub fn new_secret(kind: KeyKind) -> Result<String, RandomError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
    Ok(format!(
        "tally_{}_{}",
        kind.as_str(),
        URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// A secret the ring accepts.
#[derive(Clone)]
struct Entry {
    digest: SecretDigest,
    kind: KeyKind,
    key_id: Arc<str>,
    expires_at: Option<i64>,
}

/// What a matching secret stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The key's kind.
    pub kind: KeyKind,
    /// The key's id (a write key's source).
    pub key_id: Arc<str>,
}

/// The secrets accepted at one moment.
#[derive(Clone, Default)]
pub struct Ring {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |k: KeyKind| self.entries.iter().filter(|e| e.kind == k).count();
        f.debug_struct("Ring")
            .field("write", &count(KeyKind::Write))
            .field("read", &count(KeyKind::Read))
            .field("admin", &count(KeyKind::Admin))
            .finish()
    }
}

/// The configured secrets, by kind.
pub type Configured = [(KeyKind, SecretDigest)];

impl Ring {
    /// The ring of a configuration alone.
    pub fn configured(configured: &Configured) -> Ring {
        Ring {
            entries: configured
                .iter()
                .map(|(kind, digest)| Entry {
                    digest: *digest,
                    kind: *kind,
                    key_id: configured_id(*kind, digest).into(),
                    expires_at: None,
                })
                .collect(),
        }
    }

    /// The ring of the stored keys and this collector's configuration
    /// (see the module doc for the rules).
    pub fn from_store(configured: &Configured, stored: &[StoredKey]) -> Ring {
        let mut entries = Vec::new();
        for key in stored {
            if key.revoked_at.is_some() {
                continue;
            }
            let id: Arc<str> = key.id.as_str().into();
            for secret in &key.secrets {
                let here = !secret.configured
                    || configured
                        .iter()
                        .any(|(k, d)| *k == key.kind && *d == secret.digest);
                if here {
                    entries.push(Entry {
                        digest: secret.digest,
                        kind: key.kind,
                        key_id: Arc::clone(&id),
                        expires_at: secret.expires_at,
                    });
                }
            }
        }
        for (kind, digest) in configured {
            let id = configured_id(*kind, digest);
            let known = stored
                .iter()
                .any(|k| k.id == id || k.secrets.iter().any(|s| s.digest == *digest));
            if !known {
                entries.push(Entry {
                    digest: *digest,
                    kind: *kind,
                    key_id: id.into(),
                    expires_at: None,
                });
            }
        }
        Ring { entries }
    }

    /// The key whose secret hashes to `presented`, if it is valid at
    /// `now` (Unix ms). Every entry is compared, in constant time, so the
    /// time taken tells neither which entry matched nor whether one did.
    pub fn find(&self, presented: &SecretDigest, now: i64) -> Option<Found> {
        let mut hit = u64::MAX;
        for (i, entry) in self.entries.iter().enumerate() {
            hit.conditional_assign(&(i as u64), entry.digest.ct_eq(presented));
        }
        let entry = self.entries.get(usize::try_from(hit).ok()?)?;
        entry.expires_at.is_none_or(|e| now < e).then(|| Found {
            kind: entry.kind,
            key_id: Arc::clone(&entry.key_id),
        })
    }

    /// Whether the ring holds a secret of `kind`.
    pub fn has(&self, kind: KeyKind) -> bool {
        self.entries.iter().any(|e| e.kind == kind)
    }
}

/// What holds a ring: the collector's keys
/// ([`crate::ingest::auth::Keys`]).
pub trait RingHolder: Send + Sync + 'static {
    /// The configured keys as the store records them, made at `now`.
    fn configured_keys(&self, now: i64) -> Vec<crate::store::keys::NewKey>;
    /// Puts the ring of `stored` (and the configuration) in force.
    fn install(&self, stored: &[StoredKey]);
}

/// Records the configured keys in the store and loads the ring from it:
/// what a collector does once before it serves.
pub fn bootstrap(store: &dyn Store, keys: &dyn RingHolder) -> Result<i64, StoreError> {
    let now = crate::clock::now_ms();
    store.record_configured_keys(&keys.configured_keys(now))?;
    reload(store, keys)
}

/// Loads the ring from the store; returns the key version it read (read
/// first, so a change between the two reads is loaded again next poll).
pub fn reload(store: &dyn Store, keys: &dyn RingHolder) -> Result<i64, StoreError> {
    let version = store.key_version()?;
    let stored = store.keys()?;
    keys.install(&stored);
    Ok(version)
}

/// Polls the store's key version every `interval` and reloads the ring
/// when it moved (see the module doc). Runs until the runtime stops.
pub fn spawn_poller<K: RingHolder>(
    store: Arc<dyn Store>,
    keys: Arc<K>,
    mut version: i64,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            let (store, keys) = (Arc::clone(&store), Arc::clone(&keys));
            let polled = tokio::task::spawn_blocking(move || {
                let now = store.key_version()?;
                if now == version {
                    return Ok(now);
                }
                reload(store.as_ref(), keys.as_ref())
            })
            .await;
            match polled {
                Ok(Ok(v)) => {
                    if failing {
                        tracing::info!("the key ring follows the store again");
                    }
                    failing = false;
                    version = v;
                }
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the keys from the store; the key ring stays as it was");
                    }
                    failing = true;
                }
                Err(e) => tracing::error!(error = %e, "the key ring poll panicked"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::keys::{KeyOrigin, StoredSecret};

    fn key(id: &str, kind: KeyKind, secrets: Vec<StoredSecret>) -> StoredKey {
        StoredKey {
            id: id.into(),
            kind,
            name: String::new(),
            origin: KeyOrigin::Api,
            created_at: 0,
            revoked_at: None,
            secrets,
        }
    }

    fn secret(s: &str, configured: bool, expires_at: Option<i64>) -> StoredSecret {
        StoredSecret {
            digest: digest(s),
            configured,
            created_at: 0,
            expires_at,
        }
    }

    #[test]
    fn configured_ids_are_the_source_ids_events_recorded() {
        let d = digest("write-key-1");
        // `wk_` and the first 8 bytes of SHA-256("write-key-1"), as
        // events have recorded since sources exist.
        let id = configured_id(KeyKind::Write, &d);
        assert!(id.starts_with("wk_") && id.len() == 19, "{id}");
        let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&id[3..], hex);
        assert!(configured_id(KeyKind::Admin, &d).starts_with("at_"));
        assert_eq!(configured_id(KeyKind::Read, &d).len(), 19);
    }

    #[test]
    fn a_rotated_secret_lasts_until_its_expiry_and_a_revoked_key_not_at_all() {
        let mut revoked = key("rt_1", KeyKind::Read, vec![secret("gone", false, None)]);
        revoked.revoked_at = Some(5);
        let stored = [
            key(
                "at_1",
                KeyKind::Admin,
                vec![
                    secret("old", false, Some(1_000)),
                    secret("new", false, None),
                ],
            ),
            revoked,
        ];
        let ring = Ring::from_store(&[], &stored);
        let at = |s: &str, now| ring.find(&digest(s), now).map(|f| f.key_id.to_string());
        assert_eq!(at("old", 999).as_deref(), Some("at_1"));
        assert_eq!(at("old", 1_000), None);
        assert_eq!(at("new", 1_000_000).as_deref(), Some("at_1"));
        assert_eq!(at("gone", 0), None);
        assert_eq!(at("other", 0), None);
    }

    #[test]
    fn the_store_only_restricts_a_configured_key() {
        let configured = [
            (KeyKind::Write, digest("wk-here")),
            (KeyKind::Admin, digest("admin-revoked")),
            (KeyKind::Read, digest("read-new")),
        ];
        let mut revoked = key(
            &configured_id(KeyKind::Admin, &digest("admin-revoked")),
            KeyKind::Admin,
            vec![secret("admin-revoked", true, None)],
        );
        revoked.revoked_at = Some(1);
        let stored = [
            key(
                &configured_id(KeyKind::Write, &digest("wk-here")),
                KeyKind::Write,
                vec![secret("wk-here", true, Some(50))],
            ),
            // Configured on another collector, not here.
            key(
                "wk_elsewhere",
                KeyKind::Write,
                vec![secret("wk-elsewhere", true, None)],
            ),
            revoked,
        ];
        let ring = Ring::from_store(&configured, &stored);
        assert!(ring.find(&digest("wk-here"), 49).is_some());
        assert!(ring.find(&digest("wk-here"), 50).is_none());
        assert!(ring.find(&digest("wk-elsewhere"), 0).is_none());
        assert!(ring.find(&digest("admin-revoked"), 0).is_none());
        // Not in the store yet: valid as configured.
        let found = ring.find(&digest("read-new"), 0).unwrap();
        assert_eq!(found.kind, KeyKind::Read);
    }

    #[test]
    fn new_secrets_are_long_random_and_named_by_kind() {
        let a = new_secret(KeyKind::Write).unwrap();
        let b = new_secret(KeyKind::Write).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("tally_write_"));
        assert_eq!(a.len(), "tally_write_".len() + 43);
        let id = new_key_id(KeyKind::Admin).unwrap();
        assert!(id.starts_with("at_") && id.len() == 19, "{id}");
    }
}
