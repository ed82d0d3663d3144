//! What the engine needs from whatever runs the guest (qemu directly, or libvirt), so
//! the watching in [`crate::guest`] is written once.

use std::path::Path;

use crate::GuestError;

/// How a guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The guest powered itself off (or rebooted, which qemu's `-action reboot=shutdown` / libvirt's `on_reboot=destroy`
    /// turn into a stop); false when qemu failed or was killed.
    pub clean: bool,
    /// What happened, in a few words ("qemu exit status 1: could not open disk").
    pub detail: String,
}

/// The guest's activity counters, monotonic while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Read and write requests over every disk (reads count: an install from a CD-ROM
    /// reads for minutes between writes, as Oz's watchdog knew).
    pub disk_requests: u64,
    pub disk_bytes_written: u64,
    /// Received plus sent bytes; `None` when the runner cannot count them.
    pub net_bytes: Option<u64>,
}

pub trait Runner: Send {
    /// `Some` once the guest is gone; must be cheap (called several times a second).
    fn poll_stopped(&mut self) -> Result<Option<Stop>, GuestError>;
    fn activity(&mut self) -> Result<Activity, GuestError>;
    /// Writes the current screen as a PNG.
    fn screenshot(&mut self, png: &Path) -> Result<(), GuestError>;
    /// Stops the guest at once and releases what it holds (process, domain, socket,
    /// scratch files). Idempotent.
    fn kill(&mut self);
    /// The qemu process id, when the engine started it itself.
    fn pid(&self) -> Option<u32>;
}
