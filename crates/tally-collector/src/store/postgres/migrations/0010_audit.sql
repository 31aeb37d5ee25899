-- The audit log (see `crate::audit`): one row per read or admin action,
-- or per window of refused authentications from one address (`count`
-- of them). Never a secret, never event content. Expired by `at`.
CREATE TABLE audit_log (
    row_id  bigserial PRIMARY KEY,
    at      bigint NOT NULL,
    key_id  text COLLATE "C",
    role    text COLLATE "C",
    action  text COLLATE "C" NOT NULL,
    params  text COLLATE "C" NOT NULL,
    client  text COLLATE "C" NOT NULL,
    status  integer NOT NULL,
    outcome text COLLATE "C" NOT NULL,
    count   bigint NOT NULL
);
CREATE INDEX audit_log_by_at ON audit_log (at);
