//! A small blocking client for what the plugin needs of Glance v2 (create, upload, show,
//! delete an image) and of Keystone v3 (a token from a password).
//!
//! The upload streams the file from disk through a fixed-size buffer, so memory stays the
//! same whatever the image size, and hashes what it sends (sha512, Glance's default
//! `os_hash_algo`) so the caller can check Glance stored exactly those bytes. Requests
//! that fail for a reason a second try can fix (the connection failed or was reset, a
//! 5xx, 408 or 429 answer) are retried a bounded number of times with a growing pause;
//! a create is retried only when the connection was never made, because a create that
//! reached Glance cannot be told apart from one that did not.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use cloudkit::http::TlsTrust;
use serde_json::Value;
use sha2::{Digest, Sha512};
use ureq::{Agent, ErrorKind, Response};

use crate::credentials::{KeystonePassword, Secret};

/// The upload's read buffer: the only memory that grows with the transfer.
const UPLOAD_BUFFER: usize = 1 << 20;
/// At most this much of an error answer is read (Glance's are a few hundred bytes).
const ERROR_BODY_LIMIT: u64 = 16 * 1024;
/// At most this much of a JSON answer is read (an image record is about 1 KiB).
const JSON_LIMIT: u64 = 1 << 20;

/// What went wrong talking to Glance or Keystone. One line; never contains a credential.
#[derive(Debug, thiserror::Error)]
pub enum GlanceError {
    /// No answer at all: connection refused, reset, timed out, name not found.
    #[error("cannot reach {service} at {endpoint}: {detail}")]
    Unreachable { service: &'static str, endpoint: String, detail: String },
    /// An HTTP error answer.
    #[error("{service} refused to {action} (HTTP {status}): {detail}")]
    Refused { service: &'static str, action: String, status: u16, detail: String },
    /// A success answer without what it should carry.
    #[error("{service} gave an unexpected answer to {action}: {detail}")]
    BadAnswer { service: &'static str, action: String, detail: String },
    /// The image is in a state the plugin cannot continue from.
    #[error("Glance image {id}: {detail}")]
    Image { id: String, detail: String },
    /// The image file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The HTTP client could not be set up (the provider's TLS trust).
    #[error("{0}")]
    Tls(String),
    /// The build was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// How failed requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The pause before the second try; it doubles each time after.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy { attempts: 4, first_delay: Duration::from_millis(500) }
    }
}

/// What an upload did.
#[derive(Debug, Clone)]
pub struct UploadStats {
    pub bytes: u64,
    /// sha512 (hex) of the bytes sent by the try that succeeded; `None` when an earlier
    /// try turned out to have succeeded though its answer was lost.
    pub sha512: Option<String>,
    pub elapsed: Duration,
    /// Tries it took.
    pub attempts: u32,
}

/// One Glance endpoint with its token.
pub struct Glance {
    agent: Agent,
    endpoint: String,
    token: Option<Secret>,
    retry: RetryPolicy,
}

/// The agent both services use: bounded timeouts, no redirects to other hosts (a token
/// must only ever go to the endpoint it was meant for), and the provider's TLS trust.
pub fn agent(trust: &TlsTrust) -> Result<Agent, GlanceError> {
    let product = concat!("imagefactory-openstack/", env!("CARGO_PKG_VERSION"));
    cloudkit::http::agent(product, trust).map_err(GlanceError::Tls)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The readable part of an error answer: Glance answers HTML (`<h1>415 ...</h1> detail`),
/// Keystone JSON (`{"error": {"message": ...}}`).
fn error_detail(resp: Response) -> String {
    let mut body = String::new();
    let _ = resp.into_reader().take(ERROR_BODY_LIMIT).read_to_string(&mut body);
    if let Ok(v) = serde_json::from_str::<Value>(&body) {
        if let Some(m) = v.pointer("/error/message").and_then(Value::as_str) {
            return one_line(m);
        }
    }
    let after_title = body.split_once("</h1>").map_or(body.as_str(), |(_, rest)| rest);
    let mut text = String::new();
    let mut in_tag = false;
    for c in after_title.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = one_line(&text);
    let text = if text.is_empty() { "no detail".to_string() } else { text };
    text.chars().take(300).collect()
}

/// Whether a failed request is worth another try. `sent_safely` says the request may be
/// repeated even if it reached the server.
fn retryable(e: &ureq::Error, sent_safely: bool) -> bool {
    match e {
        ureq::Error::Status(code, _) => sent_safely && (*code >= 500 || *code == 408 || *code == 429),
        ureq::Error::Transport(t) => match t.kind() {
            ErrorKind::ConnectionFailed | ErrorKind::Dns => true,
            ErrorKind::Io | ErrorKind::ProxyConnect => sent_safely,
            _ => false,
        },
    }
}

/// Sleeps `d` in short steps, returning early with `Cancelled`.
fn pause(d: Duration, cancelled: &dyn Fn() -> bool) -> Result<(), GlanceError> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if cancelled() {
            return Err(GlanceError::Cancelled);
        }
        std::thread::sleep(Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())));
    }
    Ok(())
}

