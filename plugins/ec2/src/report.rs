//! How the upload code talks back to whoever runs it (the host, or the benchmark).

/// Progress, log lines and cancellation for a long AWS operation.
///
/// Called only from the thread that blocks on the operation, never from the runtime's
/// workers, so an implementation need not be `Sync`.
pub trait Report {
    fn activity(&self, line: &str);
    fn info(&self, line: &str);
    fn warn(&self, line: &str);
    /// `done` of `total` units of the current step are finished.
    fn progress(&self, done: u64, total: u64);
    fn cancelled(&self) -> bool;
}

/// A [`Report`] that says nothing and is never cancelled (benchmarks, tools).
pub struct Quiet;

impl Report for Quiet {
    fn activity(&self, _: &str) {}
    fn info(&self, _: &str) {}
    fn warn(&self, _: &str) {}
    fn progress(&self, _: u64, _: u64) {}
    fn cancelled(&self) -> bool {
        false
    }
}
