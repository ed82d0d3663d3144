//! Running a guest with qemu directly: its command line, its process, QMP for activity
//! and screenshots.
//!
//! Everything the process uses lives in the guest's run directory (control socket,
//! serial log, qemu's own messages, the packet capture, snapshot overlays through
//! `TMPDIR`), so concurrent guests never collide, and no TCP port is used at all.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::config::{path_arg, Boot, DiskBus, GuestConfig, Network, NET_PCAP, QEMU_LOG, QMP_SOCKET, SCREEN_PPM};
use crate::pcap::{PcapCounter, SNAPLEN};
use crate::qmp::Qmp;
use crate::runner::{Activity, Runner, Stop};
use crate::GuestError;

/// The qemu binary for x86_64 guests.
pub const QEMU: &str = "qemu-system-x86_64";

/// How long qemu may take to open its QMP socket.
const QMP_CONNECT: Duration = Duration::from_secs(20);

/// The longest unix socket path the kernel accepts (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// qemu's arguments for `config`, with the QMP socket at `qmp_socket`. No default
/// devices: the guest sees exactly its disks, CD-ROM, network card, a VGA card (so a
/// screendump shows the console) and the serial port. A guest reboot is turned into a
/// power-off, and a power-off pauses qemu instead of ending it, so the engine still reads
/// the final disk counters (and can take a screenshot) before it ends qemu itself.
pub fn args(config: &GuestConfig, qmp_socket: &Path) -> Result<Vec<String>, GuestError> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    // qemu's option syntax: a comma inside a value is written twice.
    push(&["-name", &config.name.replace(',', ",,")]);
    push(&["-machine", &format!("q35,accel={}", config.accel)]);
    push(&["-m", &config.memory_mib.to_string(), "-smp", &config.cpus.to_string()]);
    push(&["-nodefaults", "-no-user-config", "-display", "none", "-vga", "std"]);
    push(&["-action", "reboot=shutdown,shutdown=pause"]);
    push(&["-serial", &format!("file:{}", path_arg(&config.serial_log())?)]);
    push(&["-qmp", &format!("unix:{},server=on,wait=off", path_arg(qmp_socket)?)]);
    if let Some(cpu) = config.accel.cpu() {
        push(&["-cpu", cpu]);
    }
    // The q35 machine's AHCI controller has six ports (ide.0 .. ide.5).
    let mut ahci_port = 0;
    for (i, d) in config.disks.iter().enumerate() {
        if d.format.is_empty() || !d.format.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(GuestError::Config(format!("'{}' is not a disk format", d.format)));
        }
        let snapshot = if d.snapshot { ",snapshot=on" } else { "" };
        let ro = if d.read_only { "on" } else { "off" };
        push(&[
            "-drive",
            &format!("file={},format={},if=none,id=disk{i},readonly={ro}{snapshot}", path_arg(&d.path)?, d.format),
        ]);
        let boot = if i == 0 && config.boot == Boot::Disk { ",bootindex=1" } else { "" };
        let dev = match d.bus {
            DiskBus::Virtio => format!("virtio-blk-pci,drive=disk{i}{boot}"),
            DiskBus::Ide => {
                ahci_port += 1;
                format!("ide-hd,drive=disk{i},bus=ide.{}{boot}", ahci_port - 1)
            }
        };
        push(&["-device", &dev]);
    }
    if let Some(iso) = &config.cdrom {
        push(&["-drive", &format!("file={},format=raw,if=none,id=cd0,media=cdrom,readonly=on", path_arg(iso)?)]);
        let boot = if config.boot == Boot::Cdrom { ",bootindex=1" } else { "" };
        push(&["-device", &format!("ide-cd,drive=cd0,bus=ide.{ahci_port}{boot}")]);
    } else if config.boot == Boot::Cdrom {
        return Err(GuestError::Config("the guest boots from its CD-ROM but has none".into()));
    }
    if let Boot::Kernel { kernel, initrd, append } = &config.boot {
        push(&["-kernel", &path_arg(kernel)?]);
        if let Some(initrd) = initrd {
            push(&["-initrd", &path_arg(initrd)?]);
        }
        push(&["-append", append]);
    }
    if config.network == Network::User {
        push(&["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]);
        push(&[
            "-object",
            &format!("filter-dump,id=f0,netdev=n0,file={},maxlen={SNAPLEN}", path_arg(&config.run_dir.join(NET_PCAP))?),
        ]);
    }
    Ok(a)
}

/// A qemu process started by the engine.
pub struct QemuRunner {
    child: Child,
    status: Option<ExitStatus>,
    qmp: Option<Qmp>,
    pcap: Option<PcapCounter>,
    run_dir: PathBuf,
    qmp_socket: PathBuf,
    /// A short private directory for the socket when the run directory's path is too
    /// long for a unix socket; removed on kill.
    socket_dir: Option<tempfile::TempDir>,
}

impl QemuRunner {
    pub fn start(config: &GuestConfig) -> Result<QemuRunner, GuestError> {
        if !is_installed(QEMU) {
            return Err(GuestError::MissingQemu(QEMU.into()));
        }
        let (qmp_socket, socket_dir) = socket_path(&config.run_dir)?;
        let args = args(config, &qmp_socket)?;
        // Stale files from an earlier run would be read as this guest's.
        for f in [config.serial_log(), config.run_dir.join(NET_PCAP), qmp_socket.clone()] {
            remove_if_present(&f)?;
        }
        let log_path = config.run_dir.join(QEMU_LOG);
        let log = std::fs::File::create(&log_path)
            .map_err(|source| GuestError::Io { what: format!("cannot create {}", log_path.display()), source })?;
        let mut cmd = Command::new(QEMU);
        cmd.args(&args)
            .env("TMPDIR", &config.run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        // SAFETY: runs in the forked child before exec and only calls prctl, which is
        // async-signal-safe. The parent dying (a worker killed on cancel) kills qemu.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(GuestError::Spawn)?;
        let mut r = QemuRunner {
            child,
            status: None,
            qmp: None,
            pcap: (config.network == Network::User).then(|| PcapCounter::new(config.run_dir.join(NET_PCAP))),
            run_dir: config.run_dir.clone(),
            qmp_socket,
            socket_dir,
        };
        let socket = r.qmp_socket.clone();
        let connected = {
            let child = &mut r.child;
            Qmp::connect(&socket, QMP_CONNECT, &mut || matches!(child.try_wait(), Ok(None)))
        };
        match connected {
            Ok(q) => r.qmp = Some(q),
            Err(e) => {
                // qemu refused its command line or a disk: its own message says why. It
                // may close the socket a moment before it exits, so give it that moment.
                let deadline = std::time::Instant::now() + Duration::from_secs(3);
                while std::time::Instant::now() < deadline {
                    if let Some(stop) = r.poll_stopped()? {
                        r.kill();
                        return Err(GuestError::Crashed { detail: stop.detail, files: String::new() });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                r.kill();
                return Err(e);
            }
        }
        Ok(r)
    }

    /// The last line qemu wrote to stderr (its reason for stopping, usually).
    fn last_message(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.run_dir.join(QEMU_LOG)).ok()?;
        text.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string())
    }
}

impl Runner for QemuRunner {
    fn poll_stopped(&mut self) -> Result<Option<Stop>, GuestError> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .map_err(|source| GuestError::Io { what: "cannot wait for qemu".into(), source })?;
        }
        if let Some(s) = self.status {
            let mut detail = describe(s);
            let clean = s.success();
            if !clean {
                if let Some(m) = self.last_message() {
                    detail = format!("{detail}: {m}");
                }
            }
            return Ok(Some(Stop { clean, detail }));
        }
        // Still running: has the guest powered off (qemu paused on it), or did qemu stop
        // it for an error?
        let Some(qmp) = self.qmp.as_mut() else { return Ok(None) };
        let status = match qmp.query_status() {
            Ok(s) => s,
            // qemu may be exiting right now; the next poll sees its exit status.
            Err(_) => return Ok(None),
        };
        Ok(match status.as_str() {
            "shutdown" => Some(Stop { clean: true, detail: "the guest powered off".into() }),
            "internal-error" | "guest-panicked" => {
                Some(Stop { clean: false, detail: format!("qemu reports the guest state '{status}'") })
            }
            "io-error" => Some(Stop {
                clean: false,
                detail: "qemu stopped the guest on a disk I/O error (is the host's disk full?)".into(),
            }),
            _ => None,
        })
    }

    fn activity(&mut self) -> Result<Activity, GuestError> {
        let qmp = self.qmp.as_mut().ok_or_else(|| GuestError::Qmp("not connected".into()))?;
        let b = qmp.block_stats()?;
        let net_bytes = match self.pcap.as_mut() {
            Some(p) => Some(p.poll()?),
            None => None,
        };
        Ok(Activity { disk_requests: b.rd_operations + b.wr_operations, disk_bytes_written: b.wr_bytes, net_bytes })
    }

    fn screenshot(&mut self, png: &Path) -> Result<(), GuestError> {
        let qmp = self.qmp.as_mut().ok_or_else(|| GuestError::Qmp("not connected".into()))?;
        let ppm = self.run_dir.join(SCREEN_PPM);
        qmp.screendump(&ppm)?;
        let data = std::fs::read(&ppm)
            .map_err(|source| GuestError::Io { what: format!("cannot read {}", ppm.display()), source });
        let _ = std::fs::remove_file(&ppm);
        crate::screenshot::ppm_to_png(&data?, png)
    }

    fn kill(&mut self) {
        self.qmp = None;
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        for f in [&self.qmp_socket, &self.run_dir.join(NET_PCAP), &self.run_dir.join(SCREEN_PPM)] {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_file(self.run_dir.join(QEMU_LOG));
        self.socket_dir = None;
    }

    fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }
}