/// Asks Keystone v3 for a project-scoped token with a password.
pub fn keystone_token(
    agent: &Agent,
    k: &KeystonePassword,
    retry: RetryPolicy,
    cancelled: &dyn Fn() -> bool,
) -> Result<Secret, GlanceError> {
    let base = k.auth_url.trim().trim_end_matches('/');
    if base.ends_with("/v2.0") {
        return Err(GlanceError::BadAnswer {
            service: "Keystone",
            action: "authentication".into(),
            detail: format!("{base} is a Keystone v2.0 URL; v2.0 is gone from OpenStack, give the v3 URL"),
        });
    }
    let url = if base.ends_with("/v3") { format!("{base}/auth/tokens") } else { format!("{base}/v3/auth/tokens") };
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": k.username, "domain": {"name": k.user_domain}, "password": k.password.expose()}}},
        "scope": {"project": {"name": k.project, "domain": {"name": k.project_domain}}}
    }})
    .to_string();
    let mut attempt = 1;
    loop {
        let result = agent.post(&url).set("Content-Type", "application/json").send_string(&body);
        match result {
            Ok(resp) => {
                return resp.header("X-Subject-Token").filter(|t| !t.is_empty()).map(Secret::new).ok_or_else(|| {
                    GlanceError::BadAnswer {
                        service: "Keystone",
                        action: "authentication".into(),
                        detail: "no X-Subject-Token header in the answer".into(),
                    }
                })
            }
            Err(e) if attempt < retry.attempts && retryable(&e, true) => {
                pause(retry.first_delay * 2u32.pow(attempt - 1), cancelled)?;
                attempt += 1;
            }
            Err(ureq::Error::Status(status, resp)) => {
                return Err(GlanceError::Refused {
                    service: "Keystone",
                    action: format!("authenticate user {} in project {}", k.username, k.project),
                    status,
                    detail: error_detail(resp),
                })
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(GlanceError::Unreachable {
                    service: "Keystone",
                    endpoint: base.to_string(),
                    detail: cloudkit::http::transport_detail(&t),
                })
            }
        }
    }
}

/// Reads the upload from disk, hashing and counting as it goes, and stops the transfer
/// when the build is cancelled.
struct UploadReader<'a> {
    file: BufReader<File>,
    hasher: Sha512,
    sent: u64,
    on_progress: &'a mut dyn FnMut(u64),
    cancelled: &'a dyn Fn() -> bool,
}

impl Read for UploadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if (self.cancelled)() {
            return Err(io::Error::other("cancelled"));
        }
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.sent += n as u64;
        (self.on_progress)(self.sent);
        Ok(n)
    }
}

