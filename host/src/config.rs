//! The configuration file, `imagefactory.conf`: JSON with the original's keys.
//!
//! Unknown keys are warned about (a typo should not pass silently, but a config written
//! for the original, with keys we do not use, must still start). A known key with a
//! value of the wrong type or out of range stops the start with one clear line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// How the daemon writes its log lines to stderr (the journal, under systemd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// What a reload (SIGHUP) makes of a newly read config.
#[derive(Debug)]
pub struct Reload {
    /// The config to run with: the new values of the keys a running daemon can take, the
    /// old values of the rest.
    pub config: Config,
    /// Keys whose new values now apply.
    pub applied: Vec<&'static str>,
    /// Keys that changed in the file but keep their old values until a restart.
    pub needs_restart: Vec<&'static str>,
}

/// `image_manager_args`: `storage_path` for the file store; `url` and `bodies` for the
/// PostgreSQL store.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageManagerArgs {
    pub storage_path: PathBuf,
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB`. Never logged: it may hold a password.
    pub url: Option<String>,
    /// Where bodies and kept files are for every daemon on the database: a directory
    /// they all mount, or `s3://BUCKET/PREFIX` (each machine then keeps its copies in
    /// `storage_path`).
    pub bodies: Option<PathBuf>,
    /// The S3 endpoint (MinIO, Ceph, moto); else `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`,
    /// else AWS itself.
    pub s3_endpoint: Option<String>,
    /// Else `AWS_REGION`/`AWS_DEFAULT_REGION`, else us-east-1.
    pub s3_region: Option<String>,
    /// Else `AWS_ACCESS_KEY_ID` (with `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
    pub s3_access_key_id: Option<String>,
    /// Never logged.
    pub s3_secret_access_key: Option<String>,
}

impl ImageManagerArgs {
    /// The object storage URL `bodies` gives, if it gives one.
    pub fn bodies_url(&self) -> Option<&str> {
        self.bodies.as_deref().and_then(|b| b.to_str()).filter(|b| b.starts_with("s3://"))
    }

    /// The object store's settings (config keys, then the AWS environment).
    pub fn object_settings(&self) -> Option<Result<crate::store::objects::ObjectSettings, String>> {
        let url = self.bodies_url()?;
        let config = crate::store::objects::ObjectConfig {
            url,
            endpoint: self.s3_endpoint.as_deref(),
            region: self.s3_region.as_deref(),
            access_key_id: self.s3_access_key_id.as_deref(),
            secret_access_key: self.s3_secret_access_key.as_deref(),
        };
        Some(crate::store::objects::ObjectSettings::resolve(&config, |n| std::env::var(n).ok()))
    }
}

impl Default for ImageManagerArgs {
    fn default() -> ImageManagerArgs {
        ImageManagerArgs {
            storage_path: PathBuf::from("/var/lib/imagefactory/storage"),
            url: None,
            bodies: None,
            s3_endpoint: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
        }
    }
}

