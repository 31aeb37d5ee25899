//! Encryption at rest: XChaCha20-Poly1305 under keys from a [`KeyProvider`].
//!
//! Nonces are 24 bytes: a random 16-byte prefix drawn when a key is loaded
//! for writing, then a 64-bit counter. A fresh prefix per load means two
//! runs of the app never reuse a nonce under the same key (a collision of
//! two random 128-bit prefixes is negligible), and the counter makes nonces
//! within one run distinct without a system call per record.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chacha20::cipher::consts::U10;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use zeroize::{Zeroize, Zeroizing};

use super::fs::Filesystem;
use super::wiped::Wiped;

/// Identifies a key; stored in every record so rotation keeps old records readable.
pub type KeyId = u32;

/// Length of a key in bytes (XChaCha20-Poly1305 takes 256-bit keys).
pub const KEY_BYTES: usize = 32;
/// Length of a nonce in bytes (XChaCha20's extended nonce).
pub const NONCE_BYTES: usize = 24;
/// Length of the Poly1305 tag appended to each ciphertext.
pub const TAG_BYTES: usize = 16;

/// A 256-bit key, wiped from memory when dropped.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; KEY_BYTES]>);

impl Key {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Key {
        Key(Zeroizing::new(bytes))
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<Key, KeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        getrandom::fill(bytes.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Key(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key store could not be read or written.
    #[error("key store I/O: {0}")]
    Io(#[from] io::Error),
    /// A stored key is not a valid key (wrong length).
    #[error("key {0} is malformed")]
    Malformed(KeyId),
    /// The operating system's random generator failed.
    #[error("random generator: {0}")]
    Random(String),
}

/// Where the log's keys live: a 0600 file by default ([`FileKeyProvider`]),
/// a platform keystore on a phone. Implementations must make `rotate` and
/// `delete` durable before returning.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// The key new records are sealed with, created on first use.
    fn current(&self) -> Result<(KeyId, Key), KeyError>;
    /// A key by id, if it still exists.
    fn get(&self, id: KeyId) -> Result<Option<Key>, KeyError>;
    /// Makes a new key current and returns its id; older keys stay readable.
    fn rotate(&self) -> Result<KeyId, KeyError>;
    /// Every key id held.
    fn list(&self) -> Result<Vec<KeyId>, KeyError>;
    /// Deletes a key for good (records sealed with it become unreadable).
    fn delete(&self, id: KeyId) -> Result<(), KeyError>;
}

/// Keys kept as files `key-<id>` (32 random bytes, mode 0600) in a directory.
#[derive(Debug)]
pub struct FileKeyProvider {
    dir: PathBuf,
    fs: Arc<dyn Filesystem>,
    // Serialises create/rotate so two callers never mint the same id.
    lock: Mutex<()>,
}

const KEY_FILE_PREFIX: &str = "key-";

impl FileKeyProvider {
    /// Keys in `dir` through `fs`.
    pub fn new(dir: impl Into<PathBuf>, fs: Arc<dyn Filesystem>) -> FileKeyProvider {
        FileKeyProvider {
            dir: dir.into(),
            fs,
            lock: Mutex::new(()),
        }
    }

    fn path(&self, id: KeyId) -> PathBuf {
        self.dir.join(format!("{KEY_FILE_PREFIX}{id}"))
    }

    fn ids(&self) -> Result<Vec<KeyId>, KeyError> {
        let names = match self.fs.list(&self.dir) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut ids: Vec<KeyId> = names
            .iter()
            .filter_map(|n| n.strip_prefix(KEY_FILE_PREFIX)?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn create(&self, id: KeyId) -> Result<Key, KeyError> {
        self.fs.create_dir_all(&self.dir)?;
        let key = Key::generate()?;
        self.fs
            .write_private_atomic(&self.path(id), key.as_bytes())?;
        Ok(key)
    }

    fn load(&self, id: KeyId, path: &Path) -> Result<Option<Key>, KeyError> {
        let mut bytes = match self.fs.read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let result = <[u8; KEY_BYTES]>::try_from(bytes.as_slice())
            .map(|raw| Some(Key::from_bytes(raw)))
            .map_err(|_| KeyError::Malformed(id));
        bytes.zeroize();
        result
    }
}

impl KeyProvider for FileKeyProvider {
    fn current(&self) -> Result<(KeyId, Key), KeyError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.ids()?.last() {
            Some(&id) => match self.load(id, &self.path(id))? {
                Some(key) => Ok((id, key)),
                None => Ok((id, self.create(id)?)),
            },
            None => Ok((1, self.create(1)?)),
        }
    }
    fn get(&self, id: KeyId) -> Result<Option<Key>, KeyError> {
        self.load(id, &self.path(id))
    }
    fn rotate(&self) -> Result<KeyId, KeyError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.ids()?.last().map_or(1, |last| last + 1);
        self.create(id)?;
        Ok(id)
    }
    fn list(&self) -> Result<Vec<KeyId>, KeyError> {
        self.ids()
    }
    fn delete(&self, id: KeyId) -> Result<(), KeyError> {
        match self.fs.remove(&self.path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        self.fs.sync_dir(&self.dir)?;
        Ok(())
    }
}

/// Keys held in memory only: for tests, and as the shape a platform
/// keystore adapter takes. Clones share the same keys.
#[derive(Debug, Default, Clone)]
pub struct MemKeyProvider {
    keys: Arc<Mutex<BTreeMap<KeyId, Key>>>,
}

impl MemKeyProvider {
    /// No keys yet.
    pub fn new() -> MemKeyProvider {
        MemKeyProvider::default()
    }
}

impl KeyProvider for MemKeyProvider {
    fn current(&self) -> Result<(KeyId, Key), KeyError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, key)) = keys.iter().next_back() {
            return Ok((*id, key.clone()));
        }
        let key = Key::generate()?;
        keys.insert(1, key.clone());
        Ok((1, key))
    }
    fn get(&self, id: KeyId) -> Result<Option<Key>, KeyError> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys.get(&id).cloned())
    }
    fn rotate(&self) -> Result<KeyId, KeyError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let id = keys.keys().next_back().map_or(1, |last| last + 1);
        keys.insert(id, Key::generate()?);
        Ok(id)
    }
    fn list(&self) -> Result<Vec<KeyId>, KeyError> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys.keys().copied().collect())
    }
    fn delete(&self, id: KeyId) -> Result<(), KeyError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.remove(&id);
        Ok(())
    }
}

