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
    let mut cmd = Command::new("curl");
    cmd.args(["--fail", "--silent", "--show-error", "--location", "--"]).arg(url);
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
}
