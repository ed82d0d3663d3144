//! The engine: the life of every image, from the request that creates it to its deletion.
//!
//! The engine is the only writer of image records. A request is checked synchronously
//! (template, plugin, parent image, required fields) so a bad one is refused before a
//! record exists; then the record is stored as NEW and a build thread of its own takes
//! over (never a thread of the async runtime). A build waits for its parent image and
//! for a free slot (PENDING), then runs each plugin operation in a worker process
//! (BUILDING) and ends COMPLETE or FAILED. Every change is persisted as it happens.

mod build;
pub mod cache;
mod callbacks;
mod dispatch;
pub mod events;
pub mod sbom;
mod shared_events;
mod slots;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::image::{ImageKind, ImageRecord, Status, StatusDetail};
use crate::plugins::{PluginRegistry, ResolvedPlugin};
use crate::store::{ImageStore, Query};
use crate::template;

pub use callbacks::{callback_urls, redact_url};

/// Why a request was refused. Each maps to one HTTP status and one line of text.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed or names something that cannot be built (400).
    #[error("{0}")]
    BadRequest(String),
    /// The image named does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// Something on this host failed (500).
    #[error("{0}")]
    Internal(String),
    /// The image store's server cannot be reached; the request may succeed later (503).
    #[error("{0}")]
    Unavailable(String),
}

impl crate::store::Transient for EngineError {
    fn is_transient(&self) -> bool {
        matches!(self, EngineError::Unavailable(_))
    }
}

impl From<crate::store::StoreError> for EngineError {
    fn from(e: crate::store::StoreError) -> EngineError {
        match e {
            crate::store::StoreError::Unavailable(_) => EngineError::Unavailable(e.to_string()),
            _ => EngineError::Internal(e.to_string()),
        }
    }
}

/// The settings the engine runs with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The executable started as a worker (`<exe> __worker`): the host's own binary.
    pub worker_exe: PathBuf,
    pub max_concurrent_local_sessions: usize,
    /// Where per-operation working directories are made.
    pub tmpdir: PathBuf,
    pub require_root_pw: bool,
    /// Settings passed to every plugin operation (see `ops::BaseImageRequest::settings`).
    pub settings: Map<String, Value>,
    /// Packages added per target (conf/target_content.xml), when configured.
    pub target_content: Option<imagefactory_plugin_api::tdl::TargetContentIncludes>,
    /// Events held for resuming streams, and how far a live subscriber may lag.
    pub event_history: usize,
    /// The build cache's bound in bytes of bodies (0: no cache).
    pub cache_max_bytes: u64,
    /// How long a worker's hold on a queued job lasts unless renewed (postgres store).
    pub job_lease: Duration,
    /// How many times a queued job is tried before its image fails as "worker lost".
    pub job_max_attempts: u32,
}

/// A request for a provider image (a push of a target image, or a snapshot build).
#[derive(Debug, Clone, Default)]
pub struct ProviderRequest {
    pub provider: String,
    pub credentials: String,
    pub target: String,
    pub target_image_id: Option<String>,
    pub template: Option<String>,
    pub parameters: Map<String, Value>,
}

/// A request to delete an image.
#[derive(Debug, Clone, Default)]
pub struct DeleteRequest {
    pub provider: Option<String>,
    pub credentials: Option<String>,
    pub target: Option<String>,
    pub parameters: Map<String, Value>,
    /// Delete the image's children (target images of a base, provider images of a
    /// target) first. The original never cascaded.
    pub cascade: bool,
}

/// What a running build shares with the engine.
struct Job {
    cancel: AtomicBool,
    /// A queued job whose lease went to another worker: its build stops without a word
    /// to the image, which is the new worker's now.
    lost: AtomicBool,
    callbacks: Option<callbacks::CallbackSender>,
}

pub(crate) struct Inner {
    store: Box<dyn ImageStore>,
    plugins: Arc<PluginRegistry>,
    config: EngineConfig,
    slots: slots::Slots,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    /// Templates as given, for the builds that need them, by image id: records store
    /// them with the root password redacted (see `template::redact_rootpw`). Kept until
    /// the build ends; a build interrupted by a restart never needs it again.
    plain_templates: Mutex<HashMap<String, String>>,
    /// Serializes read-modify-write of records.
    write_lock: Mutex<()>,
    /// Wakes waiters (parents, `wait_final`) when any record changes.
    changed: (Mutex<u64>, Condvar),
    /// Every visible change, numbered, for event-stream subscribers.
    events: events::EventHub,
    /// Finished builds by the hash of their inputs.
    cache: cache::Cache,
    /// The farm's job queue, when the store has one: builds run on workers.
    queue: Option<dispatch::QueueSettings>,
}

