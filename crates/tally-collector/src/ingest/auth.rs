//! Authentication: write keys for ingest, read tokens for product queries
//! and export, the admin token for everything.
//!
//! A write key may arrive in five places (what Segment's and RudderStack's
//! libraries send); the first present wins, in this order:
//!
//! 1. the `Authorization` header: HTTP Basic with the key as user name
//!    (password ignored), or `Bearer <key>`;
//! 2. the batch envelope's `writeKey`;
//! 3. a message's `writeKey` (the first message carrying one);
//! 4. the `writeKey` query parameter (browser beacons).
//!
//! A key that is present but unknown is refused (401) even if a later place
//! holds a good one: the precedence is the client's statement of which key
//! it means. A write key is never an admin token, and the admin token is
//! never a write key.
//!
//! # Roles
//!
//! | credential | may |
//! |---|---|
//! | write key | send events (public: it ships inside every app) |
//! | read token ([`Role::Read`]) | read aggregates: product queries, totals, export of events, the dashboard's product views |
//! | admin token ([`Role::Admin`]) | all a read token may, and deletions, dead letters, installs' events, pipeline health, alerts |
//! | metrics token | `/metrics` only |
//!
//! A credential known to the collector but short of the route's role is
//! refused 403; an unknown one 401.
//!
//! Every secret is kept only as its SHA-256 digest, and a presented one
//! is hashed once and compared in constant time with every accepted
//! digest ([`crate::keyring`]): 32 bytes against 32 bytes, so the time
//! taken tells neither the secret's bytes nor its length nor which key
//! matched. Failed token authentication is throttled per client by
//! [`crate::throttle`].
//!
//! # Live keys
//!
//! Besides the configured keys, write keys and tokens live in the store
//! ([`crate::store::keys`]): created, rotated and revoked through
//! `/v1/keys` while the collectors run. Which secrets are accepted at a
//! moment is the key ring's ([`Keys::ring`]), which follows the store: a
//! revoked or expired secret is unknown (401).
//!
//! # Sources
//!
//! Each write key is a **source**: the events it sends record its key id
//! ([`source_id`] for a configured key: `wk_` and 16 hex digits of its
//! SHA-256, so every collector sharing a store names it alike without
//! coordination; a random `wk_…` for a key made through the API), dedup is
//! exact within a source, and an install's completeness belongs to the
//! source that first sent for it. A rotation keeps the key's id, so its
//! source stays one source.

use std::sync::{Arc, RwLock};

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::keyring::{self, digest, Ring};
use crate::store::keys::{KeyKind, KeyOrigin, NewKey, SecretDigest, StoredKey};

/// Whether the digests are equal, in constant time.
fn same_digest(expected: Option<&SecretDigest>, presented: &SecretDigest) -> bool {
    expected.is_some_and(|e| bool::from(e.ct_eq(presented)))
}

/// The accepted secrets: the configured ones, and the key ring that
/// follows the store ([`crate::keyring`]).
pub struct Keys {
    configured: Vec<(KeyKind, SecretDigest)>,
    metrics: Option<SecretDigest>,
    ring: RwLock<Arc<Ring>>,
}

impl Clone for Keys {
    fn clone(&self) -> Self {
        Self {
            configured: self.configured.clone(),
            metrics: self.metrics,
            ring: RwLock::new(self.ring()),
        }
    }
}

/// What a token may do on the query and admin paths; an admin token may
/// do all a read token may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Product queries, totals, export of events, the dashboard.
    Read,
    /// Everything: deletions, dead letters, pipeline health, alerts.
    Admin,
}

impl Role {
    /// The role's name in answers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// Who made a request on a read or admin path: the role and id of the
/// token's key (what audit rows record; never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// What the token may do.
    pub role: Role,
    /// Its key's id (`at_…`, `rt_…`).
    pub key_id: Arc<str>,
}

