//! One qemu guest: its command line, its process, and the bounded waits on it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::accel::Accel;
use crate::serial::SerialLog;
use crate::GuestError;

/// The qemu binary for x86_64 guests.
pub const QEMU: &str = "qemu-system-x86_64";

/// How often a running guest is checked.
const POLL: Duration = Duration::from_millis(250);

/// How the boot disk is attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiskBus {
    /// virtio-blk: fastest, needs virtio drivers in the guest (every current Linux has them).
    #[default]
    Virtio,
    /// IDE: for guests without virtio drivers.
    Ide,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// The boot disk image.
    pub disk: PathBuf,
    /// qemu's name for its format: "raw" or "qcow2".
    pub disk_format: String,
    pub disk_bus: DiskBus,
    /// Discard the guest's writes (qemu's `snapshot=on`): boot-testing an image must not
    /// change it.
    pub snapshot: bool,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Where qemu writes the first serial port.
    pub serial_log: PathBuf,
    /// The hard limit on the guest's whole life: no wait goes past it.
    pub timeout: Duration,
}

impl GuestConfig {
    /// A guest booting `disk` (raw, virtio, snapshot) under `accel`, 1 GiB, 1 CPU.
    pub fn boot_disk(
        disk: impl Into<PathBuf>,
        serial_log: impl Into<PathBuf>,
        accel: Accel,
        timeout: Duration,
    ) -> Self {
        GuestConfig {
            disk: disk.into(),
            disk_format: "raw".into(),
            disk_bus: DiskBus::Virtio,
            snapshot: true,
            accel,
            memory_mib: 1024,
            cpus: 1,
            serial_log: serial_log.into(),
            timeout,
        }
    }

    /// qemu's arguments. No default devices and no display: the guest sees exactly the
    /// disk and the serial port; `-no-reboot` makes a guest reboot end qemu, so "the
    /// guest stopped" is one event whether it powered off or rebooted.
    pub fn args(&self) -> Result<Vec<String>, GuestError> {
        let disk = path_arg(&self.disk)?;
        let serial = path_arg(&self.serial_log)?;
        let mut args: Vec<String> = vec![
            "-machine".into(),
            format!("q35,accel={}", self.accel),
            "-m".into(),
            self.memory_mib.to_string(),
            "-smp".into(),
            self.cpus.to_string(),
            "-nodefaults".into(),
            "-no-reboot".into(),
            "-display".into(),
            "none".into(),
            "-serial".into(),
            format!("file:{serial}"),
        ];
        if let Some(cpu) = self.accel.cpu() {
            args.push("-cpu".into());
            args.push(cpu.into());
        }
        let bus = match self.disk_bus {
            DiskBus::Virtio => "virtio",
            DiskBus::Ide => "ide",
        };
        let snapshot = if self.snapshot { ",snapshot=on" } else { "" };
        args.push("-drive".into());
        args.push(format!("file={disk},format={},if={bus}{snapshot}", self.disk_format));
        Ok(args)
    }
}

/// A path as a qemu option value: commas are doubled (qemu's escape), and paths that are
/// not UTF-8 are refused rather than mangled.
fn path_arg(p: &Path) -> Result<String, GuestError> {
    let s = p.to_str().ok_or_else(|| GuestError::Config(format!("{} is not a UTF-8 path", p.display())))?;
    Ok(s.replace(',', ",,"))
}

/// A running guest. Dropping it kills qemu and reaps it.
#[derive(Debug)]
pub struct Guest {
    child: Child,
    serial: SerialLog,
    started: Instant,
    timeout: Duration,
    status: Option<ExitStatus>,
}

