-- Pipeline health (see store/health.rs).
ALTER TABLE counters ADD COLUMN batches bigint NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN batches_ok bigint NOT NULL DEFAULT 0;
CREATE TABLE health_hours (
    hour       bigint NOT NULL,
    shard      integer NOT NULL,
    batches    bigint NOT NULL,
    batches_ok bigint NOT NULL,
    accepted   bigint NOT NULL,
    duplicate  bigint NOT NULL,
    rejected   bigint NOT NULL,
    PRIMARY KEY (hour, shard)
);
CREATE TABLE health_rejections (
    hour   bigint NOT NULL,
    shard  integer NOT NULL,
    reason text COLLATE "C" NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (hour, shard, reason)
);
CREATE TABLE health_histograms (
    metric text COLLATE "C" NOT NULL,
    hour   bigint NOT NULL,
    shard  integer NOT NULL,
    le     bigint NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (metric, hour, shard, le)
);
CREATE TABLE install_health (
    install_id           text COLLATE "C" PRIMARY KEY,
    at                   bigint NOT NULL,
    received_at          bigint NOT NULL,
    pending              bigint NOT NULL,
    pending_bytes        bigint NOT NULL,
    oldest_pending_age_s double precision NOT NULL,
    consecutive_failures bigint NOT NULL,
    backoff_ms           bigint NOT NULL,
    persistence_errors   bigint NOT NULL,
    sync_p50_ms          double precision,
    sync_p99_ms          double precision,
    clock_offset_ms      bigint NOT NULL
);
CREATE INDEX install_health_by_at ON install_health (at);
-- Retention (expired events by corrected time) and export (keyset pages
-- in (corrected time, message id) order) scan by time.
CREATE INDEX events_by_time ON events (ts_corrected, message_id);
CREATE TABLE deletions (
    row_id         bigserial PRIMARY KEY,
    user_id        text COLLATE "C" NOT NULL,
    requested_at   bigint NOT NULL,
    status         text COLLATE "C" NOT NULL,
    deleted_events bigint NOT NULL
);