impl Drop for QemuRunner {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `<run_dir>/qmp.sock`, or a socket in a short private directory when that path is too
/// long for a unix socket (deep work directories exist).
fn socket_path(run_dir: &Path) -> Result<(PathBuf, Option<tempfile::TempDir>), GuestError> {
    let p = run_dir.join(QMP_SOCKET);
    if p.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok((p, None));
    }
    let dir = tempfile::Builder::new()
        .prefix("if-qmp-")
        .tempdir()
        .map_err(|source| GuestError::Io { what: "cannot create a directory for the QMP socket".into(), source })?;
    Ok((dir.path().join(QMP_SOCKET), Some(dir)))
}

fn remove_if_present(p: &Path) -> Result<(), GuestError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(GuestError::Io { what: format!("cannot remove {}", p.display()), source }),
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

pub(crate) fn is_installed(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .any(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::Accel;
    use crate::config::Disk;

    #[test]
    fn command_line() {
        let c = GuestConfig::boot_disk("t1", "/w/a,b.raw", "/r", Accel::Tcg, Duration::from_secs(60));
        let args = args(&c, Path::new("/r/qmp.sock")).unwrap().join(" ");
        assert_eq!(
            args,
            "-name t1 -machine q35,accel=tcg -m 1024 -smp 1 -nodefaults -no-user-config -display none \
             -vga std -action reboot=shutdown,shutdown=pause -serial file:/r/serial.log -qmp unix:/r/qmp.sock,server=on,wait=off \
             -drive file=/w/a,,b.raw,format=raw,if=none,id=disk0,readonly=off,snapshot=on \
             -device virtio-blk-pci,drive=disk0,bootindex=1"
        );
        let mut k = GuestConfig::new(
            "t2",
            "/r",
            Boot::Kernel {
                kernel: "/k/vmlinuz".into(),
                initrd: Some("/k/initrd".into()),
                append: "console=ttyS0".into(),
            },
        );
        k.accel = Accel::Kvm;
        k.disks = vec![Disk { bus: DiskBus::Ide, ..Disk::qcow2("/d/a.qcow2") }, Disk::raw("/d/b.raw")];
        k.cdrom = Some("/i/x.iso".into());
        k.network = Network::User;
        let args = super::args(&k, Path::new("/r/qmp.sock")).unwrap().join(" ");
        for part in [
            "accel=kvm",
            "-cpu host",
            "-device ide-hd,drive=disk0,bus=ide.0 ",
            "format=qcow2",
            "-device virtio-blk-pci,drive=disk1 ",
            "-device ide-cd,drive=cd0,bus=ide.1 ",
            "-kernel /k/vmlinuz -initrd /k/initrd -append console=ttyS0",
            "-netdev user,id=n0 -device virtio-net-pci,netdev=n0",
            "filter-dump,id=f0,netdev=n0,file=/r/net.pcap,maxlen=64",
        ] {
            assert!(args.contains(part), "{part} missing from {args}");
        }
        assert!(!args.contains("bootindex"), "{args}");
        k.disks[0].format = "raw,file.locking=off".into();
        assert!(super::args(&k, Path::new("/r/q")).is_err());
        let mut cd = GuestConfig::new("t3", "/r", Boot::Cdrom);
        assert!(super::args(&cd, Path::new("/r/q")).is_err());
        cd.cdrom = Some("/i/x.iso".into());
        assert!(super::args(&cd, Path::new("/r/q")).unwrap().join(" ").contains("bus=ide.0,bootindex=1"));
    }

    #[test]
    fn long_run_dirs_get_a_short_socket() {
        let (p, d) = socket_path(Path::new("/r")).unwrap();
        assert_eq!(p, Path::new("/r/qmp.sock"));
        assert!(d.is_none());
        let long = PathBuf::from(format!("/{}", "x".repeat(120)));
        let (p, d) = socket_path(&long).unwrap();
        assert!(p.as_os_str().len() <= MAX_SOCKET_PATH);
        assert!(d.is_some());
    }
}
