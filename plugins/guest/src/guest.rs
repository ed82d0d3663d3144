//! A running guest and the bounded waits on it: for a line on its serial console, or
//! for it to power off (an install), watched as Oz did.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::GuestConfig;
use crate::qemu::QemuRunner;
use crate::runner::{Activity, Runner, Stop};
use crate::serial::SerialLog;
use crate::GuestError;

/// How often a running guest is checked (and the cancel flag asked).
const POLL: Duration = Duration::from_millis(250);

/// How long the runner may fail to report activity before the wait gives up on it.
const MONITOR_GRACE: Duration = Duration::from_secs(30);

/// The names of the files kept for a failed run.
pub const CONSOLE_FILE: &str = "console.log";
pub const SCREENSHOT_FILE: &str = "screenshot.png";

/// What a guest that powered off did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// From start to power-off.
    pub elapsed: Duration,
    pub disk_bytes_written: u64,
    /// Received plus sent bytes on its network (0 without one, or when the runner cannot
    /// count them).
    pub net_bytes: u64,
}

/// A running guest. Dropping it kills qemu (or destroys the libvirt domain) and removes
/// its socket and scratch files; the serial log stays for the caller.
pub struct Guest {
    runner: Box<dyn Runner>,
    serial: SerialLog,
    name: String,
    run_dir: PathBuf,
    started: Instant,
    timeout: Duration,
    inactivity: Option<Duration>,
    stop: Option<Stop>,
    last: Activity,
}

impl Guest {
    /// Starts the guest: through libvirt when the config names a URI, else qemu directly.
    /// Fails at once when qemu is missing or refuses the configuration (the error says
    /// why, with qemu's own message).
    ///
    /// Start and watch a guest on one thread: a directly run qemu is killed by the kernel
    /// when the thread that started it ends (`PR_SET_PDEATHSIG` is per thread), which is
    /// what makes a killed worker leave no qemu behind. Under libvirt the domain is
    /// created with autodestroy, so it ends when this process's connection closes.
    pub fn start(config: &GuestConfig) -> Result<Guest, GuestError> {
        if !config.run_dir.is_dir() {
            return Err(GuestError::Config(format!("the run directory {} does not exist", config.run_dir.display())));
        }
        let runner: Box<dyn Runner> = match &config.libvirt_uri {
            Some(uri) => Box::new(crate::libvirt::LibvirtRunner::start(config, uri)?),
            None => Box::new(QemuRunner::start(config)?),
        };
        Ok(Guest {
            runner,
            serial: SerialLog::new(config.serial_log()),
            name: config.name.clone(),
            run_dir: config.run_dir.clone(),
            started: Instant::now(),
            timeout: config.timeout,
            inactivity: config.inactivity,
            stop: None,
            last: Activity::default(),
        })
    }

    /// qemu's process id (direct qemu only).
    pub fn pid(&self) -> Option<u32> {
        self.runner.pid()
    }

    /// The guest's name (from its config).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The serial console log.
    pub fn serial_log(&self) -> &Path {
        self.serial.path()
    }

    /// Time since the guest started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Writes the guest's screen as a PNG.
    pub fn screenshot(&mut self, png: &Path) -> Result<(), GuestError> {
        self.runner.screenshot(png)
    }

    /// Kills the guest (if it still runs) and releases what it holds.
    pub fn kill(&mut self) {
        self.runner.kill();
    }

