//! Running the host tools an image build needs (mmdebstrap, mkfs, chroot commands...)
//! so that none of them outlives the build.
//!
//! Each tool runs in a process group of its own: a tool like mmdebstrap starts apt and
//! dpkg, which start maintainer scripts, and killing only the first process would leave
//! the rest writing into a directory the host is about to delete. The group is killed on
//! every way out (success, failure, timeout, cancel, panic) by [`Group`]'s `Drop`, and
//! `PR_SET_PDEATHSIG` kills the leader if the worker process itself is killed.
//!
//! Output lines are handed to a [`Watch`] as they come (for the build log) and the last
//! few are kept for the error message of a failed tool.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::DiskError;

/// How many output lines a failed tool's error keeps.
const TAIL_LINES: usize = 20;

/// How often a running tool is checked for exit, cancel and timeout.
const POLL: Duration = Duration::from_millis(200);

/// What a running tool reports to, and asks of, its caller.
pub trait Watch {
    /// One line of the tool's output (stdout unless captured, and stderr).
    fn line(&self, what: &str, line: &str);
    /// Whether the build was cancelled: the tool is then killed.
    fn cancelled(&self) -> bool;
}

/// A [`Watch`] that drops output and is never cancelled (for tests and small tools).
pub struct Quiet;

impl Watch for Quiet {
    fn line(&self, _what: &str, _line: &str) {}
    fn cancelled(&self) -> bool {
        false
    }
}

/// How to run one tool.
#[derive(Debug, Default)]
pub struct Options {
    /// Killed after this long (`None`: no limit but cancel).
    pub timeout: Option<Duration>,
    /// Written to the tool's stdin, which is then closed. Secrets go here, never in argv
    /// (argv is visible to every user of the host in `ps`).
    pub stdin: Option<Vec<u8>>,
    /// Keep stdout as bytes instead of logging it (for output that is data, or secret).
    pub capture_stdout: bool,
}

/// What a tool that succeeded produced.
#[derive(Debug, Default)]
pub struct Output {
    /// stdout, when [`Options::capture_stdout`] was set.
    pub stdout: Vec<u8>,
}

/// Runs `cmd` to completion; `what` names it in messages ("mmdebstrap").
pub fn run(what: &str, mut cmd: Command, opts: Options, watch: &dyn Watch) -> Result<Output, DiskError> {
    cmd.stdin(if opts.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl,
    // which is async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| DiskError::Spawn { what: what.to_string(), source })?;
    let mut group = Group::new(child);

    let (tx, rx) = mpsc::channel::<Line>();
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    let mut stdout_bytes: Option<JoinHandle<Vec<u8>>> = None;
    if let Some(out) = group.child.stdout.take() {
        if opts.capture_stdout {
            stdout_bytes = Some(std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut out = out;
                let _ = out.read_to_end(&mut buf);
                buf
            }));
        } else {
            readers.push(spawn_reader(out, tx.clone()));
        }
    }
    if let Some(err) = group.child.stderr.take() {
        readers.push(spawn_reader(err, tx.clone()));
    }
    drop(tx);
    let writer = match (group.child.stdin.take(), opts.stdin) {
        (Some(mut stdin), Some(data)) => Some(std::thread::spawn(move || {
            // A tool that exits without reading its input is not an error here; its
            // exit status says what happened.
            let _ = stdin.write_all(&data);
        })),
        _ => None,
    };

    let started = Instant::now();
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let keep = |line: String, tail: &mut VecDeque<String>| {
        watch.line(what, &line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    let end = loop {
        match rx.recv_timeout(POLL) {
            Ok(Line(l)) => keep(l, &mut tail),
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if group.has_exited() {
            break End::Exited;
        }
        if watch.cancelled() {
            break End::Cancelled;
        }
        if let Some(limit) = opts.timeout {
            if started.elapsed() > limit {
                break End::TimedOut(limit);
            }
        }
    };
    // Kills what is left of the group (the leader's helpers, or everything on cancel),
    // then reaps the leader, so the pipes close and the readers end.
    let status = group.finish();
    for l in rx.iter() {
        keep(l.0, &mut tail);
    }
    for r in readers {
        let _ = r.join();
    }
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = stdout_bytes.and_then(|h| h.join().ok()).unwrap_or_default();
    match end {
        End::Cancelled => Err(DiskError::Cancelled),
        End::TimedOut(limit) => Err(DiskError::TimedOut { what: what.to_string(), seconds: limit.as_secs() }),
        End::Exited => match status {
            Some(s) if s.success() => Ok(Output { stdout }),
            other => Err(DiskError::Failed {
                what: what.to_string(),
                status: describe(other),
                tail: tail.into_iter().collect(),
            }),
        },
    }
}

/// "exit status 3", "signal 9".
fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "an unknown status".to_string(),
        },
        None => "an unknown status (it could not be reaped)".to_string(),
    }
}

