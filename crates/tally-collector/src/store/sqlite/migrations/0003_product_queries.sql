-- Product queries (see `store::query`): identities, the covering
-- index, event names and active slots, backfilled from stored events.
CREATE TABLE idents (
    id           INTEGER PRIMARY KEY,
    user_id      TEXT NOT NULL,
    anonymous_id TEXT NOT NULL,
    install_id   TEXT NOT NULL,
    person       TEXT,
    UNIQUE (user_id, anonymous_id, install_id)
);
CREATE INDEX idents_by_anonymous_id ON idents (anonymous_id) WHERE user_id = '';
CREATE INDEX idents_by_install_id ON idents (install_id) WHERE user_id = '';
ALTER TABLE events ADD COLUMN ident INTEGER;
INSERT INTO idents (user_id, anonymous_id, install_id)
    SELECT DISTINCT COALESCE(user_id, ''),
        CASE WHEN user_id IS NULL THEN COALESCE(anonymous_id, '') ELSE '' END,
        CASE WHEN user_id IS NULL THEN COALESCE(install_id, '') ELSE '' END
    FROM events;
UPDATE idents AS k SET person = {IDENT_PERSON_SQL};
UPDATE events SET ident = (SELECT k.id FROM idents k WHERE k.user_id = COALESCE(events.user_id, '')
    AND k.anonymous_id = CASE WHEN events.user_id IS NULL THEN COALESCE(events.anonymous_id, '') ELSE '' END
    AND k.install_id = CASE WHEN events.user_id IS NULL THEN COALESCE(events.install_id, '') ELSE '' END);
CREATE INDEX events_by_name_time_ident ON events (event, ts_corrected, ident);
DROP INDEX events_by_name_time;
CREATE TABLE event_names (name TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT INTO event_names SELECT DISTINCT event FROM events WHERE event IS NOT NULL;
CREATE TABLE active_slots (
    slot  INTEGER NOT NULL,
    ident INTEGER NOT NULL,
    PRIMARY KEY (slot, ident)
) WITHOUT ROWID;
INSERT INTO active_slots SELECT DISTINCT ts_corrected / 900000, ident FROM events
    WHERE event IS NOT NULL AND substr(event, 1, 6) <> 'tally.';
