//! Keys in the store: write keys, read tokens and admin tokens, created,
//! rotated and revoked while the collectors run ([`KeyStore`]).
//!
//! A key has an id (`wk_…`, `rt_…`, `at_…`: what lists, audit rows and
//! stored events name) and one or more **secrets**, stored only as their
//! SHA-256 digests. A rotation adds a secret and gives the older ones an
//! expiry (the grace period), so both are valid until then; a revocation
//! marks the key, and none of its secrets is valid from then on. A
//! write key's id is its **source**: events it sends record the id, and
//! a rotation keeps it, so a source's data stays one source across
//! rotations.
//!
//! Keys given in flags, the environment or `tally.toml` are recorded too
//! (`origin = config`, their secrets marked `configured`) when a
//! collector starts, so they can be listed, rotated and revoked like the
//! others. The store can only restrict such a key: a configured secret is
//! valid on a collector only while that collector is configured with it,
//! and never after its key was revoked or its expiry passed (a revoked
//! configured key stays refused after a restart that still names it).
//!
//! Every change bumps one version row (`key_versions`) in the same
//! transaction; collectors poll it ([`crate::keyring`]) and reload the
//! keys when it moved, so a revocation on one collector reaches every
//! collector sharing the store within the poll interval.

use super::StoreError;

/// The SHA-256 digest of a secret.
pub type SecretDigest = [u8; 32];

/// What a key may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Send events (ingest only); one per source.
    Write,
    /// Product queries, totals, export, the dashboard.
    Read,
    /// Everything.
    Admin,
}

impl KeyKind {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }

    /// The prefix of the ids of keys of this kind.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Self::Write => "wk_",
            Self::Read => "rt_",
            Self::Admin => "at_",
        }
    }

    pub(crate) fn from_stored(code: &str) -> Result<Self, StoreError> {
        match code {
            "write" => Ok(Self::Write),
            "read" => Ok(Self::Read),
            "admin" => Ok(Self::Admin),
            other => Err(StoreError::Backend(format!(
                "unknown key kind {other:?} in the store"
            ))),
        }
    }
}

/// Where a key was first made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyOrigin {
    /// Flags, the environment or `tally.toml` of a collector.
    Config,
    /// The admin API (`POST /v1/keys`).
    Api,
}

impl KeyOrigin {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Api => "api",
        }
    }

    pub(crate) fn from_stored(code: &str) -> Result<Self, StoreError> {
        match code {
            "config" => Ok(Self::Config),
            "api" => Ok(Self::Api),
            other => Err(StoreError::Backend(format!(
                "unknown key origin {other:?} in the store"
            ))),
        }
    }
}

/// One secret of a key, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecret {
    /// SHA-256 of the secret.
    pub digest: SecretDigest,
    /// Given in a collector's configuration (valid only where configured).
    pub configured: bool,
    /// When it was made, Unix ms.
    pub created_at: i64,
    /// When a rotation's grace period ends it, Unix ms; none while it is
    /// the key's current secret.
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The digest is not the secret, but it is never printed either.
        f.debug_struct("StoredSecret")
            .field("configured", &self.configured)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl StoredSecret {
    /// Whether the secret is still valid at `now` (Unix ms), its key not
    /// revoked.
    pub fn live_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }
}

/// A key as stored, with its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// `wk_…`, `rt_…` or `at_…`; a write key's id is its source.
    pub id: String,
    /// What it may do.
    pub kind: KeyKind,
    /// The operator's label.
    pub name: String,
    /// Where it was first made.
    pub origin: KeyOrigin,
    /// When, Unix ms.
    pub created_at: i64,
    /// When it was revoked, Unix ms.
    pub revoked_at: Option<i64>,
    /// Its secrets, oldest first.
    pub secrets: Vec<StoredSecret>,
}

/// A key to record, with its first secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NewKey {
    /// Its id (see [`StoredKey::id`]).
    pub id: String,
    /// What it may do.
    pub kind: KeyKind,
    /// The operator's label.
    pub name: String,
    /// Where it was made.
    pub origin: KeyOrigin,
    /// When, Unix ms.
    pub created_at: i64,
    /// SHA-256 of its secret.
    pub digest: SecretDigest,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// What a rotation or revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// Done; the key as it is now.
    Done(StoredKey),
    /// No key has this id.
    NotFound,
    /// The key was already revoked (a revoked key is never rotated).
    AlreadyRevoked,
    /// Refused: it is the last admin key that is not revoked, and without
    /// one nobody could manage keys again.
    LastAdmin,
}

/// Keys managed live (see the module doc). Every change bumps the
/// version [`KeyStore::key_version`] reads, in its own transaction.
pub trait KeyStore {
    /// The version of the key tables: a cheap read, polled.
    fn key_version(&self) -> Result<i64, StoreError>;

    /// Every key with its secrets, oldest first.
    fn keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Records the keys of a collector's configuration: a key or secret
    /// already recorded is left as it is (so a revoked or rotated
    /// configured key stays so).
    fn record_configured_keys(&self, keys: &[NewKey]) -> Result<(), StoreError>;

    /// Records a new key made through the API.
    fn create_key(&self, key: &NewKey) -> Result<(), StoreError>;

    /// Adds the secret `digest` to the key `id` (made at `at`) and makes
    /// its older secrets expire at `old_expire_at` at the latest.
    fn rotate_key(
        &self,
        id: &str,
        digest: &SecretDigest,
        at: i64,
        old_expire_at: i64,
    ) -> Result<KeyChange, StoreError>;

    /// Revokes the key `id` at `at`.
    fn revoke_key(&self, id: &str, at: i64) -> Result<KeyChange, StoreError>;
}

/// A row of `api_keys`: id, kind, name, origin, created, revoked.
pub(crate) type KeyRow = (String, String, String, String, i64, Option<i64>);

/// A row of `api_key_secrets`: digest, key id, configured, created,
/// expires.
pub(crate) type SecretRow = (Vec<u8>, String, bool, i64, Option<i64>);

/// The rows of the two key tables, grouped into keys (both stores read
/// them alike).
pub(crate) fn group(
    keys: Vec<KeyRow>,
    secrets: Vec<SecretRow>,
) -> Result<Vec<StoredKey>, StoreError> {
    let mut out = Vec::with_capacity(keys.len());
    let mut index = std::collections::HashMap::new();
    for (id, kind, name, origin, created_at, revoked_at) in keys {
        index.insert(id.clone(), out.len());
        out.push(StoredKey {
            id,
            kind: KeyKind::from_stored(&kind)?,
            name,
            origin: KeyOrigin::from_stored(&origin)?,
            created_at,
            revoked_at,
            secrets: Vec::new(),
        });
    }
    for (digest, key_id, configured, created_at, expires_at) in secrets {
        let digest: SecretDigest = digest
            .try_into()
            .map_err(|_| StoreError::Backend("a key digest in the store is not 32 bytes".into()))?;
        if let Some(&i) = index.get(&key_id) {
            out[i].secrets.push(StoredSecret {
                digest,
                configured,
                created_at,
                expires_at,
            });
        }
    }
    Ok(out)
}

/// Whether revoking `target` would leave no admin key: the rule
/// [`KeyChange::LastAdmin`] states, on the keys as stored.
pub(crate) fn last_admin(keys: &[StoredKey], target: &StoredKey, now: i64) -> bool {
    target.kind == KeyKind::Admin
        && !keys.iter().any(|k| {
            k.id != target.id
                && k.kind == KeyKind::Admin
                && k.revoked_at.is_none()
                && k.secrets.iter().any(|s| s.live_at(now))
        })
}
