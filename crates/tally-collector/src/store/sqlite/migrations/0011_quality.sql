-- Data quality: what the tracking plan found in stored or rejected
-- events, counted by hour and key, with the newest examples of each key
-- (the finding's detail, never a property's value).
CREATE TABLE quality_counts (
    hour       INTEGER NOT NULL,
    source     TEXT NOT NULL,
    event      TEXT NOT NULL,
    version    INTEGER NOT NULL,
    finding    TEXT NOT NULL,
    rule       TEXT NOT NULL,
    path       TEXT NOT NULL,
    accepted   INTEGER NOT NULL,
    rejected   INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (hour, source, event, version, finding, rule, path)
) WITHOUT ROWID;
CREATE TABLE quality_examples (
    example_id  INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    event       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    finding     TEXT NOT NULL,
    rule        TEXT NOT NULL,
    path        TEXT NOT NULL,
    message_id  TEXT,
    received_at INTEGER NOT NULL,
    detail      TEXT NOT NULL,
    rejected    INTEGER NOT NULL
);
CREATE INDEX quality_examples_by_key
    ON quality_examples (event, version, finding, rule, path, source, received_at);
