//! Helpers shared by the Debian plugin's tests: finding the built CLI and plugin, a
//! private imagefactory configuration, and running the CLI with a deadline.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The cargo target directory: `$CARGO_TARGET_DIR`, else the one this test runs from,
/// else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // <target>/debug/deps/<test>
    if let Some(t) = exe.parent().filter(|p| p.ends_with("deps")).and_then(Path::parent).and_then(Path::parent) {
        return t.to_path_buf();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// A file cargo built into `<target>/debug` (or its deps directory); fails loudly.
pub fn built(name: &str) -> PathBuf {
    let debug = target_dir().join("debug");
    for p in [debug.join(name), debug.join("deps").join(name)] {
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} is missing from {}: run `cargo build --workspace` first (this test runs the real CLI and plugin)",
        debug.display()
    );
}

/// A private imagefactory: config, plugin directory with the Debian plugin, storage
/// and work directory, all inside one temporary directory.
pub struct Factory {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Factory {
    pub fn new() -> Factory {
        let dir = tempfile::Builder::new().prefix("if-debian-test-").tempdir().expect("a temporary directory");
        for sub in ["plugins", "storage", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create a test directory");
        }
        std::fs::copy(built("libdebian_os.so"), dir.path().join("plugins/libdebian_os.so")).expect("copy the plugin");
        let config = dir.path().join("imagefactory.conf");
        let conf = serde_json::json!({
            "plugins": dir.path().join("plugins"),
            "image_manager_args": {"storage_path": dir.path().join("storage")},
            "tmpdir": dir.path().join("tmp"),
            "timeout": 1800,
        });
        std::fs::write(&config, conf.to_string()).expect("write the config");
        Factory { dir, config }
    }

    /// The build log the host kept for image `id`.
    pub fn build_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("storage").join(format!("{id}.log"))).unwrap_or_default()
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write a test file");
        p
    }

    /// Runs `imagefactory --config <conf> args...`, killed after `deadline`.
    pub fn run(&self, args: &[&str], deadline: Duration) -> Run {
        let out_path = self.dir.path().join("cli.out");
        let err_path = self.dir.path().join("cli.err");
        let mut child = Command::new(built("imagefactory"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .spawn()
            .expect("start imagefactory");
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for imagefactory") {
                break s;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "imagefactory {args:?} ran over {deadline:?}; stderr:\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        Run {
            code: status.code(),
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
            elapsed: started.elapsed(),
        }
    }
}

/// What a CLI run printed.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// The value after `label` on its line of the Final Image Details.
    pub fn field(&self, label: &str) -> Option<String> {
        self.stdout.lines().find_map(|l| l.strip_prefix(label)).map(|v| v.trim().to_string())
    }

    /// The error line of a failed build.
    pub fn failure(&self) -> Option<String> {
        self.field("Image build FAILED with error:")
    }
}

/// A random hex token (the kernel's UUID generator, dashes removed).
pub fn token() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").expect("a random uuid").trim().replace('-', "")
}

/// A Debian template: `os_extra` goes inside `<os>` (rootpw...), `body` after it.
pub fn template(name: &str, version: &str, arch: &str, os_extra: &str, body: &str) -> String {
    format!(
        "<template><name>{name}</name><os><name>Debian</name><version>{version}</version><arch>{arch}</arch>\
<install type='url'><url>host</url></install>{os_extra}</os>{body}</template>"
    )
}