/// The engine; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// The error the original used for an unknown id; kept word for word.
fn not_found(id: &str) -> EngineError {
    EngineError::NotFound(format!("No image found with id: {id}"))
}

impl Engine {
    /// An engine over a store and the plugins found at start.
    pub fn new(store: Box<dyn ImageStore>, plugins: Arc<PluginRegistry>, config: EngineConfig) -> Engine {
        let slots = slots::Slots::new(config.max_concurrent_local_sessions);
        let events = events::EventHub::with_history(config.event_history);
        let cache = cache::Cache::new(store.dir(), config.cache_max_bytes);
        let queue = store.job_queue().map(|queue| dispatch::QueueSettings {
            queue,
            lease: config.job_lease,
            max_attempts: config.job_max_attempts,
            worker: Mutex::new(None),
        });
        Engine {
            inner: Arc::new(Inner {
                store,
                plugins,
                config,
                slots,
                jobs: Mutex::new(HashMap::new()),
                plain_templates: Mutex::new(HashMap::new()),
                write_lock: Mutex::new(()),
                changed: (Mutex::new(0), Condvar::new()),
                events,
                cache,
                queue,
            }),
        }
    }

    pub fn store(&self) -> &dyn ImageStore {
        &*self.inner.store
    }

    pub fn plugins(&self) -> &PluginRegistry {
        &self.inner.plugins
    }

    /// Marks builds a previous process left unfinished as FAILED, so none stays in
    /// flight forever. Images whose build lock another live process holds are left alone.
    pub fn recover(&self) -> Result<usize, EngineError> {
        let mut count = 0;
        // One query per in-flight status: only those records are parsed, not the store.
        let mut in_flight = Vec::new();
        for status in [Status::New, Status::Pending, Status::Building, Status::Deleting] {
            in_flight.extend(self.inner.store.query(&Query { status: Some(status), ..Query::default() })?);
        }
        // Jobs of the farm's queue wait or run somewhere: the queue looks after them.
        let queued = self.inner.queued_images()?;
        for rec in in_flight.into_iter().filter(|r| !queued.contains(&r.identifier)) {
            let Some(_lock) = self.inner.store.try_lock(&rec.identifier)? else { continue };
            let status = if rec.status == Status::Deleting { Status::DeleteFailed } else { Status::Failed };
            let res = self.inner.update(&rec.identifier, |r| {
                r.status = status;
                r.status_detail.error = Some("interrupted: the daemon stopped during this build".into());
            });
            if res.is_ok() {
                tracing::warn!(image = %rec.identifier, "marked an interrupted build as {}", status.as_str());
                count += 1;
            }
        }
        Ok(count)
    }

    /// Starts a base image build from a template.
    pub fn create_base_image(
        &self,
        template: &str,
        parameters: Map<String, Value>,
    ) -> Result<ImageRecord, EngineError> {
        check_parameters(&parameters)?;
        let plugin = self.os_plugin_for(template)?;
        let rec = self.inner.new_record(ImageKind::BaseImage, Some(template.to_string()), &parameters, |_| {})?;
        self.inner.start(&rec.identifier, &parameters, build::Plan::Base { plugin });
        Ok(rec)
    }

    /// Starts a target image build, from an existing base image or from a template (the
    /// base image is then built first).
    pub fn create_target_image(
        &self,
        target: &str,
        base_image_id: Option<&str>,
        template: Option<&str>,
        parameters: Map<String, Value>,
    ) -> Result<ImageRecord, EngineError> {
        check_parameters(&parameters)?;
        if target.trim().is_empty() {
            return Err(EngineError::BadRequest("Missing key/value pair: target".into()));
        }
        let cloud = self.inner.plugins.cloud_plugin(target).map_err(|e| EngineError::BadRequest(e.to_string()))?;
        let (base, template) = match (template, base_image_id) {
            (Some(t), _) => {
                // A template given: build a new base image first (as the original, an id
                // given alongside is ignored).
                let base = self.create_base_image(t, parameters.clone())?;
                (base, t.to_string())
            }
            (None, Some(id)) => {
                let base = self.get_kind(id, ImageKind::BaseImage)?;
                let t = base.template.clone().unwrap_or_default();
                (base, t)
            }
            (None, None) => {
                return Err(EngineError::BadRequest("a target image needs a base_image_id or a template".into()))
            }
        };
        let os = self.os_plugin_for(&template)?;
        let rec = self.inner.new_record(ImageKind::TargetImage, Some(template), &parameters, |r| {
            r.base_image_id = Some(base.identifier.clone());
            r.target = Some(target.to_string());
        })?;
        self.inner.start(&rec.identifier, &parameters, build::Plan::Target { base_id: base.identifier, os, cloud });
        Ok(rec)
    }

