//! Keys managed live (admin token): `GET /v1/keys`, `POST /v1/keys`,
//! `POST /v1/keys/{key_id}/rotate`, `POST /v1/keys/{key_id}/revoke`.
//!
//! A new secret is in the answer that made it and nowhere else: the store
//! keeps its SHA-256 digest ([`crate::store::keys`]). After a change this
//! collector reloads its key ring at once; the others sharing the store
//! follow within [`crate::keyring::KEY_POLL_INTERVAL`].

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tally_proto::format_timestamp;

use super::params::blocking;
use super::AppState;
use crate::audit::AuditNote;
use crate::clock;
use crate::error::ApiError;
use crate::ingest::body;
use crate::keyring::{self, DEFAULT_ROTATION_GRACE, MAX_ROTATION_GRACE};
use crate::store::keys::{KeyChange, KeyKind, KeyOrigin, NewKey, StoredKey};

/// Largest body of a key request (`{"kind", "name"}`, `{"grace_s"}`).
const MAX_KEY_BODY_BYTES: usize = 4 * 1024;

/// Longest key name, in bytes.
pub const MAX_KEY_NAME_BYTES: usize = 200;

/// A key as listed: never a secret nor a digest.
fn view(key: &StoredKey) -> Value {
    let secrets: Vec<Value> = key
        .secrets
        .iter()
        .map(|s| {
            json!({
                "created_at": format_timestamp(s.created_at),
                "expires_at": s.expires_at.map(format_timestamp),
                "configured": s.configured,
            })
        })
        .collect();
    json!({
        "id": key.id,
        "kind": key.kind,
        "name": key.name,
        "origin": key.origin,
        "created_at": format_timestamp(key.created_at),
        "revoked_at": key.revoked_at.map(format_timestamp),
        "secrets": secrets,
    })
}

async fn read_json<T: serde::de::DeserializeOwned + Default>(
    request_body: Body,
    malformed: &'static str,
) -> Result<T, ApiError> {
    let bytes = body::read_bounded(
        request_body,
        None,
        MAX_KEY_BODY_BYTES,
        body::BODY_READ_TIMEOUT,
    )
    .await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|_| ApiError::BadRequest(malformed))
}

/// Reloads this collector's ring from the store after a change.
async fn reload(state: &AppState) -> Result<(), ApiError> {
    let keys = state.keys.clone();
    blocking(state, move |s| {
        keyring::reload(s, keys.as_ref()).map(|_| ())
    })
    .await
}

/// `GET /v1/keys` → `{"keys": [{"id", "kind", "name", "origin",
/// "created_at", "revoked_at", "secrets": [{"created_at", "expires_at",
/// "configured"}]}]}`, oldest first.
pub(super) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keys = blocking(&state, |s| s.keys()).await?;
    let keys: Vec<Value> = keys.iter().map(view).collect();
    Ok(Json(json!({ "keys": keys })).into_response())
}

#[derive(Deserialize, Default)]
struct CreateRequest {
    kind: Option<KeyKind>,
    #[serde(default)]
    name: String,
}

/// `POST /v1/keys` with `{"kind": "write" | "read" | "admin", "name"}` →
/// 201 with the key as listed and `"secret"`: the only time the secret is
/// shown.
pub(super) async fn create(
    State(state): State<AppState>,
    request_body: Body,
) -> Result<Response, ApiError> {
    let request: CreateRequest = read_json(
        request_body,
        "expected {\"kind\": \"write\" | \"read\" | \"admin\", \"name\": \"...\"}",
    )
    .await?;
    let kind = request.kind.ok_or(ApiError::BadRequest(
        "kind is required: write, read or admin",
    ))?;
    if request.name.len() > MAX_KEY_NAME_BYTES || request.name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "name must be at most 200 bytes without control characters",
        ));
    }
    let random = |e: keyring::RandomError| {
        tracing::error!(error = %e, "cannot make a key");
        ApiError::Internal
    };
    let id = keyring::new_key_id(kind).map_err(random)?;
    let secret = keyring::new_secret(kind).map_err(random)?;
    let key = NewKey {
        id: id.clone(),
        kind,
        name: request.name,
        origin: KeyOrigin::Api,
        created_at: clock::now_ms(),
        digest: keyring::digest(&secret),
    };
    let stored = blocking(&state, move |s| {
        s.create_key(&key)?;
        s.keys()
    })
    .await?;
    reload(&state).await?;
    let key = stored
        .iter()
        .find(|k| k.id == id)
        .ok_or(ApiError::Internal)?;
    tracing::info!(key_id = %key.id, kind = key.kind.as_str(), "key created");
    let note = AuditNote::of("key_id", key.id.as_str())
        .with("kind", key.kind.as_str())
        .with("name", key.name.as_str());
    let mut body = view(key);
    body["secret"] = Value::String(secret);
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response.extensions_mut().insert(note);
    Ok(response)
}

