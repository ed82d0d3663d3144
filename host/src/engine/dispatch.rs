//! Builds through the farm's job queue (the postgres store): how the engine queues a
//! build instead of running it, and how a worker takes jobs and runs them.
//!
//! - **Queueing.** A base, target, push or snapshot build becomes a job row naming the
//!   plugins it needs by name, the parent it waits for, and its secrets (credentials,
//!   the template as given, callback URLs). The image shows PENDING "Queued: waiting for
//!   a worker with ...". Imports (a file on the machine that was asked) and deletes
//!   (housekeeping of the shared store) still run where they were asked for.
//! - **Working.** A worker ([`Engine::work_jobs`]) takes jobs while it has free slots
//!   (`max_concurrent_local_sessions`), only those whose plugins it loaded, and runs
//!   each on a build thread exactly as a local build: the same steps, the same worker
//!   processes, progress and log written to the shared store as they happen.
//! - **Upkeep** ([`Engine::start_queue_upkeep`], in every daemon of the farm): the
//!   worker's leases are renewed about every second, which is also how a cancel reaches
//!   it; jobs whose worker stopped renewing are requeued, or failed as "worker lost"
//!   once out of attempts.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::build::{self, Plan};
use super::{callbacks, Engine, EngineError, Inner, Job};
use crate::image::Status;
use crate::store::{CancelOutcome, ClaimedJob, JobQueue, LostJob, NewJob};

/// The queue and how jobs are held, when the store has one.
pub(super) struct QueueSettings {
    pub queue: JobQueue,
    pub lease: Duration,
    pub max_attempts: u32,
    /// Set when this process works jobs.
    pub worker: Mutex<Option<Arc<WorkerState>>>,
}

/// A worker's own state.
pub(super) struct WorkerState {
    pub name: String,
    plugins: Vec<String>,
    /// Image ids of the jobs this worker runs now.
    running: Mutex<HashSet<String>>,
    stop: AtomicBool,
}

/// What a job runs: the plan of a build, with plugins by name (each worker resolves them
/// in its own plugin directory).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum JobPlan {
    Base { os: String },
    Target { base_id: String, os: String, cloud: String },
    Push { target_id: String, cloud: String },
    Snapshot { cloud: String },
}

/// What a job carries that must not outlive it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct JobSecrets {
    provider: Option<String>,
    credentials: Option<String>,
    /// The template as given (with its root password), when the record's is redacted.
    template: Option<String>,
    /// Callback URLs as given (with their passwords).
    callbacks: Vec<String>,
}

impl JobPlan {
    /// The job for a plan that runs on workers; `None` for one that runs here.
    fn of(plan: &Plan) -> Option<(JobPlan, JobSecrets)> {
        let with = |provider: &str, credentials: &str| JobSecrets {
            provider: Some(provider.to_string()),
            credentials: Some(credentials.to_string()),
            ..JobSecrets::default()
        };
        Some(match plan {
            Plan::Base { plugin } => (JobPlan::Base { os: plugin.name.clone() }, JobSecrets::default()),
            Plan::Target { base_id, os, cloud } => (
                JobPlan::Target { base_id: base_id.clone(), os: os.name.clone(), cloud: cloud.name.clone() },
                JobSecrets::default(),
            ),
            Plan::Push { target_id, cloud, provider, credentials } => {
                (JobPlan::Push { target_id: target_id.clone(), cloud: cloud.name.clone() }, with(provider, credentials))
            }
            Plan::Snapshot { cloud, provider, credentials } => {
                (JobPlan::Snapshot { cloud: cloud.name.clone() }, with(provider, credentials))
            }
            Plan::Import { .. } | Plan::Delete { .. } => return None,
        })
    }

    /// The plugins a worker needs for the job.
    fn requires(&self) -> Vec<String> {
        match self {
            JobPlan::Base { os } => vec![os.clone()],
            JobPlan::Target { os, cloud, .. } => vec![os.clone(), cloud.clone()],
            JobPlan::Push { cloud, .. } | JobPlan::Snapshot { cloud } => vec![cloud.clone()],
        }
    }

    /// The image the job waits for.
    fn after(&self) -> Option<String> {
        match self {
            JobPlan::Target { base_id, .. } => Some(base_id.clone()),
            JobPlan::Push { target_id, .. } => Some(target_id.clone()),
            _ => None,
        }
    }

