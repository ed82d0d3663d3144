//! The guest engine of the OS plugins: runs a qemu guest (an installer, or a built image
//! for a boot test), watches it the way Oz did, and always cleans up.
//!
//! - [`GuestConfig`] says what the guest is: disks, a CD-ROM, how it boots (disk, CD-ROM
//!   or a kernel and initrd), user-mode networking, memory, CPUs, its run directory, its
//!   hard timeout and its inactivity watchdog. [`GuestSettings`] reads the operator's
//!   `accelerator`, `libvirt_uri` and `timeout` from a plugin's settings.
//! - [`Guest::start`] runs it through libvirt when a URI is configured, else qemu
//!   directly with QMP on a unix socket in the run directory.
//! - [`Guest::wait_for_poweroff`] is the install watch: success when the guest powers
//!   off; failure on the hard timeout, on inactivity (no disk request and no network
//!   traffic for N seconds), on cancel, or when qemu stops with an error. A failed
//!   guest's serial console and a screenshot are kept as files of the image and named in
//!   the one-line error. [`Guest::wait_for_serial`] waits for a line on the console.
//!
//! The accelerator is a setting ([`Accel`]), TCG by default, because KVM that looks
//! usable may not run guests at all (see the project's platform notes). Every wait is
//! bounded; the qemu process or libvirt domain is destroyed on every way out ([`Guest`]'s
//! `Drop`, and `PR_SET_PDEATHSIG` when the process that started qemu dies); every
//! socket and scratch file lives in the caller's run directory, so concurrent guests do
//! not collide and nothing is left behind.

pub mod accel;
pub mod config;
pub mod guest;
pub mod libvirt;
pub mod pcap;
pub mod qemu;
pub mod qmp;
pub mod runner;
pub mod screenshot;
pub mod serial;
pub mod settings;

pub use accel::Accel;
pub use config::{Boot, Disk, DiskBus, GuestConfig, Network};
pub use guest::{Guest, RunReport, CONSOLE_FILE, SCREENSHOT_FILE};
pub use settings::GuestSettings;

/// Why a guest could not be run or did not do what was waited for. Each message is one
/// line for the image's status; kept files are named as the user can fetch them.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("{0} is not installed (Debian package qemu-system-x86; run scripts/setup.sh)")]
    MissingQemu(String),

    #[error("cannot start qemu: {0}")]
    Spawn(#[source] std::io::Error),

    #[error("unknown accelerator '{0}' (use kvm or tcg)")]
    UnknownAccel(String),

    #[error("the guest stopped ({status}) before printing '{awaited}'; serial log {log}")]
    ExitedEarly { status: String, awaited: String, log: String },

    #[error("the guest did not print '{awaited}' within {seconds} s; serial log {log}")]
    TimedOut { awaited: String, seconds: u64, log: String },

    #[error("the install did not finish within {seconds} s and was stopped; {files}")]
    Hung { seconds: u64, files: String },

    #[error("the install showed no disk or network activity for {seconds} s and was stopped; {files}")]
    Inactive { seconds: u64, files: String },

    #[error("the guest was stopped because the build was cancelled")]
    Cancelled,

    #[error("the guest failed: {detail}{}", if .files.is_empty() { String::new() } else { format!("; {}", .files) })]
    Crashed { detail: String, files: String },

    #[error("cannot watch the guest ({detail}) so it was stopped; {files}")]
    Monitor { detail: String, files: String },

    #[error("QMP: {0}")]
    Qmp(String),

    #[error("libvirt: {0}")]
    Libvirt(String),

    #[error("screenshot: {0}")]
    Screenshot(String),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Config(String),
}
