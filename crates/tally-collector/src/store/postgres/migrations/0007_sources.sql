-- Sources. Each event records the source (write key) that sent it,
-- and dedup is exact per source: the key becomes (source, message_id),
-- the business key (source, dedup_key), and export pages follow
-- (ts_corrected, source, message_id). Rows stored before have the
-- source '' (unknown); while any is left, a new event is also checked
-- against them (see `PostgresStore::legacy_events`). An install
-- belongs to the first source that sends for it; '' marks one not yet
-- claimed.
ALTER TABLE events ADD COLUMN source text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE events ALTER COLUMN source DROP DEFAULT;
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ADD PRIMARY KEY (source, message_id);
DROP INDEX events_by_dedup_key;
CREATE UNIQUE INDEX events_by_dedup_key ON events (source, dedup_key) WHERE dedup_key IS NOT NULL;
DROP INDEX events_by_time;
CREATE INDEX events_by_time ON events (ts_corrected, source, message_id);
ALTER TABLE dead_letters ADD COLUMN source text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE installs ADD COLUMN source text COLLATE "C" NOT NULL DEFAULT '';