impl Guest {
    /// Starts qemu. Fails at once if qemu is missing.
    pub fn start(config: &GuestConfig) -> Result<Guest, GuestError> {
        if !is_installed(QEMU) {
            return Err(GuestError::MissingQemu(QEMU.into()));
        }
        let args = config.args()?;
        // A stale log from an earlier run would be read as this guest's output.
        match std::fs::remove_file(&config.serial_log) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(GuestError::Io { what: format!("cannot remove {}", config.serial_log.display()), source })
            }
        }
        let mut cmd = Command::new(QEMU);
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // SAFETY: runs in the forked child before exec and only calls prctl, which is
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(GuestError::Spawn)?;
        Ok(Guest {
            child,
            serial: SerialLog::new(&config.serial_log),
            started: Instant::now(),
            timeout: config.timeout,
            status: None,
        })
    }

    /// qemu's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The serial console log.
    pub fn serial_log(&self) -> &Path {
        self.serial.path()
    }

    /// Time since qemu started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
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
            if let Some(status) = self.try_status()? {
                // One last read: qemu may have written the needle just before it stopped.
                if self.serial.poll(needle)? {
                    return Ok(self.started.elapsed());
                }
                return Err(GuestError::ExitedEarly {
                    status: describe(status),
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

    /// Waits for the guest to stop by itself (power off or reboot), up to its hard
    /// timeout, after which it is killed.
    pub fn wait_for_stop(&mut self) -> Result<ExitStatus, GuestError> {
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if self.started.elapsed() >= self.timeout {
                self.kill();
                return Err(GuestError::Hung {
                    seconds: self.timeout.as_secs(),
                    log: self.serial.path().display().to_string(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills qemu (if it still runs) and reaps it.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    fn try_status(&mut self) -> Result<Option<ExitStatus>, GuestError> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .map_err(|source| GuestError::Io { what: "cannot wait for qemu".into(), source })?;
        }
        Ok(self.status)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("qemu exit status {c}"),
        (None, Some(s)) => format!("qemu killed by signal {s}"),
        _ => "qemu ended".into(),
    }
}

fn is_installed(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .any(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let c = GuestConfig::boot_disk("/w/a,b.raw", "/w/serial.log", Accel::Tcg, Duration::from_secs(60));
        let args = c.args().unwrap().join(" ");
        assert_eq!(
            args,
            "-machine q35,accel=tcg -m 1024 -smp 1 -nodefaults -no-reboot -display none \
             -serial file:/w/serial.log -drive file=/w/a,,b.raw,format=raw,if=virtio,snapshot=on"
        );
        let mut k = c.clone();
        k.accel = Accel::Kvm;
        k.disk_bus = DiskBus::Ide;
        k.snapshot = false;
        let args = k.args().unwrap().join(" ");
        assert!(args.contains("accel=kvm") && args.contains("-cpu host"), "{args}");
        assert!(args.ends_with("if=ide"), "{args}");
    }

    fn alive(pid: u32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    /// A real qemu with a blank disk: the firmware finds nothing to boot and the serial
    /// console stays silent, so the wait must end at its bound and qemu must be gone.
    #[test]
    fn a_silent_guest_times_out_and_is_killed() {
        assert!(is_installed(QEMU), "{QEMU} is not installed (Debian package qemu-system-x86; run scripts/setup.sh)");
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("blank.raw");
        std::fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
        let cfg = GuestConfig::boot_disk(&disk, dir.path().join("serial.log"), Accel::Tcg, Duration::from_secs(30));
        let mut g = Guest::start(&cfg).unwrap();
        let pid = g.pid();
        let t = Instant::now();
        let err = g.wait_for_serial("NEVER-PRINTED", Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, GuestError::TimedOut { seconds: 2, .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(!alive(pid), "qemu {pid} outlived the timeout");
    }

    #[test]
    fn dropping_a_guest_kills_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("blank.raw");
        std::fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
        let cfg = GuestConfig::boot_disk(&disk, dir.path().join("serial.log"), Accel::Tcg, Duration::from_secs(30));
        let g = Guest::start(&cfg).unwrap();
        let pid = g.pid();
        std::thread::sleep(Duration::from_millis(300));
        assert!(alive(pid));
        drop(g);
        assert!(!alive(pid), "qemu {pid} outlived its Guest");
    }

    #[test]
    fn a_guest_that_cannot_start_exits_early() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GuestConfig::boot_disk(
            dir.path().join("missing.raw"),
            dir.path().join("serial.log"),
            Accel::Tcg,
            Duration::from_secs(30),
        );
        let mut g = Guest::start(&cfg).unwrap();
        let err = g.wait_for_serial("x", Duration::from_secs(20)).unwrap_err();
        assert!(matches!(err, GuestError::ExitedEarly { .. }), "{err}");
    }
}
