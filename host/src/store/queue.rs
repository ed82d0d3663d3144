//! The farm's job queue in PostgreSQL (table `jobs`, migration `V2__jobs.sql`).
//!
//! Every build the engine would run on a thread of its own becomes a row instead; any
//! worker of the farm that has the plugins the row requires may take it.
//!
//! - **Taking a job** is one statement: the oldest queued row whose plugins the worker
//!   has and whose parent image is final, locked `FOR UPDATE SKIP LOCKED` so two workers
//!   never take the same row and never wait on each other, is marked running with the
//!   worker's name and a lease.
//! - **Leases.** A worker renews the leases of all its running jobs in one statement
//!   every second or so; the same statement tells it which of them were cancelled. A row
//!   whose lease ran out (its worker died, or lost the database for longer than the
//!   lease) is put back in the queue by whichever daemon sees it first, until it has
//!   been tried `max_attempts` times; then it is done and the engine fails the image as
//!   "worker lost". Nothing stays running forever.
//! - **Waking up.** A trigger sends `pg_notify('imagefactory_jobs', ...)` when a row is
//!   queued or done; idle workers wait on that channel ([`JobListener`]) instead of
//!   polling the table (they still look every few seconds, in case a notice was missed
//!   while the connection was down). The same kind of connection ([`Notices`]) follows
//!   `imagefactory_images`, which tells every daemon of every change to an image.
//!
//! `secrets` (provider credentials, the template with its root password, callback URLs
//! with theirs) is kept only while the job may still run and cleared when it is done.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use super::postgres::Pool;
use super::StoreError;

/// The statuses after which a job waiting on an image may run (its build is over).
const PARENT_FINAL: &str = "('COMPLETE', 'FAILED', 'DELETING', 'DELETED', 'DELETEFAILED')";

/// The job queue; cheap to clone (it shares the store's connections).
#[derive(Clone)]
pub struct JobQueue {
    pool: Arc<Pool>,
}

/// A job to queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub image_id: String,
    /// The engine's plan, as JSON.
    pub plan: String,
    /// What must not be stored longer than the job lives, as JSON.
    pub secrets: Option<String>,
    /// Plugin names a worker must have.
    pub requires: Vec<String>,
    /// An image that must be final before the job may run.
    pub after_image: Option<String>,
    pub max_attempts: u32,
}

/// A job a worker took.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub image_id: String,
    pub plan: String,
    pub secrets: Option<String>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
}

/// A job whose worker stopped renewing its lease.
#[derive(Debug, Clone)]
pub struct LostJob {
    pub image_id: String,
    /// The worker that held it.
    pub worker: String,
    pub attempts: u32,
    pub max_attempts: u32,
    /// Back in the queue (else it has used all its attempts and is done).
    pub requeued: bool,
}

/// What cancelling a job found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// No job waits or runs for the image.
    NoJob,
    /// The job was still queued: it is done now and will never run.
    Dropped,
    /// A worker runs it: it has been told to stop (see [`JobQueue::renew`]).
    Signalled,
}

