-- Each identity records the transaction that last set its person,
-- so a collector's cache of persons (see `postgres::queries`) catches up
-- by reading only what changed since it last looked. Adding the column
-- rewrites the table once.
ALTER TABLE idents ADD COLUMN changed xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE FUNCTION idents_person_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed := pg_current_xact_id();
    RETURN NEW;
END
$$;
CREATE TRIGGER idents_person_changed BEFORE UPDATE OF person ON idents
    FOR EACH ROW WHEN (OLD.person IS DISTINCT FROM NEW.person)
    EXECUTE FUNCTION idents_person_changed();
CREATE INDEX idents_by_changed ON idents (changed);
