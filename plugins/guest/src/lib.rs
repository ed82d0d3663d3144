//! The guest engine of the OS plugins: runs a guest under qemu directly and watches its
//! serial console.
//!
//! This is the first stage of the engine issue 4 describes: direct qemu only (no
//! libvirt, no QMP yet), enough to boot a built image and wait for what it prints. What
//! it guarantees already is what the later stages build on:
//! - the accelerator is a setting ([`Accel`]), TCG by default, because KVM that looks
//!   usable may not run guests at all (see the project's platform notes);
//! - every wait is bounded by the guest's hard timeout;
//! - the qemu process is killed and reaped on every way out: [`Guest`]'s `Drop` kills
//!   it, and `PR_SET_PDEATHSIG` kills it if the process that started it dies.

pub mod accel;
pub mod qemu;
pub mod serial;

pub use accel::Accel;
pub use qemu::{DiskBus, Guest, GuestConfig};

/// Why a guest could not be run or did not do what was waited for.
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

    #[error("the guest did not stop within its timeout of {seconds} s and was killed; serial log {log}")]
    Hung { seconds: u64, log: String },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Config(String),
}
