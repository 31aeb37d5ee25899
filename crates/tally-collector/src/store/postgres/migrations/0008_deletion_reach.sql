-- Deletion reaches dead letters and links. A dead letter records
-- the ids of its message (read leniently: it was rejected; a row whose
-- text PostgreSQL's JSON cannot read keeps none) and its size as
-- received; the links to a deleted user move into the tombstone
-- (`tombstone_links`), and the aliases naming it go. The counters of
-- kept dead letters let ingest cap them by rows and bytes.
ALTER TABLE dead_letters ADD COLUMN user_id text COLLATE "C";
ALTER TABLE dead_letters ADD COLUMN anonymous_id text COLLATE "C";
ALTER TABLE dead_letters ADD COLUMN install_id text COLLATE "C";
ALTER TABLE dead_letters ADD COLUMN size bigint NOT NULL DEFAULT 0;
UPDATE dead_letters SET size = octet_length(raw);
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT row_id, raw FROM dead_letters LOOP
        BEGIN
            UPDATE dead_letters SET
                user_id = CASE WHEN json_typeof(r.raw::json -> 'userId') = 'string'
                    THEN nullif(r.raw::json ->> 'userId', '') END,
                anonymous_id = CASE WHEN json_typeof(r.raw::json -> 'anonymousId') = 'string'
                    THEN nullif(r.raw::json ->> 'anonymousId', '') END,
                install_id = CASE WHEN json_typeof(r.raw::json #> '{context,tally,install_id}') = 'string'
                    THEN nullif(r.raw::json #>> '{context,tally,install_id}', '') END
            WHERE row_id = r.row_id;
        EXCEPTION WHEN others THEN
            NULL;
        END;
    END LOOP;
END
$$;
CREATE TABLE tombstone_links (
    kind    text COLLATE "C" NOT NULL,
    id      text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (kind, id)
);
INSERT INTO tombstone_links (kind, id, user_id) SELECT kind, id, target FROM links
    WHERE kind IN ('a', 'i') AND target IN (SELECT user_id FROM tombstones);
DELETE FROM links WHERE target IN (SELECT user_id FROM tombstones)
    OR (kind = 'u' AND id IN (SELECT user_id FROM tombstones));
ALTER TABLE counters ADD COLUMN dead_letter_rows bigint NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN dead_letter_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN dead_letters_not_kept bigint NOT NULL DEFAULT 0;
ALTER TABLE counters ADD COLUMN dead_letters_truncated bigint NOT NULL DEFAULT 0;
UPDATE counters SET dead_letter_rows = (SELECT count(*) FROM dead_letters),
    dead_letter_bytes = (SELECT coalesce(sum(octet_length(raw)), 0) FROM dead_letters)
    WHERE shard = 0;
