//! Disk image formats for imagefactory's cloud plugins, through the real `qemu-img`.
//!
//! Every cloud wants the same generic base image in its own container: EC2 raw,
//! OpenStack qcow2, vSphere streamOptimized VMDK, RHEV-M qcow2 with an old `compat`. This
//! crate is the one place that runs `qemu-img` for them, so each plugin gets the same
//! guarantees:
//!
//! - [`convert`] writes to a temporary file beside the destination and renames it into
//!   place only when `qemu-img` succeeded, so a failed or cancelled conversion never
//!   leaves a half-written body where a finished one is expected.
//! - The `qemu-img` child is killed and reaped on every path out of [`convert`]: success,
//!   failure, cancellation, and a panic in the caller's progress callback.
//! - [`verify`] reads the finished body back (format, virtual size, no backing file, and
//!   `qemu-img check` for qcow2) so a target image is checked before it is marked COMPLETE.
//! - Errors are one line: the first line `qemu-img` wrote to stderr, named with the
//!   operation and the file.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde::Deserialize;

/// The program this crate runs. Debian ships it in `qemu-utils` (scripts/setup.sh installs it).
pub const QEMU_IMG: &str = "qemu-img";

/// How often [`convert`] looks at the cancellation flag while `qemu-img` runs.
const POLL: Duration = Duration::from_millis(100);

/// The most stderr kept from one `qemu-img` run (it writes a line or two on failure).
const STDERR_LIMIT: usize = 64 * 1024;

/// What went wrong with a disk image operation. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum DiskFormatError {
    /// `qemu-img` could not be started at all (usually: not installed).
    #[error("cannot run {QEMU_IMG} (Debian package qemu-utils; scripts/setup.sh installs it): {source}")]
    Spawn {
        #[source]
        source: io::Error,
    },
    /// `qemu-img` ran and failed; `message` is the first line of its stderr.
    #[error("qemu-img {op} of {path} failed: {message}")]
    Failed { op: &'static str, path: PathBuf, message: String },
    /// `qemu-img info` answered something this crate cannot read.
    #[error("qemu-img info of {path} gave unreadable output: {message}")]
    BadInfo { path: PathBuf, message: String },
    /// A format name or `-o` option value that could smuggle extra options into qemu-img.
    #[error("invalid {what} {value:?}: only letters, digits, '.', '_' and '-' are allowed")]
    InvalidOption { what: &'static str, value: String },
    /// The image is not in the format it should be.
    #[error("{path} is a {found} image, expected {expected}")]
    FormatMismatch { path: PathBuf, expected: String, found: String },
    /// The image's virtual size is not the one it should be.
    #[error("{path} has a virtual size of {found} bytes, expected {expected}")]
    SizeMismatch { path: PathBuf, expected: u64, found: u64 },
    /// The image refers to a backing file, so it is not a self-contained disk.
    #[error("{path} depends on the backing file {backing}; an image to upload must stand alone")]
    BackingFile { path: PathBuf, backing: String },
    /// `qemu-img check` found corruption.
    #[error("qemu-img check of {path} found problems: {message}")]
    Check { path: PathBuf, message: String },
    /// The caller's cancellation check said stop; `qemu-img` was killed.
    #[error("conversion cancelled")]
    Cancelled,
    /// A file operation around the conversion failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What `qemu-img info` says about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// qemu's format name: `raw`, `qcow2`, `vmdk`, `vpc`, ...
    pub format: String,
    /// The size of the disk the guest sees, in bytes.
    pub virtual_size: u64,
    /// The bytes the file occupies on the host (sparse files and compression make it
    /// smaller than the virtual size). 0 when qemu-img does not report it.
    pub actual_size: u64,
    /// The backing file, when the image is an overlay.
    pub backing_file: Option<String>,
    /// qcow2 only: the `compat` level (`0.10` or `1.1`).
    pub compat: Option<String>,
    /// vmdk only: the create type (`streamOptimized`, `monolithicSparse`, ...).
    pub subformat: Option<String>,
}

#[derive(Deserialize)]
struct RawInfo {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    actual_size: u64,
    #[serde(rename = "backing-filename", default)]
    backing_filename: Option<String>,
    #[serde(rename = "format-specific", default)]
    format_specific: Option<FormatSpecific>,
}

#[derive(Deserialize)]
struct FormatSpecific {
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
}

/// How [`convert`] should write the destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Compress the data (`-c`; zlib for qcow2, deflate for streamOptimized vmdk).
    pub compress: bool,
    /// qcow2 `compat` level, e.g. `0.10` for old RHEV-M engines.
    pub compat: Option<String>,
    /// Format subtype, e.g. `streamOptimized` for vmdk (what vSphere imports).
    pub subformat: Option<String>,
    /// vmdk adapter type, e.g. `lsilogic` (the original's vSphere setting).
    pub adapter_type: Option<String>,
    /// vmdk: VMDK version 6 (`compat6=on`), which the original's vSphere conversion asked for.
    pub compat6: bool,
}