/// A key ready to seal and open records.
///
/// XChaCha20 is HChaCha20(key, nonce[0..16]) as a subkey, then ChaCha20
/// with nonce `[0; 4] ‖ nonce[16..24]`. Every record this instance seals
/// shares the 16-byte prefix, so the subkey is derived once and sealing
/// runs plain ChaCha20-Poly1305 under it: the same bytes as
/// XChaCha20-Poly1305, one ChaCha block less per record. Opening takes any
/// nonce: it derives the subkey of the record's prefix and keeps the last
/// one, since the records of one run share theirs (a read of thousands of
/// records derives one or two).
pub(crate) struct Cipher {
    pub(crate) id: KeyId,
    key: Key,
    /// The subkey of the last prefix a record was opened under.
    opened: Mutex<Option<([u8; 16], Wiped<LessSafeKey>)>>,
    /// This run's subkey (HChaCha20 of the key and a random prefix). ring
    /// does not wipe its key schedule on drop, so it lives in a slot that
    /// is zeroed when the cipher is dropped.
    seal: Wiped<LessSafeKey>,
    nonce_prefix: [u8; 16],
    counter: AtomicU64,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cipher").field("id", &self.id).finish()
    }
}

impl Cipher {
    pub(crate) fn new(id: KeyId, key: &Key) -> Result<Cipher, KeyError> {
        let mut nonce_prefix = [0u8; 16];
        getrandom::fill(&mut nonce_prefix).map_err(|e| KeyError::Random(e.to_string()))?;
        let seal = subkey(key, &nonce_prefix)
            .ok_or_else(|| KeyError::Random("ChaCha20-Poly1305 refused a 32-byte key".into()))?;
        Ok(Cipher {
            id,
            key: key.clone(),
            opened: Mutex::new(None),
            seal,
            nonce_prefix,
            counter: AtomicU64::new(0),
        })
    }