    /// The build plan, with the plugins of this worker.
    fn resolve(self, inner: &Inner, secrets: &JobSecrets) -> Result<Plan, String> {
        let plugin = |name: &str| {
            inner.plugins.loaded(name).ok_or_else(|| format!("this worker has no usable plugin named {name}"))
        };
        let provider = || secrets.provider.clone().unwrap_or_default();
        let credentials = || secrets.credentials.clone().unwrap_or_default();
        Ok(match self {
            JobPlan::Base { os } => Plan::Base { plugin: plugin(&os)? },
            JobPlan::Target { base_id, os, cloud } => {
                Plan::Target { base_id, os: plugin(&os)?, cloud: plugin(&cloud)? }
            }
            JobPlan::Push { target_id, cloud } => {
                Plan::Push { target_id, cloud: plugin(&cloud)?, provider: provider(), credentials: credentials() }
            }
            JobPlan::Snapshot { cloud } => {
                Plan::Snapshot { cloud: plugin(&cloud)?, provider: provider(), credentials: credentials() }
            }
        })
    }
}

impl Inner {
    /// Queues the build when the store has a queue and the plan runs on workers; false
    /// when the plan is to run here.
    pub(super) fn enqueue(&self, id: &str, parameters: &Map<String, Value>, plan: &Plan) -> bool {
        let Some(settings) = &self.queue else { return false };
        let Some((job_plan, mut secrets)) = JobPlan::of(plan) else { return false };
        secrets.template = self.plain_templates.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        secrets.callbacks = callbacks::callback_urls(parameters).unwrap_or_default();
        let requires = job_plan.requires();
        let encoded = serde_json::to_string(&job_plan)
            .and_then(|plan| Ok((plan, serde_json::to_string(&secrets)?)))
            .map_err(|e| e.to_string());
        let job = encoded.map(|(plan, secrets)| NewJob {
            image_id: id.to_string(),
            plan,
            secrets: Some(secrets),
            after_image: job_plan.after(),
            requires: requires.clone(),
            max_attempts: settings.max_attempts,
        });
        // PENDING first: a worker may take the job the moment it is in.
        let activity = format!("Queued: waiting for a worker with {}", requires.join(" and "));
        let _ = self.update(id, |r| {
            r.status = Status::Pending;
            r.status_detail.activity = activity.clone();
        });
        let queued = job.and_then(|job| settings.queue.enqueue(&job).map_err(|e| e.to_string()));
        match queued {
            Ok(()) => tracing::info!(image = %id, plugins = ?requires, "queued the build"),
            Err(e) => {
                tracing::error!(image = %id, error = %e, "cannot queue the build");
                let _ = self.update(id, |r| {
                    r.status = Status::Failed;
                    r.status_detail.error = Some(format!("Failure encountered while: Queueing the build: {e}"));
                });
            }
        }
        true
    }

    /// Stops the image's job wherever it runs: drops it if still queued, else flags it
    /// for its worker and waits (bounded) until the worker has let go of it.
    pub(super) fn cancel_queued(&self, id: &str) {
        let Some(settings) = &self.queue else { return };
        match settings.queue.cancel(id) {
            Ok(CancelOutcome::Signalled) => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(image = %id, error = %e, "cannot cancel the image's job");
                return;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30) + settings.lease;
        while Instant::now() < deadline {
            match settings.queue.state(id) {
                Ok(Some(state)) if state != "done" => std::thread::sleep(Duration::from_millis(100)),
                Ok(_) => return,
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        tracing::warn!(image = %id, "the job's worker did not stop within the bound after being cancelled");
    }

    /// Images recovery must leave alone: their jobs wait or run somewhere in the farm.
    pub(super) fn queued_images(&self) -> Result<HashSet<String>, EngineError> {
        match &self.queue {
            Some(settings) => Ok(settings.queue.active_images()?),
            None => Ok(HashSet::new()),
        }
    }
}

/// How often leases are renewed and lost jobs looked for.
fn upkeep_interval(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(200), Duration::from_secs(1))
}

/// Marks a job done, waiting out an unavailable database for up to `bound`; after
/// that its lease runs out and the image's end decides what the reaper does.
fn finish_job(queue: &crate::store::JobQueue, bound: Duration, id: &str, worker: &str) {
    if let Err(e) = crate::store::retry_while_unavailable(bound, "mark the job done", || queue.finish(id, worker)) {
        tracing::warn!(image = %id, error = %e, "cannot mark the job done; its lease will run out");
    }
}

impl Engine {
    /// True when builds go through the farm's job queue.
    pub fn has_job_queue(&self) -> bool {
        self.inner.queue.is_some()
    }

