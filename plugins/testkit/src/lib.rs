//! Test support shared by the plugins' tests (a dev-dependency only, never shipped).
//!
//! - [`built`]: a build product (the CLI, a plugin `.so`) in cargo's target directory,
//!   failing loudly when it is missing;
//! - [`Factory`]: a private imagefactory (config, plugin directory, store, tmpdir) in one
//!   temporary directory, and [`Factory::run`] to drive the real CLI with a deadline;
//! - [`services_dir`]: where scripts/setup.sh installs the services the tests start;
//! - [`free_port`], [`ChildGuard`], [`wait_until`]: processes and waits that always end;
//! - [`proxy::CuttingProxy`]: a loopback proxy that breaks one upload, for retry tests.
//! - [`boot::Boot`]: boots a disk image (any format qemu reads) under TCG until a
//!   marker shows on its serial console;
//! - [`disk::SparseDisk`]: sparse raw disks with data at a stride, for conversions and
//!   pushes;
//! - [`tls::LocalCa`]: a private CA and a server certificate for HTTPS on loopback.
//! - [`postgres::PgServer`]: a private PostgreSQL cluster on a free loopback port.
//! - [`spdx`]: SPDX documents checked by pyspdxtools.
//! - [`guestkit`]: the test kernel setup unpacks and busybox initramfs images for real
//!   qemu guests.
//!
//! Everything here panics with a message that names the fix (run scripts/setup.sh, build
//! the workspace): a test that needs a tool fails loudly, it never skips.

pub mod boot;
pub mod disk;
pub mod guestkit;
pub mod moto;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod spdx;
pub mod tls;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

pub use process::{wait_until, ChildGuard, Run};

/// The cargo target directory: `$CARGO_TARGET_DIR`, else the one this test runs from,
/// else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        if d.is_absolute() {
            return d;
        }
        return workspace_dir().join(d);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // <target>/debug/deps/<test>
    if let Some(t) = exe.parent().filter(|p| p.ends_with("deps")).and_then(Path::parent).and_then(Path::parent) {
        return t.to_path_buf();
    }
    workspace_dir().join("target")
}

/// The workspace's root directory.
pub fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file cargo built into `<target>/debug` or its deps directory, the newer of the two
/// (`cargo test` refreshes only the deps copy of a plugin); fails loudly when absent.
pub fn built(name: &str) -> PathBuf {
    let debug = target_dir().join("debug");
    let newest = [debug.join(name), debug.join("deps").join(name)]
        .into_iter()
        .filter_map(|p| {
            std::fs::metadata(&p).ok().filter(|m| m.is_file()).and_then(|m| m.modified().ok()).map(|t| (t, p))
        })
        .max_by_key(|(t, _)| *t);
    if let Some((_, p)) = newest {
        return p;
    }
    panic!(
        "{name} is missing from {}: run `cargo build --workspace` first (this test runs the real CLI and plugins)",
        debug.display()
    );
}

/// Where scripts/setup.sh installs services and tools for the tests:
/// `$IMAGEFACTORY_SERVICES`, else `~/.cache/imagefactory`.
pub fn services_dir() -> PathBuf {
    std::env::var_os("IMAGEFACTORY_SERVICES")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/imagefactory"))
}

/// A file or directory under [`services_dir`] that setup installs; fails loudly when absent.
pub fn service_path(relative: &str) -> PathBuf {
    let p = services_dir().join(relative);
    assert!(p.exists(), "{} is missing: run scripts/setup.sh", p.display());
    p
}

/// Fails loudly unless `program` runs (`program --version` or the given probe argument).
pub fn require_tool(program: &str, probe_arg: &str, debian_package: &str) {
    let ok = std::process::Command::new(program)
        .arg(probe_arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    assert!(ok, "{program} is not installed (Debian package {debian_package}): run scripts/setup.sh");
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

/// A random hex token (the kernel's UUID generator, dashes removed).
pub fn token() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").expect("a random uuid").trim().replace('-', "")
}

/// A private imagefactory: config, plugin directory holding the named plugins, storage
/// and work directory, all inside one temporary directory removed on drop.
pub struct Factory {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Factory {
    /// A factory with the given plugin files (`libdebian_os.so`, ...) copied from the
    /// target directory, and `extra` merged into its config (JSON object keys).
    pub fn new(plugins: &[&str], extra: serde_json::Value) -> Factory {
        let dir = tempfile::Builder::new().prefix("if-test-").tempdir().expect("a temporary directory");
        for sub in ["plugins", "storage", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create a test directory");
        }
        for so in plugins {
            // A hard link where it can be (a debug plugin with the AWS SDK is hundreds of MB).
            let (from, to) = (built(so), dir.path().join("plugins").join(so));
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).expect("copy a plugin");
            }
        }
        let mut conf = serde_json::json!({
            "plugins": dir.path().join("plugins"),
            "image_manager_args": {"storage_path": dir.path().join("storage")},
            "tmpdir": dir.path().join("tmp"),
            "timeout": 1800,
        });
        if let (Some(c), serde_json::Value::Object(e)) = (conf.as_object_mut(), extra) {
            c.extend(e);
        }
        let config = dir.path().join("imagefactory.conf");
        std::fs::write(&config, conf.to_string()).expect("write the config");
        Factory { dir, config }
    }

    /// The store directory.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The build log the host kept for image `id`.
    pub fn build_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.storage().join(format!("{id}.log"))).unwrap_or_default()
    }

    /// Every entry of the store whose name holds `id` (its `.meta`, `.body`, `.log`,
    /// `.files`): empty once the image is deleted.
    pub fn stored_entries_of(&self, id: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.storage())
            .expect("the store")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(id))
            .map(|e| e.path())
            .collect()
    }

    /// The body file of image `id`.
    pub fn body(&self, id: &str) -> PathBuf {
        self.storage().join(format!("{id}.body"))
    }

    /// Writes `text` to a file in the factory's directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write a test file");
        p
    }

    /// Starts `imagefactoryd` on this factory's config (plain HTTP, no OAuth, a free
    /// loopback port) and waits until it listens. Returns the daemon, killed on drop, and
    /// the API's base URL (`http://127.0.0.1:PORT/imagefactory`).
    pub fn start_daemon(&self) -> (ChildGuard, String) {
        let port = free_port();
        let mut cmd = std::process::Command::new(built("imagefactoryd"));
        cmd.args(["--foreground", "--no_ssl", "--no_oauth", "--address", "127.0.0.1", "--port", &port.to_string()])
            .arg("--config")
            .arg(&self.config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let daemon = ChildGuard::spawn(cmd, "imagefactoryd");
        wait_until(std::time::Duration::from_secs(30), "the daemon to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        (daemon, format!("http://127.0.0.1:{port}/imagefactory"))
    }

    /// Runs `imagefactory --config <conf> args...`, killed after `deadline`.
    pub fn run(&self, args: &[&str], deadline: std::time::Duration) -> Run {
        let mut cmd = std::process::Command::new(built("imagefactory"));
        cmd.arg("--config").arg(&self.config).args(args);
        Run::capture(cmd, self.dir.path(), deadline)
    }
}
