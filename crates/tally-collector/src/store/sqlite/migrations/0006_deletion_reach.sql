-- Deletion reaches dead letters and links. A dead letter records
-- the ids of its message (read leniently: it was rejected) and its size
-- as received; the links to a deleted user move into the tombstone
-- (`tombstone_links`), and the aliases naming it go. The counters of
-- kept dead letters let ingest cap them by rows and bytes.
ALTER TABLE dead_letters ADD COLUMN user_id TEXT;
ALTER TABLE dead_letters ADD COLUMN anonymous_id TEXT;
ALTER TABLE dead_letters ADD COLUMN install_id TEXT;
ALTER TABLE dead_letters ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE dead_letters SET size = length(CAST(raw AS BLOB)),
    user_id = CASE WHEN json_valid(raw) THEN CASE WHEN json_type(raw, '$.userId') = 'text'
        THEN nullif(json_extract(raw, '$.userId'), '') END END,
    anonymous_id = CASE WHEN json_valid(raw) THEN CASE WHEN json_type(raw, '$.anonymousId') = 'text'
        THEN nullif(json_extract(raw, '$.anonymousId'), '') END END,
    install_id = CASE WHEN json_valid(raw) THEN CASE WHEN json_type(raw, '$.context.tally.install_id') = 'text'
        THEN nullif(json_extract(raw, '$.context.tally.install_id'), '') END END;
CREATE TABLE tombstone_links (
    kind    TEXT NOT NULL,
    id      TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
INSERT INTO tombstone_links (kind, id, user_id) SELECT kind, id, target FROM links
    WHERE kind IN ('a', 'i') AND target IN (SELECT user_id FROM tombstones);
DELETE FROM links WHERE target IN (SELECT user_id FROM tombstones)
    OR (kind = 'u' AND id IN (SELECT user_id FROM tombstones));
ALTER TABLE counters ADD COLUMN dead_letter_rows INTEGER NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN dead_letter_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN dead_letters_not_kept INTEGER NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN dead_letters_truncated INTEGER NOT NULL DEFAULT 0;
UPDATE counters SET dead_letter_rows = (SELECT count(*) FROM dead_letters),
    dead_letter_bytes = (SELECT coalesce(sum(length(CAST(raw AS BLOB))), 0) FROM dead_letters);
