-- Deletion scoped to a source (write key id). A tombstone and each
-- device link it holds name the source whose late events they refuse;
-- '' is every source (a deletion without one, and every tombstone
-- written before). A deletion request records its source ('' for all).
CREATE TABLE tombstones_v10 (
    user_id      TEXT NOT NULL,
    source       TEXT NOT NULL DEFAULT '',
    requested_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, source)
) WITHOUT ROWID;
INSERT INTO tombstones_v10 (user_id, source, requested_at)
    SELECT user_id, '', requested_at FROM tombstones;
DROP TABLE tombstones;
ALTER TABLE tombstones_v10 RENAME TO tombstones;
CREATE TABLE tombstone_links_v10 (
    kind    TEXT NOT NULL,
    id      TEXT NOT NULL,
    source  TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL,
    PRIMARY KEY (kind, id, source)
) WITHOUT ROWID;
INSERT INTO tombstone_links_v10 (kind, id, source, user_id)
    SELECT kind, id, '', user_id FROM tombstone_links;
DROP TABLE tombstone_links;
ALTER TABLE tombstone_links_v10 RENAME TO tombstone_links;
ALTER TABLE deletions ADD COLUMN source TEXT NOT NULL DEFAULT '';
