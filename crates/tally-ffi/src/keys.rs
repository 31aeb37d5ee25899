//! Platform key storage: the app keeps the log's keys in the Android
//! Keystore or the iOS Keychain by implementing [`KeyStore`], a store of
//! small secrets by number. The SDK draws each key (32 random bytes from
//! the OS) and decides which is current ([`PlatformKeys`] turns the store
//! into the log's `KeyProvider`), so an app only stores, reads, lists and
//! deletes bytes.
//!
//! Contract for an implementation:
//! - `store` and `delete` are durable when they return (a key the log
//!   sealed records with must survive a crash; a deleted key must stay
//!   deleted, which is what makes rotation and consent withdrawal shred).
//! - `load` returns exactly the bytes stored, or `None` for an id never
//!   stored or deleted.
//! - Calls come from the SDK's threads, never the UI thread, and may be
//!   concurrent: the store must be thread-safe.
//! - An error is returned as `KeyStoreError::Unavailable` with a detail
//!   (never the key): the SDK counts it and retries later, or fails the
//!   call that needed the key.

use std::fmt;
use std::sync::Mutex;

use tally_sdk::log::{Key, KeyError, KeyId, KeyProvider};

/// Why the app's key store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// The platform store could not be read or written (locked device,
    /// keystore service error); `detail` says what the platform said.
    #[error("key store unavailable: {detail}")]
    Unavailable { detail: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for KeyStoreError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Unavailable { detail: e.reason }
    }
}

/// Secrets by number, kept by the platform (Android Keystore, iOS
/// Keychain). See the module documentation for the contract.
#[uniffi::export(callback_interface)]
pub trait KeyStore: Send + Sync {
    /// The bytes stored under `id`, or `None`.
    fn load(&self, id: u32) -> Result<Option<Vec<u8>>, KeyStoreError>;
    /// Stores `key` under `id`, durably, replacing nothing (ids are new).
    fn store(&self, id: u32, key: Vec<u8>) -> Result<(), KeyStoreError>;
    /// Every id stored.
    fn list(&self) -> Result<Vec<u32>, KeyStoreError>;
    /// Deletes `id` for good; deleting an absent id is not an error.
    fn delete(&self, id: u32) -> Result<(), KeyStoreError>;
}

/// The log's `KeyProvider` over an app's [`KeyStore`]: the newest id is the
/// current key; rotation stores a new key under the next id.
pub(crate) struct PlatformKeys {
    store: Box<dyn KeyStore>,
    /// Serialises creation and rotation so two threads never mint one id.
    lock: Mutex<()>,
}

impl fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlatformKeys(..)")
    }
}

fn unavailable(e: KeyStoreError) -> KeyError {
    KeyError::Io(std::io::Error::other(e.to_string()))
}

impl PlatformKeys {
    pub(crate) fn new(store: Box<dyn KeyStore>) -> Self {
        Self {
            store,
            lock: Mutex::new(()),
        }
    }

    fn newest(&self) -> Result<Option<KeyId>, KeyError> {
        Ok(self.store.list().map_err(unavailable)?.into_iter().max())
    }

    fn create(&self, id: KeyId) -> Result<Key, KeyError> {
        let key = Key::generate()?;
        self.store
            .store(id, key.as_bytes().to_vec())
            .map_err(unavailable)?;
        Ok(key)
    }
}

impl KeyProvider for PlatformKeys {
    fn current(&self) -> Result<(KeyId, Key), KeyError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.newest()? {
            Some(id) => match self.get(id)? {
                Some(key) => Ok((id, key)),
                None => Ok((id, self.create(id)?)),
            },
            None => Ok((1, self.create(1)?)),
        }
    }

    fn get(&self, id: KeyId) -> Result<Option<Key>, KeyError> {
        let Some(bytes) = self.store.load(id).map_err(unavailable)? else {
            return Ok(None);
        };
        let bytes: [u8; tally_sdk::log::crypto::KEY_BYTES] =
            bytes.try_into().map_err(|_| KeyError::Malformed(id))?;
        Ok(Some(Key::from_bytes(bytes)))
    }

    fn rotate(&self) -> Result<KeyId, KeyError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.newest()?.map_or(1, |newest| newest + 1);
        self.create(id)?;
        Ok(id)
    }

    fn list(&self) -> Result<Vec<KeyId>, KeyError> {
        let mut ids = self.store.list().map_err(unavailable)?;
        ids.sort_unstable();
        Ok(ids)
    }

    fn delete(&self, id: KeyId) -> Result<(), KeyError> {
        self.store.delete(id).map_err(unavailable)
    }
}
