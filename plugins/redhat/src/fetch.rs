//! Downloads from install trees and ISO locations: `http(s)://` through ureq with
//! bounded timeouts, streamed to disk (an ISO is gigabytes), checking for cancellation
//! between chunks; `file://` URLs and plain paths are read on the build host.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::RedHatError;

/// Connecting to a server may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A read that gets no data for this long fails the download (a stalled mirror).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Small files (`.treeinfo`, checksum files, template content) are at most this big.
pub const SMALL_LIMIT: u64 = 16 << 20;

/// What a download reports while it runs.
pub trait Progress {
    /// `done` bytes of `total` (when the server said) have arrived.
    fn bytes(&self, _done: u64, _total: Option<u64>) {}
    fn cancelled(&self) -> bool {
        false
    }
}

/// No reporting, never cancelled.
pub struct Silent;
impl Progress for Silent {}

/// `base` with `rel` appended, one `/` between them.
pub fn join(base: &str, rel: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), rel.trim_start_matches('/'))
}

/// The local path a `file://` URL or plain absolute path names, if it is one.
pub fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(p) = url.strip_prefix("file://") {
        return Some(PathBuf::from(p));
    }
    if url.starts_with('/') {
        return Some(PathBuf::from(url));
    }
    None
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout_connect(CONNECT_TIMEOUT).timeout_read(READ_TIMEOUT).redirects(5).build()
}

fn fetch_err(url: &str, reason: impl ToString) -> RedHatError {
    RedHatError::Fetch { url: url.to_string(), reason: reason.to_string() }
}

/// An open download: its reader and the length the server announced.
type Opened = (Box<dyn Read + Send>, Option<u64>);

/// Opens `url` for reading; `Ok(None)` when the server says 404 (a missing optional file).
fn open(url: &str) -> Result<Option<Opened>, RedHatError> {
    if let Some(path) = local_path(url) {
        return match std::fs::File::open(&path) {
            Ok(f) => {
                let len = f.metadata().ok().map(|m| m.len());
                Ok(Some((Box::new(f), len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fetch_err(url, e)),
        };
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(fetch_err(url, "only http, https and file URLs are supported"));
    }
    match agent().get(url).call() {
        Ok(resp) => {
            let len = resp.header("Content-Length").and_then(|v| v.parse().ok());
            Ok(Some((resp.into_reader(), len)))
        }
        Err(ureq::Error::Status(404, _)) => Ok(None),
        Err(ureq::Error::Status(code, resp)) => Err(fetch_err(url, format!("HTTP {code} {}", resp.status_text()))),
        Err(ureq::Error::Transport(t)) => Err(fetch_err(url, t)),
    }
}

/// The bytes at `url`, at most [`SMALL_LIMIT`]; `Ok(None)` when it does not exist.
pub fn small_optional(url: &str) -> Result<Option<Vec<u8>>, RedHatError> {
    let Some((reader, _)) = open(url)? else { return Ok(None) };
    let mut out = Vec::new();
    reader.take(SMALL_LIMIT + 1).read_to_end(&mut out).map_err(|e| fetch_err(url, e))?;
    if out.len() as u64 > SMALL_LIMIT {
        return Err(fetch_err(url, format!("larger than {SMALL_LIMIT} bytes")));
    }
    Ok(Some(out))
}

/// The bytes at `url`, at most [`SMALL_LIMIT`].
pub fn small(url: &str) -> Result<Vec<u8>, RedHatError> {
    small_optional(url)?.ok_or_else(|| fetch_err(url, "not found (HTTP 404)"))
}

/// Streams `url` into the file `dest` (created or truncated), reporting progress;
/// returns the number of bytes written. A partial file is removed on failure.
pub fn to_file(url: &str, dest: &Path, progress: &dyn Progress) -> Result<u64, RedHatError> {
    let result = copy(url, dest, progress);
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

fn copy(url: &str, dest: &Path, progress: &dyn Progress) -> Result<u64, RedHatError> {
    let (mut reader, total) = open(url)?.ok_or_else(|| fetch_err(url, "not found (HTTP 404)"))?;
    let mut out = std::fs::File::create(dest).map_err(|e| RedHatError::io("cannot create", dest, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        if progress.cancelled() {
            return Err(RedHatError::Cancelled);
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fetch_err(url, e)),
        };
        out.write_all(&buf[..n]).map_err(|e| RedHatError::io("cannot write", dest, e))?;
        done += n as u64;
        progress.bytes(done, total);
    }
    if let Some(t) = total {
        if t != done {
            return Err(fetch_err(url, format!("the server announced {t} bytes but sent {done}")));
        }
    }
    // No fsync: the file is scratch for this build, and a crash fails the build anyway.
    out.flush().map_err(|e| RedHatError::io("cannot write", dest, e))?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// A one-request-per-connection HTTP server on loopback serving fixed answers.
    fn serve(answers: Vec<(&'static str, u16, Vec<u8>)>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in l.incoming().take(answers.len() * 2) {
                let Ok(mut s) = stream else { continue };
                let mut line = String::new();
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                r.read_line(&mut line).unwrap();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let (code, body) = answers
                    .iter()
                    .find(|(p, _, _)| *p == path)
                    .map(|(_, c, b)| (*c, b.clone()))
                    .unwrap_or((404, b"nope".to_vec()));
                let _ = write!(s, "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = s.write_all(&body);
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn http_files_404_and_errors() {
        let base = serve(vec![("/tree/.treeinfo", 200, b"[general]\n".to_vec()), ("/bad", 500, vec![])]);
        assert_eq!(small(&join(&base, "tree/.treeinfo")).unwrap(), b"[general]\n");
        assert!(small_optional(&format!("{base}/missing")).unwrap().is_none());
        let e = small(&format!("{base}/bad")).unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot fetch {base}/bad: HTTP 500")), "{e}");
    }

    #[test]
    fn streams_to_disk_and_reports() {
        struct Count(std::cell::Cell<u64>);
        impl Progress for Count {
            fn bytes(&self, done: u64, total: Option<u64>) {
                assert_eq!(total, Some(3 << 20));
                self.0.set(done);
            }
        }
        let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
        let base = serve(vec![("/big", 200, data.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("big");
        let c = Count(Default::default());
        assert_eq!(to_file(&format!("{base}/big"), &dest, &c).unwrap(), 3 << 20);
        assert_eq!(c.0.get(), 3 << 20);
        assert_eq!(std::fs::read(&dest).unwrap(), data);
    }

    #[test]
    fn cancel_removes_the_partial_file() {
        struct Cancelled;
        impl Progress for Cancelled {
            fn cancelled(&self) -> bool {
                true
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"abc").unwrap();
        let dest = dir.path().join("dest");
        let e = to_file(&format!("file://{}", src.display()), &dest, &Cancelled).unwrap_err();
        assert!(matches!(e, RedHatError::Cancelled));
        assert!(!dest.exists());
        assert_eq!(to_file(src.to_str().unwrap(), &dest, &Silent).unwrap(), 3);
        assert!(small("ftp://example.invalid/x").is_err());
    }
}
