//! What a guest is made of: disks, a CD-ROM, how it boots, its network, its limits.
//!
//! One description for both ways of running it (qemu directly or through libvirt), so
//! an OS plugin says what it needs once and the operator's settings pick the runner.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::accel::Accel;

/// How a disk is attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiskBus {
    /// virtio-blk: fastest, needs virtio drivers in the guest (every current Linux has them).
    #[default]
    Virtio,
    /// IDE (the q35 machine's AHCI controller): for guests without virtio drivers.
    Ide,
}

/// One disk of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    /// qemu's name for its format: "raw" or "qcow2".
    pub format: String,
    pub bus: DiskBus,
    pub read_only: bool,
    /// Discard the guest's writes (qemu's `snapshot=on`): boot-testing an image must not
    /// change it.
    pub snapshot: bool,
}

impl Disk {
    /// A writable raw disk on virtio.
    pub fn raw(path: impl Into<PathBuf>) -> Disk {
        Disk { path: path.into(), format: "raw".into(), bus: DiskBus::Virtio, read_only: false, snapshot: false }
    }

    /// A writable qcow2 disk on virtio.
    pub fn qcow2(path: impl Into<PathBuf>) -> Disk {
        Disk { format: "qcow2".into(), ..Disk::raw(path) }
    }
}

/// What the guest boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// The first disk.
    Disk,
    /// The CD-ROM ([`GuestConfig::cdrom`]).
    Cdrom,
    /// A kernel and initrd handed to the guest directly (qemu `-kernel`; libvirt `<kernel>`).
    Kernel { kernel: PathBuf, initrd: Option<PathBuf>, append: String },
}

/// The guest's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// No network card at all.
    #[default]
    None,
    /// One virtio network card on qemu's user-mode network (slirp): the guest reaches
    /// what the host reaches (a package mirror) and nothing reaches the guest; no
    /// bridge, no tap device, no root needed.
    User,
}

/// Everything needed to run one guest.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// Shown in log lines and in qemu's `-name`, so a guest's process can be told apart;
    /// under libvirt it is the domain's name, so it must be unique among running guests
    /// (plugins use the image id). libvirt refuses a second domain of the same name.
    pub name: String,
    /// In order: vda, vdb, ... (or the IDE ports in order).
    pub disks: Vec<Disk>,
    /// An ISO attached as a CD-ROM.
    pub cdrom: Option<PathBuf>,
    pub boot: Boot,
    pub network: Network,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Caller-owned directory: the engine keeps its control socket, serial log and
    /// scratch files inside it, so two guests in two directories never share a name.
    pub run_dir: PathBuf,
    /// The hard limit on the guest's whole life: no wait goes past it.
    pub timeout: Duration,
    /// The watchdog: no disk request and no network traffic for this long is a failure.
    pub inactivity: Option<Duration>,
    /// Run through libvirt at this URI (e.g. `qemu:///system`) instead of qemu directly.
    pub libvirt_uri: Option<String>,
}

impl GuestConfig {
    /// A guest with sane defaults: TCG, 1 GiB, 1 CPU, no disks, no network, a one-hour
    /// hard timeout, no watchdog, qemu run directly.
    pub fn new(name: impl Into<String>, run_dir: impl Into<PathBuf>, boot: Boot) -> GuestConfig {
        GuestConfig {
            name: name.into(),
            disks: Vec::new(),
            cdrom: None,
            boot,
            network: Network::None,
            accel: Accel::Tcg,
            memory_mib: 1024,
            cpus: 1,
            run_dir: run_dir.into(),
            timeout: Duration::from_secs(3600),
            inactivity: None,
            libvirt_uri: None,
        }
    }

    /// A guest booting `disk` (raw, virtio, snapshot: the image is not changed) with its
    /// files in `run_dir`.
    pub fn boot_disk(
        name: impl Into<String>,
        disk: impl Into<PathBuf>,
        run_dir: impl Into<PathBuf>,
        accel: Accel,
        timeout: Duration,
    ) -> GuestConfig {
        let mut c = GuestConfig::new(name, run_dir, Boot::Disk);
        c.disks.push(Disk { snapshot: true, ..Disk::raw(disk) });
        c.accel = accel;
        c.timeout = timeout;
        c
    }

    /// Where the serial console is written.
    pub fn serial_log(&self) -> PathBuf {
        self.run_dir.join(SERIAL_LOG)
    }
}

/// File names inside the run directory.
pub(crate) const SERIAL_LOG: &str = "serial.log";
pub(crate) const QMP_SOCKET: &str = "qmp.sock";
pub(crate) const QEMU_LOG: &str = "qemu.log";
pub(crate) const NET_PCAP: &str = "net.pcap";
pub(crate) const SCREEN_PPM: &str = "screen.ppm";

/// A path as a qemu option value: commas are doubled (qemu's escape), and paths that are
/// not UTF-8 are refused rather than mangled.
pub(crate) fn path_arg(p: &Path) -> Result<String, crate::GuestError> {
    let s = p.to_str().ok_or_else(|| crate::GuestError::Config(format!("{} is not a UTF-8 path", p.display())))?;
    Ok(s.replace(',', ",,"))
}
