//! The black-box test harness: starts the real `imagefactoryd` (and runs the real
//! `imagefactory` command) built by `cargo build --workspace`, each in a temporary
//! directory of its own, and talks to them over loopback HTTP and the command line.
//!
//! Rules the helpers keep: every wait is bounded (poll with a deadline), a missing
//! binary or tool fails loudly, and no process outlives its test (daemons are killed
//! and reaped on drop).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long a daemon may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a mock build (no sleeping) may take to end.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(30);

/// The OAuth consumer the test config knows.
pub const OAUTH_KEY: &str = "mock-key";
pub const OAUTH_SECRET: &str = "mock-secret";

/// The workspace root (the parent of this crate).
pub fn workspace_dir() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().expect("tests/ has a parent").to_path_buf()
}

/// The cargo target directory: `$CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_dir().join(d)
            }
        }
        _ => {
            // The test executable lives in <target>/debug/deps: trust it over the default.
            if let Some(t) = std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().filter(|p| p.ends_with("deps")).map(Path::to_path_buf))
                .and_then(|deps| deps.parent().and_then(Path::parent).map(Path::to_path_buf))
            {
                return t;
            }
            workspace_dir().join("target")
        }
    }
}

/// `<target>/debug`: where the binaries and the plugin `.so` files are.
pub fn profile_dir() -> PathBuf {
    target_dir().join("debug")
}

fn built_file(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` first (the black-box tests use the built binaries and plugins)",
        p.display()
    );
    p
}

/// The daemon binary.
pub fn imagefactoryd_bin() -> PathBuf {
    built_file("imagefactoryd")
}

/// The command-line binary.
pub fn imagefactory_bin() -> PathBuf {
    built_file("imagefactory")
}

/// A built test plugin, e.g. `libmock_os.so`.
pub fn plugin_so(file: &str) -> PathBuf {
    built_file(file)
}

/// A template for the MockOS plugin.
pub fn tdl(os: &str, version: &str, arch: &str) -> String {
    format!(
        "<template>\n  <name>bb-{os}</name>\n  <os>\n    <name>{os}</name>\n    <version>{version}</version>\n    \
         <arch>{arch}</arch>\n    <install type='url'>\n      <url>http://mirror.invalid/mock/</url>\n    </install>\n    \
         <rootpw>changeme</rootpw>\n  </os>\n  <description>black-box test</description>\n</template>\n"
    )
}

/// The usual MockOS template.
pub fn mock_tdl() -> String {
    tdl("MockOS_A", "1", "x86_64")
}

/// A `provider_credentials` document holding `secret`.
pub fn credentials(secret: &str) -> String {
    format!(
        "<provider_credentials><mock_credentials><username>bb-user</username><password>{secret}</password>\
         </mock_credentials></provider_credentials>"
    )
}

/// A string no other test uses, for secrets and names.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{t}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` every 100 ms until it returns `Ok`, or panics after `timeout` naming `what`
/// and showing the last `Err` (what was seen), so a failure says how far it got.
pub fn poll_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(seen) => {
                assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}; last seen:\n{seen}")
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fails loudly when a tool the test needs is not installed.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("this test needs `{name}` on PATH and it is not installed")
}

// ------------------------------------------------------------------------------------
// HTTP answers

/// One HTTP answer: status, headers (names lowercased) and body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("expected a JSON body (status {}): {e}: {}", self.status, self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Resp {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text());
        self
    }
}

// ------------------------------------------------------------------------------------
// The daemon