struct Line(String);

enum End {
    Exited,
    Cancelled,
    TimedOut(Duration),
}

fn spawn_reader(stream: impl Read + Send + 'static, tx: mpsc::Sender<Line>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    // apt redraws progress with carriage returns: keep the last state.
                    let line = text.trim_end().rsplit('\r').next().unwrap_or("").trim_end().to_string();
                    if !line.is_empty() && tx.send(Line(line)).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

/// A child process leading its own process group, killed with its whole group on drop.
pub(crate) struct Group {
    pub(crate) child: Child,
    status: Option<ExitStatus>,
    done: bool,
}

impl Group {
    pub(crate) fn new(child: Child) -> Group {
        Group { child, status: None, done: false }
    }

    /// Whether the leader has exited, without reaping it: while it is an unreaped zombie
    /// its pid (the group id) cannot be reused, so killing the group stays safe.
    pub(crate) fn has_exited(&self) -> bool {
        let pid = self.child.id() as libc::id_t;
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with WNOWAIT only inspects our own child; `info` outlives the call.
        let rc = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
        // SAFETY: si_pid is valid to read after a successful waitid.
        rc == 0 && unsafe { info.si_pid() } != 0
    }

    /// Kills the group and reaps the leader; returns the leader's status.
    pub(crate) fn finish(&mut self) -> Option<ExitStatus> {
        if !self.done {
            self.done = true;
            let pgid = self.child.id() as libc::pid_t;
            // SAFETY: killpg only sends a signal; the group exists as long as the leader is
            // unreaped, which it is until the wait below.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
            self.status = self.child.wait().ok();
        }
        self.status
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    struct Recorder {
        lines: RefCell<Vec<String>>,
        cancel_after: Option<Instant>,
        asked: Cell<u32>,
    }

    impl Watch for Recorder {
        fn line(&self, _what: &str, line: &str) {
            self.lines.borrow_mut().push(line.to_string());
        }
        fn cancelled(&self) -> bool {
            self.asked.set(self.asked.get() + 1);
            self.cancel_after.is_some_and(|t| Instant::now() > t)
        }
    }

    fn recorder(cancel_after: Option<Duration>) -> Recorder {
        Recorder {
            lines: RefCell::new(Vec::new()),
            cancel_after: cancel_after.map(|d| Instant::now() + d),
            asked: Cell::new(0),
        }
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[test]
    fn lines_are_reported_and_failure_keeps_the_tail() {
        let w = recorder(None);
        let err = run("tool", sh("echo one; echo two >&2; exit 3"), Options::default(), &w).unwrap_err();
        assert_eq!(err.to_string(), "tool failed with exit status 3");
        let mut tail = err.tail().to_vec();
        tail.sort();
        assert_eq!(tail, vec!["one".to_string(), "two".to_string()]);
        assert_eq!(w.lines.borrow().len(), 2);
    }

    #[test]
    fn stdin_goes_in_and_stdout_can_be_captured_without_logging() {
        let w = recorder(None);
        let out = run(
            "cat",
            Command::new("cat"),
            Options { stdin: Some(b"secret\n".to_vec()), capture_stdout: true, ..Default::default() },
            &w,
        )
        .unwrap();
        assert_eq!(out.stdout, b"secret\n");
        assert!(w.lines.borrow().is_empty(), "captured stdout must not reach the log");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The grandchild records its pid, then both sleep.
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let w = recorder(None);
        let t = Instant::now();
        let err = run(
            "sleeper",
            sh(&script),
            Options { timeout: Some(Duration::from_millis(500)), ..Default::default() },
            &w,
        )
        .unwrap_err();
        assert!(matches!(err, DiskError::TimedOut { .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // Killed and reparented to init, which reaps it: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(pid), "the grandchild {pid} survived the timeout");
    }

    #[test]
    fn cancel_stops_the_tool() {
        let w = recorder(Some(Duration::from_millis(300)));
        let t = Instant::now();
        let err = run("sleeper", sh("sleep 60"), Options::default(), &w).unwrap_err();
        assert!(matches!(err, DiskError::Cancelled), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(w.asked.get() > 0);
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let err = run("nope", Command::new("/nonexistent/tool"), Options::default(), &Quiet).unwrap_err();
        assert!(err.to_string().starts_with("cannot run nope:"), "{err}");
    }
}