    /// A nonce never used before with this key.
    pub(crate) fn next_nonce(&self) -> [u8; NONCE_BYTES] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..16].copy_from_slice(&self.nonce_prefix);
        nonce[16..].copy_from_slice(&n.to_le_bytes());
        nonce
    }

    /// Encrypts `buf` in place under a nonce from [`Cipher::next_nonce`]
    /// (it must carry this instance's prefix); returns the tag.
    pub(crate) fn seal(
        &self,
        nonce: &[u8; NONCE_BYTES],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Option<[u8; TAG_BYTES]> {
        if nonce[..16] != self.nonce_prefix {
            return None;
        }
        let mut inner = [0u8; 12];
        inner[4..].copy_from_slice(&nonce[16..]);
        let tag = self
            .seal
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(inner), Aad::from(aad), buf)
            .ok()?;
        <[u8; TAG_BYTES]>::try_from(tag.as_ref()).ok()
    }

    /// Decrypts `buf` in place; false when the tag does not match (wrong
    /// key, tampered or corrupt bytes).
    pub(crate) fn open(
        &self,
        nonce: &[u8; NONCE_BYTES],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_BYTES],
    ) -> bool {
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&nonce[..16]);
        let mut inner = [0u8; 12];
        inner[4..].copy_from_slice(&nonce[16..]);
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if opened.as_ref().is_none_or(|(p, _)| *p != prefix) {
            *opened = subkey(&self.key, &prefix).map(|k| (prefix, k));
        }
        let Some((_, key)) = opened.as_ref() else {
            return false;
        };
        key.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(inner),
            Aad::from(aad),
            (*tag).into(),
            buf,
            0..,
        )
        .is_ok()
    }
}

/// The ChaCha20-Poly1305 key XChaCha20 uses under `prefix` (the first 16
/// bytes of its nonce): HChaCha20 of the key and the prefix, in a slot
/// zeroed on drop. `None` only if ring refused a 32-byte key.
fn subkey(key: &Key, prefix: &[u8; 16]) -> Option<Wiped<LessSafeKey>> {
    let mut bytes = chacha20::hchacha::<U10>(key.as_bytes().into(), prefix.into());
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes.as_slice());
    bytes.as_mut_slice().zeroize();
    unbound.ok().map(|k| Wiped::new(LessSafeKey::new(k)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};

    #[test]
    fn sealing_under_the_subkey_is_xchacha20_poly1305() {
        let key = Key::from_bytes([9; KEY_BYTES]);
        let cipher = Cipher::new(3, &key).unwrap_or_else(|e| panic!("{e}"));
        let reference = XChaCha20Poly1305::new(key.as_bytes().into());
        for len in [0usize, 1, 63, 64, 200, 1000] {
            let nonce = cipher.next_nonce();
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = plain.clone();
            let tag = cipher.seal(&nonce, b"aad", &mut ours);
            let mut theirs = plain.clone();
            let their_tag = reference
                .encrypt_in_place_detached(XNonce::from_slice(&nonce), b"aad", &mut theirs)
                .ok()
                .map(<[u8; TAG_BYTES]>::from);
            assert_eq!(ours, theirs);
            assert_eq!(tag, their_tag);
            let tag = tag.unwrap_or_default();
            assert!(cipher.open(&nonce, b"aad", &mut ours, &tag));
            assert_eq!(ours, plain);
        }
        // A nonce with another prefix is refused, never sealed wrongly.
        assert_eq!(cipher.seal(&[0; NONCE_BYTES], b"", &mut [1, 2, 3]), None);
    }

    #[test]
    fn records_of_other_runs_open_under_their_own_prefix() {
        let key = Key::from_bytes([4; KEY_BYTES]);
        let (a, b) = (Cipher::new(1, &key), Cipher::new(1, &key));
        let (a, b) = (
            a.unwrap_or_else(|e| panic!("{e}")),
            b.unwrap_or_else(|e| panic!("{e}")),
        );
        let reader = Cipher::new(1, &key).unwrap_or_else(|e| panic!("{e}"));
        let sealed: Vec<_> = [&a, &b, &a, &a, &b]
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let nonce = c.next_nonce();
                let mut text = vec![i as u8; 40 + i];
                let tag = c.seal(&nonce, b"h", &mut text);
                (nonce, text, tag.unwrap_or_default(), i)
            })
            .collect();
        // Alternating prefixes: each open derives its own subkey or reuses
        // the last one, and every record opens to its plaintext.
        for (nonce, text, tag, i) in &sealed {
            let mut buf = text.clone();
            assert!(reader.open(nonce, b"h", &mut buf, tag), "record {i}");
            assert_eq!(buf, vec![*i as u8; 40 + i]);
        }
        // A wrong tag, header or key is refused, and the next good record
        // still opens.
        let (nonce, text, tag, _) = &sealed[0];
        let mut bad_tag = *tag;
        bad_tag[0] ^= 1;
        assert!(!reader.open(nonce, b"h", &mut text.clone(), &bad_tag));
        assert!(!reader.open(nonce, b"x", &mut text.clone(), tag));
        let other = Cipher::new(1, &Key::from_bytes([5; KEY_BYTES]));
        let other = other.unwrap_or_else(|e| panic!("{e}"));
        assert!(!other.open(nonce, b"h", &mut text.clone(), tag));
        assert!(reader.open(nonce, b"h", &mut text.clone(), tag));
    }
}
