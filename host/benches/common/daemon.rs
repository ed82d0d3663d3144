//! The release `imagefactoryd` as a process of its own, for the benches that load a real
//! daemon: a directory with the mock plugins and a config, an API daemon on a loopback
//! port (`--no_ssl --no_oauth --port 0`), or a farm worker (`--worker`, no HTTP).
//! Every process is killed and reaped on drop, and every start has a deadline.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a daemon or a worker may take to print its ready line.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// Copies the mock plugins (`IMAGEFACTORY_BENCH_PLUGIN_DIR`, else the bench's own build
/// directory) into `dir/plugins` and returns that directory.
pub fn mock_plugins(dir: &Path) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("cannot make the plugin directory");
    let build = std::env::var_os("IMAGEFACTORY_BENCH_PLUGIN_DIR").map(PathBuf::from).unwrap_or_else(super::build_dir);
    for so in ["libmock_os.so", "libmock_cloud.so"] {
        std::fs::copy(build.join(so), plugins.join(so))
            .unwrap_or_else(|e| panic!("cannot copy {so} from {}: {e}", build.display()));
    }
    plugins
}

/// Writes `dir/imagefactory.conf`: the mock plugins in `dir/plugins`, `dir/tmp` as the
/// tmpdir, and the keys of `settings` (a JSON object). Returns the config's path.
pub fn write_config(dir: &Path, settings: serde_json::Value) -> PathBuf {
    let plugins = mock_plugins(dir);
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).expect("cannot make the tmp directory");
    let mut config = serde_json::json!({"plugins": plugins, "tmpdir": tmp});
    match (config.as_object_mut(), settings) {
        (Some(config), serde_json::Value::Object(settings)) => config.extend(settings),
        (_, other) => panic!("bench config settings must be a JSON object, not {other}"),
    }
    let path = dir.join("imagefactory.conf");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("config")).expect("cannot write the config");
    path
}

/// An API daemon.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    /// From spawn to its listening line.
    pub started_in: Duration,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A farm worker (`imagefactoryd --worker`).
pub struct Worker {
    pub child: Child,
    /// The plugin names of its ready line.
    pub plugins: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a daemon on `config`, its stderr discarded (`RUST_LOG=warn`).
pub fn spawn(config: &Path) -> Daemon {
    spawn_logged(config, None)
}

/// Starts a daemon on `config`; with `log`, its stderr (`RUST_LOG=info`) goes there.
pub fn spawn_logged(config: &Path, log: Option<&Path>) -> Daemon {
    let args = ["--foreground", "--no_ssl", "--no_oauth", "--port", "0", "--address", "127.0.0.1"];
    let (child, rest, started_in) = start(&args, config, log, "imagefactoryd listening on http://");
    let addr = rest.trim_end_matches("/imagefactory").parse::<SocketAddr>().expect("a listening address");
    Daemon { child, addr, started_in }
}

/// Starts a worker on `config`, its stderr (`RUST_LOG=info`) in `log`.
pub fn spawn_worker(config: &Path, log: &Path) -> Worker {
    let (child, rest, _) = start(&["--worker"], config, Some(log), "imagefactoryd worker ");
    let plugins = rest.split_once(" taking jobs for plugins: ").map(|(_, p)| p.to_string()).unwrap_or(rest);
    Worker { child, plugins }
}

/// Spawns `imagefactoryd ARGS --config CONFIG` and waits (at most [`START_DEADLINE`]) for
/// the stdout line starting with `ready`; returns the child, the rest of that line and
/// the time from spawn to the moment the line was read. Stdout is drained for the
/// process's whole life so it never blocks on it.
fn start(args: &[&str], config: &Path, log: Option<&Path>, ready: &str) -> (Child, String, Duration) {
    let bin = super::build_dir().join("imagefactoryd");
    let (stderr, level) = match log {
        Some(path) => (Stdio::from(std::fs::File::create(path).expect("cannot make the daemon log")), "info"),
        None => (Stdio::null(), "warn"),
    };
    let start = Instant::now();
    let mut child = Command::new(&bin)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", level)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Once the line was taken, the receiver is gone: keep draining.
            let _ = tx.send((line, Instant::now()));
        }
    });
    let prefix = ready.to_string();
    let deadline = start + START_DEADLINE;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((line, at)) => {
                if let Some(rest) = line.strip_prefix(&prefix) {
                    return (child, rest.to_string(), at - start);
                }
            }
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                let log = log.map(|p| std::fs::read_to_string(p).unwrap_or_default()).unwrap_or_default();
                panic!("imagefactoryd {args:?} did not print {prefix:?} ({e}; {status:?}); its log:\n{log}");
            }
        }
    }
}
