-- Product queries (see `store::query`): identities, the covering
-- index, event names and active slots, backfilled from stored events.
CREATE TABLE idents (
    id           bigserial PRIMARY KEY,
    user_id      text COLLATE "C" NOT NULL,
    anonymous_id text COLLATE "C" NOT NULL,
    install_id   text COLLATE "C" NOT NULL,
    person       text COLLATE "C",
    UNIQUE (user_id, anonymous_id, install_id)
);
CREATE INDEX idents_by_anonymous_id ON idents (anonymous_id) WHERE user_id = '';
CREATE INDEX idents_by_install_id ON idents (install_id) WHERE user_id = '';
ALTER TABLE events ADD COLUMN ident bigint;
INSERT INTO idents (user_id, anonymous_id, install_id)
    SELECT DISTINCT COALESCE(user_id, ''),
        CASE WHEN user_id IS NULL THEN COALESCE(anonymous_id, '') ELSE '' END,
        CASE WHEN user_id IS NULL THEN COALESCE(install_id, '') ELSE '' END
    FROM events;
UPDATE idents AS k SET person = {IDENT_PERSON_SQL};
UPDATE events AS e SET ident = k.id FROM idents k WHERE k.user_id = COALESCE(e.user_id, '')
    AND k.anonymous_id = CASE WHEN e.user_id IS NULL THEN COALESCE(e.anonymous_id, '') ELSE '' END
    AND k.install_id = CASE WHEN e.user_id IS NULL THEN COALESCE(e.install_id, '') ELSE '' END;
CREATE INDEX events_by_name_time_ident ON events (event, ts_corrected, ident);
DROP INDEX events_by_name_time;
CREATE TABLE event_names (name text COLLATE "C" PRIMARY KEY);
INSERT INTO event_names SELECT DISTINCT event FROM events WHERE event IS NOT NULL;
CREATE TABLE active_slots (
    slot  bigint NOT NULL,
    ident bigint NOT NULL,
    PRIMARY KEY (slot, ident)
);
INSERT INTO active_slots SELECT DISTINCT ts_corrected / 900000, ident FROM events
    WHERE event IS NOT NULL AND substr(event, 1, 6) <> 'tally.';
