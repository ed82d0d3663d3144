//! Where a cloud plugin's work reports to: the host during a build, stderr in a benchmark.
//!
//! The push and conversion code takes a `&dyn Report` instead of the host handle, so the
//! benchmarks (and any other caller without a host) run exactly the code a build runs.

use imagefactory_plugin_api::sdk::Host;

/// This process's peak resident memory in KiB (Linux `VmHWM`): a push's log line shows
/// it, so "uploads stream in constant memory" can be read off any build's log.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `"; worker peak RSS N MiB"` for the end of a push's log line, or nothing when unknown.
pub fn peak_rss_note() -> String {
    peak_rss_kib().map_or(String::new(), |k| format!("; worker peak RSS {:.1} MiB", k as f64 / 1024.0))
}

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