    /// Starts the thread that keeps the queue healthy: renews this worker's leases (and
    /// passes cancels on), requeues jobs whose workers were lost. Every daemon of the
    /// farm runs it, so jobs are requeued even when no other worker is left to notice.
    pub fn start_queue_upkeep(&self) -> Result<(), EngineError> {
        let Some(settings) = &self.inner.queue else { return Ok(()) };
        let interval = upkeep_interval(settings.lease);
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name("queue-upkeep".into())
            .spawn(move || loop {
                upkeep(&inner);
                std::thread::sleep(interval);
            })
            .map_err(|e| EngineError::Internal(format!("cannot start the queue upkeep thread: {e}")))?;
        Ok(())
    }

    /// Makes this process a worker named `name`: it takes jobs it has the plugins for,
    /// while it has free slots, until [`Engine::stop_working`]. Returns the plugin names.
    pub fn work_jobs(&self, name: &str) -> Result<Vec<String>, EngineError> {
        let Some(settings) = &self.inner.queue else {
            return Err(EngineError::BadRequest(
                "working jobs needs the job queue of \"image_manager\": \"postgres\"".into(),
            ));
        };
        let state = Arc::new(WorkerState {
            name: name.to_string(),
            plugins: self.inner.plugins.loaded_names(),
            running: Mutex::new(HashSet::new()),
            stop: AtomicBool::new(false),
        });
        *settings.worker.lock().unwrap_or_else(|p| p.into_inner()) = Some(state.clone());
        let inner = self.inner.clone();
        let plugins = state.plugins.clone();
        std::thread::Builder::new()
            .name("job-dispatch".into())
            .spawn(move || dispatch(&inner, &state))
            .map_err(|e| EngineError::Internal(format!("cannot start the job dispatch thread: {e}")))?;
        Ok(plugins)
    }

    /// Stops taking jobs and gives the running ones back to the queue at once, so other
    /// workers take them over without waiting for the lease to run out.
    pub fn stop_working(&self) {
        let Some(settings) = &self.inner.queue else { return };
        let Some(state) = settings.worker.lock().unwrap_or_else(|p| p.into_inner()).clone() else { return };
        state.stop.store(true, Ordering::SeqCst);
        if let Err(e) = settings.queue.release_all(&state.name) {
            tracing::warn!(error = %e, "cannot give the running jobs back to the queue");
        }
    }
}

/// The dispatch loop: take a job whenever a slot is free, wait for notices otherwise.
fn dispatch(inner: &Arc<Inner>, state: &Arc<WorkerState>) {
    let Some(settings) = &inner.queue else { return };
    let mut listener = settings.queue.listener();
    let slots = inner.config.max_concurrent_local_sessions.max(1);
    let mut last_error: Option<Instant> = None;
    while !state.stop.load(Ordering::SeqCst) {
        // The change count first: a job ending after it is read wakes the wait below.
        let seen = { *inner.changed.0.lock().unwrap_or_else(|p| p.into_inner()) };
        let busy = state.running.lock().unwrap_or_else(|p| p.into_inner()).len();
        if busy >= slots {
            inner.wait_change(seen, Duration::from_millis(500));
            continue;
        }
        match settings.queue.claim(&state.name, &state.plugins, settings.lease) {
            Ok(Some(claimed)) => run_claimed(inner, state, claimed),
            Ok(None) => {
                listener.wait(Duration::from_secs(2));
            }
            Err(e) => {
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    tracing::warn!(error = %e, "cannot take jobs from the queue; trying again");
                    last_error = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    tracing::info!(worker = %state.name, "stopped taking jobs");
}

/// Starts the build of a job this worker took.
fn run_claimed(inner: &Arc<Inner>, state: &Arc<WorkerState>, claimed: ClaimedJob) {
    let Some(settings) = &inner.queue else { return };
    let id = claimed.image_id.clone();
    let finish = |inner: &Inner| {
        if let Some(settings) = &inner.queue {
            finish_job(&settings.queue, settings.lease * 2, &id, &state.name);
        }
    };
    // A job taken again after its image reached its end (its last worker died between
    // the two writes) has nothing left to do.
    match inner.store.get(&id) {
        Ok(Some(rec)) if !rec.status.is_final() => {}
        Ok(_) => {
            finish(inner);
            return;
        }
        Err(e) => {
            tracing::warn!(image = %id, error = %e, "cannot read a job's image; giving the job back");
            if let Err(e) = settings.queue.release(&id, &state.name) {
                tracing::warn!(image = %id, error = %e, "cannot give the job back; its lease will run out");
            }
            return;
        }
    }
    let secrets: JobSecrets = claimed.secrets.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
    let plan = serde_json::from_str::<JobPlan>(&claimed.plan)
        .map_err(|e| format!("the queued job does not parse: {e}"))
        .and_then(|p| p.resolve(inner, &secrets));
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            tracing::error!(image = %id, error = %e, "cannot run a queued job");
            let _ = inner.update(&id, |r| {
                r.status = Status::Failed;
                r.status_detail.error = Some(format!("Failure encountered while: Starting the queued job: {e}"));
            });
            finish(inner);
            return;
        }
    };
    if let Some(template) = secrets.template {
        inner.plain_templates.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), template);
    }
    let job = Arc::new(Job {
        cancel: AtomicBool::new(false),
        lost: AtomicBool::new(false),
        callbacks: (!secrets.callbacks.is_empty())
            .then(|| callbacks::CallbackSender::start(id.clone(), secrets.callbacks.clone())),
    });
    inner.jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), job.clone());
    state.running.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone());
    let taken = format!("taken by worker {} (attempt {} of {})", state.name, claimed.attempt, claimed.max_attempts);
    build::log_line(inner, &id, "INFO", &taken);
    tracing::info!(image = %id, worker = %state.name, attempt = claimed.attempt, "took a job");
    let worker = state.name.clone();
    let _ = inner.update(&id, |r| {
        r.properties.insert("worker".into(), Value::String(worker.clone()));
    });
    let thread_inner = inner.clone();
    let thread_state = state.clone();
    let spawned = std::thread::Builder::new().name(format!("job-{}", &id[..8.min(id.len())])).spawn({
        let id = id.clone();
        move || {
            build::run(&thread_inner, &id, &job, plan);
            if !job.lost.load(Ordering::SeqCst) {
                if let Some(settings) = &thread_inner.queue {
                    finish_job(&settings.queue, settings.lease * 2, &id, &thread_state.name);
                }
            }
            thread_state.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            thread_inner.notify();
        }
    });
    if let Err(e) = spawned {
        tracing::error!(image = %id, error = %e, "cannot start a build thread; giving the job back");
        inner.finish_job(&id);
        state.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        if let Err(e) = settings.queue.release(&id, &state.name) {
            tracing::warn!(image = %id, error = %e, "cannot give the job back; its lease will run out");
        }
    }
}