/// Without the URL, which may hold a password.
impl std::fmt::Debug for ImageManagerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageManagerArgs")
            .field("storage_path", &self.storage_path)
            .field("url", &self.url.as_ref().map(|_| "(set)"))
            .field("bodies", &self.bodies)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id.as_ref().map(|_| "(set)"))
            .field("s3_secret_access_key", &self.s3_secret_access_key.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// The settings the host uses. Field names are the original's config keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    #[serde(deserialize_with = "lenient_bool")]
    pub debug: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub no_ssl: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub no_oauth: bool,
    pub ssl_pem: Option<String>,
    pub port: u16,
    pub address: String,
    /// Plugin directories (the original took one; a list is accepted too).
    #[serde(deserialize_with = "one_or_many")]
    pub plugins: Vec<PathBuf>,
    pub image_manager: String,
    pub image_manager_args: ImageManagerArgs,
    /// Seconds an OS install may take before it is failed.
    pub timeout: u64,
    pub tmpdir: PathBuf,
    pub imgdir: PathBuf,
    pub max_concurrent_local_sessions: usize,
    pub max_concurrent_ec2_sessions: usize,
    /// OAuth consumer keys and secrets.
    pub clients: BTreeMap<String, String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub tdl_require_root_pw: bool,
    pub jeos_config: Vec<PathBuf>,
    /// Path of target_content.xml (packages and repositories added per target).
    pub target_content: Option<PathBuf>,
    /// Largest request body the API accepts, in bytes.
    pub max_request_bytes: usize,
    /// Connections the daemon serves at once; one more gets 503 and is closed.
    pub max_connections: usize,
    /// Seconds a client has to send a request's head, and again its body (and to finish
    /// a TLS handshake, at most 30). Responses are never cut off.
    pub request_timeout: u64,
    /// Image events the daemon holds for event-stream clients that resume; also how far
    /// behind a live client may fall before it is disconnected.
    pub event_history: usize,
    /// `text` (the default) or `json` (one JSON object a line, for log collectors).
    pub log_format: LogFormat,
    /// Bytes of image bodies the build cache keeps (least recently used dropped past
    /// it); 0 turns the cache off.
    pub cache_max_bytes: u64,
    /// With the postgres store: serve the API only and leave every job to workers
    /// (without it, a daemon also works jobs of the farm's queue).
    #[serde(deserialize_with = "lenient_bool")]
    pub api_only: bool,
    /// This process's name in the job queue (default: host name and process id).
    pub worker_name: Option<String>,
    /// Seconds a worker's hold on a job lasts unless renewed (it renews every second or
    /// so); a job whose worker stops renewing is requeued after this long.
    pub job_lease_seconds: u64,
    /// How many times a job is tried before its image fails as "worker lost".
    pub job_max_attempts: u32,
    /// Plugin-specific keys passed through to plugins untouched.
    #[serde(skip)]
    pub extra: BTreeMap<String, Value>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            debug: false,
            no_ssl: false,
            no_oauth: false,
            ssl_pem: None,
            port: 8075,
            address: "0.0.0.0".to_string(),
            plugins: vec![PathBuf::from("/etc/imagefactory/plugins.d")],
            image_manager: "file".to_string(),
            image_manager_args: ImageManagerArgs::default(),
            timeout: 3600,
            tmpdir: std::env::temp_dir(),
            imgdir: PathBuf::from("/var/lib/imagefactory/images"),
            max_concurrent_local_sessions: 2,
            max_concurrent_ec2_sessions: 4,
            clients: BTreeMap::new(),
            tdl_require_root_pw: false,
            jeos_config: Vec::new(),
            target_content: None,
            max_request_bytes: 16 * 1024 * 1024,
            max_connections: 1024,
            request_timeout: 60,
            event_history: crate::engine::events::HISTORY,
            log_format: LogFormat::Text,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            api_only: false,
            worker_name: None,
            job_lease_seconds: 30,
            job_max_attempts: 3,
            extra: BTreeMap::new(),
        }
    }
}

/// The original's shipped config writes booleans as 0 and 1; accept those and the words.
fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(b),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        Value::String(s) if ["yes", "true", "1"].contains(&s.to_ascii_lowercase().as_str()) => Ok(true),
        Value::String(s) if ["no", "false", "0"].contains(&s.to_ascii_lowercase().as_str()) => Ok(false),
        other => Err(serde::de::Error::custom(format!("expected a boolean (true/false, 0/1), got {other}"))),
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

/// Keys the original's config had that this host reads, or accepts and ignores on purpose.
const KNOWN_KEYS: &[&str] = &[
    "debug",
    "no_ssl",
    "no_oauth",
    "ssl_pem",
    "port",
    "address",
    "plugins",
    "image_manager",
    "image_manager_args",
    "timeout",
    "tmpdir",
    "imgdir",
    "max_concurrent_local_sessions",
    "max_concurrent_ec2_sessions",
    "clients",
    "tdl_require_root_pw",
    "jeos_config",
    "target_content",
    "max_request_bytes",
    "max_connections",
    "request_timeout",
    "event_history",
    "log_format",
    "cache_max_bytes",
    "api_only",
    "worker_name",
    "job_lease_seconds",
    "job_max_attempts",
];

/// The build cache's default bound: 64 GiB of bodies.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 64 << 30;

/// Keys plugins read (passed through in `extra`, never warned about).
const PLUGIN_KEYS: &[&str] = &[
    "ec2_ami_type",
    "ec2_image_format",
    "rhevm_image_format",
    "openstack_image_format",
    "proxy_ami_id",
    "ec2-32bit-util",
    "ec2-64bit-util",
    "oz_data_dir",
    "oz_screenshot_dir",
    "verbose",
    "secondary",
    "libvirt_uri",
    "accelerator",
];

