//! Content given by URL in a template (`<file type='url'>`, `<command type='url'>`).

use std::process::Command;

use diskimage::process::{self, Options, Watch};
use diskimage::DiskError;

use crate::error::DebianError;

/// How long one download may take.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The bytes at `url`: `file://` paths on the build host, or `http(s)://` through curl.
pub fn fetch(url: &str, watch: &dyn Watch) -> Result<Vec<u8>, DebianError> {
    let url = url.trim();
    if let Some(path) = url.strip_prefix("file://") {
        return std::fs::read(path).map_err(|e| DebianError::Fetch { url: url.to_string(), reason: e.to_string() });
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(DebianError::Fetch {
            url: url.to_string(),
            reason: "only file, http and https URLs are supported".into(),
        });
    }
    curl(url, &["--fail", "--silent", "--show-error", "--location"], watch)
}

/// curl's standard output for `url` with `args`, within [`FETCH_TIMEOUT`].
fn curl(url: &str, args: &[&str], watch: &dyn Watch) -> Result<Vec<u8>, DebianError> {
    let mut cmd = Command::new("curl");
    cmd.args(args).arg("--").arg(url);
    let out = process::run(
        "curl",
        cmd,
        Options { capture_stdout: true, timeout: Some(FETCH_TIMEOUT), ..Default::default() },
        watch,
    )
    .map_err(|e| match e {
        DiskError::Cancelled => DebianError::Disk(e),
        other => DebianError::Fetch { url: url.to_string(), reason: other.to_string() },
    })?;
    Ok(out.stdout)
}

/// The bytes at `url`, or `None` when the server says it has no such file (HTTP 404 or
/// 410; a missing `file://` path). Any other failure is an error: a suite without an
/// InRelease is told from a mirror that did not answer, so a flaky mirror never makes a
/// build read a different file.
pub fn fetch_if_present(url: &str, watch: &dyn Watch) -> Result<Option<Vec<u8>>, DebianError> {
    let url = url.trim();
    let failed = |reason: String| DebianError::Fetch { url: url.to_string(), reason };
    // apt writes file: URIs both as file:///path and file:/path.
    if let Some(path) = url.strip_prefix("file://").or_else(|| url.strip_prefix("file:")) {
        return match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed(e.to_string())),
        };
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(failed("only file, http and https URLs are supported".into()));
    }
    // No --fail: the status comes after the body, on a line of its own, so a 404 is told
    // from a failure to connect (which curl reports with its exit status).
    let out = curl(url, &["--silent", "--show-error", "--location", "--write-out", "\n%{http_code}"], watch)?;
    let (body, status) = split_status(out).ok_or_else(|| failed("curl printed no HTTP status".into()))?;
    match status {
        200 => Ok(Some(body)),
        404 | 410 => Ok(None),
        other => Err(failed(format!("HTTP status {other}"))),
    }
}

/// The body and the status `--write-out '\n%{http_code}'` appended to it.
fn split_status(mut out: Vec<u8>) -> Option<(Vec<u8>, u16)> {
    let newline = out.iter().rposition(|&b| b == b'\n')?;
    let status = std::str::from_utf8(&out[newline + 1..]).ok()?.trim().parse().ok()?;
    out.truncate(newline);
    Some((out, status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage::process::Quiet;

    #[test]
    fn file_urls_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.txt");
        std::fs::write(&p, "content").unwrap();
        assert_eq!(fetch(&format!("file://{}", p.display()), &Quiet).unwrap(), b"content");
        let e = fetch("file:///nonexistent/x", &Quiet).unwrap_err().to_string();
        assert!(e.starts_with("cannot fetch file:///nonexistent/x:"), "{e}");
        assert!(fetch("ftp://x.example/y", &Quiet).is_err());
    }

    #[test]
    fn absent_files_are_none_and_present_ones_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("InRelease");
        std::fs::write(&p, "Date: x\n").unwrap();
        assert_eq!(fetch_if_present(&format!("file://{}", p.display()), &Quiet).unwrap().unwrap(), b"Date: x\n");
        let missing = format!("file://{}", dir.path().join("Release").display());
        assert_eq!(fetch_if_present(&missing, &Quiet).unwrap(), None);
        assert!(fetch_if_present("ftp://x.example/y", &Quiet).is_err());
    }

    #[test]
    fn the_status_line_is_split_from_the_body() {
        assert_eq!(split_status(b"a\nb\n200".to_vec()), Some((b"a\nb".to_vec(), 200)));
        assert_eq!(split_status(b"\n404".to_vec()), Some((Vec::new(), 404)));
        assert_eq!(split_status(b"no status".to_vec()), None);
    }
}
