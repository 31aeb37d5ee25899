-- Pipeline health (see store/health.rs).
ALTER TABLE counters ADD COLUMN batches INTEGER NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN batches_ok INTEGER NOT NULL DEFAULT 0;
CREATE TABLE health_hours (
    hour       INTEGER NOT NULL,
    shard      INTEGER NOT NULL,
    batches    INTEGER NOT NULL,
    batches_ok INTEGER NOT NULL,
    accepted   INTEGER NOT NULL,
    duplicate  INTEGER NOT NULL,
    rejected   INTEGER NOT NULL,
    PRIMARY KEY (hour, shard)
) WITHOUT ROWID;
CREATE TABLE health_rejections (
    hour   INTEGER NOT NULL,
    shard  INTEGER NOT NULL,
    reason TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (hour, shard, reason)
) WITHOUT ROWID;
CREATE TABLE health_histograms (
    metric TEXT NOT NULL,
    hour   INTEGER NOT NULL,
    shard  INTEGER NOT NULL,
    le     INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (metric, hour, shard, le)
) WITHOUT ROWID;
CREATE TABLE install_health (
    install_id           TEXT PRIMARY KEY,
    at                   INTEGER NOT NULL,
    received_at          INTEGER NOT NULL,
    pending              INTEGER NOT NULL,
    pending_bytes        INTEGER NOT NULL,
    oldest_pending_age_s REAL NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    backoff_ms           INTEGER NOT NULL,
    persistence_errors   INTEGER NOT NULL,
    sync_p50_ms          REAL,
    sync_p99_ms          REAL,
    clock_offset_ms      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX install_health_by_at ON install_health (at);
-- Retention (expired events by corrected time) and export (keyset pages
-- in corrected-time order; the row id breaks ties) scan by time.
CREATE INDEX events_by_time ON events (ts_corrected);
CREATE TABLE deletions (
    row_id         INTEGER PRIMARY KEY,
    user_id        TEXT NOT NULL,
    requested_at   INTEGER NOT NULL,
    status         TEXT NOT NULL,
    deleted_events INTEGER NOT NULL
);
