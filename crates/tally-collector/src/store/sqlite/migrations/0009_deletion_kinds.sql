-- Deletion by anonymous id and by install id besides user id: a
-- deletion request records which kind of id it named (`user_id` holds
-- the id, whatever its kind).
ALTER TABLE deletions ADD COLUMN kind TEXT NOT NULL DEFAULT 'userId';