impl Glance {
    /// A client for the Glance at `endpoint` (no trailing slash, no `/v2`).
    pub fn new(agent: Agent, endpoint: &str, token: Option<Secret>, retry: RetryPolicy) -> Glance {
        Glance { agent, endpoint: endpoint.to_string(), token, retry }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &format!("{}{path}", self.endpoint));
        match &self.token {
            Some(t) => req.set("X-Auth-Token", t.expose()),
            None => req,
        }
    }

    fn failure(&self, action: &str, e: ureq::Error) -> GlanceError {
        match e {
            ureq::Error::Status(status, resp) => GlanceError::Refused {
                service: "Glance",
                action: action.to_string(),
                status,
                detail: error_detail(resp),
            },
            ureq::Error::Transport(t) => GlanceError::Unreachable {
                service: "Glance",
                endpoint: self.endpoint.clone(),
                detail: cloudkit::http::transport_detail(&t),
            },
        }
    }

    /// Runs `send` until it succeeds, fails for good, or the tries run out.
    fn with_retry(
        &self,
        action: &str,
        sent_safely: bool,
        cancelled: &dyn Fn() -> bool,
        log: &mut dyn FnMut(&str),
        mut send: impl FnMut() -> Result<Response, Box<ureq::Error>>,
    ) -> Result<Response, GlanceError> {
        let mut attempt = 1;
        loop {
            match send().map_err(|e| *e) {
                Ok(r) => return Ok(r),
                Err(e) if attempt < self.retry.attempts && retryable(&e, sent_safely) => {
                    let delay = self.retry.first_delay * 2u32.pow(attempt - 1);
                    log(&format!(
                        "Glance request to {action} failed ({}); try {} of {} in {:.1} s",
                        self.failure(action, e),
                        attempt + 1,
                        self.retry.attempts,
                        delay.as_secs_f64()
                    ));
                    pause(delay, cancelled)?;
                    attempt += 1;
                }
                Err(e) => return Err(self.failure(action, e)),
            }
        }
    }

    fn json(action: &str, resp: Response) -> Result<Value, GlanceError> {
        serde_json::from_reader::<_, Value>(resp.into_reader().take(JSON_LIMIT)).map_err(|e| GlanceError::BadAnswer {
            service: "Glance",
            action: action.to_string(),
            detail: format!("not JSON ({e})"),
        })
    }

    /// Creates an image record (status `queued`) and returns it.
    pub fn create_image(
        &self,
        body: &Value,
        cancelled: &dyn Fn() -> bool,
        log: &mut dyn FnMut(&str),
    ) -> Result<Value, GlanceError> {
        let text = body.to_string();
        let resp = self.with_retry("create the image", false, cancelled, log, || {
            self.request("POST", "/v2/images")
                .set("Content-Type", "application/json")
                .send_string(&text)
                .map_err(Box::new)
        })?;
        let image = Self::json("create the image", resp)?;
        if image.get("id").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(GlanceError::BadAnswer {
                service: "Glance",
                action: "create the image".into(),
                detail: "no image id in the answer".into(),
            });
        }
        Ok(image)
    }

    /// The image record, or `None` when Glance does not know the id.
    pub fn image(
        &self,
        id: &str,
        cancelled: &dyn Fn() -> bool,
        log: &mut dyn FnMut(&str),
    ) -> Result<Option<Value>, GlanceError> {
        let path = format!("/v2/images/{id}");
        match self
            .with_retry("show the image", true, cancelled, log, || self.request("GET", &path).call().map_err(Box::new))
        {
            Ok(resp) => Self::json("show the image", resp).map(Some),
            Err(GlanceError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the image; `Ok(false)` when Glance did not know it (already gone).
    pub fn delete_image(
        &self,
        id: &str,
        cancelled: &dyn Fn() -> bool,
        log: &mut dyn FnMut(&str),
    ) -> Result<bool, GlanceError> {
        let path = format!("/v2/images/{id}");
        match self.with_retry("delete the image", true, cancelled, log, || {
            self.request("DELETE", &path).call().map_err(Box::new)
        }) {
            Ok(_) => Ok(true),
            Err(GlanceError::Refused { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn status(&self, id: &str, cancelled: &dyn Fn() -> bool, log: &mut dyn FnMut(&str)) -> Result<String, GlanceError> {
        let image = self
            .image(id, cancelled, log)?
            .ok_or_else(|| GlanceError::Image { id: id.into(), detail: "it disappeared from Glance".into() })?;
        Ok(image.get("status").and_then(Value::as_str).unwrap_or("unknown").to_string())
    }

    /// Streams `path` into the image's data (`PUT /v2/images/ID/file`).
    ///
    /// `on_progress` hears the bytes sent so far. A failed try is repeated (from the
    /// start of the file) while the image is still waiting for data; if the image turns
    /// out `active` after a failure, the lost answer belonged to a successful upload.
    pub fn upload(
        &self,
        id: &str,
        path: &Path,
        on_progress: &mut dyn FnMut(u64),
        cancelled: &dyn Fn() -> bool,
        log: &mut dyn FnMut(&str),
    ) -> Result<UploadStats, GlanceError> {
        let read_err = |source| GlanceError::Read { path: path.display().to_string(), source };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        let started = Instant::now();
        let url_path = format!("/v2/images/{id}/file");
        let mut attempt = 1;
        loop {
            let file = File::open(path).map_err(read_err)?;
            let mut reader = UploadReader {
                file: BufReader::with_capacity(UPLOAD_BUFFER, file),
                hasher: Sha512::new(),
                sent: 0,
                on_progress: &mut *on_progress,
                cancelled,
            };
            let result = self
                .request("PUT", &url_path)
                .set("Content-Type", "application/octet-stream")
                .set("Content-Length", &size.to_string())
                .send(&mut reader);
            let sent = reader.sent;
            let hasher = reader.hasher;
            let e = match result {
                Ok(_) => {
                    return Ok(UploadStats {
                        bytes: sent,
                        sha512: Some(hex(&hasher.finalize())),
                        elapsed: started.elapsed(),
                        attempts: attempt,
                    })
                }
                Err(e) => e,
            };
            if cancelled() {
                return Err(GlanceError::Cancelled);
            }
            if attempt >= self.retry.attempts || !retryable(&e, true) {
                return Err(self.failure("take the image data", e));
            }
            let delay = self.retry.first_delay * 2u32.pow(attempt - 1);
            log(&format!(
                "upload try {attempt} of {} failed after {sent} of {size} bytes ({}); retrying in {:.1} s",
                self.retry.attempts,
                self.failure("take the image data", e),
                delay.as_secs_f64()
            ));
            pause(delay, cancelled)?;
            // Glance puts the image back to `queued` when an upload breaks off; wait out a
            // `saving` that has not noticed yet.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match self.status(id, cancelled, log)?.as_str() {
                    "queued" => break,
                    "active" => {
                        return Ok(UploadStats {
                            bytes: size,
                            sha512: None,
                            elapsed: started.elapsed(),
                            attempts: attempt,
                        })
                    }
                    "saving" | "uploading" if Instant::now() < deadline => {
                        pause(Duration::from_millis(500), cancelled)?
                    }
                    other => {
                        return Err(GlanceError::Image {
                            id: id.into(),
                            detail: format!("status {other} after a failed upload, cannot retry"),
                        })
                    }
                }
            }
            attempt += 1;
        }
    }

    /// Polls the image until it is `active` and returns its record.
    pub fn wait_active(
        &self,
        id: &str,
        timeout: Duration,
        cancelled: &dyn Fn() -> bool,
        log: &mut dyn FnMut(&str),
    ) -> Result<Value, GlanceError> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            let image = self
                .image(id, cancelled, log)?
                .ok_or_else(|| GlanceError::Image { id: id.into(), detail: "it disappeared from Glance".into() })?;
            let status = image.get("status").and_then(Value::as_str).unwrap_or("unknown").to_string();
            match status.as_str() {
                "active" => return Ok(image),
                "killed" | "deleted" | "pending_delete" | "deactivated" => {
                    return Err(GlanceError::Image { id: id.into(), detail: format!("Glance set it to {status}") })
                }
                _ if Instant::now() >= deadline => {
                    return Err(GlanceError::Image {
                        id: id.into(),
                        detail: format!("still {status} after {} s", timeout.as_secs()),
                    })
                }
                _ => {
                    pause(delay, cancelled)?;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glance_html_errors_read_as_one_line() {
        let html = "<html>\n <head>\n  <title>415 Unsupported Media Type</title>\n </head>\n <body>\n  \
                    <h1>415 Unsupported Media Type</h1>\n  The request media type is not supported.\n<br /><br />\n\
                    Image disk_format qcow2 does not match stream data raw\n </body>\n</html>";
        let resp = Response::new(415, "Unsupported Media Type", html).unwrap();
        assert_eq!(
            error_detail(resp),
            "The request media type is not supported. Image disk_format qcow2 does not match stream data raw"
        );
        let resp = Response::new(401, "Unauthorized", r#"{"error": {"code": 401, "message": "Bad\nauth"}}"#).unwrap();
        assert_eq!(error_detail(resp), "Bad auth");
    }

    #[test]
    fn only_safe_failures_are_retried() {
        let status = |c| ureq::Error::Status(c, Response::new(c, "x", "").unwrap());
        assert!(retryable(&status(503), true));
        assert!(!retryable(&status(503), false));
        assert!(!retryable(&status(409), true));
        assert!(!retryable(&status(401), true));
    }
}
