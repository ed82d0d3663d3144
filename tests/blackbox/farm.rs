//! Daemons sharing one PostgreSQL store (`"image_manager": "postgres"`): what one daemon
//! builds, the other sees at once, identically; a database that goes away gives 503s
//! with one line and the daemons recover when it returns; bad store settings stop the
//! start with one line (object storage settings too: a bad bucket name or scheme,
//! missing keys, a bucket that is not there). Each daemon has its own work directory, as
//! on separate machines; they share the database and the bodies directory.

use std::process::Command;
use std::time::Duration;

use imagefactory_blackbox::{imagefactoryd_bin, mock_tdl, run_cmd, Daemon, DaemonOptions};
use serde_json::{json, Value};
use testkit::moto::Moto;
use testkit::postgres::PgServer;

/// The S3 secret key of the bad settings; it must never be printed.
const S3_SECRET: &str = "farm-test-s3-secret-key";

fn farm_daemon(pg: &PgServer, bodies: &std::path::Path) -> Daemon {
    let mut extra = serde_json::Map::new();
    extra.insert("image_manager".into(), json!("postgres"));
    extra.insert("image_manager_args".into(), json!({"url": pg.url(), "bodies": bodies}));
    Daemon::start(DaemonOptions { extra_config: extra, ..Default::default() })
}

/// An image's JSON with the daemon's own origin taken out of its links.
fn seen_by(d: &Daemon, id: &str) -> String {
    d.get(&format!("/imagefactory/base_images/{id}")).expect(200).text().replace(&d.origin(), "ORIGIN")
}

