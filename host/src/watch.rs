//! `imagefactory watch ID`: follows one image (and its children) on a running daemon
//! through its event stream, printing each change, until the image ends.
//!
//! Unlike the other subcommands, which run builds in-process, this one is a client of
//! `imagefactoryd` (`--url`, default `http://127.0.0.1:8075`). With OAuth on it signs
//! its requests with `IMAGEFACTORY_OAUTH_KEY` and `IMAGEFACTORY_OAUTH_SECRET` from the
//! environment (never a command-line argument, which other users can read).
//!
//! Exit code: 0 when the image is COMPLETE (or was deleted), 1 when it FAILED or cannot
//! be followed.

use std::io::{BufRead, BufReader};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

/// A consumer key and secret to sign with.
pub struct Credentials {
    pub key: String,
    pub secret: String,
}

impl Credentials {
    /// From `IMAGEFACTORY_OAUTH_KEY` and `IMAGEFACTORY_OAUTH_SECRET`, when both are set.
    pub fn from_env() -> Option<Credentials> {
        let key = std::env::var("IMAGEFACTORY_OAUTH_KEY").ok().filter(|k| !k.is_empty())?;
        let secret = std::env::var("IMAGEFACTORY_OAUTH_SECRET").ok()?;
        Some(Credentials { key, secret })
    }
}

fn nonce() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{}", t, uuid::Uuid::new_v4().simple())
}

fn get(
    agent: &ureq::Agent,
    base: &str,
    path: &str,
    auth: Option<&Credentials>,
) -> Result<ureq::Response, Box<ureq::Error>> {
    let url = format!("{base}{path}");
    let mut req = agent.get(&url);
    if let Some(c) = auth {
        let (plain, query) = match url.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (url.clone(), None),
        };
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let header = crate::api::oauth::sign("GET", &plain, query.as_deref(), &c.key, &c.secret, &nonce(), ts);
        req = req.set("Authorization", &header);
    }
    req.call().map_err(Box::new)
}

/// One line for a change: type, short id, status, percent, activity (and the error).
fn line(v: &Value) -> String {
    let id = v["id"].as_str().unwrap_or("");
    let mut s = format!(
        "{} {} {} {}% {}",
        v["type"].as_str().unwrap_or("image"),
        &id[..id.len().min(8)],
        v["status"].as_str().unwrap_or("?"),
        v["percent_complete"].as_u64().unwrap_or(0),
        v["activity"].as_str().unwrap_or("")
    );
    if let Some(e) = v["error"].as_str() {
        s.push_str(&format!("\n  error: {e}"));
    }
    s
}

/// The end of the watch for the followed image's status, if it ended.
fn exit_for(status: &str) -> Option<i32> {
    match status {
        "COMPLETE" | "DELETED" => Some(0),
        "FAILED" | "DELETEFAILED" => Some(1),
        _ => None,
    }
}

/// Follows image `id` on the daemon at `url`; returns the exit code.
pub fn watch(url: &str, id: &str, auth: Option<&Credentials>) -> anyhow::Result<i32> {
    if uuid::Uuid::parse_str(id).is_err() {
        bail!("{id} is not an image id (a UUID)");
    }
    let base = format!("{}/imagefactory", url.trim_end_matches('/').trim_end_matches("/imagefactory"));
    let agent = ureq::AgentBuilder::new().timeout_connect(std::time::Duration::from_secs(10)).build();
    let refused = |e: Box<ureq::Error>| match *e {
        ureq::Error::Status(code, r) => {
            let text = r.into_string().unwrap_or_default();
            anyhow!("{base} answered {code}: {}", text.lines().next().unwrap_or(""))
        }
        other => anyhow!("cannot reach {base}: {other}"),
    };
    // Subscribe first, then read the current state: a change between the two is in the
    // stream, so none is lost.
    let stream = get(&agent, &base, &format!("/events?id={id}"), auth).map_err(refused)?;
    let mut current = None;
    for coll in ["base_images", "target_images", "provider_images"] {
        match get(&agent, &base, &format!("/{coll}/{id}"), auth) {
            Ok(r) => {
                let text = r.into_string().context("cannot read the daemon's answer")?;
                let v: Value = serde_json::from_str(&text).context("the daemon's answer is not JSON")?;
                current = v.as_object().and_then(|o| o.values().next()).cloned();
                break;
            }
            Err(e) if matches!(*e, ureq::Error::Status(404, _)) => continue,
            Err(e) => return Err(refused(e)),
        }
    }
    let mut rec = current.ok_or_else(|| anyhow!("No image found with id: {id}"))?;
    rec["type"] = rec["_type"].as_str().map(type_name).unwrap_or("image").into();
    rec["activity"] = rec["status_detail"]["activity"].clone();
    rec["error"] = rec["status_detail"]["error"].clone();
    println!("{}", line(&rec));
    if let Some(code) = rec["status"].as_str().and_then(exit_for) {
        return Ok(code);
    }
    let mut data = String::new();
    for l in BufReader::new(stream.into_reader()).lines() {
        let l = l.context("the event stream broke off")?;
        if let Some(d) = l.strip_prefix("data:") {
            data.push_str(d.trim_start());
            continue;
        }
        if !l.is_empty() || data.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&std::mem::take(&mut data)).context("an event is not JSON")?;
        if v["reason"].is_string() {
            continue; // a `missed` notice; this stream started fresh, so it never comes
        }
        println!("{}", line(&v));
        if v["id"] == id {
            if v["event"] == "deleted" {
                return Ok(0);
            }
            if let Some(code) = v["status"].as_str().and_then(exit_for) {
                return Ok(code);
            }
        }
    }
    bail!("the daemon closed the event stream before {id} ended")
}

/// `BaseImage` -> `base_image`.
fn type_name(t: &str) -> &'static str {
    match t {
        "BaseImage" => "base_image",
        "TargetImage" => "target_image",
        "ProviderImage" => "provider_image",
        _ => "image",
    }
}