    /// Starts a provider image: a push of a target image (existing, or built from the
    /// template in cascade), or a snapshot build when `parameters.snapshot` is true.
    pub fn create_provider_image(&self, req: ProviderRequest) -> Result<ImageRecord, EngineError> {
        let missing: Vec<&str> =
            [("provider", &req.provider), ("credentials", &req.credentials), ("target", &req.target)]
                .into_iter()
                .filter(|(_, v)| v.trim().is_empty())
                .map(|(k, _)| k)
                .collect();
        if !missing.is_empty() {
            return Err(EngineError::BadRequest(format!("Missing key/value pair: {}", missing.join(", "))));
        }
        check_parameters(&req.parameters)?;
        let cloud = self.inner.plugins.cloud_plugin(&req.target).map_err(|e| EngineError::BadRequest(e.to_string()))?;
        let snapshot = imagefactory_plugin_api::ops::parameter_as_bool(&req.parameters, "snapshot") == Some(true);
        let provider_name = provider_display_name(&req.provider);
        if snapshot {
            let Some(template) = req.template.as_deref() else {
                return Err(EngineError::BadRequest("a snapshot build needs a template".into()));
            };
            template::check(template, self.inner.config.require_root_pw).map_err(EngineError::BadRequest)?;
            let rec =
                self.inner.new_record(ImageKind::ProviderImage, Some(template.to_string()), &req.parameters, |r| {
                    r.target = Some(req.target.clone());
                    r.provider = Some(provider_name.clone());
                })?;
            let plan = build::Plan::Snapshot { cloud, provider: req.provider, credentials: req.credentials };
            self.inner.start(&rec.identifier, &req.parameters, plan);
            return Ok(rec);
        }
        let target_image = match (req.template.as_deref(), req.target_image_id.as_deref()) {
            (Some(t), _) => self.create_target_image(&req.target, None, Some(t), req.parameters.clone())?,
            (None, Some(id)) => self
                .get_kind(id, ImageKind::TargetImage)
                .map_err(|_| EngineError::NotFound(format!("Unable to retrieve target image with id: {id}")))?,
            (None, None) => {
                return Err(EngineError::BadRequest("a provider image needs a target_image_id or a template".into()))
            }
        };
        let rec =
            self.inner.new_record(ImageKind::ProviderImage, target_image.template.clone(), &req.parameters, |r| {
                r.target_image_id = Some(target_image.identifier.clone());
                r.target = Some(req.target.clone());
                r.provider = Some(provider_name.clone());
            })?;
        let plan = build::Plan::Push {
            target_id: target_image.identifier,
            cloud,
            provider: req.provider,
            credentials: req.credentials,
        };
        self.inner.start(&rec.identifier, &req.parameters, plan);
        Ok(rec)
    }

    /// Imports an existing disk file as a COMPLETE base image. `parameters` may name the
    /// OS (`os_name`, `os_version`, `os_arch`) for the synthesized template.
    pub fn import_base_image(&self, file: &Path, parameters: Map<String, Value>) -> Result<ImageRecord, EngineError> {
        check_parameters(&parameters)?;
        if !file.is_file() {
            return Err(EngineError::BadRequest(format!("{} is not a readable file", file.display())));
        }
        let param = |k: &str, d: &str| parameters.get(k).and_then(|v| v.as_str()).unwrap_or(d).to_string();
        let (os, version, arch) = (param("os_name", "Unknown"), param("os_version", "0"), param("os_arch", "x86_64"));
        let template = format!(
            "<template><name>{os}-{version}-import</name><os><name>{os}</name><version>{version}</version>\
             <arch>{arch}</arch><install type='url'><url>http://imported.invalid/do/not/use</url></install></os>\
             <description>Imported from {}</description></template>",
            file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
        );
        let rec = self.inner.new_record(ImageKind::BaseImage, Some(template), &parameters, |_| {})?;
        self.inner.start(&rec.identifier, &parameters, build::Plan::Import { file: file.to_path_buf() });
        Ok(rec)
    }

