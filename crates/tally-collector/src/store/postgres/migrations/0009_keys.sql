-- Keys managed live (see `crate::store::keys`): write keys, read and
-- admin tokens, each with the SHA-256 digests of its secrets (never the
-- secrets). A rotated key keeps its old secret until `expires_at`; a
-- revoked key keeps its row (for the list) and no valid secret.
-- `key_versions` is bumped by every change, so collectors sharing the
-- store poll one row to learn that they must reload the keys; a change
-- locks that row first, so changes take turns.
CREATE TABLE api_keys (
    key_id     text COLLATE "C" PRIMARY KEY,
    kind       text COLLATE "C" NOT NULL,
    name       text COLLATE "C" NOT NULL,
    origin     text COLLATE "C" NOT NULL,
    created_at bigint NOT NULL,
    revoked_at bigint
);
CREATE TABLE api_key_secrets (
    digest     bytea PRIMARY KEY,
    key_id     text COLLATE "C" NOT NULL REFERENCES api_keys (key_id),
    configured boolean NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint
);
CREATE INDEX api_key_secrets_by_key ON api_key_secrets (key_id);
CREATE TABLE key_versions (
    id      integer PRIMARY KEY CHECK (id = 0),
    version bigint NOT NULL
);
INSERT INTO key_versions (id, version) VALUES (0, 0);