impl ConvertOptions {
    /// The `-o` argument, or `None` when no creation option is set.
    fn creation_options(&self) -> Result<Option<String>, DiskFormatError> {
        let mut parts = Vec::new();
        for (key, value) in
            [("compat", &self.compat), ("subformat", &self.subformat), ("adapter_type", &self.adapter_type)]
        {
            if let Some(v) = value {
                check_token(key, v)?;
                parts.push(format!("{key}={v}"));
            }
        }
        if self.compat6 {
            parts.push("compat6=on".to_string());
        }
        Ok((!parts.is_empty()).then(|| parts.join(",")))
    }
}

/// Rejects values that are not plain tokens: qemu-img splits `-o` on commas and reads
/// `key=value`, so a value with those characters would set options nobody asked for.
fn check_token(what: &'static str, value: &str) -> Result<(), DiskFormatError> {
    let ok = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(DiskFormatError::InvalidOption { what, value: value.to_string() })
    }
}

/// A path as an argument qemu-img reads as a plain file: a relative name with a colon
/// (`a:b`) would otherwise be taken as a protocol prefix.
fn file_arg(path: &Path) -> OsString {
    if path.is_absolute() || path.starts_with(".") {
        path.as_os_str().to_owned()
    } else {
        Path::new(".").join(path).into_os_string()
    }
}

/// The first non-empty line of qemu-img's stderr, without its `qemu-img: ` prefix.
fn first_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no error message");
    line.strip_prefix("qemu-img: ").unwrap_or(line).to_string()
}

/// Runs qemu-img to the end and returns its exit status, stdout and stderr.
fn run_to_end(cmd: &mut Command) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), DiskFormatError> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| DiskFormatError::Spawn { source })?;
    Ok((out.status, out.stdout, out.stderr))
}

/// Reads an image's format and sizes with `qemu-img info --output=json`.
///
/// The format is probed from the file's content, which is what a cloud's own importer
/// does too (Glance refuses data that does not match the declared `disk_format`).
pub fn info(path: &Path) -> Result<ImageInfo, DiskFormatError> {
    let mut cmd = Command::new(QEMU_IMG);
    cmd.args(["info", "--output=json"]).arg(file_arg(path));
    let (status, stdout, stderr) = run_to_end(&mut cmd)?;
    if !status.success() {
        return Err(DiskFormatError::Failed { op: "info", path: path.to_path_buf(), message: first_line(&stderr) });
    }
    let raw: RawInfo = serde_json::from_slice(&stdout)
        .map_err(|e| DiskFormatError::BadInfo { path: path.to_path_buf(), message: e.to_string() })?;
    let data = raw.format_specific.map(|f| f.data).unwrap_or_default();
    let text = |key: &str| data.get(key).and_then(|v| v.as_str()).map(str::to_string);
    Ok(ImageInfo {
        compat: if raw.format == "qcow2" { text("compat") } else { None },
        subformat: if raw.format == "vmdk" { text("create-type") } else { None },
        format: raw.format,
        virtual_size: raw.virtual_size,
        actual_size: raw.actual_size,
        backing_file: raw.backing_filename,
    })
}

/// Checks that `path` is a finished, self-contained image of `expected_format` whose
/// virtual size is `expected_virtual_size` (when given), and for qcow2 that
/// `qemu-img check` finds no corruption (leaked clusters are harmless and accepted).
pub fn verify(
    path: &Path,
    expected_format: &str,
    expected_virtual_size: Option<u64>,
) -> Result<ImageInfo, DiskFormatError> {
    let found = info(path)?;
    if found.format != expected_format {
        return Err(DiskFormatError::FormatMismatch {
            path: path.to_path_buf(),
            expected: expected_format.to_string(),
            found: found.format,
        });
    }
    if let Some(expected) = expected_virtual_size {
        if found.virtual_size != expected {
            return Err(DiskFormatError::SizeMismatch {
                path: path.to_path_buf(),
                expected,
                found: found.virtual_size,
            });
        }
    }
    if let Some(backing) = &found.backing_file {
        return Err(DiskFormatError::BackingFile { path: path.to_path_buf(), backing: backing.clone() });
    }
    if found.format == "qcow2" {
        check_qcow2(path)?;
    }
    Ok(found)
}