    /// Subscribes to the engine's events, with the held ones after `after` (the last
    /// event number a client saw) first.
    pub fn subscribe(&self, after: Option<u64>) -> events::Subscription {
        self.inner.events.subscribe(after)
    }

    /// Deletes an image. In-flight builds are cancelled first. Provider images that
    /// reached a provider are removed there too (which needs provider, credentials and
    /// target). Returns at once; the image shows DELETING until it is gone.
    pub fn delete(&self, id: &str, req: DeleteRequest) -> Result<(), EngineError> {
        let rec = self.inner.store.get(id)?.ok_or_else(|| not_found(id))?;
        if rec.status == Status::Deleting {
            return Ok(());
        }
        let provider_call = rec.kind == ImageKind::ProviderImage && rec.identifier_on_provider.is_some();
        let provider_plan = if provider_call {
            let missing: Vec<&str> =
                [("provider", &req.provider), ("credentials", &req.credentials), ("target", &req.target)]
                    .into_iter()
                    .filter(|(_, v)| v.as_deref().is_none_or(|s| s.trim().is_empty()))
                    .map(|(k, _)| k)
                    .collect();
            if !missing.is_empty() {
                return Err(EngineError::BadRequest(format!("Missing required values: {}", missing.join(", "))));
            }
            let target = req.target.clone().unwrap_or_default();
            let cloud = self.inner.plugins.cloud_plugin(&target).map_err(|e| EngineError::BadRequest(e.to_string()))?;
            Some((cloud, req.provider.clone().unwrap_or_default(), req.credentials.clone().unwrap_or_default(), target))
        } else {
            None
        };
        let children = self.children(&rec)?;
        if !children.is_empty() && req.cascade {
            let pushed: Vec<&str> = children
                .iter()
                .filter(|c| c.kind == ImageKind::ProviderImage && c.identifier_on_provider.is_some())
                .map(|c| c.identifier.as_str())
                .collect();
            if !pushed.is_empty() && provider_plan.is_none() {
                return Err(EngineError::BadRequest(format!(
                    "cannot cascade: provider images {} exist on a provider; delete them first with their credentials",
                    pushed.join(", ")
                )));
            }
        }
        self.inner.cancel_and_wait(id);
        if req.cascade {
            for child in self.children(&rec)? {
                self.delete(&child.identifier, DeleteRequest { cascade: true, ..req.clone() })?;
            }
        }
        self.inner.update(id, |r| {
            r.status = Status::Deleting;
            r.status_detail = StatusDetail { activity: "Deleting image".into(), error: None };
        })?;
        let plan = build::Plan::Delete { provider: provider_plan, parameters: req.parameters };
        self.inner.start(id, &Map::new(), plan);
        Ok(())
    }

    fn children(&self, rec: &ImageRecord) -> Result<Vec<Arc<ImageRecord>>, EngineError> {
        let q = match rec.kind {
            ImageKind::BaseImage => {
                Query { base_image_id: Some(rec.identifier.clone()), ..Query::kind(ImageKind::TargetImage) }
            }
            ImageKind::TargetImage => {
                Query { target_image_id: Some(rec.identifier.clone()), ..Query::kind(ImageKind::ProviderImage) }
            }
            ImageKind::ProviderImage => return Ok(Vec::new()),
        };
        Ok(self.inner.store.query(&q)?)
    }

    /// The image with this id.
    pub fn get(&self, id: &str) -> Result<ImageRecord, EngineError> {
        self.inner.store.get(id)?.ok_or_else(|| not_found(id))
    }

    /// The image with this id, which must be of this kind.
    pub fn get_kind(&self, id: &str, kind: ImageKind) -> Result<ImageRecord, EngineError> {
        match self.inner.store.get(id)? {
            Some(r) if r.kind == kind => Ok(r),
            _ => Err(EngineError::NotFound(format!("No {} found with id: {id}", kind.class()))),
        }
    }

    pub fn query(&self, query: &Query) -> Result<Vec<Arc<ImageRecord>>, EngineError> {
        Ok(self.inner.store.query(query)?)
    }

    /// The ids of the images matching the query, oldest first (a listing).
    pub fn query_ids(&self, query: &Query) -> Result<Vec<String>, EngineError> {
        Ok(self.inner.store.query_ids(query)?)
    }

    /// The store's generation: changes exactly when an image is added, changed or removed.
    pub fn generation(&self) -> Result<u64, EngineError> {
        Ok(self.inner.store.generation()?)
    }