fn count(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

impl JobQueue {
    pub(super) fn new(pool: Arc<Pool>) -> JobQueue {
        JobQueue { pool }
    }

    /// Queues a job.
    pub fn enqueue(&self, job: &NewJob) -> Result<(), StoreError> {
        let max = i32::try_from(job.max_attempts.max(1)).unwrap_or(i32::MAX);
        self.pool.with(|c| {
            c.execute(
                "INSERT INTO jobs (image_id, plan, secrets, requires, after_image, max_attempts) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&job.image_id, &job.plan, &job.secrets, &job.requires, &job.after_image, &max],
            )
        })?;
        Ok(())
    }

    /// Takes the oldest job this worker can run, if any, with a lease of `lease`.
    pub fn claim(&self, worker: &str, plugins: &[String], lease: Duration) -> Result<Option<ClaimedJob>, StoreError> {
        let sql = format!(
            "UPDATE jobs SET state = 'running', worker = $1, attempts = attempts + 1, taken = clock_timestamp(), \
                 lease_until = clock_timestamp() + make_interval(secs => $2) \
             WHERE image_id = ( \
                 SELECT j.image_id FROM jobs j \
                 WHERE j.state = 'queued' AND NOT j.cancel AND j.requires <@ $3::text[] \
                   AND (j.after_image IS NULL OR NOT EXISTS ( \
                       SELECT 1 FROM images i WHERE i.id = j.after_image AND i.status NOT IN {PARENT_FINAL})) \
                 ORDER BY j.created, j.image_id \
                 LIMIT 1 FOR UPDATE OF j SKIP LOCKED) \
             RETURNING image_id, plan, secrets, attempts, max_attempts"
        );
        let secs = lease.as_secs_f64();
        let plugins = plugins.to_vec();
        let row = self.pool.with(|c| c.query_opt(&sql, &[&worker, &secs, &plugins]))?;
        let Some(row) = row else { return Ok(None) };
        let get = |e: postgres::Error| self.pool.unavailable(&e);
        Ok(Some(ClaimedJob {
            image_id: row.try_get(0).map_err(get)?,
            plan: row.try_get(1).map_err(get)?,
            secrets: row.try_get(2).map_err(get)?,
            attempt: count(row.try_get(3).map_err(get)?),
            max_attempts: count(row.try_get(4).map_err(get)?),
        }))
    }

    /// Renews the leases of every job `worker` runs; returns each such job's image id and
    /// whether it was cancelled. A job the worker believes it runs but that is missing
    /// here was lost (its lease ran out and it went to another worker).
    pub fn renew(&self, worker: &str, lease: Duration) -> Result<Vec<(String, bool)>, StoreError> {
        let secs = lease.as_secs_f64();
        let rows = self.pool.with(|c| {
            c.query(
                "UPDATE jobs SET lease_until = clock_timestamp() + make_interval(secs => $2) \
                 WHERE state = 'running' AND worker = $1 RETURNING image_id, cancel",
                &[&worker, &secs],
            )
        })?;
        Ok(rows.iter().filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?))).collect())
    }

    /// Marks a job done (its build ended, whatever the outcome) and forgets its secrets.
    pub fn finish(&self, image_id: &str, worker: &str) -> Result<(), StoreError> {
        self.pool.with(|c| {
            c.execute(
                "UPDATE jobs SET state = 'done', secrets = NULL, finished = clock_timestamp(), lease_until = NULL \
                 WHERE image_id = $1 AND worker = $2 AND state = 'running'",
                &[&image_id, &worker],
            )
        })?;
        Ok(())
    }

    /// Puts one job this worker took straight back in the queue, without counting the
    /// attempt: the worker could not start it (its image could not be read, no thread),
    /// which says nothing about the job. Its other jobs keep running.
    pub fn release(&self, image_id: &str, worker: &str) -> Result<(), StoreError> {
        self.pool.with(|c| {
            c.execute(
                "UPDATE jobs SET state = 'queued', attempts = GREATEST(attempts - 1, 0), \
                     last_worker = worker, worker = NULL, lease_until = NULL \
                 WHERE image_id = $1 AND worker = $2 AND state = 'running'",
                &[&image_id, &worker],
            )
        })?;
        Ok(())
    }

    /// Gives back the jobs a stopping worker runs, at once (each counts as an attempt).
    pub fn release_all(&self, worker: &str) -> Result<(), StoreError> {
        self.pool.with(|c| {
            c.execute(
                "UPDATE jobs SET lease_until = clock_timestamp() WHERE state = 'running' AND worker = $1",
                &[&worker],
            )
        })?;
        Ok(())
    }

    /// Requeues the jobs whose leases ran out (or ends them, when out of attempts).
    /// Each row goes to exactly one caller, however many daemons reap at once.
    pub fn reap(&self) -> Result<Vec<LostJob>, StoreError> {
        let rows = self.pool.with(|c| {
            c.query(
                "UPDATE jobs SET \
                     state = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'done' END, \
                     secrets = CASE WHEN attempts < max_attempts THEN secrets END, \
                     finished = CASE WHEN attempts < max_attempts THEN NULL ELSE clock_timestamp() END, \
                     last_worker = worker, worker = NULL, lease_until = NULL \
                 WHERE state = 'running' AND lease_until < clock_timestamp() \
                 RETURNING image_id, last_worker, attempts, max_attempts, state",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let state: String = r.try_get(4).ok()?;
                Some(LostJob {
                    image_id: r.try_get(0).ok()?,
                    worker: r.try_get::<_, Option<String>>(1).ok()?.unwrap_or_default(),
                    attempts: count(r.try_get(2).ok()?),
                    max_attempts: count(r.try_get(3).ok()?),
                    requeued: state == "queued",
                })
            })
            .collect())
    }

    /// Cancels the image's job: a queued one is dropped, a running one flagged for its
    /// worker to stop.
    pub fn cancel(&self, image_id: &str) -> Result<CancelOutcome, StoreError> {
        let row = self.pool.with(|c| {
            c.query_opt(
                "UPDATE jobs SET cancel = true, \
                     secrets = CASE WHEN state = 'queued' THEN NULL ELSE secrets END, \
                     finished = CASE WHEN state = 'queued' THEN clock_timestamp() END, \
                     state = CASE WHEN state = 'queued' THEN 'done' ELSE state END \
                 WHERE image_id = $1 AND state <> 'done' \
                 RETURNING (SELECT state FROM jobs WHERE image_id = $1)",
                &[&image_id],
            )
        })?;
        Ok(match row.and_then(|r| r.try_get::<_, String>(0).ok()) {
            None => CancelOutcome::NoJob,
            Some(old) if old == "queued" => CancelOutcome::Dropped,
            Some(_) => CancelOutcome::Signalled,
        })
    }

    /// The state of the image's job (`queued`, `running`, `done`), if it has one.
    pub fn state(&self, image_id: &str) -> Result<Option<String>, StoreError> {
        let row = self.pool.with(|c| c.query_opt("SELECT state FROM jobs WHERE image_id = $1", &[&image_id]))?;
        Ok(row.and_then(|r| r.try_get(0).ok()))
    }

    /// Images whose job is queued or running (recovery leaves their records alone).
    pub fn active_images(&self) -> Result<HashSet<String>, StoreError> {
        let rows = self.pool.with(|c| c.query("SELECT image_id FROM jobs WHERE state <> 'done'", &[]))?;
        Ok(rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
    }

    /// A connection that waits for queue notices.
    pub fn listener(&self) -> Notices {
        Notices::new(self.pool.clone(), "imagefactory_jobs")
    }

    /// A connection that waits for notices of image changes (`insert:<id>`,
    /// `update:<id>`, `delete:<id>`), whichever daemon made them.
    pub fn image_notices(&self) -> Notices {
        Notices::new(self.pool.clone(), "imagefactory_images")
    }
}

