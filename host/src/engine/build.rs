//! One build, start to end, on a thread of its own: the steps of each kind of image.
//!
//! A build is a short list of steps; each step names its activity before it runs, so a
//! failure reads "Failure encountered while: <activity>: <cause>". Plugin work runs in
//! worker processes; the working directory of each operation is removed on every path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use imagefactory_plugin_api::ops::*;
use serde_json::{Map, Value};

use super::{Inner, Job};
use crate::image::{ImageRecord, Status, StatusDetail};
use crate::plugins::ResolvedPlugin;
use crate::worker::{self, Event, WorkerError};

/// What a build thread is to do.
pub(super) enum Plan {
    Base {
        plugin: ResolvedPlugin,
    },
    Target {
        base_id: String,
        os: ResolvedPlugin,
        cloud: ResolvedPlugin,
    },
    Push {
        target_id: String,
        cloud: ResolvedPlugin,
        provider: String,
        credentials: String,
    },
    Snapshot {
        cloud: ResolvedPlugin,
        provider: String,
        credentials: String,
    },
    Import {
        file: PathBuf,
    },
    /// `provider`: the cloud plugin, provider, credentials and target for delete_from_provider.
    Delete {
        provider: Option<(ResolvedPlugin, String, String, String)>,
        parameters: Map<String, Value>,
    },
}

/// Why a build stopped.
enum Failure {
    /// A step failed: the one-line cause, and the chain of causes for the log.
    Error {
        cause: String,
        chain: Vec<String>,
    },
    Cancelled,
}

impl Failure {
    fn msg(cause: impl Into<String>) -> Failure {
        Failure::Error { cause: cause.into(), chain: Vec::new() }
    }
}

type Step<T> = Result<T, Failure>;

/// The context of one build: the engine, the image id and its job.
struct Build<'a> {
    inner: &'a Arc<Inner>,
    id: &'a str,
    job: &'a Job,
    /// Secrets of this build, scrubbed from every log line.
    secrets: Vec<String>,
    /// When percent_complete was last persisted, and the value a throttled report left
    /// unpersisted (see [`Build::percent`]).
    last_percent: std::cell::Cell<(Option<std::time::Instant>, u8)>,
}

/// How often a stream of progress reports may be written to the store. Every persist
/// is two fsyncs under the engine's write lock: a plugin reporting per MiB would
/// otherwise spend its time waiting on the disk (one second a report was seen on a
/// loaded host).
const PERCENT_PERSIST_INTERVAL: Duration = Duration::from_millis(500);

/// How long the end of a build waits for an unavailable store.
const DURABLE_WRITE_BOUND: Duration = Duration::from_secs(600);

pub(super) fn run(inner: &Arc<Inner>, id: &str, job: &Job, plan: Plan) {
    let span = tracing::info_span!("build", image = %id);
    let _enter = span.enter();
    let lock = match inner.store.try_lock(id) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            tracing::error!("another process holds this image's build lock");
            inner.finish_job(id);
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot take this image's build lock");
            let _ = inner.update(id, |r| {
                r.status = if r.status == Status::Deleting { Status::DeleteFailed } else { Status::Failed };
                r.status_detail.error = Some(format!("Failure encountered while: Taking the build lock: {e}"));
            });
            inner.finish_job(id);
            return;
        }
    };
    let mut secrets = match &plan {
        Plan::Push { credentials, .. } | Plan::Snapshot { credentials, .. } => vec![credentials.clone()],
        Plan::Delete { provider: Some((_, _, credentials, _)), .. } => vec![credentials.clone()],
        _ => Vec::new(),
    };
    let template = inner.store.get(id).ok().flatten().and_then(|r| inner.template_of(&r));
    secrets.extend(template.as_deref().and_then(crate::template::root_password));
    let build = Build { inner, id, job, secrets, last_percent: std::cell::Cell::new((None, 0)) };
    let is_delete = matches!(plan, Plan::Delete { .. });
    if !is_delete {
        // The record may come from a daemon on another machine: this one needs a body file.
        if let Err(e) = inner.store.bodies().prepare(id) {
            tracing::warn!(error = %e, "cannot create the local body file");
        }
    }
    let outcome = match plan {
        Plan::Base { plugin } => build.base_cached(&plugin),
        Plan::Target { base_id, os, cloud } => build.target_cached(&base_id, &os, &cloud),
        Plan::Push { target_id, cloud, provider, credentials } => build.push(&target_id, &cloud, provider, credentials),
        Plan::Snapshot { cloud, provider, credentials } => build.snapshot(&cloud, provider, credentials),
        Plan::Import { file } => build.import(&file),
        Plan::Delete { provider, parameters } => build.delete(provider, parameters),
    };
    if is_delete {
        build.end_delete(outcome);
    } else if job.lost.load(Ordering::SeqCst) {
        tracing::warn!("stopped a build whose job went to another worker");
    } else {
        build.end(outcome);
    }
    // Let go of the lock (which removes its file) before the job is announced finished:
    // a delete waiting for this build to stop takes the lock next.
    drop(lock);
    inner.finish_job(id);
}