#[derive(Deserialize)]
struct CheckReport {
    #[serde(default)]
    corruptions: u64,
    #[serde(rename = "check-errors", default)]
    check_errors: u64,
}

fn check_qcow2(path: &Path) -> Result<(), DiskFormatError> {
    let mut cmd = Command::new(QEMU_IMG);
    cmd.args(["check", "-f", "qcow2", "--output=json"]).arg(file_arg(path));
    let (status, stdout, stderr) = run_to_end(&mut cmd)?;
    if !status.success() && stdout.is_empty() {
        return Err(DiskFormatError::Failed { op: "check", path: path.to_path_buf(), message: first_line(&stderr) });
    }
    let report: CheckReport = serde_json::from_slice(&stdout)
        .map_err(|e| DiskFormatError::Check { path: path.to_path_buf(), message: format!("unreadable report: {e}") })?;
    // Exit 3 means leaked clusters only: space is wasted but no data is wrong.
    let code = status.code();
    if report.corruptions > 0 || report.check_errors > 0 || !matches!(code, Some(0) | Some(3)) {
        return Err(DiskFormatError::Check {
            path: path.to_path_buf(),
            message: format!(
                "{} corruptions, {} check errors (exit status {})",
                report.corruptions,
                report.check_errors,
                code.map_or("by signal".to_string(), |c| c.to_string())
            ),
        });
    }
    Ok(())
}

/// Kills and reaps a child when dropped, so no path out of [`convert`] leaves a
/// `qemu-img` running or a zombie behind.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn child(&mut self) -> Option<&mut Child> {
        self.0.as_mut()
    }

    /// Reaps an exited child and hands back its status; the guard is then empty.
    fn take_status(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(child) = self.0.as_mut() else { return Ok(None) };
        let status = child.try_wait()?;
        if status.is_some() {
            self.0 = None;
        }
        Ok(status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Removes a temporary file when dropped, unless it was renamed into place.
struct TempFileGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFileGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The temporary file a conversion to `dst` writes: hidden, beside `dst` (so the final
/// rename stays on one filesystem and is atomic), and unique to this process.
fn temp_beside(dst: &Path) -> Result<PathBuf, DiskFormatError> {
    let name = dst.file_name().ok_or_else(|| DiskFormatError::Io {
        what: "write to",
        path: dst.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the destination has no file name"),
    })?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".convert-{}.tmp", std::process::id()));
    Ok(dst.with_file_name(tmp))
}

/// Parses one piece of `qemu-img convert -p` output, `    (42.17/100%)`.
fn parse_progress(piece: &str) -> Option<f64> {
    let inner = piece.trim().strip_prefix('(')?.strip_suffix("/100%)")?;
    inner.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Reads `convert -p` output and sends each progress value (0..=100) as it appears.
fn pump_progress(mut stdout: impl Read, tx: mpsc::Sender<f64>) {
    let mut buf = [0u8; 512];
    let mut pending = String::new();
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(end) = pending.find(['\r', '\n']) {
            if let Some(v) = parse_progress(&pending[..end]) {
                if tx.send(v).is_err() {
                    return;
                }
            }
            pending.drain(..=end);
        }
        if pending.len() > 4096 {
            pending.clear();
        }
    }
}

/// Keeps the first [`STDERR_LIMIT`] bytes of stderr and drains the rest, so qemu-img
/// never blocks on a full pipe.
fn collect_stderr(mut stderr: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = STDERR_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

/// Converts `src` (read as `src_fmt`) into `dst` (written as `dst_fmt`) with
/// `qemu-img convert -p`.
///
/// `progress` receives the percent done (0.0..=100.0) as qemu-img reports it, ending with
/// 100.0 on success. `cancelled` is polled about ten times a second; when it answers true
/// qemu-img is killed and [`DiskFormatError::Cancelled`] returned. `dst` appears only
/// once the conversion succeeded (written beside it, synced, then renamed); it may be the
/// same file as `src`, which is then replaced. The source format is always given, never
/// probed, so a raw disk whose guest wrote a qcow2 header is still read as raw.
pub fn convert(
    src: &Path,
    src_fmt: &str,
    dst: &Path,
    dst_fmt: &str,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(f64),
    cancelled: &dyn Fn() -> bool,
) -> Result<(), DiskFormatError> {
    check_token("source format", src_fmt)?;
    check_token("destination format", dst_fmt)?;
    let creation = opts.creation_options()?;
    if cancelled() {
        return Err(DiskFormatError::Cancelled);
    }
    let tmp = temp_beside(dst)?;
    // A stale file from a crashed run of this same pid would make qemu-img overwrite it
    // anyway; removing it first keeps the guard's promise simple.
    let _ = std::fs::remove_file(&tmp);
    let mut tmp_guard = TempFileGuard { path: tmp.clone(), armed: true };

    let mut cmd = Command::new(QEMU_IMG);
    cmd.args(["convert", "-p", "-f", src_fmt, "-O", dst_fmt]);
    if opts.compress {
        cmd.arg("-c");
    }
    if let Some(o) = &creation {
        cmd.args(["-o", o]);
    }
    cmd.arg(file_arg(src)).arg(file_arg(&tmp));
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut guard = ChildGuard(Some(cmd.spawn().map_err(|source| DiskFormatError::Spawn { source })?));

    let (tx, rx) = mpsc::channel();
    let stdout = guard.child().and_then(|c| c.stdout.take());
    let stderr = guard.child().and_then(|c| c.stderr.take());
    let out_reader = stdout.map(|s| thread::spawn(move || pump_progress(s, tx)));
    let err_reader = stderr.map(|s| thread::spawn(move || collect_stderr(s)));

    let status = loop {
        match rx.recv_timeout(POLL) {
            Ok(p) => progress(p.clamp(0.0, 100.0)),
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if cancelled() {
            // Dropping the guard kills and reaps qemu-img; the readers then see EOF.
            drop(guard);
            return Err(DiskFormatError::Cancelled);
        }
        match guard.take_status() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(DiskFormatError::Io { what: "wait for qemu-img converting", path: src.into(), source })
            }
        }
        // Without a stdout reader there is nothing to block on: pace the loop.
        if out_reader.is_none() {
            thread::sleep(POLL);
        }
    };
    if let Some(h) = out_reader {
        let _ = h.join();
    }
    for p in rx.try_iter() {
        progress(p.clamp(0.0, 100.0));
    }
    let stderr = err_reader.and_then(|h| h.join().ok()).unwrap_or_default();
    if !status.success() {
        return Err(DiskFormatError::Failed { op: "convert", path: src.to_path_buf(), message: first_line(&stderr) });
    }
    sync_file(&tmp)?;
    std::fs::rename(&tmp, dst).map_err(|source| DiskFormatError::Io {
        what: "rename into place",
        path: dst.into(),
        source,
    })?;
    tmp_guard.armed = false;
    if let Some(dir) = dst.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Best effort: makes the rename itself durable; some filesystems refuse it.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    progress(100.0);
    Ok(())
}

/// qemu-img writes the output with `cache=unsafe`-like flushing semantics left to the
/// kernel; sync before the rename so a crash cannot expose a renamed but empty body.
fn sync_file(path: &Path) -> Result<(), DiskFormatError> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|source| DiskFormatError::Io {
        what: "sync",
        path: path.into(),
        source,
    })
}