/// Where an extra plugin file's content comes from.
#[derive(Debug, Clone)]
pub enum PluginSource {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// A fresh temporary directory with `storage/`, `plugins/` (holding copies of the built
/// `plugins`, e.g. `libmock_os.so`) and `tmp/`.
pub fn work_dir(prefix: &str, plugins: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir");
    for sub in ["storage", "plugins", "tmp"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("create dirs");
    }
    for so in plugins {
        // A hard link where it can be (a debug build of a real plugin is large).
        let (from, to) = (plugin_so(so), dir.path().join("plugins").join(so));
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
    }
    dir
}

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Require OAuth (no `--no_oauth`).
    pub oauth: bool,
    /// Serve HTTPS with the default self-signed certificate (no `--no_ssl`).
    pub tls: bool,
    /// `max_concurrent_local_sessions`.
    pub max_concurrent: usize,
    /// Copy libmock_os.so and libmock_cloud.so into the plugin directory.
    pub mock_plugins: bool,
    /// More files for the plugin directory: (file name, content).
    pub extra_plugin_files: Vec<(String, PluginSource)>,
    /// More config keys (e.g. `max_connections`), written into `imagefactory.conf`.
    pub extra_config: serde_json::Map<String, Value>,
    /// Environment variables of the daemon (and so of its workers).
    pub env: Vec<(String, String)>,
}

impl Default for DaemonOptions {
    fn default() -> DaemonOptions {
        DaemonOptions {
            oauth: false,
            tls: false,
            max_concurrent: 2,
            mock_plugins: true,
            extra_plugin_files: Vec::new(),
            extra_config: serde_json::Map::new(),
            env: Vec::new(),
        }
    }
}

/// Puts `image_manager_args.storage_path` (the machine's own copies of bodies kept in
/// object storage, and a file store's records) in the process's own directory when the
/// config does not name one, so that no test process writes to the system default.
fn keep_local_storage(config: &mut Value, storage: &Path) {
    if let Some(Value::Object(args)) = config.get_mut("image_manager_args") {
        args.entry("storage_path").or_insert_with(|| serde_json::json!(storage));
    }
}

/// A running `imagefactoryd` over a temporary directory (`storage/`, `plugins/`, `tmp/`,
/// `imagefactory.conf`, and `daemon.log` with its stderr). Killed and reaped on drop.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    opts: DaemonOptions,
    child: Option<Child>,
    pub port: u16,
    agent: ureq::Agent,
}

impl Daemon {
    /// Starts a daemon on a fresh directory.
    pub fn start(opts: DaemonOptions) -> Daemon {
        let mocks: &[&str] = if opts.mock_plugins { &["libmock_os.so", "libmock_cloud.so"] } else { &[] };
        let dir = work_dir("imagefactory-bb-", mocks);
        let plugins = dir.path().join("plugins");
        for (name, src) in &opts.extra_plugin_files {
            match src {
                PluginSource::Bytes(b) => std::fs::write(plugins.join(name), b).expect("write a plugin file"),
                PluginSource::File(p) => {
                    std::fs::copy(p, plugins.join(name))
                        .unwrap_or_else(|e| panic!("copy {} into the plugin dir: {e}", p.display()));
                }
            }
        }
        let mut config = serde_json::json!({
            "plugins": plugins,
            "image_manager_args": {"storage_path": dir.path().join("storage")},
            "max_concurrent_local_sessions": opts.max_concurrent,
            "clients": {OAUTH_KEY: OAUTH_SECRET},
            "tmpdir": dir.path().join("tmp"),
        });
        if let Value::Object(map) = &mut config {
            map.extend(opts.extra_config.clone());
        }
        keep_local_storage(&mut config, &dir.path().join("storage"));
        std::fs::write(dir.path().join("imagefactory.conf"), serde_json::to_vec_pretty(&config).unwrap())
            .expect("write the config");
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
        let mut d = Daemon { dir, opts, child: None, port: 0, agent };
        d.spawn();
        d
    }

    /// Starts a daemon with the default options (no OAuth, no TLS, 2 slots, mock plugins).
    pub fn start_default() -> Daemon {
        Daemon::start(DaemonOptions::default())
    }