#[derive(Deserialize, Default)]
struct RotateRequest {
    grace_s: Option<u64>,
}

fn changed(change: KeyChange) -> Result<StoredKey, ApiError> {
    match change {
        KeyChange::Done(key) => Ok(key),
        KeyChange::NotFound => Err(ApiError::NotFound("no key with this id")),
        KeyChange::AlreadyRevoked => Err(ApiError::BadRequest("the key is revoked")),
        KeyChange::LastAdmin => Err(ApiError::BadRequest(
            "the last admin key cannot be revoked: create another admin key first",
        )),
    }
}

/// `POST /v1/keys/{key_id}/rotate[ {"grace_s": N}]` → the key as listed
/// and its new `"secret"` (shown once). Its older secrets stay valid for
/// `grace_s` seconds (default a day, at most 30 days; 0 ends them now).
pub(super) async fn rotate(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
    request_body: Body,
) -> Result<Response, ApiError> {
    let request: RotateRequest = read_json(request_body, "expected {\"grace_s\": seconds}").await?;
    let grace = request.grace_s.unwrap_or(DEFAULT_ROTATION_GRACE.as_secs());
    if grace > MAX_ROTATION_GRACE.as_secs() {
        return Err(ApiError::BadRequest(
            "grace_s must be at most 2592000 (30 days)",
        ));
    }
    let kind = blocking(&state, {
        let key_id = key_id.clone();
        move |s| {
            Ok(s.keys()?
                .into_iter()
                .find(|k| k.id == key_id)
                .map(|k| k.kind))
        }
    })
    .await?
    .ok_or(ApiError::NotFound("no key with this id"))?;
    let secret = keyring::new_secret(kind).map_err(|e| {
        tracing::error!(error = %e, "cannot make a secret");
        ApiError::Internal
    })?;
    let digest = keyring::digest(&secret);
    let now = clock::now_ms();
    let until = now.saturating_add(
        i64::try_from(grace)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000),
    );
    let change = blocking(&state, move |s| s.rotate_key(&key_id, &digest, now, until)).await?;
    let key = changed(change)?;
    reload(&state).await?;
    tracing::info!(key_id = %key.id, grace_s = grace, "key rotated");
    let mut body = view(&key);
    body["secret"] = Value::String(secret);
    body["previous_expires_at"] = Value::String(format_timestamp(until));
    let mut response = Json(body).into_response();
    response
        .extensions_mut()
        .insert(AuditNote::of("grace_s", grace));
    Ok(response)
}

/// `POST /v1/keys/{key_id}/revoke` → the key as listed: refused from now
/// on, here at once and on every collector sharing the store within
/// [`keyring::KEY_POLL_INTERVAL`]. The last admin key is not revoked
/// (400).
pub(super) async fn revoke(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
) -> Result<Response, ApiError> {
    let now = clock::now_ms();
    let change = blocking(&state, move |s| s.revoke_key(&key_id, now)).await?;
    let key = changed(change)?;
    reload(&state).await?;
    tracing::info!(key_id = %key.id, "key revoked");
    Ok(Json(view(&key)).into_response())
}