    /// The image's build log.
    pub fn build_log(&self, id: &str) -> Result<String, EngineError> {
        self.get(id)?;
        Ok(self.inner.store.build_log(id)?)
    }

    /// Blocks until the image reaches a final state (or disappears, after a delete),
    /// calling `progress` on every change it sees. `None` when it is gone.
    pub fn wait_final(&self, id: &str, progress: &mut dyn FnMut(&ImageRecord)) -> Option<ImageRecord> {
        let mut last: Option<(Status, u8, String)> = None;
        loop {
            let seen = { *self.inner.changed.0.lock().unwrap_or_else(|p| p.into_inner()) };
            // A store that cannot answer for now is waited out, like a slow build.
            let rec = match self.inner.store.get(id) {
                Ok(Some(rec)) => rec,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(image = %id, error = %e, "cannot read the image while waiting for it");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            };
            let now = (rec.status, rec.percent_complete, rec.status_detail.activity.clone());
            if last.as_ref() != Some(&now) {
                progress(&rec);
                last = Some(now);
            }
            // DELETED is announced before the files go: wait until they are gone.
            if rec.status.is_final() && rec.status != Status::Deleted {
                return Some(rec);
            }
            self.inner.wait_change(seen, Duration::from_millis(500));
        }
    }

    fn os_plugin_for(&self, template: &str) -> Result<ResolvedPlugin, EngineError> {
        let info = template::check(template, self.inner.config.require_root_pw).map_err(EngineError::BadRequest)?;
        self.inner
            .plugins
            .os_plugin(&info.os_name, &info.os_version, &info.os_arch)
            .map_err(|e| EngineError::BadRequest(e.to_string()))
    }
}

/// The provider as stored on the record: a name, or the `name` of a JSON definition;
/// never a whole definition (which may hold endpoints users consider private).
fn provider_display_name(provider: &str) -> String {
    let p = provider.trim();
    if p.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<Value>(p) {
            for key in ["name", "provider", "region"] {
                if let Some(s) = v.get(key).and_then(|s| s.as_str()) {
                    return s.to_string();
                }
            }
        }
        return "custom".to_string();
    }
    if p.starts_with('<') {
        return "custom".to_string();
    }
    p.trim_start_matches('@').to_string()
}

/// Checks the parameters every kind of request shares, before anything is stored:
/// `callbacks` must be http(s) URLs (see [`callback_urls`]).
fn check_parameters(parameters: &Map<String, Value>) -> Result<(), EngineError> {
    callback_urls(parameters).map(|_| ()).map_err(EngineError::BadRequest)
}

/// Parameters as stored: callback URLs lose their passwords.
fn stored_parameters(parameters: &Map<String, Value>) -> Map<String, Value> {
    let mut out = parameters.clone();
    match out.get_mut("callbacks") {
        Some(Value::Array(urls)) => {
            for u in urls.iter_mut() {
                if let Value::String(s) = u {
                    *s = redact_url(s);
                }
            }
        }
        Some(Value::String(s)) => *s = redact_url(s),
        _ => {}
    }
    out
}