/// The id of the source a configured write key stands for (see the
/// module doc).
pub fn source_id(key: &str) -> String {
    keyring::configured_id(KeyKind::Write, &digest(key))
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets themselves.
        let count = |k: KeyKind| self.configured.iter().filter(|(c, _)| *c == k).count();
        f.debug_struct("Keys")
            .field("write_keys", &count(KeyKind::Write))
            .field("admin_token", &(count(KeyKind::Admin) > 0))
            .field("read_tokens", &count(KeyKind::Read))
            .field("metrics_token", &self.metrics.is_some())
            .field("ring", &self.ring())
            .finish()
    }
}

/// What the `Authorization` header carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// HTTP Basic: the user name (Segment's convention: the write key).
    Basic(String),
    /// A bearer token.
    Bearer(String),
}

impl Credential {
    /// The secret, whatever the scheme.
    pub fn secret(&self) -> &str {
        match self {
            Self::Basic(s) | Self::Bearer(s) => s,
        }
    }
}

impl Keys {
    /// Keys from configuration; empty strings are ignored (an empty key
    /// would match a client that sends none).
    pub fn new(write_keys: impl IntoIterator<Item = String>, admin_token: Option<String>) -> Self {
        let mut configured: Vec<(KeyKind, SecretDigest)> = write_keys
            .into_iter()
            .filter(|k| !k.is_empty())
            .map(|k| (KeyKind::Write, digest(&k)))
            .collect();
        if let Some(t) = admin_token.filter(|t| !t.is_empty()) {
            configured.push((KeyKind::Admin, digest(&t)));
        }
        let ring = RwLock::new(Arc::new(Ring::configured(&configured)));
        Self {
            configured,
            metrics: None,
            ring,
        }
    }

    /// The same keys, with tokens that may read (see [`Role::Read`]);
    /// empty ones are ignored.
    pub fn with_read_tokens(mut self, tokens: impl IntoIterator<Item = String>) -> Self {
        self.configured.retain(|(k, _)| *k != KeyKind::Read);
        self.configured.extend(
            tokens
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(|t| (KeyKind::Read, digest(&t))),
        );
        self.ring = RwLock::new(Arc::new(Ring::configured(&self.configured)));
        self
    }

    /// The same keys, with a token that may read `/metrics` (besides the
    /// admin token); empty is none. The metrics token is configured only,
    /// never stored.
    pub fn with_metrics_token(mut self, token: Option<String>) -> Self {
        self.metrics = token.filter(|t| !t.is_empty()).map(|t| digest(&t));
        self
    }

