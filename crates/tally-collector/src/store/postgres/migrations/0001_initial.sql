-- Events, dead letters, counters (one row per shard), identity links,
-- tombstones and completeness (see the store module). Every text column
-- uses the "C" collation: ids and names compare byte-wise.
CREATE TABLE events (
    message_id    text COLLATE "C" PRIMARY KEY,
    dedup_key     text COLLATE "C",
    kind          text COLLATE "C" NOT NULL,
    event         text COLLATE "C",
    user_id       text COLLATE "C",
    anonymous_id  text COLLATE "C",
    group_id      text COLLATE "C",
    previous_id   text COLLATE "C",
    install_id    text COLLATE "C",
    seq           bigint,
    session_id    text COLLATE "C",
    session_index bigint,
    priority      text COLLATE "C" NOT NULL,
    timestamp     bigint,
    sent_at       bigint,
    received_at   bigint NOT NULL,
    ts_corrected  bigint NOT NULL,
    clamped       boolean NOT NULL,
    raw           text COLLATE "C" NOT NULL
);
-- Partial: most events have no dedup key and cost no entry here.
CREATE UNIQUE INDEX events_by_dedup_key ON events (dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX events_by_name_time ON events (event, ts_corrected);
CREATE TABLE dead_letters (
    row_id      bigserial PRIMARY KEY,
    message_id  text COLLATE "C",
    reason      text COLLATE "C" NOT NULL,
    detail      text COLLATE "C" NOT NULL,
    received_at bigint NOT NULL,
    raw         text COLLATE "C" NOT NULL
);
CREATE TABLE counters (
    shard     integer PRIMARY KEY,
    accepted  bigint NOT NULL DEFAULT 0,
    duplicate bigint NOT NULL DEFAULT 0,
    rejected  bigint NOT NULL DEFAULT 0,
    stored    bigint NOT NULL DEFAULT 0
);
INSERT INTO counters (shard) SELECT generate_series(0, 31);
CREATE TABLE links (
    kind      text COLLATE "C" NOT NULL,
    id        text COLLATE "C" NOT NULL,
    target    text COLLATE "C" NOT NULL,
    linked_at bigint NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX links_by_target ON links (target);
CREATE TABLE tombstones (
    user_id      text COLLATE "C" PRIMARY KEY,
    requested_at bigint NOT NULL
);
CREATE TABLE installs (
    install_id text COLLATE "C" PRIMARY KEY,
    max_seq    bigint NOT NULL
);
CREATE TABLE install_seen (
    install_id text COLLATE "C" NOT NULL,
    from_seq   bigint NOT NULL,
    to_seq     bigint NOT NULL,
    PRIMARY KEY (install_id, from_seq)
);
CREATE TABLE install_drops (
    install_id text COLLATE "C" NOT NULL,
    from_seq   bigint NOT NULL,
    to_seq     bigint NOT NULL,
    reason     text COLLATE "C" NOT NULL,
    PRIMARY KEY (install_id, from_seq, to_seq, reason)
);