#[test]
fn two_daemons_on_one_database_see_the_same_images_and_statuses() {
    let pg = PgServer::start();
    let bodies = tempfile::tempdir().unwrap();
    let a = farm_daemon(&pg, bodies.path());
    let b = farm_daemon(&pg, bodies.path());

    let id = a.create_base(&mock_tdl(), json!({}));
    // Built by A; B answers for it from the shared store while it runs and once done.
    let done = b.wait_complete(&id, "base_images");
    assert_eq!(done["status"], "COMPLETE");
    assert_eq!(seen_by(&a, &id), seen_by(&b, &id), "the two daemons disagree about the image");
    let listing = |d: &Daemon| {
        d.get("/imagefactory/base_images").expect(200).json()["base_images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["base_image"]["id"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(listing(&a), vec![id.clone()]);
    assert_eq!(listing(&b), listing(&a));
    let body_a = a.get(&format!("/imagefactory/base_images/{id}/raw_image")).expect(200).body.clone();
    let body_b = b.get(&format!("/imagefactory/base_images/{id}/raw_image")).expect(200).body.clone();
    assert!(!body_a.is_empty() && body_a == body_b, "the body differs between daemons");
    let log_b = b.build_log("base_images", &id);
    assert!(log_b.contains("INFO"), "B cannot read the build log A wrote: {log_b:?}");
    // The store's records are in the database, not in either daemon's directory.
    assert_eq!(pg.psql(&format!("SELECT status FROM images WHERE id = '{id}'")).trim(), "COMPLETE");
    assert!(!a.storage().join(format!("{id}.meta")).exists());

    // A delete through B removes it for A too.
    b.delete(&format!("/imagefactory/base_images/{id}")).expect(204);
    imagefactory_blackbox::wait_for(Duration::from_secs(30), "A to lose the deleted image", || {
        (a.get(&format!("/imagefactory/base_images/{id}")).status == 404).then_some(())
    });
    assert!(!bodies.path().join(format!("{id}.body")).exists());
}

#[test]
fn a_database_outage_gives_503_with_one_line_and_the_daemon_recovers() {
    let mut pg = PgServer::start();
    let bodies = tempfile::tempdir().unwrap();
    let d = farm_daemon(&pg, bodies.path());
    let id = d.create_base(&mock_tdl(), json!({}));
    d.wait_complete(&id, "base_images");
    pg.stop();
    for path in [format!("/imagefactory/base_images/{id}"), "/imagefactory/base_images".to_string()] {
        let r = d.get(&path);
        assert_eq!(r.status, 503, "{path} during the outage: {}", r.text());
        let text = r.text();
        assert!(text.contains("unavailable") && text.contains(&pg.port.to_string()), "{path}: {text}");
        assert!(!text.trim_end().contains('\n'), "one line: {text}");
    }
    let refused = d.post_json("/imagefactory/base_images", &json!({"template": mock_tdl()}));
    assert_eq!(refused.status, 503, "a new build during the outage: {}", refused.text());
    pg.start_again();
    // No restart: the next requests reconnect.
    let back = d.get(&format!("/imagefactory/base_images/{id}")).expect(200).json();
    assert_eq!(back["base_image"]["status"], "COMPLETE", "{back}");
    let again = d.create_base(&mock_tdl(), json!({}));
    d.wait_complete(&again, "base_images");
}

#[test]
fn bad_store_settings_stop_the_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let port = testkit::free_port();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"image_manager": "postgres", "image_manager_args": {"bodies": "b"}}), "needs image_manager_args.url"),
        (
            json!({"image_manager": "postgres", "image_manager_args": {"url": "mysql://u:pw@h/db", "bodies": "b"}}),
            "must be a postgres:// URL",
        ),
        (
            json!({"image_manager": "postgres", "image_manager_args": {"url": "postgres://u:pw@h/db"}}),
            "needs image_manager_args.bodies",
        ),
        (
            json!({"image_manager": "postgres", "image_manager_args": {"url": format!("postgres://u:pw@127.0.0.1:{port}/db"), "bodies": "b"}}),
            "unavailable",
        ),
        (json!({"image_manager": "mongodb"}), "\"file\" or \"postgres\""),
        (
            json!({"image_manager": "postgres", "image_manager_args": {"url": "postgres://u:pw@h/db", "bodies": "s3://Not_A_Bucket/x"}}),
            "is not a valid S3 bucket name",
        ),
        (
            json!({"image_manager": "postgres", "image_manager_args": {"url": "postgres://u:pw@h/db", "bodies": "ftp://h/x"}}),
            "only s3:// URLs are object storage",
        ),
        (
            json!({"image_manager": "postgres", "image_manager_args": {"url": "postgres://u:pw@h/db", "bodies": "s3://farm-bodies/x"}}),
            "need keys: set AWS_ACCESS_KEY_ID",
        ),
        (
            json!({"image_manager": "postgres", "image_manager_args": {
                "url": "postgres://u:pw@h/db", "bodies": "s3://farm-bodies/x", "s3_endpoint": "ftp://h",
                "s3_access_key_id": "AKIDFARM", "s3_secret_access_key": S3_SECRET}}),
            "is not an http(s) URL",
        ),
        (
            json!({"image_manager": "postgres", "image_manager_args": {
                "url": "postgres://u:pw@h/db", "bodies": "s3://no-such-bucket/x", "s3_endpoint": moto.endpoint,
                "s3_access_key_id": "AKIDFARM", "s3_secret_access_key": S3_SECRET}}),
            "the bucket no-such-bucket does not exist",
        ),
    ];
    for (config, expected) in cases {
        let path = dir.path().join("imagefactory.conf");
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        let mut cmd = Command::new(imagefactoryd_bin());
        cmd.args(["--foreground", "--no_ssl", "--no_oauth", "--port", "0", "--config"]).arg(&path);
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"] {
            cmd.env_remove(var);
        }
        let out = run_cmd(cmd, Duration::from_secs(30));
        assert_ne!(out.code, 0, "{config} was accepted");
        let last = out.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        assert!(last.contains(expected), "{config}: expected {expected:?} in the last line, got:\n{}", out.stderr);
        assert!(!out.stderr.contains("pw@"), "the URL's password leaked: {}", out.stderr);
        assert!(!out.stderr.contains(S3_SECRET), "the S3 secret key leaked: {}", out.stderr);
    }
}
