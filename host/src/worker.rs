//! Running one plugin operation in a worker process of its own.
//!
//! A plugin that panics is caught by the SDK; one that segfaults or aborts would take
//! its process down with it. So every operation runs in a child process (the host's own
//! executable, started with the hidden first argument `__worker`) that loads the one
//! plugin it needs and makes one call. The conversation is JSON lines:
//!
//! - host -> worker, stdin: one [`Job`] line, then optionally `cancel`.
//! - worker -> host, stdout: [`Event`] lines: activity, percent, log, then a result or
//!   an error. Anything the plugin prints to stderr goes to the image's build log.
//!
//! Credentials travel inside the job on stdin, never on the command line or in the
//! environment, where `ps` would show them.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr, RString};
use imagefactory_plugin_api::abi::{HostServices, HostServices_TO};
use imagefactory_plugin_api::ops::Operation;
use imagefactory_plugin_api::sdk::{LogLevel, PluginError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The first argument that makes the host's executable a worker.
pub const WORKER_ARG: &str = "__worker";

/// How long a cancelled worker gets to stop by itself before it is killed.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// What the host asks a worker to do.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    pub plugin_path: PathBuf,
    pub body_path: PathBuf,
    pub work_dir: PathBuf,
    pub operation: Operation,
}

/// What a worker tells the host.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Activity(String),
    Percent(u8),
    Log { level: String, line: String },
    Result(Value),
    Error(PluginError),
}

/// How an operation run in a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The plugin returned an error.
    #[error("{0}")]
    Plugin(PluginError),
    #[error("cancelled")]
    Cancelled,
    #[error("the plugin process crashed ({0})")]
    Crashed(String),
    #[error("cannot start the plugin process: {0}")]
    Spawn(io::Error),
}

/// Runs `job` in a worker process and returns the operation's JSON outcome.
///
/// `on_event` sees every activity, percent and log event as it arrives. `cancel` is
/// polled; when it turns true the worker is asked to stop, and killed after a grace period.
pub fn run(exe: &Path, job: &Job, cancel: &AtomicBool, on_event: &mut dyn FnMut(Event)) -> Result<Value, WorkerError> {
    let mut child = Command::new(exe)
        .arg(WORKER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(WorkerError::Spawn)?;
    let outcome = converse(&mut child, job, cancel, on_event);
    // Whatever happened, the child must not outlive the call.
    if outcome.is_err() {
        let _ = child.kill();
    }
    let status = child.wait();
    match outcome {
        Ok(Some(Ok(value))) => Ok(value),
        Ok(Some(Err(e))) => Err(WorkerError::Plugin(e)),
        Ok(None) if cancel.load(Ordering::SeqCst) => Err(WorkerError::Cancelled),
        Ok(None) => Err(WorkerError::Crashed(describe_exit(status))),
        Err(e) => Err(e),
    }
}

fn describe_exit(status: io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (_, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
            (Some(code), _) => format!("exited with status {code} without a result"),
            _ => "ended without a result".to_string(),
        },
        Err(e) => format!("cannot wait for it: {e}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => ", SIGSEGV",
        libc::SIGABRT => ", SIGABRT",
        libc::SIGKILL => ", SIGKILL",
        libc::SIGBUS => ", SIGBUS",
        libc::SIGILL => ", SIGILL",
        libc::SIGTERM => ", SIGTERM",
        _ => "",
    }
}

enum Line {
    Stdout(String),
    Stderr(String),
    StdoutClosed,
}

/// Sends the job, relays events, and returns the final result or error event (`None`
/// when the worker ended without one).
fn converse(
    child: &mut Child,
    job: &Job,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(Event),
) -> Result<Option<Result<Value, PluginError>>, WorkerError> {
    let mut stdin = child.stdin.take().ok_or_else(|| WorkerError::Spawn(io::Error::other("no stdin pipe")))?;
    let stdout = child.stdout.take().ok_or_else(|| WorkerError::Spawn(io::Error::other("no stdout pipe")))?;
    let stderr = child.stderr.take().ok_or_else(|| WorkerError::Spawn(io::Error::other("no stderr pipe")))?;
    let mut line = serde_json::to_string(job).map_err(|e| WorkerError::Spawn(io::Error::other(e)))?;
    line.push('\n');
    // A worker that died at once closes its stdin: that shows up below as a crash.
    let _ = stdin.write_all(line.as_bytes()).and_then(|_| stdin.flush());

    let (tx, rx) = mpsc::channel::<Line>();
    let tx_err = tx.clone();
    let out_reader = std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(Line::Stdout(l)).is_err() {
                break;
            }
        }
        let _ = tx.send(Line::StdoutClosed);
    });
    let err_reader = std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines() {
            let Ok(l) = l else { break };
            if tx_err.send(Line::Stderr(l)).is_err() {
                break;
            }
        }
    });

    let mut result = None;
    let mut cancel_sent: Option<Instant> = None;
    loop {
        if cancel.load(Ordering::SeqCst) {
            match cancel_sent {
                None => {
                    let _ = stdin.write_all(b"cancel\n").and_then(|_| stdin.flush());
                    cancel_sent = Some(Instant::now());
                }
                Some(at) if at.elapsed() > CANCEL_GRACE => {
                    let _ = child.kill();
                }
                Some(_) => {}
            }
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Line::Stdout(l)) => match serde_json::from_str::<Event>(&l) {
                Ok(Event::Result(v)) => result = Some(Ok(v)),
                Ok(Event::Error(e)) => result = Some(Err(e)),
                Ok(ev) => on_event(ev),
                Err(_) => on_event(Event::Log { level: "STDOUT".into(), line: l }),
            },
            Ok(Line::Stderr(l)) => on_event(Event::Log { level: "STDERR".into(), line: l }),
            Ok(Line::StdoutClosed) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(stdin);
    let _ = out_reader.join();
    // Relay what stderr still holds (a panic message printed just before a crash).
    let _ = child.try_wait();
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
        if let Line::Stderr(l) = l {
            on_event(Event::Log { level: "STDERR".into(), line: l });
        }
    }
    let _ = err_reader.join();
    Ok(result)
}