impl Config {
    /// Reads a config file. Relative paths inside it are taken relative to the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::from_json(&text, path)
    }

    /// Parses config text; `path` names the file in messages and anchors relative paths.
    pub fn from_json(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let value: Value =
            serde_json::from_str(text).map_err(|source| ConfigError::Json { path: path.into(), source })?;
        let Value::Object(map) = value else {
            return Err(ConfigError::Invalid {
                path: path.into(),
                message: "the top level must be a JSON object".into(),
            });
        };
        let mut known = serde_json::Map::new();
        let mut extra = BTreeMap::new();
        for (key, val) in map {
            if KNOWN_KEYS.contains(&key.as_str()) {
                known.insert(key, val);
            } else {
                if !PLUGIN_KEYS.contains(&key.as_str()) {
                    tracing::warn!(config = %path.display(), key = %key, "unknown config key (ignored)");
                }
                extra.insert(key, val);
            }
        }
        let mut config: Config = serde_json::from_value(Value::Object(known))
            .map_err(|e| ConfigError::Invalid { path: path.into(), message: e.to_string() })?;
        config.extra = extra;
        let base = path.parent().unwrap_or(Path::new("."));
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        config.plugins.iter_mut().for_each(anchor);
        anchor(&mut config.image_manager_args.storage_path);
        if config.image_manager_args.bodies_url().is_none() {
            if let Some(bodies) = config.image_manager_args.bodies.as_mut() {
                anchor(bodies);
            }
        }
        if let Some(tc) = config.target_content.as_mut() {
            anchor(tc);
        }
        config.validate().map_err(|message| ConfigError::Invalid { path: path.into(), message })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        match self.image_manager.as_str() {
            "file" => {}
            "postgres" => {
                let args = &self.image_manager_args;
                let url = args.url.as_deref().ok_or("image_manager \"postgres\" needs image_manager_args.url")?;
                crate::store::postgres::parse_url(url)?;
                match &args.bodies {
                    None => return Err("image_manager \"postgres\" needs image_manager_args.bodies (s3://BUCKET/PREFIX, or a directory every daemon mounts)".into()),
                    Some(_) if args.bodies_url().is_some() => {
                        if let Some(Err(e)) = args.object_settings() {
                            return Err(format!("image_manager_args.bodies: {e}"));
                        }
                    }
                    Some(b) if b.to_string_lossy().contains("://") => {
                        return Err("image_manager_args.bodies: only s3:// URLs are object storage; give s3://BUCKET/PREFIX or a directory every daemon mounts".into())
                    }
                    Some(_) => {}
                }
            }
            other => return Err(format!("image_manager \"{other}\" is not supported (\"file\" or \"postgres\")")),
        }
        if self.max_concurrent_local_sessions == 0 {
            return Err("max_concurrent_local_sessions must be at least 1".into());
        }
        if self.timeout == 0 {
            return Err("timeout must be at least 1 second".into());
        }
        if self.max_request_bytes < 1024 {
            return Err("max_request_bytes must be at least 1024".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.request_timeout == 0 {
            return Err("request_timeout must be at least 1 second".into());
        }
        if !(1..=3600).contains(&self.job_lease_seconds) {
            return Err("job_lease_seconds must be between 1 and 3600".into());
        }
        if self.job_max_attempts == 0 {
            return Err("job_max_attempts must be at least 1".into());
        }
        if self.worker_name.as_deref().is_some_and(|n| n.trim().is_empty() || n.len() > 200) {
            return Err("worker_name must be a non-empty name of at most 200 characters".into());
        }
        if !(16..=1_000_000).contains(&self.event_history) {
            return Err("event_history must be between 16 and 1000000 events".into());
        }
        Ok(())
    }

    /// What a running daemon makes of `new`, read again from its file on SIGHUP. It takes
    /// the keys that only shape the next request: the OAuth `clients` (add or revoke a
    /// key without a restart), `debug` (the log level) and `jeos_config`. Keys that the
    /// listener, the engine, the store, the plugins or running builds were set up with
    /// keep their old values, and are named so the log can say a restart is needed.
    pub fn reload(&self, new: Config) -> Reload {
        let mut config = self.clone();
        let mut applied = Vec::new();
        macro_rules! take {
            ($($field:ident),*) => {$(
                if format!("{:?}", self.$field) != format!("{:?}", new.$field) {
                    applied.push(stringify!($field));
                    config.$field = new.$field.clone();
                }
            )*};
        }
        take!(clients, debug, jeos_config);
        let mut needs_restart = Vec::new();
        macro_rules! keep {
            ($($field:ident),*) => {$(
                if format!("{:?}", self.$field) != format!("{:?}", new.$field) {
                    needs_restart.push(stringify!($field));
                }
            )*};
        }
        keep!(
            tdl_require_root_pw,
            max_request_bytes,
            no_ssl,
            no_oauth,
            ssl_pem,
            port,
            address,
            plugins,
            image_manager,
            timeout,
            tmpdir,
            imgdir,
            max_concurrent_local_sessions,
            max_concurrent_ec2_sessions,
            target_content,
            max_connections,
            request_timeout,
            event_history,
            log_format,
            cache_max_bytes,
            api_only,
            worker_name,
            job_lease_seconds,
            job_max_attempts
        );
        // Compared as values: its Debug form hides the URL, so a changed URL would not show.
        if self.image_manager_args != new.image_manager_args {
            needs_restart.push("image_manager_args");
        }
        if self.extra != new.extra {
            needs_restart.push("plugin settings");
        }
        Reload { config, applied, needs_restart }
    }

    /// The connection limits of the daemon's server.
    pub fn server_limits(&self) -> crate::api::server::Limits {
        crate::api::server::Limits {
            max_connections: self.max_connections,
            request_timeout: std::time::Duration::from_secs(self.request_timeout),
        }
    }

    /// The storage directory of the file image store.
    pub fn storage_path(&self) -> &Path {
        &self.image_manager_args.storage_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_takes_what_a_running_daemon_can_and_names_the_rest() {
        let path = Path::new("/etc/imagefactory/imagefactory.conf");
        let old = Config::from_json(r#"{"clients": {"a": "s"}, "port": 8075}"#, path).unwrap();
        let new = Config::from_json(r#"{"clients": {"b": "t"}, "port": 9000, "debug": 1, "log_format": "json"}"#, path)
            .unwrap();
        let r = old.reload(new);
        assert_eq!(r.applied, ["clients", "debug"]);
        assert_eq!(r.needs_restart, ["port", "log_format"]);
        assert_eq!(r.config.clients.get("b").map(String::as_str), Some("t"));
        assert!(r.config.debug);
        assert_eq!(r.config.port, 8075, "the listener keeps its port");
        assert_eq!(r.config.log_format, LogFormat::Text);
        let same = r.config.reload(r.config.clone());
        assert!(same.applied.is_empty() && same.needs_restart.is_empty());
        let pg = |url: &str| {
            let text = format!(
                r#"{{"image_manager": "postgres", "image_manager_args": {{"url": "{url}", "bodies": "/srv/b"}}}}"#
            );
            Config::from_json(&text, path).unwrap()
        };
        let moved = pg("postgres://u:one@db/x").reload(pg("postgres://u:two@db/x"));
        assert_eq!(moved.needs_restart, ["image_manager_args"], "a changed database URL needs a restart");
        let bad = Config::from_json(r#"{"log_format": "xml"}"#, path).unwrap_err().to_string();
        assert!(bad.contains("log_format") || bad.contains("xml"), "{bad}");
    }

    #[test]
    fn reads_the_original_shipped_config() {
        let text = r#"{"debug": 0, "no_ssl": 0, "no_oauth": 0, "imgdir": "/var/lib/imagefactory/images",
            "ec2_ami_type": "ebs", "clients": {"mock-key": "mock-secret"}, "max_concurrent_local_sessions": 2,
            "image_manager": "file", "image_manager_args": {"storage_path": "/var/lib/imagefactory/storage"},
            "tdl_require_root_pw": 0, "jeos_config": ["/etc/imagefactory/jeos_images/"]}"#;
        let c = Config::from_json(text, Path::new("/etc/x.conf")).unwrap();
        assert_eq!(c.clients["mock-key"], "mock-secret");
        assert_eq!(c.storage_path(), Path::new("/var/lib/imagefactory/storage"));
        assert_eq!(c.extra["ec2_ami_type"], "ebs");
    }

    #[test]
    fn bad_values_stop_with_one_line() {
        let e = Config::from_json(r#"{"max_concurrent_local_sessions": "two"}"#, Path::new("c.conf")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("config file c.conf: invalid type"), "{msg}");
        assert!(!msg.contains('\n'));
        let e = Config::from_json(r#"{"max_concurrent_local_sessions": 0}"#, Path::new("c.conf")).unwrap_err();
        assert_eq!(e.to_string(), "config file c.conf: max_concurrent_local_sessions must be at least 1");
        let e = Config::from_json(r#"{"max_connections": 0}"#, Path::new("c.conf")).unwrap_err();
        assert_eq!(e.to_string(), "config file c.conf: max_connections must be at least 1");
        let e = Config::from_json(r#"{"request_timeout": 0}"#, Path::new("c.conf")).unwrap_err();
        assert_eq!(e.to_string(), "config file c.conf: request_timeout must be at least 1 second");
        let c = Config::from_json(r#"{"max_connections": 2, "request_timeout": 5}"#, Path::new("c.conf")).unwrap();
        assert_eq!((c.max_connections, c.request_timeout), (2, 5));
        let e = Config::from_json("[1]", Path::new("c.conf")).unwrap_err();
        assert_eq!(e.to_string(), "config file c.conf: the top level must be a JSON object");
    }

    #[test]
    fn relative_paths_are_anchored_at_the_file() {
        let c = Config::from_json(
            r#"{"plugins": "plugins.d", "image_manager_args": {"storage_path": "store"}}"#,
            Path::new("/opt/if/imagefactory.conf"),
        )
        .unwrap();
        assert_eq!(c.plugins, vec![PathBuf::from("/opt/if/plugins.d")]);
        assert_eq!(c.storage_path(), Path::new("/opt/if/store"));
    }
}
