-- Events, dead letters, counters, identity links, tombstones and
-- completeness (see the store module).
CREATE TABLE events (
    row_id        INTEGER PRIMARY KEY,
    message_id    TEXT NOT NULL UNIQUE,
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
    raw           TEXT NOT NULL
);
-- Partial: most events have no dedup key and cost no entry here.
CREATE UNIQUE INDEX events_by_dedup_key ON events (dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX events_by_name_time ON events (event, ts_corrected);
CREATE TABLE dead_letters (
    row_id      INTEGER PRIMARY KEY,
    message_id  TEXT,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    raw         TEXT NOT NULL
);
CREATE TABLE counters (
    id        INTEGER PRIMARY KEY CHECK (id = 0),
    accepted  INTEGER NOT NULL,
    duplicate INTEGER NOT NULL,
    rejected  INTEGER NOT NULL,
    stored    INTEGER NOT NULL
);
INSERT INTO counters VALUES (0, 0, 0, 0, 0);
CREATE TABLE links (
    kind      TEXT NOT NULL,
    id        TEXT NOT NULL,
    target    TEXT NOT NULL,
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE INDEX links_by_target ON links (target);
CREATE TABLE tombstones (
    user_id      TEXT PRIMARY KEY,
    requested_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE installs (
    install_id TEXT PRIMARY KEY,
    max_seq    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE install_seen (
    install_id TEXT NOT NULL,
    from_seq   INTEGER NOT NULL,
    to_seq     INTEGER NOT NULL,
    PRIMARY KEY (install_id, from_seq)
) WITHOUT ROWID;
CREATE TABLE install_drops (
    install_id TEXT NOT NULL,
    from_seq   INTEGER NOT NULL,
    to_seq     INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (install_id, from_seq, to_seq, reason)
) WITHOUT ROWID;
