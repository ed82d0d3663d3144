-- The job queue (image_manager "postgres"): one row per build that any worker of the
-- farm may run. Workers take rows with FOR UPDATE SKIP LOCKED and hold a lease that
-- they renew; a row whose lease ran out goes back to the queue (a limited number of
-- times). See host/src/store/queue.rs.
CREATE TABLE jobs (
    image_id     text PRIMARY KEY,
    -- What to run (JSON of the engine's job plan: plugin names, parent ids).
    plan         text NOT NULL,
    -- Credentials, the template as given and callback URLs: only while the job may
    -- still run; NULL once it is done.
    secrets      text,
    -- The plugins a worker must have loaded to take the job.
    requires     text[] NOT NULL,
    -- An image that must be final (its parent) before the job can be taken.
    after_image  text,
    state        text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done')),
    worker       text,
    last_worker  text,
    lease_until  timestamptz,
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    cancel       boolean NOT NULL DEFAULT false,
    created      timestamptz NOT NULL DEFAULT clock_timestamp(),
    taken        timestamptz,
    finished     timestamptz
);
CREATE INDEX jobs_queued ON jobs (created, image_id) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_by_worker ON jobs (worker) WHERE state = 'running';

-- Workers wait on channel imagefactory_jobs: a job to take (queued), or one that ended
-- (done), which may free a job waiting for its parent.
CREATE FUNCTION jobs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('imagefactory_jobs', NEW.state || ':' || NEW.image_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_changed AFTER INSERT OR UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.state IN ('queued', 'done')) EXECUTE FUNCTION jobs_changed();
