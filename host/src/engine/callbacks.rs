//! Status callbacks: `parameters.callbacks` lists URLs that get an HTTP PUT of the image
//! on every status change, as the original did. Delivery runs on a thread per image so
//! a slow receiver never holds up a build; PUTs for one image stay in order. Errors are
//! logged and otherwise ignored.

use std::sync::mpsc;

use serde_json::Value;

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