impl Inner {
    fn new_record(
        &self,
        kind: ImageKind,
        template: Option<String>,
        parameters: &Map<String, Value>,
        fill: impl FnOnce(&mut ImageRecord),
    ) -> Result<ImageRecord, EngineError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut rec = ImageRecord::new(kind, id.clone(), self.store.bodies().data_of(&id));
        if let Some(plain) = &template {
            let stored = crate::template::redact_rootpw(plain);
            if &stored != plain {
                self.plain_templates.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), plain.clone());
            }
            rec.template = Some(stored);
        }
        rec.parameters = stored_parameters(parameters);
        fill(&mut rec);
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.store.add(&rec)?;
        self.publish(events::EventKind::Created, &rec, &[]);
        Ok(rec)
    }

    /// An image's ancestors: a target's base; a provider image's target and its base.
    fn parents_of(&self, rec: &ImageRecord) -> Vec<String> {
        let mut parents: Vec<String> = rec.target_image_id.iter().chain(rec.base_image_id.iter()).cloned().collect();
        if rec.base_image_id.is_none() {
            if let Some(base) = rec
                .target_image_id
                .as_deref()
                .and_then(|t| self.store.get(t).ok().flatten())
                .and_then(|t| t.base_image_id)
            {
                parents.push(base);
            }
        }
        parents
    }

    /// Publishes a change this process made, unless the store streams every daemon's
    /// changes (then the store's notices publish it, once, in the order the database
    /// saw it; see [`shared_events`]).
    fn publish(&self, kind: events::EventKind, rec: &ImageRecord, changed: &[&str]) {
        if !self.events_from_store() {
            self.events.publish(kind, rec, self.parents_of(rec), changed);
        }
    }

    /// Whether events come from the store's notices rather than this process's writes.
    fn events_from_store(&self) -> bool {
        self.queue.is_some()
    }

    /// Publishes the removal of an image whose last state was `last`.
    fn publish_deleted(&self, last: &ImageRecord) {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.publish(events::EventKind::Deleted, last, &[]);
    }

    /// Registers the job and starts its build thread.
    fn start(self: &Arc<Self>, id: &str, parameters: &Map<String, Value>, plan: build::Plan) {
        if self.enqueue(id, parameters, &plan) {
            return;
        }
        // Checked at submission; a delete's (empty) parameters have none.
        let urls = callback_urls(parameters).unwrap_or_default();
        let job = Arc::new(Job {
            cancel: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            callbacks: (!urls.is_empty()).then(|| callbacks::CallbackSender::start(id.to_string(), urls)),
        });
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), job.clone());
        let inner = self.clone();
        let id = id.to_string();
        let spawned = std::thread::Builder::new().name(format!("build-{}", &id[..8.min(id.len())])).spawn({
            let id = id.clone();
            move || build::run(&inner, &id, &job, plan)
        });
        if let Err(e) = spawned {
            let _ = self.update(&id, |r| {
                r.status = Status::Failed;
                r.status_detail.error = Some(format!("cannot start the build thread: {e}"));
            });
        }
    }

    /// The template image `id` was built from, as given (root password and all), while
    /// its build runs; else as stored.
    pub(crate) fn template_of(&self, rec: &ImageRecord) -> Option<String> {
        let plain = self.plain_templates.lock().unwrap_or_else(|p| p.into_inner()).get(&rec.identifier).cloned();
        plain.or_else(|| rec.template.clone())
    }

    /// Asks a running build to stop and waits (bounded) for it to end.
    fn cancel_and_wait(&self, id: &str) {
        let job = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned();
        let Some(job) = job else {
            // Not built here: perhaps by a worker of the farm.
            self.cancel_queued(id);
            return;
        };
        job.cancel.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !self.jobs.lock().unwrap_or_else(|p| p.into_inner()).contains_key(id) {
                return;
            }
            let seen = { *self.changed.0.lock().unwrap_or_else(|p| p.into_inner()) };
            self.wait_change(seen, Duration::from_millis(100));
        }
        tracing::warn!(image = %id, "build did not stop within 30 s of being cancelled");
    }

    fn finish_job(&self, id: &str) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.plain_templates.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.notify();
    }

    /// Applies `f` to the stored record and persists it; sends callbacks on a status change.
    fn update(&self, id: &str, f: impl FnOnce(&mut ImageRecord)) -> Result<ImageRecord, EngineError> {
        let (before, after) = {
            let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut rec = self.store.get(id)?.ok_or_else(|| not_found(id))?;
            let old = rec.clone();
            f(&mut rec);
            self.store.save(&rec)?;
            let changed = events::changed_fields(&old, &rec);
            if !changed.is_empty() {
                self.publish(events::EventKind::Changed, &rec, &changed);
            }
            (old.status, rec)
        };
        if before != after.status {
            tracing::info!(image = %id, from = before.as_str(), to = after.status.as_str(), "status changed");
            self.callback(&after);
        }
        self.notify();
        Ok(after)
    }

    fn callback(&self, rec: &ImageRecord) {
        let job = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(&rec.identifier).cloned();
        if let Some(sender) = job.as_ref().and_then(|j| j.callbacks.as_ref()) {
            let mut body = Map::new();
            body.insert(rec.kind.singular().to_string(), Value::Object(crate::image::public_fields(rec)));
            sender.send(Value::Object(body));
        }
    }

    fn notify(&self) {
        let (lock, cvar) = &self.changed;
        let mut n = lock.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.wrapping_add(1);
        cvar.notify_all();
    }

    /// Waits until a change after `seen` or the timeout.
    fn wait_change(&self, seen: u64, timeout: Duration) {
        let (lock, cvar) = &self.changed;
        let n = lock.lock().unwrap_or_else(|p| p.into_inner());
        let _ = cvar.wait_timeout_while(n, timeout, |n| *n == seen);
    }
}
