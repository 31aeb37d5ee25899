-- Keys managed live (see `crate::store::keys`): write keys, read and
-- admin tokens, each with the SHA-256 digests of its secrets (never the
-- secrets). A rotated key keeps its old secret until `expires_at`; a
-- revoked key keeps its row (for the list) and no valid secret.
-- `key_versions` is bumped by every change, so collectors sharing the
-- store poll one row to learn that they must reload the keys.
CREATE TABLE api_keys (
    key_id     TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    origin     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) WITHOUT ROWID;
CREATE TABLE api_key_secrets (
    digest     BLOB PRIMARY KEY,
    key_id     TEXT NOT NULL REFERENCES api_keys (key_id),
    configured INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
) WITHOUT ROWID;
CREATE INDEX api_key_secrets_by_key ON api_key_secrets (key_id);
CREATE TABLE key_versions (
    id      INTEGER PRIMARY KEY CHECK (id = 0),
    version INTEGER NOT NULL
);
INSERT INTO key_versions (id, version) VALUES (0, 0);