/// The format name qemu-img uses for an image format name as clouds spell it
/// (`vhd` is qemu's `vpc`); other names are the same in both.
pub fn qemu_format_name(cloud_name: &str) -> &str {
    match cloud_name {
        "vhd" => "vpc",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_parse() {
        assert_eq!(parse_progress("    (42.17/100%)"), Some(42.17));
        assert_eq!(parse_progress("(100.00/100%)"), Some(100.0));
        assert_eq!(parse_progress("garbage"), None);
        assert_eq!(parse_progress("(nan/100%)"), None);
    }

    #[test]
    fn pump_splits_on_carriage_returns() {
        let (tx, rx) = mpsc::channel();
        pump_progress(&b"    (0.00/100%)\r    (50.00/100%)\r    (100.00/100%)\r\n"[..], tx);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![0.0, 50.0, 100.0]);
    }

    #[test]
    fn option_values_cannot_inject_options() {
        let opts = ConvertOptions { subformat: Some("streamOptimized,zeroed_grain=on".into()), ..Default::default() };
        assert!(matches!(opts.creation_options(), Err(DiskFormatError::InvalidOption { .. })));
        let opts = ConvertOptions { compat: Some("0.10".into()), subformat: Some("x".into()), ..Default::default() };
        assert_eq!(opts.creation_options().ok().flatten().as_deref(), Some("compat=0.10,subformat=x"));
    }

    #[test]
    fn relative_names_with_colons_stay_files() {
        assert_eq!(file_arg(Path::new("a:b")), OsString::from("./a:b"));
        assert_eq!(file_arg(Path::new("/x/a:b")), OsString::from("/x/a:b"));
    }
}
