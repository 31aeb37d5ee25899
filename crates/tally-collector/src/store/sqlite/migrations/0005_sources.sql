-- Sources. Each event records the source (write key) that sent it,
-- and dedup is exact per source: `message_id` and `dedup_key` are
-- unique within a source, not across the store. SQLite cannot drop a
-- column's UNIQUE constraint, so the table is rebuilt (row ids kept:
-- export cursors and retention read them). Rows stored before have the
-- source '' (unknown); while any is left, a new event is also checked
-- against them (see `WriterState::legacy_events`). An install belongs
-- to the first source that sends for it; '' marks one not yet claimed.
CREATE TABLE events_v5 (
    row_id        INTEGER PRIMARY KEY,
    message_id    TEXT NOT NULL,
    dedup_key     TEXT,
    kind          TEXT NOT NULL,
    event         TEXT,
    user_id       TEXT,
    anonymous_id  TEXT,
    group_id      TEXT,
    previous_id   TEXT,
    install_id    TEXT,
    seq           INTEGER,
    session_id    TEXT,
    session_index INTEGER,
    priority      TEXT NOT NULL,
    timestamp     INTEGER,
    sent_at       INTEGER,
    received_at   INTEGER NOT NULL,
    ts_corrected  INTEGER NOT NULL,
    clamped       INTEGER NOT NULL,
    raw           TEXT NOT NULL,
    ident         INTEGER,
    source        TEXT NOT NULL,
    UNIQUE (source, message_id)
);
INSERT INTO events_v5 (row_id, message_id, dedup_key, kind, event, user_id, anonymous_id,
    group_id, previous_id, install_id, seq, session_id, session_index, priority, timestamp,
    sent_at, received_at, ts_corrected, clamped, raw, ident, source)
    SELECT row_id, message_id, dedup_key, kind, event, user_id, anonymous_id, group_id,
    previous_id, install_id, seq, session_id, session_index, priority, timestamp, sent_at,
    received_at, ts_corrected, clamped, raw, ident, '' FROM events;
DROP TABLE events;
ALTER TABLE events_v5 RENAME TO events;
CREATE UNIQUE INDEX events_by_dedup_key ON events (source, dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX events_by_name_time_ident ON events (event, ts_corrected, ident);
CREATE INDEX events_by_time ON events (ts_corrected);
ALTER TABLE dead_letters ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE installs ADD COLUMN source TEXT NOT NULL DEFAULT '';
