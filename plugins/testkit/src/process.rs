//! Child processes and waits with deadlines: nothing a test starts outlives it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Pids of the qemu processes whose command line mentions `dir` (a test's factory: its
/// guests' disks and sockets live there), to check that a cancel or failure left none.
pub fn qemu_processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.first().is_some_and(|a| a.contains("qemu-system")) && args.iter().any(|a| a.contains(&needle)) {
            pids.push(pid);
        }
    }
    pids
}

/// A child process killed and reaped when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    what: String,
}

impl ChildGuard {
    /// Starts `cmd`, panicking with `what` in the message when it cannot start.
    pub fn spawn(mut cmd: Command, what: &str) -> ChildGuard {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        ChildGuard { child: Some(child), what: what.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The child's exit status when it has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// What the child wrote to its stderr (when it was piped), once it has exited.
    pub fn stderr_text(&mut self) -> String {
        let mut text = String::new();
        if let Some(err) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = std::io::Read::read_to_string(err, &mut text);
        }
        text.trim().to_string()
    }

    /// Panics when the child has already exited (a service that died at start).
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                panic!("{} exited at start ({st})", self.what);
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `ready` every 50 ms until it is true; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a command run to completion printed.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Runs `cmd` with stdin closed and output captured to files in `dir`; kills it and
    /// panics (with its stderr) after `deadline`.
    pub fn capture(mut cmd: Command, dir: &Path, deadline: Duration) -> Run {
        let out_path = dir.join("cmd.out");
        let err_path = dir.join("cmd.err");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .spawn()
            .expect("start the command");
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for the command") {
                break s;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{cmd:?} ran over {deadline:?}; stderr:\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Run {
            code: status.code(),
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
            elapsed: started.elapsed(),
        }
    }

    /// The value after `label` on its line of the CLI's Final Image Details.
    pub fn field(&self, label: &str) -> Option<String> {
        self.stdout.lines().find_map(|l| l.strip_prefix(label)).map(|v| v.trim().to_string())
    }

    /// The error line of a failed build.
    pub fn failure(&self) -> Option<String> {
        self.field("Image build FAILED with error:")
    }
}