    fn spawn(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open the daemon log");
        let mut cmd = Command::new(imagefactoryd_bin());
        cmd.args(["--foreground", "--port", "0", "--address", "127.0.0.1", "--config"])
            .arg(self.dir.path().join("imagefactory.conf"))
            .env("RUST_LOG", "info")
            .envs(self.opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if !self.opts.tls {
            cmd.arg("--no_ssl");
        }
        if !self.opts.oauth {
            cmd.arg("--no_oauth");
        }
        let scheme = if self.opts.tls { "https" } else { "http" };
        let prefix = format!("imagefactoryd listening on {scheme}://127.0.0.1:");
        let log_path = self.log_path();
        let (child, port) = spawn_until_line(&mut cmd, "its listening line", START_TIMEOUT, &log_path, |line| {
            let rest = line.strip_prefix(&prefix)?;
            let port = rest.strip_suffix("/imagefactory").and_then(|p| p.parse::<u16>().ok());
            Some(port.unwrap_or_else(|| panic!("unexpected listening line: {line}")))
        });
        self.port = port;
        self.child = Some(child);
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is running").id()
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `http(s)://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.opts.tls { "https" } else { "http" }, self.port)
    }

    /// Kills the daemon with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the daemon again over the same directory (after `kill9`, or kills it first).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Restarts the daemon over the same directory with `name=value` in its environment.
    pub fn restart_with_env(&mut self, name: &str, value: &str) {
        self.opts.env.push((name.to_string(), value.to_string()));
        self.restart();
    }

    /// The OAuth `Authorization` header for a request (a fresh nonce, the current time).
    pub fn oauth_header(&self, method: &str, path: &str, secret: &str) -> String {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.oauth_header_at(method, path, secret, &unique("nonce"), ts)
    }

    /// The OAuth `Authorization` header for a request with this nonce and timestamp.
    pub fn oauth_header_at(&self, method: &str, path: &str, secret: &str, nonce: &str, timestamp: u64) -> String {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let url = format!("{}{path}", self.origin());
        imagefactory::api::oauth::sign(method, &url, query, OAUTH_KEY, secret, nonce, timestamp)
    }

    /// One request as given (no automatic signing). `path` starts with `/imagefactory`.
    pub fn request_raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
        assert!(!self.opts.tls, "use curl for a TLS daemon");
        let url = format!("{}{path}", self.origin());
        let mut req = self.agent.request(method, &url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {url} failed: {e}\ndaemon log:\n{}", self.log()),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.to_ascii_lowercase(), v.to_string())))
            .collect();
        let mut body = Vec::new();
        resp.into_reader().read_to_end(&mut body).expect("read the answer body");
        Resp { status, headers, body }
    }

    /// One request, OAuth-signed when the daemon requires OAuth.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
        if self.opts.oauth {
            let auth = self.oauth_header(method, path, OAUTH_SECRET);
            let mut all: Vec<(&str, &str)> = headers.to_vec();
            all.push(("Authorization", &auth));
            self.request_raw(method, path, &all, body)
        } else {
            self.request_raw(method, path, headers, body)
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], None)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.request("POST", path, &[("Content-Type", "application/json")], Some(body.to_string().as_bytes()))
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, &[], None)
    }

    pub fn delete_json(&self, path: &str, body: &Value) -> Resp {
        self.request("DELETE", path, &[("Content-Type", "application/json")], Some(body.to_string().as_bytes()))
    }

    /// GET of one image: the object under its singular key.
    pub fn image(&self, collection: &str, id: &str) -> Value {
        let r = self.get(&format!("/imagefactory/{collection}/{id}"));
        r.expect(200);
        let v = r.json();
        v[singular(collection)].clone()
    }

    /// POSTs a base image build of `template` with `parameters`; returns its id.
    pub fn create_base(&self, template: &str, parameters: Value) -> String {
        let r = self.post_json(
            "/imagefactory/base_images",
            &serde_json::json!({"base_image": {"template": template, "parameters": parameters}}),
        );
        r.expect(202);
        r.json()["base_image"]["id"].as_str().expect("an id").to_string()
    }

    /// Polls an image until its status is one of `statuses`; returns the image object.
    pub fn wait_status(&self, id: &str, collection: &str, statuses: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.get(&format!("/imagefactory/{collection}/{id}"));
            if r.status == 200 {
                let img = r.json()[singular(collection)].clone();
                if let Some(s) = img["status"].as_str() {
                    if statuses.contains(&s) {
                        return img;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "image {id} did not reach {statuses:?} within {timeout:?}; last: {img}\ndaemon log:\n{}",
                    self.log()
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "image {id} did not reach {statuses:?} within {timeout:?}; last answer {} {}",
                    r.status,
                    r.text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for COMPLETE or FAILED and asserts COMPLETE.
    #[track_caller]
    pub fn wait_complete(&self, id: &str, collection: &str) -> Value {
        let img = self.wait_status(id, collection, &["COMPLETE", "FAILED"], BUILD_TIMEOUT);
        assert_eq!(
            img["status"],
            "COMPLETE",
            "build {id} failed: {img}\nbuild log:\n{}",
            self.build_log(collection, id)
        );
        img
    }

    /// The image's build log text.
    pub fn build_log(&self, collection: &str, id: &str) -> String {
        self.get(&format!("/imagefactory/{collection}/{id}/build_log")).text()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Spawns `cmd` (its stdout must be piped) and waits up to `timeout` for a stdout line
/// that `ready` accepts; returns the child and what `ready` made of the line. stdout
/// keeps being drained for the process's whole life. Panics with the log at `log_path`
/// when the process exits first or says nothing in time (then it is killed and reaped).
pub fn spawn_until_line<T>(
    cmd: &mut Command,
    what: &str,
    timeout: Duration,
    log_path: &Path,
    mut ready: impl FnMut(&str) -> Option<T>,
) -> (Child, T) {
    let log = || std::fs::read_to_string(log_path).unwrap_or_default();
    let mut child = cmd.spawn().expect("start imagefactoryd");
    let stdout = child.stdout.take().expect("stdout pipe");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        // Keep draining stdout for the process's whole life.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                if let Some(v) = ready(&line) {
                    return (child, v);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait();
                panic!("imagefactoryd exited before printing {what} ({status:?}); its log:\n{}", log());
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("imagefactoryd did not print {what} within {timeout:?}; log:\n{}", log());
        }
    }
}

/// `base_images` -> `base_image`.
pub fn singular(collection: &str) -> &str {
    collection.strip_suffix('s').unwrap_or(collection)
}

// ------------------------------------------------------------------------------------
// Queue workers

/// How long a worker may take to print its ready line.
pub const WORKER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start a queue worker (`imagefactoryd --worker`).
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// `worker_name`.
    pub name: String,
    /// The PostgreSQL store's URL (`image_manager_args.url`).
    pub pg_url: String,
    /// The shared bodies (`image_manager_args.bodies`): a directory, or an `s3://` URL
    /// (the endpoint and keys then in `env` or `extra_config`).
    pub bodies: PathBuf,
    /// Copy libmock_os.so into the plugin directory.
    pub mock_os: bool,
    /// Copy libmock_cloud.so into the plugin directory.
    pub mock_cloud: bool,
    /// More plugin files from the build (`libdebian_os.so`, ...).
    pub plugins: Vec<String>,
    /// `max_concurrent_local_sessions` (per worker).
    pub max_concurrent: usize,
    /// More config keys (e.g. `job_lease_seconds`), written into `imagefactory.conf`.
    pub extra_config: serde_json::Map<String, Value>,
    /// Environment variables of the worker (and so of its build processes).
    pub env: Vec<(String, String)>,
}

impl WorkerOptions {
    /// A worker named `name` on that store, with both mock plugins and 2 slots.
    pub fn new(name: &str, pg_url: &str, bodies: &Path) -> WorkerOptions {
        WorkerOptions {
            name: name.to_string(),
            pg_url: pg_url.to_string(),
            bodies: bodies.to_path_buf(),
            mock_os: true,
            mock_cloud: true,
            plugins: Vec::new(),
            max_concurrent: 2,
            extra_config: serde_json::Map::new(),
            env: Vec::new(),
        }
    }
}

/// A running `imagefactoryd --worker` (no HTTP) over a temporary directory of its own
/// (`storage/`, `plugins/`, `tmp/`, `imagefactory.conf`, and `worker.log` with its
/// stderr), as on a machine of its own. Killed and reaped on drop.
pub struct Worker {
    pub dir: tempfile::TempDir,
    name: String,
    plugins: Vec<String>,
    child: Option<Child>,
}

impl Worker {
    /// Starts a worker and waits for its ready line
    /// (`imagefactoryd worker <name> taking jobs for plugins: <names>`).
    pub fn start(opts: WorkerOptions) -> Worker {
        let mut mocks = Vec::new();
        if opts.mock_os {
            mocks.push("libmock_os.so");
        }
        if opts.mock_cloud {
            mocks.push("libmock_cloud.so");
        }
        mocks.extend(opts.plugins.iter().map(String::as_str));
        let dir = work_dir("imagefactory-worker-", &mocks);
        let mut config = serde_json::json!({
            "plugins": dir.path().join("plugins"),
            "image_manager": "postgres",
            "image_manager_args": {"url": opts.pg_url, "bodies": opts.bodies},
            "max_concurrent_local_sessions": opts.max_concurrent,
            "tmpdir": dir.path().join("tmp"),
            "worker_name": opts.name,
        });
        if let Value::Object(map) = &mut config {
            map.extend(opts.extra_config.clone());
        }
        keep_local_storage(&mut config, &dir.path().join("storage"));
        let conf = dir.path().join("imagefactory.conf");
        std::fs::write(&conf, serde_json::to_vec_pretty(&config).unwrap()).expect("write the config");
        let log_path = dir.path().join("worker.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("open the worker log");
        let mut cmd = Command::new(imagefactoryd_bin());
        cmd.arg("--worker")
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let prefix = format!("imagefactoryd worker {} taking jobs for plugins: ", opts.name);
        let (child, plugins) =
            spawn_until_line(&mut cmd, "its worker ready line", WORKER_START_TIMEOUT, &log_path, |line| {
                let names = line.strip_prefix(&prefix)?;
                Some(names.split(", ").map(str::to_string).collect::<Vec<_>>())
            });
        Worker { dir, name: opts.name, plugins, child: Some(child) }
    }

    /// The worker's name (`worker_name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin names of its ready line.
    pub fn plugins(&self) -> &[String] {
        &self.plugins
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the worker is running").id()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("worker.log")
    }

    /// Everything the worker wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the worker with SIGKILL (no chance to give its jobs back) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The worker names of the `taken by worker <name>` lines of a build log, in order.
pub fn taken_by(build_log: &str) -> Vec<String> {
    build_log
        .lines()
        .filter_map(|l| l.split_once("taken by worker ").and_then(|(_, rest)| rest.split_whitespace().next()))
        .map(str::to_string)
        .collect()
}

// ------------------------------------------------------------------------------------
// Processes

/// The processes whose parent is `pid`: (pid, command line with spaces).
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { panic!("/proc is not readable") };
    for e in rd.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // pid (comm) state ppid ...: comm may hold spaces and parens; split after the last ')'.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            out.push((child, cmdline.trim().to_string()));
        }
    }
    out
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_string));
            !matches!(state.as_deref(), Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// The `imagefactoryd __worker` children of `pid`.
pub fn workers_of(pid: u32) -> Vec<(u32, String)> {
    children_of(pid).into_iter().filter(|(_, c)| c.contains("__worker")).collect()
}

// ------------------------------------------------------------------------------------
// Status callbacks

/// One request received by a [`CallbackServer`].
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// A tiny HTTP server on loopback that records every request and answers 200.
pub struct CallbackServer {
    pub port: u16,
    rx: mpsc::Receiver<Received>,
}

impl CallbackServer {
    pub fn start() -> CallbackServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a callback listener");
        let port = listener.local_addr().expect("local addr").port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    if let Some(r) = serve_one(stream) {
                        let _ = tx.send(r);
                    }
                });
            }
        });
        CallbackServer { port, rx }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Collects requests until `done` says the list is complete, or panics after `timeout`.
    pub fn collect_until(&self, timeout: Duration, mut done: impl FnMut(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for callbacks; received so far: {got:#?}");
            if let Ok(r) = self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
                got.push(r);
            }
        }
        got
    }
}

