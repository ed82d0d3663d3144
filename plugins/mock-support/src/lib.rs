//! What the test plugins MockOS and MockCloud share: parameters that steer an operation,
//! so the host's failure paths and concurrency can be tested without real OS or cloud work.
//!
//! - `mock_fail_at`: an operation name: that operation fails with a one-line error.
//! - `mock_panic_at`: that operation panics.
//! - `mock_crash_at`: that operation crashes its process (`mock_crash_signal`: `segv`,
//!   the default, or `abort`).
//! - `mock_sleep_seconds`: each operation takes this long, reporting progress and
//!   stopping early when the build is cancelled.
//! - `mock_progress_steps`: how many progress reports an operation makes (default 4).
//! - `mock_keep_file`: a file name: every operation writes `<op> of <plugin>` into that
//!   file of the host's files directory first (a file kept with the image, as a real
//!   plugin keeps a console log), so it is there even when the operation then fails.

use std::time::{Duration, Instant};

use imagefactory_plugin_api::prelude::*;

extern "C" {
    fn raise(sig: i32) -> i32;
    fn signal(sig: i32, handler: usize) -> usize;
}

/// `SIG_DFL`: the default action (for SIGSEGV, end the process).
const SIG_DFL: usize = 0;

const SIGSEGV: i32 = 11;

/// Applies the steering parameters to operation `op` of plugin `who`.
pub fn steer(host: &Host, parameters: &Parameters, who: &str, op: &str) -> Result<(), PluginError> {
    let is = |key: &str| parameters.get(key).and_then(|v| v.as_str()) == Some(op);
    if let Some(name) = parameters.get("mock_keep_file").and_then(|v| v.as_str()) {
        std::fs::write(host.files_dir().join(name), format!("{op} of {who}\n"))
            .map_err(|e| PluginError::with_source(format!("cannot write the kept file {name}"), &e))?;
    }
    if is("mock_crash_at") {
        host.info(&format!("{who} crashing on purpose in {op}"));
        if parameters.get("mock_crash_signal").and_then(|v| v.as_str()) == Some("abort") {
            std::process::abort();
        }
        // SAFETY: deliberately crashing to test that a crashing plugin fails only its own
        // build. Rust's runtime handles SIGSEGV (to report stack overflows) and would
        // ignore a raised one, so the default action is restored first. Neither call has
        // memory-safety preconditions.
        unsafe {
            signal(SIGSEGV, SIG_DFL);
            raise(SIGSEGV);
        }
    }
    if is("mock_panic_at") {
        panic!("{who} was told to panic in {op}");
    }
    let steps = parameters.get("mock_progress_steps").and_then(|v| v.as_u64()).unwrap_or(4).clamp(1, 100);
    let total = parameters.get("mock_sleep_seconds").and_then(|v| v.as_f64()).unwrap_or(0.0).max(0.0);
    let started = Instant::now();
    for step in 1..=steps {
        host.check_cancelled()?;
        host.activity(&format!("{who} {op}: step {step} of {steps}"));
        let until = Duration::from_secs_f64(total * step as f64 / steps as f64);
        while started.elapsed() < until {
            host.check_cancelled()?;
            std::thread::sleep(Duration::from_millis(20).min(until.saturating_sub(started.elapsed())));
        }
        host.percent((step * 100 / steps) as u8);
    }
    if is("mock_fail_at") {
        return Err(PluginError::new(format!("{who} was told to fail in {op}")));
    }
    Ok(())
}
