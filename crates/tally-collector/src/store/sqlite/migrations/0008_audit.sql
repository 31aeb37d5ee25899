-- The audit log (see `crate::audit`): one row per read or admin action,
-- or per window of refused authentications from one address (`count`
-- of them). Never a secret, never event content. Expired by `at`.
CREATE TABLE audit_log (
    row_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    key_id  TEXT,
    role    TEXT,
    action  TEXT NOT NULL,
    params  TEXT NOT NULL,
    client  TEXT NOT NULL,
    status  INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    count   INTEGER NOT NULL
);
CREATE INDEX audit_log_by_at ON audit_log (at);