    /// Waits until the serial console shows `needle`, at most `within` (and never past
    /// the guest's hard timeout). Returns the time since start. On failure the guest is
    /// killed; the error names the serial log.
    pub fn wait_for_serial(&mut self, needle: &str, within: Duration) -> Result<Duration, GuestError> {
        let limit = within.min(self.timeout);
        loop {
            if self.serial.poll(needle)? {
                return Ok(self.started.elapsed());
            }
            if let Some(stop) = self.poll_stopped()? {
                // One last read: the guest may have printed the needle just before it stopped.
                if self.serial.poll(needle)? {
                    return Ok(self.started.elapsed());
                }
                return Err(GuestError::ExitedEarly {
                    status: stop.detail,
                    awaited: needle.to_string(),
                    log: self.serial.path().display().to_string(),
                });
            }
            if self.started.elapsed() >= limit {
                self.kill();
                return Err(GuestError::TimedOut {
                    awaited: needle.to_string(),
                    seconds: limit.as_secs(),
                    log: self.serial.path().display().to_string(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the guest powers off (Ok), or fails on: the hard timeout, the
    /// inactivity watchdog, cancel (`is_cancelled` is asked about 4 times a second), or
    /// qemu stopping by itself with an error. On failure, before killing the guest, takes a
    /// screenshot; when `keep_files_in` is given (an image's files directory) copies the
    /// serial log there as `console.log` and writes the screenshot there as
    /// `screenshot.png`, and the error names them. A cancel keeps nothing: the build is
    /// being thrown away.
    ///
    /// The watchdog's clock starts with this call (a caller that first waits for a boot
    /// message does not spend the idle allowance on the boot), the hard timeout's with
    /// [`Guest::start`].
    pub fn wait_for_poweroff(
        &mut self,
        is_cancelled: &dyn Fn() -> bool,
        keep_files_in: Option<&Path>,
    ) -> Result<RunReport, GuestError> {
        let mut last_change = Instant::now();
        let mut failing_since: Option<Instant> = None;
        loop {
            if let Some(stop) = self.poll_stopped()? {
                if stop.clean {
                    let report = self.report();
                    self.kill();
                    return Ok(report);
                }
                let files = self.keep_files(keep_files_in);
                self.kill();
                return Err(GuestError::Crashed { detail: stop.detail, files });
            }
            if is_cancelled() {
                self.kill();
                return Err(GuestError::Cancelled);
            }
            match self.runner.activity() {
                Ok(a) => {
                    failing_since = None;
                    if a.disk_requests != self.last.disk_requests || a.net_bytes != self.last.net_bytes {
                        last_change = Instant::now();
                    }
                    self.last = a;
                }
                // The guest may have stopped between the two questions (the next round
                // says so), or a loaded host answered late once. Only a runner that keeps
                // failing fails the wait.
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= MONITOR_GRACE && self.poll_stopped()?.is_none() {
                        let files = self.keep_files(keep_files_in);
                        self.kill();
                        return Err(GuestError::Monitor { detail: e.to_string(), files });
                    }
                }
            }
            if self.started.elapsed() >= self.timeout {
                let files = self.keep_files(keep_files_in);
                self.kill();
                return Err(GuestError::Hung { seconds: self.timeout.as_secs(), files });
            }
            if let Some(idle) = self.inactivity {
                if last_change.elapsed() >= idle {
                    let files = self.keep_files(keep_files_in);
                    self.kill();
                    return Err(GuestError::Inactive { seconds: idle.as_secs(), files });
                }
            }
            std::thread::sleep(POLL);
        }
    }

    fn report(&self) -> RunReport {
        RunReport {
            elapsed: self.started.elapsed(),
            disk_bytes_written: self.last.disk_bytes_written,
            net_bytes: self.last.net_bytes.unwrap_or(0),
        }
    }

    fn poll_stopped(&mut self) -> Result<Option<Stop>, GuestError> {
        if self.stop.is_none() {
            if let Some(s) = self.runner.poll_stopped()? {
                // The counters' last values before the end (a guest writes up to its power-off).
                if let Ok(a) = self.runner.activity() {
                    self.last = a;
                }
                self.stop = Some(s);
            }
        }
        Ok(self.stop.clone())
    }

    /// Keeps the console log and a screenshot (when qemu can still take one); returns the
    /// words that name them for an error message. Never fails: a failed keep only makes
    /// the list shorter.
    fn keep_files(&mut self, keep_in: Option<&Path>) -> String {
        let dir = keep_in.unwrap_or(&self.run_dir).to_path_buf();
        let mut kept = Vec::new();
        let console = dir.join(CONSOLE_FILE);
        if std::fs::copy(self.serial.path(), &console).is_ok() {
            kept.push(console);
        }
        let png = dir.join(SCREENSHOT_FILE);
        if self.runner.screenshot(&png).is_ok() {
            kept.push(png);
        }
        if kept.is_empty() {
            return format!("serial log {}", self.serial.path().display());
        }
        let names: Vec<String> = if keep_in.is_some() {
            kept.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect()
        } else {
            kept.iter().map(|p| p.display().to_string()).collect()
        };
        let list = names.join(" and ");
        match (keep_in.is_some(), kept.len()) {
            (true, 1) => format!("see file {list} of this image"),
            (true, _) => format!("see files {list} of this image"),
            (false, _) => format!("see {list}"),
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.runner.kill();
    }
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest").field("name", &self.name).field("pid", &self.pid()).finish()
    }
}
