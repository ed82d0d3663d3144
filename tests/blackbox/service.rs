//! The daemon as a service: its config reloaded on SIGHUP, its log as JSON lines.

use std::process::Command;
use std::time::Duration;

use imagefactory_blackbox::*;
use serde_json::{json, Value};

fn hangup(d: &Daemon) {
    let status = Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().expect("run kill");
    assert!(status.success(), "kill -HUP failed");
}

fn rewrite_config(d: &Daemon, edit: impl FnOnce(&mut Value)) {
    let path = d.dir.path().join("imagefactory.conf");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).expect("the config")).expect("JSON config");
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("JSON")).expect("write the config");
}

fn status_with(d: &Daemon, secret: &str) -> u16 {
    let path = "/imagefactory/base_images";
    d.request_raw("GET", path, &[("Authorization", &d.oauth_header("GET", path, secret))], None).status
}

#[test]
fn sighup_reloads_the_oauth_clients_and_keeps_serving_through_a_broken_file() {
    let d = Daemon::start(DaemonOptions { oauth: true, ..Default::default() });
    let rotated = "a-rotated-secret-0123456789";
    assert_eq!(status_with(&d, OAUTH_SECRET), 200);
    assert_eq!(status_with(&d, rotated), 401);

    // Rotate the key's secret and change a key the listener was set up with.
    rewrite_config(&d, |c| {
        c["clients"] = json!({ OAUTH_KEY: rotated });
        c["max_connections"] = json!(77);
    });
    hangup(&d);
    wait_for(Duration::from_secs(20), "the rotated secret to be accepted", || {
        (status_with(&d, rotated) == 200).then_some(())
    });
    assert_eq!(status_with(&d, OAUTH_SECRET), 401, "the old secret still works after the reload");
    let log = d.log();
    let line = log.lines().find(|l| l.contains("SIGHUP: reloaded the config")).expect("a reload line in the log");
    assert!(line.contains("clients") && line.contains("max_connections"), "{line}");
    assert!(!log.contains(rotated) && !log.contains(OAUTH_SECRET), "a secret reached the log:\n{log}");

    // A file that does not load: one line in the log, the running config kept.
    std::fs::write(d.dir.path().join("imagefactory.conf"), b"{\"clients\": ").expect("write");
    hangup(&d);
    let error = wait_for(Duration::from_secs(20), "the reload error in the log", || {
        d.log().lines().find(|l| l.contains("SIGHUP: cannot reload the config")).map(str::to_string)
    });
    assert!(error.contains("imagefactory.conf"), "the error names the file: {error}");
    assert_eq!(status_with(&d, rotated), 200, "a broken file changed the running config");
    assert!(still_serves(&d));
}

fn still_serves(d: &Daemon) -> bool {
    let r = d.request_raw("GET", "/imagefactory", &[], None);
    r.status == 200 && r.json()["name"].is_string()
}

#[test]
fn log_format_json_writes_one_json_object_a_line() {
    let mut extra = serde_json::Map::new();
    extra.insert("log_format".into(), json!("json"));
    let d = Daemon::start(DaemonOptions { extra_config: extra, ..Default::default() });
    let id = d.create_base(&mock_tdl(), json!({}));
    d.wait_complete(&id, "base_images");
    let log = d.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "too few log lines:\n{log}");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    let in_span = lines.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|v| v["span"]["image"] == id);
    assert!(in_span, "no line carries the build's span with the image id {id}:\n{log}");
    assert!(
        lines.iter().any(|l| l.contains("listening on http://127.0.0.1:")),
        "the listening line is not in the JSON log:\n{log}"
    );
}