    /// The ring in force now.
    pub fn ring(&self) -> Arc<Ring> {
        match self.ring.read() {
            Ok(ring) => Arc::clone(&ring),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts the ring of `stored` and the configuration in force
    /// ([`keyring::Ring::from_store`]).
    pub fn install(&self, stored: &[StoredKey]) {
        <Self as keyring::RingHolder>::install(self, stored);
    }

    /// The configured keys as the store records them (their secrets only
    /// as digests), made at `now`.
    pub fn configured_keys(&self, now: i64) -> Vec<NewKey> {
        <Self as keyring::RingHolder>::configured_keys(self, now)
    }
}

impl keyring::RingHolder for Keys {
    fn install(&self, stored: &[StoredKey]) {
        let ring = Arc::new(Ring::from_store(&self.configured, stored));
        match self.ring.write() {
            Ok(mut current) => *current = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
    }

    fn configured_keys(&self, now: i64) -> Vec<NewKey> {
        self.configured
            .iter()
            .map(|(kind, digest)| NewKey {
                id: keyring::configured_id(*kind, digest),
                kind: *kind,
                name: format!("configured {} key", kind.as_str()),
                origin: KeyOrigin::Config,
                created_at: now,
                digest: *digest,
            })
            .collect()
    }
}

impl Keys {
    fn find(&self, presented: &SecretDigest) -> Option<keyring::Found> {
        self.ring().find(presented, crate::clock::now_ms())
    }

    /// Whether `key` is a valid write key now. Every secret of the ring
    /// is compared, so the time taken does not tell which one matched.
    pub fn is_write_key(&self, key: &str) -> bool {
        self.find(&digest(key))
            .is_some_and(|f| f.kind == KeyKind::Write)
    }

    /// Whether `token` is a valid admin token now.
    pub fn is_admin_token(&self, token: &str) -> bool {
        self.find(&digest(token))
            .is_some_and(|f| f.kind == KeyKind::Admin)
    }

    /// Whether any write key is configured or stored.
    pub fn has_write_keys(&self) -> bool {
        self.ring().has(KeyKind::Write)
    }

    /// Whether any admin token is configured or stored.
    pub fn has_admin_token(&self) -> bool {
        self.ring().has(KeyKind::Admin)
    }

    /// Checks the write key of an ingest request, given each place it may
    /// be in (see the module doc for the order), and returns the id of its
    /// source.
    pub fn authorize_ingest(
        &self,
        header: Option<&Credential>,
        body: Option<&str>,
        message: Option<&str>,
        query: Option<&str>,
    ) -> Result<String, ApiError> {
        let key = header
            .map(Credential::secret)
            .or(body)
            .or(message)
            .or(query)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthorized("missing write key"))?;
        match self.find(&digest(key)) {
            Some(found) if found.kind == KeyKind::Write => Ok(found.key_id.to_string()),
            _ => Err(ApiError::Unauthorized("unknown write key")),
        }
    }

    /// Whether `token` is a valid read token now.
    pub fn is_read_token(&self, token: &str) -> bool {
        self.find(&digest(token))
            .is_some_and(|f| f.kind == KeyKind::Read)
    }

    /// Checks the token of a request that needs `needed`: `Bearer` (Basic
    /// with the token as user name is taken too, for curl users), and
    /// returns the token's role. A known credential short of the role (a
    /// read token on an admin path, a write key, the metrics token) is
    /// 403; an unknown one (or a revoked or expired one) 401.
    pub fn authorize(&self, needed: Role, header: Option<&Credential>) -> Result<Role, ApiError> {
        self.principal(needed, header).map(|p| p.role)
    }

    /// [`Keys::authorize`], returning the token's key id with its role.
    pub fn principal(
        &self,
        needed: Role,
        header: Option<&Credential>,
    ) -> Result<Principal, ApiError> {
        let token = header
            .map(Credential::secret)
            .filter(|t| !t.is_empty())
            .ok_or(match needed {
                Role::Read => ApiError::Unauthorized("missing token"),
                Role::Admin => ApiError::Unauthorized("missing admin token"),
            })?;
        // Hashed once, compared with every secret.
        let presented = digest(token);
        let found = self.find(&presented);
        let role = match found.as_ref().map(|f| f.kind) {
            Some(KeyKind::Admin) => Some(Role::Admin),
            Some(KeyKind::Read) => Some(Role::Read),
            Some(KeyKind::Write) => return Err(ApiError::Forbidden),
            None => None,
        };
        match (role, found) {
            (Some(role), Some(found)) if role >= needed => Ok(Principal {
                role,
                key_id: found.key_id,
            }),
            (Some(_), _) => Err(ApiError::Forbidden),
            _ if same_digest(self.metrics.as_ref(), &presented) => Err(ApiError::Forbidden),
            _ => Err(ApiError::Unauthorized(match needed {
                Role::Read => "unknown token",
                Role::Admin => "unknown admin token",
            })),
        }
    }

    /// Checks the admin token of an admin request (see [`Keys::authorize`]).
    pub fn authorize_admin(&self, header: Option<&Credential>) -> Result<(), ApiError> {
        self.authorize(Role::Admin, header).map(|_| ())
    }

    /// Checks the token of a `/metrics` scrape: the metrics token or the
    /// admin token.
    pub fn authorize_metrics(&self, header: Option<&Credential>) -> Result<(), ApiError> {
        match header.map(Credential::secret) {
            Some(t) if !t.is_empty() && same_digest(self.metrics.as_ref(), &digest(t)) => Ok(()),
            _ => self.authorize_admin(header),
        }
    }
}

/// Reads the `Authorization` header. Absent → `Ok(None)`; present but not
/// Basic or Bearer, or not readable → 401 (a client that sends a header
/// means it, so it is not silently ignored).
pub fn credential(headers: &HeaderMap) -> Result<Option<Credential>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = ApiError::Unauthorized("malformed Authorization header");
    let value = value.to_str().map_err(|_| malformed)?.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Some(Credential::Bearer(rest.to_owned())));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(ApiError::Unauthorized("malformed Authorization header"))?;
        let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
        return Ok(Some(Credential::Basic(user.to_owned())));
    }
    Err(ApiError::Unauthorized("unsupported Authorization scheme"))
}

