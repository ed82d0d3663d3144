-- Notices on channel imagefactory_images say what happened: `insert:<id>`,
-- `update:<id>` or `delete:<id>`, so every daemon of a farm can stream the changes any
-- of them made (host/src/engine/shared_events.rs).
CREATE OR REPLACE FUNCTION images_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE store_generation SET value = value + 1;
    PERFORM pg_notify('imagefactory_images', lower(TG_OP) || ':' || COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END
$$;