fn serve_one(stream: TcpStream) -> Option<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.flush();
    Some(Received { method, path, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

// ------------------------------------------------------------------------------------
// The command line

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args` with a deadline; stdout and stderr go through files (no pipe
/// can fill up). The process is killed if it overruns, and the test fails.
pub fn run_cmd(mut cmd: Command, timeout: Duration) -> CmdOutput {
    let out_file = tempfile::NamedTempFile::new().expect("temp file");
    let err_file = tempfile::NamedTempFile::new().expect("temp file");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out_file.reopen().expect("reopen")))
        .stderr(Stdio::from(err_file.reopen().expect("reopen")));
    let shown = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{shown} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(out_file.path()).unwrap_or_default(),
                std::fs::read_to_string(err_file.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CmdOutput {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(out_file.path()).unwrap_or_default(),
        stderr: std::fs::read_to_string(err_file.path()).unwrap_or_default(),
    }
}

/// A directory for the `imagefactory` command: config, storage, plugins, files.
pub struct CliEnv {
    pub dir: tempfile::TempDir,
}

impl Default for CliEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl CliEnv {
    pub fn new() -> CliEnv {
        let dir = work_dir("imagefactory-cli-", &["libmock_os.so", "libmock_cloud.so"]);
        let config = serde_json::json!({
            "plugins": dir.path().join("plugins"),
            "image_manager_args": {"storage_path": dir.path().join("storage")},
            "max_concurrent_local_sessions": 2,
            "tmpdir": dir.path().join("tmp"),
        });
        std::fs::write(dir.path().join("imagefactory.conf"), serde_json::to_vec_pretty(&config).unwrap())
            .expect("write the config");
        CliEnv { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("imagefactory.conf")
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Writes a file in the directory and returns its path.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write a file");
        p
    }

    /// Runs `imagefactory --config <conf> <args>` (60 s deadline).
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> CmdOutput {
        let mut cmd = Command::new(imagefactory_bin());
        cmd.arg("--config").arg(self.config()).args(args).env("RUST_LOG", "warn");
        run_cmd(cmd, Duration::from_secs(60))
    }
}

/// The value after `label` on the first line that starts with it (`UUID: x` -> `x`).
pub fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(label)).map(str::trim)
}

/// One Server-Sent Event as received.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

/// A subscriber of `GET /imagefactory/events`, reading the stream line by line.
pub struct Subscriber {
    lines: BufReader<Box<dyn Read + Send + Sync>>,
}

impl Subscriber {
    pub fn connect(d: &Daemon, query: &str, last_event_id: Option<u64>) -> Subscriber {
        // Bounded as a whole too: keep-alive comments would otherwise let a missing event
        // hang a test forever.
        let agent =
            ureq::AgentBuilder::new().timeout_read(Duration::from_secs(60)).timeout(Duration::from_secs(300)).build();
        let mut req = agent.get(&format!("{}/imagefactory/events{query}", d.origin()));
        if let Some(id) = last_event_id {
            req = req.set("Last-Event-ID", &id.to_string());
        }
        let resp = req.call().unwrap_or_else(|e| panic!("GET /imagefactory/events: {e}"));
        assert_eq!(resp.status(), 200);
        assert!(resp.content_type().starts_with("text/event-stream"), "{}", resp.content_type());
        Subscriber { lines: BufReader::new(resp.into_reader()) }
    }

    /// The next event (keep-alive comments skipped).
    pub fn next_event(&mut self) -> Sse {
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        loop {
            let mut line = String::new();
            let n = self.lines.read_line(&mut line).expect("read the event stream");
            assert!(n > 0, "the event stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() || !event.is_empty() {
                    let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data {data:?}: {e}"));
                    return Sse { id, event, data };
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }

    /// Events until `done` says the last one read ends the wait.
    pub fn until(&mut self, mut done: impl FnMut(&Sse) -> bool) -> Vec<Sse> {
        let mut got = Vec::new();
        loop {
            let e = self.next_event();
            let stop = done(&e);
            got.push(e);
            if stop {
                return got;
            }
        }
    }
}