/// The `writeKey` query parameter (browser beacons send it there).
pub fn query_write_key(query: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs
        .into_iter()
        .find(|(k, v)| k == "writeKey" && !v.is_empty())
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn keys() -> Keys {
        Keys::new(
            ["wk1".to_owned(), "wk2".to_owned(), String::new()],
            Some("admin".into()),
        )
    }

    fn header(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn reads_basic_and_bearer() {
        let basic = format!("Basic {}", STANDARD.encode("wk1:"));
        assert_eq!(
            credential(&header(&basic)).unwrap(),
            Some(Credential::Basic("wk1".into()))
        );
        let with_pw = format!("basic {}", STANDARD.encode("wk2:secret"));
        assert_eq!(
            credential(&header(&with_pw)).unwrap(),
            Some(Credential::Basic("wk2".into()))
        );
        let no_colon = format!("Basic {}", STANDARD.encode("wk1"));
        assert_eq!(
            credential(&header(&no_colon)).unwrap(),
            Some(Credential::Basic("wk1".into()))
        );
        assert_eq!(
            credential(&header("Bearer  t ")).unwrap(),
            Some(Credential::Bearer("t".into()))
        );
        assert_eq!(credential(&HeaderMap::new()).unwrap(), None);
        assert!(credential(&header("Basic !!!")).is_err());
        assert!(credential(&header("Digest x")).is_err());
    }

    #[test]
    fn ingest_precedence_header_body_message_query() {
        let k = keys();
        let good = Credential::Basic("wk1".into());
        let bad = Credential::Bearer("nope".into());
        assert!(k
            .authorize_ingest(Some(&good), Some("nope"), None, None)
            .is_ok());
        assert!(k
            .authorize_ingest(Some(&bad), Some("wk1"), Some("wk1"), Some("wk1"))
            .is_err());
        assert!(k
            .authorize_ingest(None, Some("wk2"), Some("nope"), None)
            .is_ok());
        assert!(k
            .authorize_ingest(None, Some("nope"), Some("wk2"), None)
            .is_err());
        assert!(k
            .authorize_ingest(None, None, Some("wk2"), Some("nope"))
            .is_ok());
        assert!(k.authorize_ingest(None, None, None, Some("wk1")).is_ok());
        assert_eq!(
            k.authorize_ingest(None, None, Some("wk2"), None).unwrap(),
            source_id("wk2")
        );
        assert_ne!(source_id("wk1"), source_id("wk2"));
        assert_eq!(source_id("wk1").len(), 19);
        let missing = k.authorize_ingest(None, None, None, None).unwrap_err();
        assert!(matches!(
            missing,
            ApiError::Unauthorized("missing write key")
        ));
        // The empty configured key never matches an empty or absent key.
        assert!(k.authorize_ingest(None, Some(""), None, None).is_err());
        // The admin token is not a write key.
        assert!(k.authorize_ingest(None, None, None, Some("admin")).is_err());
    }

    #[test]
    fn admin_needs_the_admin_token_and_a_write_key_is_forbidden() {
        let k = keys();
        assert!(k
            .authorize_admin(Some(&Credential::Bearer("admin".into())))
            .is_ok());
        assert!(matches!(
            k.authorize_admin(Some(&Credential::Bearer("wk1".into()))),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            k.authorize_admin(Some(&Credential::Bearer("other".into()))),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            k.authorize_admin(None),
            Err(ApiError::Unauthorized(_))
        ));
        let no_admin = Keys::new(["wk1".to_owned()], None);
        assert!(no_admin
            .authorize_admin(Some(&Credential::Bearer(String::new())))
            .is_err());
        assert!(!no_admin.has_admin_token());
        assert!(format!("{no_admin:?}").contains("write_keys: 1"));
        assert!(!format!("{k:?}").contains("wk1"));
    }

    #[test]
    fn metrics_take_the_metrics_token_or_the_admin_token() {
        let k = keys().with_metrics_token(Some("scrape-token".into()));
        let bearer = |t: &str| Credential::Bearer(t.into());
        assert!(k.authorize_metrics(Some(&bearer("scrape-token"))).is_ok());
        assert!(k.authorize_metrics(Some(&bearer("admin"))).is_ok());
        // The metrics token opens nothing else.
        assert!(k.authorize_admin(Some(&bearer("scrape-token"))).is_err());
        assert!(matches!(
            k.authorize_metrics(Some(&bearer("wk1"))),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            k.authorize_metrics(None),
            Err(ApiError::Unauthorized(_))
        ));
        // A token that shares a prefix, or a longer one, is not the token.
        assert!(!k.is_admin_token("admi"));
        assert!(!k.is_admin_token("admin "));
        let none = keys();
        assert!(none.authorize_metrics(Some(&bearer(""))).is_err());
        assert!(none.authorize_metrics(Some(&bearer("admin"))).is_ok());
    }

    #[test]
    fn a_read_token_reads_and_is_refused_what_only_the_admin_may() {
        let k = keys()
            .with_read_tokens([
                "reader-one".to_owned(),
                String::new(),
                "reader-two".to_owned(),
            ])
            .with_metrics_token(Some("scrape-token".into()));
        let bearer = |t: &str| Credential::Bearer(t.into());
        let read = |t: &str| k.authorize(Role::Read, Some(&bearer(t)));
        let admin = |t: &str| k.authorize(Role::Admin, Some(&bearer(t)));
        assert_eq!(read("reader-one").ok(), Some(Role::Read));
        assert_eq!(read("reader-two").ok(), Some(Role::Read));
        assert_eq!(read("admin").ok(), Some(Role::Admin));
        assert_eq!(admin("admin").ok(), Some(Role::Admin));
        assert!(matches!(admin("reader-one"), Err(ApiError::Forbidden)));
        assert!(matches!(read("wk1"), Err(ApiError::Forbidden)));
        assert!(matches!(read("scrape-token"), Err(ApiError::Forbidden)));
        assert!(matches!(read("reader"), Err(ApiError::Unauthorized(_))));
        assert!(matches!(read(""), Err(ApiError::Unauthorized(_))));
        assert!(matches!(
            k.authorize(Role::Read, None),
            Err(ApiError::Unauthorized("missing token"))
        ));
        // A read token is no metrics token and no write key.
        assert!(matches!(
            k.authorize_metrics(Some(&bearer("reader-one"))),
            Err(ApiError::Forbidden)
        ));
        assert!(k
            .authorize_ingest(Some(&bearer("reader-one")), None, None, None)
            .is_err());
        assert!(format!("{k:?}").contains("read_tokens: 2"));
        assert!(!format!("{k:?}").contains("reader"));
    }

    #[test]
    fn write_key_from_the_query() {
        assert_eq!(
            query_write_key(Some("a=1&writeKey=k%2B1")).as_deref(),
            Some("k+1")
        );
        assert_eq!(query_write_key(Some("writeKey=")), None);
        assert_eq!(query_write_key(None), None);
    }
}