/// The worker side: what `imagefactory __worker` runs. Reads one job from stdin, runs it,
/// and writes events to stdout. Returns the process exit code.
pub fn worker_main() -> i32 {
    let stdin = io::stdin();
    let mut first = String::new();
    if let Err(e) = stdin.lock().read_line(&mut first) {
        eprintln!("worker: cannot read the job: {e}");
        return 2;
    }
    let job: Job = match serde_json::from_str(&first) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("worker: invalid job: {e}");
            return 2;
        }
    };
    let out = Arc::new(Mutex::new(io::stdout()));
    let cancelled = Arc::new(AtomicBool::new(false));
    {
        let cancelled = cancelled.clone();
        std::thread::spawn(move || {
            for l in io::stdin().lock().lines() {
                match l {
                    Ok(l) if l.trim() == "cancel" => cancelled.store(true, Ordering::SeqCst),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            // The host closed our stdin: it is gone (or done with us). A build nobody
            // waits for must not run on, so treat that as a cancel.
            cancelled.store(true, Ordering::SeqCst);
        });
    }
    let event = match run_job(&job, out.clone(), cancelled) {
        Ok(v) => Event::Result(v),
        Err(e) => Event::Error(e),
    };
    emit(&out, &event);
    0
}

fn emit(out: &Mutex<io::Stdout>, event: &Event) {
    if let Ok(mut line) = serde_json::to_string(event) {
        line.push('\n');
        let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(line.as_bytes()).and_then(|_| out.flush());
    }
}

fn run_job(job: &Job, out: Arc<Mutex<io::Stdout>>, cancelled: Arc<AtomicBool>) -> Result<Value, PluginError> {
    let (module, _manifest) = crate::plugins::load_module(&job.plugin_path).map_err(PluginError::new)?;
    let request = serde_json::to_string(&job.operation)
        .map_err(|e| PluginError::new(format!("cannot encode the request: {e}")))?;
    let services = WorkerServices {
        out,
        cancelled,
        body_path: job.body_path.to_string_lossy().into_owned(),
        work_dir: job.work_dir.to_string_lossy().into_owned(),
    };
    let host = HostServices_TO::from_ptr(&services, TD_Opaque);
    match (module.call())(RStr::from(request.as_str()), host) {
        RResult::ROk(json) => serde_json::from_str(json.as_str())
            .map_err(|e| PluginError::new(format!("the plugin returned an unreadable result: {e}"))),
        RResult::RErr(err) => {
            Err(serde_json::from_str::<PluginError>(err.as_str()).unwrap_or_else(|_| PluginError::new(err.as_str())))
        }
    }
}

/// The host services of a worker: everything becomes an event line on stdout.
struct WorkerServices {
    out: Arc<Mutex<io::Stdout>>,
    cancelled: Arc<AtomicBool>,
    body_path: String,
    work_dir: String,
}

impl HostServices for WorkerServices {
    fn report_activity(&self, activity: RStr<'_>) {
        emit(&self.out, &Event::Activity(activity.as_str().to_string()));
    }

    fn report_percent(&self, percent: u8) {
        emit(&self.out, &Event::Percent(percent.min(100)));
    }

    fn log(&self, level: u8, line: RStr<'_>) {
        let level = LogLevel::from_u8(level).as_str().to_string();
        emit(&self.out, &Event::Log { level, line: line.as_str().to_string() });
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn body_path(&self) -> RString {
        self.body_path.as_str().into()
    }

    fn work_dir(&self) -> RString {
        self.work_dir.as_str().into()
    }
}