impl Build<'_> {
    /// The record, when the store has it and can say so.
    fn record(&self) -> Option<ImageRecord> {
        self.inner.store.get(self.id).ok().flatten()
    }

    /// The record, which a running build expects to exist.
    fn current(&self) -> Step<ImageRecord> {
        match self.inner.store.get(self.id) {
            Ok(Some(rec)) => Ok(rec),
            Ok(None) => Err(Failure::msg("the image record disappeared")),
            Err(e) => Err(Failure::msg(format!("cannot read the image record: {e}"))),
        }
    }

    fn update(&self, f: impl FnOnce(&mut ImageRecord)) {
        if let Err(e) = self.inner.update(self.id, f) {
            tracing::error!(error = %e, "cannot persist the image's state");
        }
    }

    /// Writes the end of a build, waiting out an unavailable store (a database restart)
    /// for up to [`DURABLE_WRITE_BOUND`]: an outage must not leave a finished build
    /// showing BUILDING forever.
    fn update_durably(&self, f: impl Fn(&mut ImageRecord)) {
        let written = crate::store::retry_while_unavailable(DURABLE_WRITE_BOUND, "write the end of the build", || {
            self.inner.update(self.id, &f)
        });
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot persist the end of the build");
        }
    }

    /// Names the sub-task now under way (persisted, so GET shows it).
    fn activity(&self, activity: &str) {
        self.log("INFO", activity);
        let pct = self.pending_percent();
        self.update(|r| {
            r.status_detail.activity = activity.to_string();
            r.percent_complete = r.percent_complete.max(pct);
        });
    }

    fn set_status(&self, status: Status, activity: &str) {
        self.log("INFO", activity);
        self.update(|r| {
            r.status = status;
            r.status_detail = StatusDetail { activity: activity.to_string(), error: None };
        });
    }

    /// Moves percent_complete forward (never back). Reports are written at most every
    /// [`PERCENT_PERSIST_INTERVAL`]; one that arrives sooner is kept and written with the
    /// next status or activity change, or the next report after the interval. 100 is
    /// always written at once.
    fn percent(&self, pct: u8) {
        let pct = pct.min(100);
        let (last, pending) = self.last_percent.get();
        if pct <= pending {
            return;
        }
        let due = last.is_none_or(|t| t.elapsed() >= PERCENT_PERSIST_INTERVAL);
        if due || pct == 100 {
            self.last_percent.set((Some(std::time::Instant::now()), pct));
            self.update(|r| r.percent_complete = r.percent_complete.max(pct));
        } else {
            self.last_percent.set((last, pct));
        }
    }

    /// The percent a throttled report left unwritten, for the next write to carry.
    fn pending_percent(&self) -> u8 {
        self.last_percent.get().1
    }

    fn log(&self, level: &str, line: &str) {
        let mut line = line.to_string();
        for s in self.secrets.iter().filter(|s| !s.is_empty()) {
            line = line.replace(s.as_str(), "REDACTED");
        }
        log_line(self.inner, self.id, level, &line);
    }

    fn cancelled(&self) -> bool {
        self.job.cancel.load(Ordering::SeqCst)
    }

    fn check_cancelled(&self) -> Step<()> {
        if self.cancelled() {
            Err(Failure::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Writes the image's SBOM (see [`super::sbom`]): the plugin's document, else the
    /// base's packages (a target), else the ICICLE's; finished with the body's SHA-256
    /// and, for a target, the reference to its base's document. `known_sha256` spares
    /// hashing the body again (a cache hit); returns the body's SHA-256.
    fn write_sbom(&self, base_id: Option<&str>, known_sha256: Option<&str>) -> Step<String> {
        use super::sbom;
        let rec = self.current()?;
        self.activity("Writing the SBOM (the image's SHA-256 and its packages)");
        let read = |path: &std::path::Path| -> Option<Value> {
            std::fs::read(path).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        };
        let files = self.inner.store.files_dir(self.id);
        let own = files.join(sbom::FILE_NAME);
        let base_file = base_id.map(|b| self.inner.store.files_dir(b).join(sbom::FILE_NAME));
        let base_doc = base_file.as_deref().and_then(read);
        let template = self.inner.template_of(&rec).unwrap_or_default();
        let parsed = imagefactory_plugin_api::tdl::Template::parse(&template, &Default::default()).ok();
        let image_name = parsed.as_ref().map(|t| t.name.clone()).unwrap_or_else(|| "image".to_string());
        let doc = match (read(&own), &base_doc) {
            (Some(d), _) => d,
            (None, Some(b)) => {
                let mut d = sbom::with_packages(sbom::packages_of(b));
                // A base's licenses that SPDX has no id for come along with its packages.
                if let Some(x) = b.get("hasExtractedLicensingInfos") {
                    d["hasExtractedLicensingInfos"] = x.clone();
                }
                d
            }
            (None, None) => {
                let os = parsed.as_ref().map(|t| t.os.name.clone()).unwrap_or_default();
                sbom::with_packages(sbom::packages_from_icicle(rec.icicle.as_deref().unwrap_or(""), &os))
            }
        };
        let sha256 = match known_sha256 {
            Some(s) => s.to_string(),
            None => sbom::sha256_file(&self.inner.store.body_path(self.id))
                .map_err(|e| Failure::msg(format!("cannot read the image body to hash it: {e}")))?,
        };
        let base_ref = match (base_id, base_file.as_deref(), &base_doc) {
            (Some(id), Some(path), Some(_)) => Some(sbom::BaseRef {
                image_id: id,
                document_sha1: sbom::BaseRef::sha1_of(path)
                    .map_err(|e| Failure::msg(format!("cannot read the base image's SBOM: {e}")))?,
            }),
            _ => None,
        };
        let doc = sbom::finish(doc, &rec, &image_name, &sha256, base_ref.as_ref());
        let text = serde_json::to_vec_pretty(&doc).map_err(|e| Failure::msg(format!("cannot write the SBOM: {e}")))?;
        self.inner
            .store
            .write_file(self.id, sbom::FILE_NAME, &text)
            .map_err(|e| Failure::msg(format!("cannot keep the SBOM: {e}")))?;
        self.log("INFO", &format!("SBOM: {} packages, image sha256 {sha256}", sbom::package_names(&doc).len()));
        Ok(sha256)
    }

    /// A base image from the cache when an equal build is there, else built, its SBOM
    /// written and kept in the cache.
    fn base_cached(&self, plugin: &ResolvedPlugin) -> Step<()> {
        let rec = self.current()?;
        let key = self.base_key(plugin, &rec)?;
        if let Some(k) = &key {
            if self.reuse_cached(k, &rec, None)? {
                return Ok(());
            }
        }
        self.base(plugin)?;
        let sha256 = self.write_sbom(None, None)?;
        if let Some(k) = key {
            self.keep_in_cache(&k, &sha256);
        }
        Ok(())
    }

    /// A target image from the cache when an equal build is there, else made, its SBOM
    /// written and kept in the cache.
    fn target_cached(&self, base_id: &str, os: &ResolvedPlugin, cloud: &ResolvedPlugin) -> Step<()> {
        let base = self.wait_for_parent(base_id, "BaseImage", "TargetImage")?;
        self.fetch(base_id, "base image")?;
        let rec = self.current()?;
        let key = self.target_key(&base, os, cloud, &rec);
        if let Some(k) = &key {
            if self.reuse_cached(k, &rec, Some(base_id))? {
                return Ok(());
            }
        }
        self.target(base_id, os, cloud)?;
        let sha256 = self.write_sbom(Some(base_id), None)?;
        if let Some(k) = key {
            self.keep_in_cache(&k, &sha256);
        }
        Ok(())
    }

    /// A plugin's manifest version.
    fn plugin_version(&self, plugin: &ResolvedPlugin) -> Option<String> {
        self.inner.plugins.entry(&plugin.name)?.manifest.as_ref().map(|m| m.version.clone())
    }

    /// The cache key of this base image, or None when it cannot be cached (the cache is
    /// off, or the plugin cannot tell the state of its package sources). Never fails the
    /// build: why there is no key is logged.
    fn base_key(&self, plugin: &ResolvedPlugin, rec: &ImageRecord) -> Step<Option<String>> {
        use super::cache;
        if !self.inner.cache.enabled() {
            return Ok(None);
        }
        let Some(version) = self.plugin_version(plugin) else { return Ok(None) };
        self.activity("Reading the state of the package sources (build cache)");
        let template = self.inner.template_of(rec).unwrap_or_default();
        let req = SourceStateRequest {
            template: template.clone(),
            parameters: rec.parameters.clone(),
            settings: self.inner.config.settings.clone(),
        };
        let state = match self.call(plugin, Operation::SourceState(req), &self.inner.store.body_path(self.id), 0, 0) {
            Ok(v) => serde_json::from_value::<Option<SourceState>>(v).map_err(|e| e.to_string()),
            Err(Failure::Cancelled) => return Err(Failure::Cancelled),
            Err(Failure::Error { cause, .. }) => Err(cause),
        };
        let state = match state {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.log("INFO", "build cache: the plugin does not report its package sources; not cached");
                return Ok(None);
            }
            Err(e) => {
                self.log("WARN", &format!("build cache: cannot read the package sources' state ({e}); not cached"));
                return Ok(None);
            }
        };
        match cache::base_key(&template, (&plugin.name, &version), &rec.parameters, &state) {
            Ok(k) => Ok(Some(k)),
            Err(e) => {
                self.log("WARN", &format!("build cache: {e}; not cached"));
                Ok(None)
            }
        }
    }

    /// The cache key of this target image: from its base's key (a base that was not
    /// cached makes targets that are not either).
    fn target_key(
        &self,
        base: &ImageRecord,
        os: &ResolvedPlugin,
        cloud: &ResolvedPlugin,
        rec: &ImageRecord,
    ) -> Option<String> {
        if !self.inner.cache.enabled() {
            return None;
        }
        let base_key = base.properties.get("cache_key")?.as_str()?;
        let target = rec.target.clone()?;
        let template = self.inner.template_of(rec).unwrap_or_default();
        let host_content = self.target_content(&target, &template);
        let (osv, cv) = (self.plugin_version(os)?, self.plugin_version(cloud)?);
        super::cache::target_key(
            base_key,
            &target,
            &template,
            (&os.name, &osv),
            (&cloud.name, &cv),
            &rec.parameters,
            &host_content,
        )
        .map_err(|e| self.log("WARN", &format!("build cache: {e}; not cached")))
        .ok()
    }

    /// Gives this image the cache entry's bytes when there is one (and the parameters
    /// do not say `no_cache`): COMPLETE at once, `properties.cached_from` naming the
    /// image that was built. False when it must be built.
    fn reuse_cached(&self, key: &str, rec: &ImageRecord, base_id: Option<&str>) -> Step<bool> {
        if super::cache::no_cache(&rec.parameters) {
            self.log("INFO", "build cache: no_cache is set; building");
            return Ok(false);
        }
        let Some(info) = self.inner.cache.lookup(key) else {
            self.log("INFO", &format!("build cache: no entry for key {key}; building"));
            return Ok(false);
        };
        self.set_status(Status::Building, &format!("Reusing the build of image {} (build cache)", info.source_image));
        let files = self.inner.store.files_dir(self.id);
        let shared = match self.inner.cache.restore(&info, &self.inner.store.body_path(self.id), &files) {
            Ok(s) => s,
            Err(e) => {
                self.log("WARN", &format!("build cache: cannot reuse entry {key} ({e}); building"));
                return Ok(false);
            }
        };
        self.update(|r| {
            if info.icicle.is_some() {
                r.icicle = info.icicle.clone();
            }
            r.properties.extend(info.properties.clone());
            r.properties.insert("cache_key".into(), key.into());
            r.properties.insert("cached_from".into(), info.source_image.clone().into());
        });
        self.write_sbom(base_id, Some(&info.body_sha256))?;
        self.log(
            "INFO",
            &format!("build cache: hit for key {key}; body shared ({shared:?}) with {}", info.source_image),
        );
        Ok(true)
    }

    /// Keeps this finished image as the cache entry for `key` (a failure to is logged;
    /// the image is complete either way).
    fn keep_in_cache(&self, key: &str, sha256: &str) {
        self.update(|r| {
            r.properties.insert("cache_key".into(), key.into());
        });
        let Ok(rec) = self.current() else { return };
        let mut properties = rec.properties.clone();
        properties.remove("cached_from");
        let body = &self.inner.store.body_path(self.id);
        let info = super::cache::EntryInfo {
            key: key.to_string(),
            source_image: self.id.to_string(),
            icicle: rec.icicle.clone(),
            properties,
            body_sha256: sha256.to_string(),
            allocated_bytes: super::cache::allocated_bytes(body),
            last_used: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        match self.inner.cache.insert(&info, body, &self.inner.store.files_dir(self.id)) {
            Ok(shared) => self.log("INFO", &format!("build cache: kept as entry {key} ({shared:?})")),
            Err(e) => self.log("WARN", &format!("build cache: cannot keep this image ({e})")),
        }
    }

    /// Brings an image this build reads (a parent, an image named in the parameters) to
    /// this machine when bodies live in object storage; waits out an outage.
    fn fetch(&self, id: &str, what: &str) -> Step<()> {
        let bodies = self.inner.store.bodies();
        if bodies.objects().is_none() {
            return Ok(());
        }
        self.activity(&format!("Fetching {what} {id} from object storage"));
        crate::store::retry_while_unavailable(DURABLE_WRITE_BOUND, "fetch an image from object storage", || {
            bodies.fetch(id)
        })
        .map_err(|e| Failure::msg(format!("cannot fetch {what} {id}: {e}")))
    }

    /// Sends what this build made to object storage, when bodies live there: the kept
    /// files always (a failed build's console log), the body when it completed. Waits out
    /// an outage; the image is COMPLETE only once its body is stored.
    fn publish(&self, with_body: bool) -> Step<()> {
        let bodies = self.inner.store.bodies();
        if bodies.objects().is_none() {
            return Ok(());
        }
        if with_body {
            self.activity("Storing the image in object storage");
        }
        crate::store::retry_while_unavailable(DURABLE_WRITE_BOUND, "store the image in object storage", || {
            bodies.publish(self.id, with_body)
        })
        .map_err(|e| Failure::msg(format!("cannot store the image in object storage: {e}")))
    }

    /// Records the end of a build: COMPLETE, or FAILED with the one-line error.
    fn end(&self, outcome: Step<()>) {
        let outcome = outcome.and_then(|()| self.publish(true));
        if outcome.is_err() {
            if let Err(Failure::Error { cause, .. }) = self.publish(false) {
                tracing::warn!(error = %cause, "cannot store the failed build's files");
            }
        }
        match outcome {
            Ok(()) => {
                let kind = self.record().map(|r| r.kind.class()).unwrap_or("Image");
                let activity = format!("{} build complete", kind.replace("Image", " Image"));
                self.log("INFO", &activity);
                self.update_durably(|r| {
                    r.status = Status::Complete;
                    r.percent_complete = 100;
                    r.status_detail = StatusDetail { activity: activity.clone(), error: None };
                });
            }
            Err(failure) => self.fail(failure),
        }
    }

    fn fail(&self, failure: Failure) {
        let activity = self.record().map(|r| r.status_detail.activity).unwrap_or_default();
        let (cause, chain) = match failure {
            Failure::Error { cause, chain } => (cause, chain),
            Failure::Cancelled => ("cancelled".to_string(), Vec::new()),
        };
        let error = format!("Failure encountered while: {activity}: {cause}");
        self.log("ERROR", &error);
        for c in &chain {
            self.log("ERROR", &format!("  caused by: {c}"));
        }
        tracing::error!(%error, chain = ?chain, "build failed");
        self.update_durably(|r| {
            r.status = Status::Failed;
            r.status_detail.error = Some(error.clone());
        });
    }

    /// Waits for a parent image to be COMPLETE (PENDING meanwhile).
    fn wait_for_parent(&self, parent_id: &str, parent_class: &str, my_class: &str) -> Step<ImageRecord> {
        let failed = || {
            Failure::msg(format!(
                "The {parent_class} ({parent_id}) for our {my_class} has failed its build.  Cannot continue."
            ))
        };
        let mut announced = false;
        loop {
            self.check_cancelled()?;
            let seen = { *self.inner.changed.0.lock().unwrap_or_else(|p| p.into_inner()) };
            let parent = match self.inner.store.get(parent_id) {
                Ok(Some(parent)) => parent,
                Ok(None) => return Err(failed()),
                Err(e) => {
                    // The store will answer again: wait for the parent as before.
                    tracing::warn!(parent = %parent_id, error = %e, "cannot read the parent image; waiting");
                    self.inner.wait_change(seen, Duration::from_millis(500));
                    continue;
                }
            };
            match parent.status {
                Status::Complete => return Ok(parent),
                Status::Failed | Status::Deleting | Status::Deleted | Status::DeleteFailed => return Err(failed()),
                _ if !announced => {
                    self.set_status(Status::Pending, &format!("Waiting for {parent_class} {parent_id}"));
                    announced = true;
                }
                _ => {}
            }
            self.inner.wait_change(seen, Duration::from_millis(500));
        }
    }

    /// Waits for a free build slot (PENDING meanwhile) and holds it.
    fn acquire_slot(&self) -> Step<super::slots::SlotGuard<'_>> {
        if let Some(g) = self.inner.slots.try_acquire() {
            return Ok(g);
        }
        self.set_status(Status::Pending, "Waiting for a free build slot (max_concurrent_local_sessions)");
        loop {
            self.check_cancelled()?;
            if let Some(g) = self.inner.slots.acquire_timeout(Duration::from_millis(200)) {
                return Ok(g);
            }
        }
    }

    /// Runs one plugin operation in a worker; its progress maps onto `lo..=hi` percent.
    fn call(&self, plugin: &ResolvedPlugin, op: Operation, body: &Path, lo: u8, hi: u8) -> Step<Value> {
        self.check_cancelled()?;
        let op_name = op.name();
        let work_dir = self.inner.config.tmpdir.join(format!("imagefactory-{}-{op_name}", self.id));
        std::fs::create_dir_all(&work_dir)
            .map_err(|e| Failure::msg(format!("cannot create working directory {}: {e}", work_dir.display())))?;
        self.log("INFO", &format!("running {op_name} of plugin {}", plugin.name));
        let job = worker::Job {
            plugin_path: plugin.path.clone(),
            body_path: body.to_path_buf(),
            work_dir: work_dir.clone(),
            operation: op,
        };
        let mut on_event = |ev: Event| match ev {
            Event::Activity(a) => self.activity(&a),
            Event::Percent(p) => self.percent(lo + ((hi - lo) as u32 * p.min(100) as u32 / 100) as u8),
            Event::Log { level, line } => self.log(&level, &line),
            Event::Result(_) | Event::Error(_) => {}
        };
        let result = worker::run(&self.inner.config.worker_exe, &job, &self.job.cancel, &mut on_event);
        let files_dir = work_dir.join(imagefactory_plugin_api::sdk::FILES_DIR_NAME);
        match self.inner.store.keep_files(self.id, &files_dir) {
            Ok(kept) if !kept.is_empty() => self.log("INFO", &format!("{op_name} left files {}", kept.join(", "))),
            Ok(_) => {}
            Err(e) => self.log("WARN", &format!("cannot keep the files {op_name} left: {e}")),
        }
        if let Err(e) = std::fs::remove_dir_all(&work_dir) {
            tracing::warn!(dir = %work_dir.display(), error = %e, "cannot remove a working directory");
        }
        match result {
            Ok(v) => {
                self.percent(hi);
                Ok(v)
            }
            Err(WorkerError::Cancelled) => Err(Failure::Cancelled),
            Err(WorkerError::Plugin(e)) if e.message == "cancelled" && self.cancelled() => Err(Failure::Cancelled),
            Err(WorkerError::Plugin(e)) => Err(Failure::Error { cause: e.message, chain: e.chain }),
            Err(e) => Err(Failure::msg(format!("{} ({op_name} of plugin {})", e, plugin.name))),
        }
    }

    fn base(&self, plugin: &ResolvedPlugin) -> Step<()> {
        let _slot = self.acquire_slot()?;
        self.set_status(Status::Building, &format!("Building base image with {}", plugin.name));
        let rec = self.current()?;
        let req = BaseImageRequest {
            image_id: self.id.to_string(),
            template: self.inner.template_of(&rec).unwrap_or_default(),
            parameters: rec.parameters.clone(),
            settings: self.inner.config.settings.clone(),
        };
        let out = self.call(plugin, Operation::CreateBaseImage(req), &self.inner.store.body_path(self.id), 0, 99)?;
        let out: BaseImageOutcome = decode(out)?;
        self.update(|r| {
            r.icicle = out.icicle;
            r.properties.extend(out.properties);
        });
        Ok(())
    }

    /// The images of the store that parameter values name (see `TargetHookRequest::images`).
    fn images_named_in(&self, parameters: &Map<String, Value>) -> BTreeMap<String, ImageRef> {
        let mut images = BTreeMap::new();
        for value in parameters.values() {
            let Some(id) = value.as_str().map(str::trim) else { continue };
            if uuid::Uuid::parse_str(id).is_err() || images.contains_key(id) {
                continue;
            }
            if let Ok(Some(r)) = self.inner.store.get(id) {
                if r.status == Status::Complete {
                    if let Err(Failure::Error { cause, .. }) = self.fetch(id, "image") {
                        self.log("WARN", &format!("image {id}, named in the parameters: {cause}"));
                    }
                }
                let image = ImageRef {
                    kind: r.kind.singular().to_string(),
                    status: r.status.as_str().to_string(),
                    body_path: self.inner.store.body_path(id).to_string_lossy().into_owned(),
                    template: r.template.clone(),
                };
                images.insert(id.to_string(), image);
            }
        }
        images
    }

    fn target(&self, base_id: &str, os: &ResolvedPlugin, cloud: &ResolvedPlugin) -> Step<()> {
        let base = self.wait_for_parent(base_id, "BaseImage", "TargetImage")?;
        let _slot = self.acquire_slot()?;
        let rec = self.current()?;
        let target = rec.target.clone().unwrap_or_default();
        self.set_status(Status::Building, &format!("Building {target} target image with {}", cloud.name));
        self.update(|r| r.icicle = base.icicle.clone());
        let template = self.inner.template_of(&rec).unwrap_or_default();
        let host_content = self.target_content(&target, &template);
        let hook = TargetHookRequest {
            image_id: self.id.to_string(),
            base_image_id: base_id.to_string(),
            base_body_path: self.inner.store.body_path(base_id).to_string_lossy().into_owned(),
            target: target.clone(),
            template,
            parameters: rec.parameters.clone(),
            settings: self.inner.config.settings.clone(),
            content: host_content.clone(),
            images: self.images_named_in(&rec.parameters),
        };
        let body = &self.inner.store.body_path(self.id);
        let should: ShouldCreate =
            decode(self.call(cloud, Operation::BuilderShouldCreateTargetImage(hook.clone()), body, 0, 2)?)?;
        let mut content: TargetContent =
            decode(self.call(cloud, Operation::BuilderWillCreateTargetImage(hook.clone()), body, 2, 10)?)?;
        for p in host_content.packages {
            if !content.packages.contains(&p) {
                content.packages.push(p);
            }
        }
        if should.create {
            let req = TargetImageRequest {
                image_id: self.id.to_string(),
                base_image_id: base_id.to_string(),
                base_body_path: self.inner.store.body_path(base_id).to_string_lossy().into_owned(),
                target,
                template: hook.template.clone(),
                parameters: hook.parameters.clone(),
                settings: self.inner.config.settings.clone(),
                content,
            };
            let out: TargetImageOutcome = decode(self.call(os, Operation::CreateTargetImage(req), body, 10, 60)?)?;
            self.update(|r| {
                if out.icicle.is_some() {
                    r.icicle = out.icicle;
                }
                r.properties.extend(out.properties);
            });
            self.call(cloud, Operation::BuilderDidCreateTargetImage(hook), body, 60, 99)?;
        }
        Ok(())
    }

    /// The content conf/target_content.xml names for this target and the template's OS.
    fn target_content(&self, target: &str, template: &str) -> TargetContent {
        let mut content = TargetContent::default();
        let Some(includes) = &self.inner.config.target_content else { return content };
        let Ok(info) = crate::template::check(template, false) else { return content };
        if let Some(fragment) = includes.select(target, &info.os_name, &info.os_version, &info.os_arch) {
            content.packages = fragment.packages.iter().map(|p| p.name.clone()).collect();
            self.log("INFO", &format!("target content for {target}: packages {}", content.packages.join(" ")));
        }
        content
    }

    fn push(&self, target_id: &str, cloud: &ResolvedPlugin, provider: String, credentials: String) -> Step<()> {
        let target = self.wait_for_parent(target_id, "TargetImage", "ProviderImage")?;
        self.fetch(target_id, "target image")?;
        let _slot = self.acquire_slot()?;
        let rec = self.current()?;
        self.set_status(Status::Building, &format!("Pushing target image {target_id} to the provider"));
        self.update(|r| r.icicle = target.icicle.clone());
        let req = PushRequest {
            image_id: self.id.to_string(),
            target_image_id: target_id.to_string(),
            target_body_path: self.inner.store.body_path(target_id).to_string_lossy().into_owned(),
            provider,
            credentials,
            target: rec.target.clone().unwrap_or_default(),
            template: self.inner.template_of(&rec).unwrap_or_default(),
            parameters: rec.parameters.clone(),
            settings: self.inner.config.settings.clone(),
        };
        self.on_provider(cloud, Operation::PushImageToProvider(req))
    }

    fn snapshot(&self, cloud: &ResolvedPlugin, provider: String, credentials: String) -> Step<()> {
        let _slot = self.acquire_slot()?;
        let rec = self.current()?;
        self.set_status(Status::Building, "Building a snapshot image on the provider");
        let req = SnapshotRequest {
            image_id: self.id.to_string(),
            provider,
            credentials,
            target: rec.target.clone().unwrap_or_default(),
            template: self.inner.template_of(&rec).unwrap_or_default(),
            parameters: rec.parameters.clone(),
            settings: self.inner.config.settings.clone(),
        };
        self.on_provider(cloud, Operation::SnapshotImageOnProvider(req))
    }

    /// Runs a push or snapshot in the cloud plugin and records what the provider said.
    fn on_provider(&self, cloud: &ResolvedPlugin, op: Operation) -> Step<()> {
        let out: ProviderOutcome = decode(self.call(cloud, op, &self.inner.store.body_path(self.id), 0, 99)?)?;
        self.update(|r| {
            r.identifier_on_provider = Some(out.identifier_on_provider);
            r.provider_account_identifier = out.provider_account_identifier;
            r.properties.extend(out.properties);
        });
        Ok(())
    }

    fn import(&self, file: &Path) -> Step<()> {
        let _slot = self.acquire_slot()?;
        self.current()?;
        self.set_status(Status::Building, &format!("Importing {} with qemu-img", file.display()));
        let out = std::process::Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(file)
            .arg(self.inner.store.body_path(self.id))
            .output()
            .map_err(|e| Failure::msg(format!("cannot run qemu-img: {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Failure::msg(format!(
                "qemu-img convert failed: {}",
                stderr.lines().next().unwrap_or("no message")
            )));
        }
        Ok(())
    }

    fn delete(
        &self,
        provider: Option<(ResolvedPlugin, String, String, String)>,
        parameters: Map<String, Value>,
    ) -> Step<()> {
        let rec = self.current()?;
        if let Some((cloud, provider, credentials, target)) = provider {
            self.activity(&format!(
                "Deleting {} from the provider",
                rec.identifier_on_provider.clone().unwrap_or_default()
            ));
            let req = DeleteRequest {
                image_id: self.id.to_string(),
                identifier_on_provider: rec.identifier_on_provider.clone(),
                provider,
                credentials,
                target,
                parameters,
                settings: self.inner.config.settings.clone(),
            };
            // Delete runs even if the image's own build was cancelled: use a fresh flag.
            self.job.cancel.store(false, Ordering::SeqCst);
            self.call(&cloud, Operation::DeleteFromProvider(req), &self.inner.store.body_path(self.id), 0, 99)?;
        }
        self.activity("Removing the image's files");
        Ok(())
    }

    fn end_delete(&self, outcome: Step<()>) {
        match outcome {
            Ok(()) => {
                // The callback still hears DELETED before the record goes.
                self.update(|r| {
                    r.status = Status::Deleted;
                    r.status_detail = StatusDetail { activity: "Image deleted.".into(), error: None };
                });
                let last = self.record();
                if let Err(e) = self.inner.store.remove(self.id) {
                    tracing::error!(error = %e, "cannot remove the image's files");
                    self.update(|r| {
                        r.status = Status::DeleteFailed;
                        r.status_detail.error =
                            Some(format!("Failure encountered while: Removing the image's files: {e}"));
                    });
                } else if let Some(last) = last {
                    self.inner.publish_deleted(&last);
                }
                self.inner.notify();
            }
            Err(failure) => {
                let cause = match failure {
                    Failure::Error { cause, .. } => cause,
                    Failure::Cancelled => "cancelled".into(),
                };
                let activity = self.record().map(|r| r.status_detail.activity).unwrap_or_default();
                let error = format!("Failure encountered while: {activity}: {cause}");
                self.log("ERROR", &error);
                self.update(|r| {
                    r.status = Status::DeleteFailed;
                    r.status_detail.error = Some(error);
                });
            }
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Step<T> {
    serde_json::from_value(v).map_err(|e| Failure::msg(format!("the plugin returned an unexpected result: {e}")))
}

/// Appends a line to an image's build log as its build does (timestamp, level, text).
pub(super) fn log_line(inner: &Inner, id: &str, level: &str, line: &str) {
    inner.store.append_log(id, &format!("{} {level} {line}", timestamp()));
}

fn timestamp() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    format!("{secs:.3}")
}
