//! Where a cloud plugin's work reports to: the host during a build, stderr in a benchmark.
//!
//! The push and conversion code takes a `&dyn Report` instead of the host handle, so the
//! benchmarks (and any other caller without a host) run exactly the code a build runs.

use imagefactory_plugin_api::sdk::Host;

/// Activity, log lines, percent done, and the "was the build cancelled?" question.
pub trait Report {
    fn activity(&self, line: &str);
    fn info(&self, line: &str);
    fn warn(&self, line: &str);
    fn percent(&self, percent: u8);
    fn cancelled(&self) -> bool;
}

impl Report for Host<'_> {
    fn activity(&self, line: &str) {
        Host::activity(self, line)
    }
    fn info(&self, line: &str) {
        Host::info(self, line)
    }
    fn warn(&self, line: &str) {
        Host::warn(self, line)
    }
    fn percent(&self, percent: u8) {
        Host::percent(self, percent)
    }
    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }
}

/// Reports to stderr (benchmarks, tools); never cancelled.
pub struct Stderr {
    /// Print info lines too (activity and warnings are always printed).
    pub verbose: bool,
}

impl Report for Stderr {
    fn activity(&self, line: &str) {
        if self.verbose {
            eprintln!("activity: {line}");
        }
    }
    fn info(&self, line: &str) {
        if self.verbose {
            eprintln!("info: {line}");
        }
    }
    fn warn(&self, line: &str) {
        eprintln!("warn: {line}");
    }
    fn percent(&self, _percent: u8) {}
    fn cancelled(&self) -> bool {
        false
    }
}
