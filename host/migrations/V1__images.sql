-- Image records, build logs and the store's change counter (image_manager "postgres").
-- The record itself is the JSON of a `.meta` file; the columns beside it are what
-- queries filter and sort on.
CREATE TABLE images (
    id              text PRIMARY KEY,
    kind            text   NOT NULL,
    status          text   NOT NULL,
    created         bigint NOT NULL,
    base_image_id   text,
    target_image_id text,
    record          text   NOT NULL
);
CREATE INDEX images_by_kind ON images (kind, created, id);
CREATE INDEX images_by_status ON images (status);
CREATE INDEX images_by_base ON images (base_image_id) WHERE base_image_id IS NOT NULL;
CREATE INDEX images_by_target ON images (target_image_id) WHERE target_image_id IS NOT NULL;

CREATE TABLE image_log (
    seq      bigserial PRIMARY KEY,
    image_id text NOT NULL,
    line     text NOT NULL
);
CREATE INDEX image_log_by_image ON image_log (image_id, seq);

-- One row: bumped in the transaction of every change to `images`, so a reader that
-- reads it before a query never keeps a result older than the number it read.
CREATE TABLE store_generation (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    value bigint NOT NULL
);
INSERT INTO store_generation VALUES (true, 0);

-- Every change bumps the counter and tells listeners (channel imagefactory_images,
-- payload the image id) once it commits.
CREATE FUNCTION images_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE store_generation SET value = value + 1;
    PERFORM pg_notify('imagefactory_images', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END
$$;
CREATE TRIGGER images_changed AFTER INSERT OR UPDATE OR DELETE ON images
    FOR EACH ROW EXECUTE FUNCTION images_changed();
