//! Starting the pieces both binaries share: logging, config, store, plugins, engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::engine::{Engine, EngineConfig};
use crate::plugins::PluginRegistry;
use crate::store::{FileStore, ImageStore, PgStore, StoreError};

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("target content file {path}: {message}")]
    TargetContent { path: PathBuf, message: String },
    #[error("cannot find the host's own executable (needed to start plugin workers): {0}")]
    Exe(std::io::Error),
}

/// The default config path, as the original.
pub const DEFAULT_CONFIG: &str = "/etc/imagefactory/imagefactory.conf";

/// Reads the config: the file given, or the default one when it exists, or defaults.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None if Path::new(DEFAULT_CONFIG).exists() => Config::load(Path::new(DEFAULT_CONFIG)),
        None => Ok(Config::default()),
    }
}

/// Logs to stderr at `level` ("debug", "info", "warn"; RUST_LOG overrides), as text.
pub fn init_logging(level: &str) {
    init_logging_as(level, crate::config::LogFormat::Text);
}

/// The log level of a running daemon, changeable (a SIGHUP that flips `debug`).
pub struct LogLevel {
    /// None when RUST_LOG chose the filter: then the environment wins over the config.
    handle: Option<tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>>,
}

impl LogLevel {
    /// Logs at `level` from now on (unless RUST_LOG set the filter).
    pub fn set(&self, level: &str) {
        if let Some(h) = &self.handle {
            if let Err(e) = h.reload(tracing_subscriber::EnvFilter::new(level)) {
                tracing::warn!(error = %e, "cannot change the log level");
            }
        }
    }
}

/// Logs to stderr at `level` (RUST_LOG overrides) in `format`: text lines, or one JSON
/// object a line (`timestamp`, `level`, `fields.message`, the span's fields such as the
/// image id) for log collectors. Under systemd, stderr is the journal.
pub fn init_logging_as(level: &str, format: crate::config::LogFormat) -> LogLevel {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    use tracing_subscriber::{fmt, reload, EnvFilter};
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_set = from_env.is_some();
    let (filter, handle) = reload::Layer::new(from_env.unwrap_or_else(|| EnvFilter::new(level)));
    let output: Box<dyn tracing_subscriber::Layer<_> + Send + Sync> = match format {
        crate::config::LogFormat::Text => fmt::layer().with_writer(std::io::stderr).boxed(),
        crate::config::LogFormat::Json => {
            fmt::layer().json().with_current_span(true).with_span_list(false).with_writer(std::io::stderr).boxed()
        }
    };
    let _ = tracing_subscriber::registry().with(filter).with(output).try_init();
    LogLevel { handle: (!env_set).then_some(handle) }
}

/// Opens the store, discovers plugins (config dirs plus `extra_plugin_dirs`), and makes
/// the engine. Does not recover interrupted builds: the caller decides.
pub fn engine(config: &Config, extra_plugin_dirs: &[PathBuf]) -> Result<Engine, SetupError> {
    let store = open_store(config)?;
    let mut dirs = config.plugins.clone();
    dirs.extend(extra_plugin_dirs.iter().cloned());
    let plugins = Arc::new(PluginRegistry::discover(&dirs));
    let worker_exe = std::env::current_exe().map_err(SetupError::Exe)?;
    let target_content = match &config.target_content {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(xml) => Some(
                imagefactory_plugin_api::tdl::TargetContentIncludes::parse(&xml)
                    .map_err(|e| SetupError::TargetContent { path: path.clone(), message: e.to_string() })?,
            ),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "target content file not readable; no per-target packages");
                None
            }
        },
    };
    let engine_config = EngineConfig {
        worker_exe,
        max_concurrent_local_sessions: config.max_concurrent_local_sessions,
        tmpdir: config.tmpdir.clone(),
        require_root_pw: config.tdl_require_root_pw,
        target_content,
        settings: plugin_settings(config),
        event_history: config.event_history,
        cache_max_bytes: config.cache_max_bytes,
        job_lease: std::time::Duration::from_secs(config.job_lease_seconds),
        job_max_attempts: config.job_max_attempts,
    };
    Ok(Engine::new(store, plugins, engine_config))
}

/// The store the config names: the file store, or PostgreSQL with bodies in object
/// storage or a shared directory.
pub fn open_store(config: &Config) -> Result<Box<dyn ImageStore>, StoreError> {
    let args = &config.image_manager_args;
    match (config.image_manager.as_str(), &args.url, &args.bodies) {
        ("postgres", Some(url), Some(_)) if args.bodies_url().is_some() => {
            let settings = match args.object_settings() {
                Some(Ok(s)) => s,
                // Config::validate refuses settings that do not resolve.
                Some(Err(e)) => return Err(StoreError::Unusable(format!("image_manager_args.bodies: {e}"))),
                None => return Err(StoreError::Unusable("image_manager_args.bodies is not an s3:// URL".into())),
            };
            let objects = crate::store::objects::ObjectStore::connect(&settings)?;
            match objects.check_bucket() {
                Ok(()) => {}
                // An endpoint that is down now may be up for the first build.
                Err(StoreError::Unavailable(e)) => tracing::warn!(error = %e, "cannot reach object storage yet"),
                Err(e) => {
                    return Err(StoreError::Unusable(format!("image_manager_args.bodies {}: {e}", objects.url())))
                }
            }
            let bodies = crate::store::Bodies::with_objects(config.storage_path(), objects)?;
            Ok(Box::new(PgStore::open_with(url, bodies)?))
        }
        ("postgres", Some(url), Some(bodies)) => Ok(Box::new(PgStore::open(url, bodies)?)),
        // Config::validate refuses "postgres" without both.
        _ => Ok(Box::new(FileStore::open(config.storage_path())?)),
    }
}

/// What plugins get of the config: the install timeout, the temp dir, and every key the
/// host itself does not use (plugin-specific settings such as `accelerator`).
fn plugin_settings(config: &Config) -> serde_json::Map<String, serde_json::Value> {
    let mut out: serde_json::Map<String, serde_json::Value> =
        config.extra.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    out.insert("timeout".into(), config.timeout.into());
    out.insert("tmpdir".into(), config.tmpdir.to_string_lossy().into_owned().into());
    out
}
