//! Status callbacks: `parameters.callbacks` lists URLs that get an HTTP PUT of the image
//! on every status change, as the original did. Delivery runs on a thread per image so
//! a slow receiver never holds up a build; PUTs for one image stay in order. Errors are
//! logged and otherwise ignored.
//!
//! The URLs are checked when the request is submitted ([`callback_urls`]): each must be
//! an absolute `http` or `https` URL with a host (or the word `debug`, which logs the
//! notification instead of sending it). Anything else is refused before a record exists,
//! so a `file://` or `ftp://` URL, or a typo, never reaches a build.

use std::sync::mpsc;

use serde_json::{Map, Value};

/// The longest part of a refused value quoted back in the error.
const QUOTED_MAX_CHARS: usize = 200;

/// The callback URLs of a request's parameters: `callbacks` as a list of strings (one
/// string is taken as a list of one), each checked. The error is one line naming the
/// first bad value, with any password in it redacted.
pub fn callback_urls(parameters: &Map<String, Value>) -> Result<Vec<String>, String> {
    let urls: Vec<&Value> = match parameters.get("callbacks") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one @ Value::String(_)) => vec![one],
        Some(other) => {
            return Err(format!("parameters.callbacks must be a list of URLs, not {}", quoted(&other.to_string())))
        }
    };
    urls.into_iter()
        .map(|v| match v {
            Value::String(s) => check_url(s).map(|()| s.clone()),
            other => Err(format!("invalid callback URL {}: not a string", quoted(&other.to_string()))),
        })
        .collect()
}

/// Accepts `debug` and absolute `http`/`https` URLs with a host; nothing else.
fn check_url(raw: &str) -> Result<(), String> {
    if raw == "debug" {
        return Ok(());
    }
    let refuse = |why: &str| Err(format!("invalid callback URL {}: {why}", quoted(&redact_url(raw))));
    let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return refuse("only absolute http:// or https:// URLs are accepted");
    }
    // The URL parser forgives stray spaces and control characters; a callback is sent
    // as given, so they are refused here instead.
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("it contains spaces or control characters");
    }
    // `https:///x` would parse with `x` as its host; a host must follow the `//`.
    let after_scheme = raw.split_once("://").map_or("", |(_, rest)| rest);
    if after_scheme.is_empty() || after_scheme.starts_with(['/', '?', '#']) {
        return refuse("it has no host");
    }
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(_) => refuse("it has no host"),
        Err(e) => refuse(&e.to_string()),
    }
}

/// A value quoted for a one-line message: escaped (no newline survives) and shortened.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED_MAX_CHARS) {
        Some((cut, _)) => format!("{:?}...", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// Sends PUTs for one image, in order, on a thread of its own.
pub struct CallbackSender {
    tx: mpsc::Sender<Value>,
}

impl CallbackSender {
    /// Starts the delivery thread for `urls`.
    pub fn start(image_id: String, urls: Vec<String>) -> CallbackSender {
        let (tx, rx) = mpsc::channel::<Value>();
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(10)).build();
            for body in rx {
                for url in &urls {
                    if url == "debug" {
                        tracing::debug!(image = %image_id, %body, "status callback (debug)");
                        continue;
                    }
                    if let Err(e) = put(&agent, url, &body) {
                        tracing::warn!(image = %image_id, url = %redact_url(url), error = %e, "status callback failed");
                    }
                }
            }
        });
        CallbackSender { tx }
    }

    /// Queues one notification.
    pub fn send(&self, body: Value) {
        let _ = self.tx.send(body);
    }
}

fn put(agent: &ureq::Agent, url: &str, body: &Value) -> Result<(), String> {
    // Basic credentials in the URL (`http://user:pass@host/`) become an Authorization header.
    let (clean, auth) = split_userinfo(url);
    let mut req = agent.put(&clean).set("Content-Type", "application/json");
    if let Some(auth) = auth {
        req = req.set("Authorization", &auth);
    }
    req.send_string(&body.to_string()).map(|_| ()).map_err(|e| e.to_string())
}

/// Splits `scheme://user:pass@host/...` into the URL without userinfo and a Basic
/// Authorization header value.
fn split_userinfo(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), None) };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return (url.to_string(), None) };
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(percent_decode(userinfo));
    (format!("{scheme}://{host}{path}"), Some(format!("Basic {token}")))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The URL with any password replaced, for logs and stored parameters.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:REDACTED@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(callbacks: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("callbacks".into(), callbacks);
        m
    }

    #[test]
    fn good_callback_urls_are_accepted() {
        let ok = params(serde_json::json!(["http://127.0.0.1:9/cb", "HTTPS://bob:pw@example.com", "debug"]));
        assert_eq!(callback_urls(&ok).unwrap().len(), 3);
        assert_eq!(callback_urls(&params(Value::String("http://h/p".into()))).unwrap(), vec!["http://h/p"]);
        assert!(callback_urls(&Map::new()).unwrap().is_empty());
        assert!(callback_urls(&params(Value::Null)).unwrap().is_empty());
    }

    #[test]
    fn bad_callback_urls_are_refused_with_one_line_naming_them() {
        for bad in [
            "not a url",
            "file:///etc/passwd",
            "ftp://x",
            "http://",
            "https:///path-only",
            "http:/x",
            "//host/p",
            "http://h/a b",
            "http://h/\nx",
            "",
        ] {
            let err = callback_urls(&params(serde_json::json!(["http://ok/", bad]))).unwrap_err();
            assert!(err.starts_with("invalid callback URL "), "{bad:?}: {err}");
            assert!(err.contains(&format!("{:?}", bad)), "{bad:?} not named in: {err}");
            assert!(!err.contains('\n'), "{err:?}");
        }
        // A password in a refused URL is not echoed.
        let err = callback_urls(&params(serde_json::json!(["ftp://bob:hunter2@x/"]))).unwrap_err();
        assert!(!err.contains("hunter2") && err.contains("bob:REDACTED@x"), "{err}");
        // Not a list of strings.
        let err = callback_urls(&params(serde_json::json!({"a": 1}))).unwrap_err();
        assert!(err.starts_with("parameters.callbacks must be a list of URLs"), "{err}");
        let err = callback_urls(&params(serde_json::json!([7]))).unwrap_err();
        assert_eq!(err, "invalid callback URL \"7\": not a string");
        // A long value is shortened.
        let long = format!("gopher://{}", "a".repeat(5000));
        assert!(callback_urls(&params(serde_json::json!([long]))).unwrap_err().len() < 400);
    }

    #[test]
    fn userinfo_becomes_basic_auth_and_is_redacted() {
        let (url, auth) = split_userinfo("http://bob:s%40cret@127.0.0.1:9/cb?x=1");
        assert_eq!(url, "http://127.0.0.1:9/cb?x=1");
        assert_eq!(auth.unwrap(), "Basic Ym9iOnNAY3JldA==");
        assert_eq!(redact_url("http://bob:secret@h/p"), "http://bob:REDACTED@h/p");
        assert_eq!(redact_url("http://h/p"), "http://h/p");
        assert_eq!(split_userinfo("http://h/p"), ("http://h/p".to_string(), None));
    }
}