/// One round of upkeep: renew, pass cancels on, notice lost jobs, reap.
fn upkeep(inner: &Arc<Inner>) {
    let Some(settings) = &inner.queue else { return };
    let worker = settings.worker.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(state) = worker.filter(|s| !s.stop.load(Ordering::SeqCst)) {
        renew(inner, settings, &state);
    }
    match settings.queue.reap() {
        Ok(lost) => {
            for job in lost {
                requeued(inner, &job);
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot look for lost jobs"),
    }
}

fn renew(inner: &Inner, settings: &QueueSettings, state: &WorkerState) {
    let held = match settings.queue.renew(&state.name, settings.lease) {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(error = %e, "cannot renew the leases of running jobs");
            return;
        }
    };
    let running: Vec<String> = state.running.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
    let jobs = inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
    for (id, cancel) in &held {
        if *cancel {
            if let Some(job) = jobs.get(id) {
                if !job.cancel.swap(true, Ordering::SeqCst) {
                    tracing::info!(image = %id, "the job was cancelled; stopping its build");
                }
            }
        }
    }
    // A job we run that the queue no longer gives us went to another worker (our lease
    // ran out while we could not renew it): stop, and leave the image to its new worker.
    for id in running.iter().filter(|id| !held.iter().any(|(h, _)| h == *id)) {
        if let Some(job) = jobs.get(id) {
            if !job.lost.swap(true, Ordering::SeqCst) {
                tracing::warn!(image = %id, "lost the job's lease to the queue; stopping its build here");
                job.cancel.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Tells the image of a lost job what happened: back in the queue, or failed.
fn requeued(inner: &Inner, lost: &LostJob) {
    let id = &lost.image_id;
    let line = if lost.requeued {
        format!(
            "Requeued: worker {} stopped renewing its lease (attempt {} of {})",
            lost.worker,
            lost.attempts + 1,
            lost.max_attempts
        )
    } else {
        format!("worker lost: worker {} stopped renewing its lease; tried {} times", lost.worker, lost.attempts)
    };
    tracing::warn!(image = %id, worker = %lost.worker, "{line}");
    build::log_line(inner, id, if lost.requeued { "WARNING" } else { "ERROR" }, &line);
    let lost_worker = Value::String(lost.worker.clone());
    let _ = inner.update(id, |r| {
        // Only while the lost worker is still the image's last word: a new worker may
        // have taken it already.
        if r.status.is_final() || r.properties.get("worker").is_some_and(|w| *w != lost_worker) {
            return;
        }
        if lost.requeued {
            r.status = Status::Pending;
            r.status_detail.activity = line.clone();
        } else {
            r.status = Status::Failed;
            r.status_detail.error = Some(line.clone());
        }
    });
}
