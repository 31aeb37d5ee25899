-- Deletion scoped to a source (write key id). A tombstone and each
-- device link it holds name the source whose late events they refuse;
-- '' is every source (a deletion without one, and every tombstone
-- written before). A deletion request records its source ('' for all).
ALTER TABLE tombstones ADD COLUMN source text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE tombstones DROP CONSTRAINT tombstones_pkey;
ALTER TABLE tombstones ADD PRIMARY KEY (user_id, source);
ALTER TABLE tombstone_links ADD COLUMN source text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE tombstone_links DROP CONSTRAINT tombstone_links_pkey;
ALTER TABLE tombstone_links ADD PRIMARY KEY (kind, id, source);
ALTER TABLE deletions ADD COLUMN source text COLLATE "C" NOT NULL DEFAULT '';