/// What waiting for notices gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Woken {
    /// Notices came: their payloads, in the order they were sent.
    Notices(Vec<String>),
    /// None came in time.
    TimedOut,
    /// The connection was made (again): notices sent while it was down are lost, so
    /// the caller should look at the state itself.
    Reconnected,
    /// The server cannot be reached; the wait took its time-out.
    Unavailable,
}

/// Waits for the notices of one channel on a connection of its own, reconnecting after
/// an outage.
pub struct Notices {
    pool: Arc<Pool>,
    channel: &'static str,
    client: Option<Client>,
}

impl Notices {
    fn new(pool: Arc<Pool>, channel: &'static str) -> Notices {
        Notices { pool, channel, client: None }
    }

    /// Waits up to `timeout` for notices.
    pub fn next(&mut self, timeout: Duration) -> Woken {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let listen = format!("LISTEN {}", self.channel);
            match self.pool.connect().and_then(|mut c| {
                c.batch_execute(&listen).map_err(|e| self.pool.unavailable(&e))?;
                Ok(c)
            }) {
                Ok(c) => {
                    self.client = Some(c);
                    return Woken::Reconnected;
                }
                Err(_) => {
                    std::thread::sleep(timeout);
                    return Woken::Unavailable;
                }
            }
        }
        let outcome = match self.client.as_mut() {
            Some(client) => notices(client, timeout),
            None => return Woken::Unavailable,
        };
        match outcome {
            Some(payloads) if payloads.is_empty() => Woken::TimedOut,
            Some(payloads) => Woken::Notices(payloads),
            None => {
                self.client = None;
                Woken::Unavailable
            }
        }
    }

    /// Waits up to `timeout`; true when something may have changed (a notice came, or
    /// the connection was made again).
    pub fn wait(&mut self, timeout: Duration) -> bool {
        matches!(self.next(timeout), Woken::Notices(_) | Woken::Reconnected)
    }
}

/// Waits for one notice and takes the rest that came with it: their payloads (none on
/// time-out), or `None` when the connection broke.
fn notices(client: &mut Client, timeout: Duration) -> Option<Vec<String>> {
    let mut notices = client.notifications();
    let mut payloads = Vec::new();
    match notices.timeout_iter(timeout).next() {
        Ok(Some(n)) => payloads.push(n.payload().to_string()),
        Ok(None) => return Some(payloads),
        Err(_) => return None,
    }
    let mut rest = notices.iter();
    while let Ok(Some(n)) = rest.next() {
        payloads.push(n.payload().to_string());
    }
    Some(payloads)
}
