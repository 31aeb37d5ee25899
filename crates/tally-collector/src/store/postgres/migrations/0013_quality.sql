-- Data quality: what the tracking plan found in stored or rejected
-- events, counted by hour and key, with the newest examples of each key
-- (the finding's detail, never a property's value).
CREATE TABLE quality_counts (
    hour       bigint NOT NULL,
    source     text COLLATE "C" NOT NULL,
    event      text COLLATE "C" NOT NULL,
    version    bigint NOT NULL,
    finding    text COLLATE "C" NOT NULL,
    rule       text COLLATE "C" NOT NULL,
    path       text COLLATE "C" NOT NULL,
    accepted   bigint NOT NULL,
    rejected   bigint NOT NULL,
    first_seen bigint NOT NULL,
    last_seen  bigint NOT NULL,
    PRIMARY KEY (hour, source, event, version, finding, rule, path)
);
CREATE TABLE quality_examples (
    example_id  bigserial PRIMARY KEY,
    source      text COLLATE "C" NOT NULL,
    event       text COLLATE "C" NOT NULL,
    version     bigint NOT NULL,
    finding     text COLLATE "C" NOT NULL,
    rule        text COLLATE "C" NOT NULL,
    path        text COLLATE "C" NOT NULL,
    message_id  text COLLATE "C",
    received_at bigint NOT NULL,
    detail      text COLLATE "C" NOT NULL,
    rejected    boolean NOT NULL
);
CREATE INDEX quality_examples_by_key
    ON quality_examples (event, version, finding, rule, path, source, received_at);
