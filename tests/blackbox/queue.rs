//! The PostgreSQL job queue and `imagefactoryd --worker`: with `"image_manager":
//! "postgres"` every build is a row of table `jobs` that any worker of the farm may take.
//! These tests prove, on a private PostgreSQL cluster, with API daemons (`api_only`) and
//! workers each in a directory of its own (as on separate machines, sharing only the
//! database and the bodies: a bucket on a moto server, `"bodies": "s3://..."`, or for
//! two of the tests a shared directory), that:
//! - 100 builds posted to two API daemons are all built by three workers, each worker
//!   taking some, and both daemons tell the same story about every image and serve
//!   every body (whole or a Range) from object storage; a delete removes the objects;
//! - a worker killed with SIGKILL loses its job once its lease runs out: the job is
//!   requeued and another worker builds it; after `job_max_attempts` losses the image
//!   fails as "worker lost";
//! - a worker takes only jobs whose plugins it has loaded; a worker that builds a target
//!   on another worker's base fetches the base from object storage, sparse;
//! - a database outage in the middle of a build loses nothing; object storage that goes
//!   away gives 503 with one line, and a build that ends meanwhile waits to store its
//!   body, then completes;
//! - deleting an image whose job runs stops the build on the worker;
//! - an API daemon's event stream shows the changes a worker and another API daemon
//!   made, in order, from the database's notices;
//! - a real Debian base and its OpenStack target are built through the queue by a worker
//!   with the real plugins, the bodies in object storage, and the API daemon serves the
//!   target's qcow2;
//! - `--worker` refuses the file store in one line.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use imagefactory::store::objects::{ObjectSettings, ObjectStore};
use imagefactory_blackbox::{
    imagefactoryd_bin, mock_tdl, poll_until, run_cmd, taken_by, workers_of, Daemon, DaemonOptions, Subscriber, Worker,
    WorkerOptions,
};
use serde_json::{json, Value};
use testkit::moto::Moto;
use testkit::postgres::PgServer;
use testkit::proxy::SwitchProxy;

/// Config keys as (name, value).
type Extra<'a> = &'a [(&'a str, Value)];

fn to_map(extra: Extra) -> serde_json::Map<String, Value> {
    extra.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// The bucket of the farms that keep bodies in object storage, and its URL.
const BUCKET: &str = "farm-bodies";
const BODIES_URL: &str = "s3://farm-bodies/farm";
const S3_KEY_ID: &str = "AKIDQUEUETEST";
/// The S3 secret key: it must show in no log and no answer.
const S3_SECRET: &str = "queue-test-s3-secret-key";

/// Where a farm keeps image bodies: a bucket on a moto server, or a directory every
/// process mounts.
enum SharedBodies {
    /// `"bodies": "s3://farm-bodies/farm"`. API daemons get the endpoint and keys as
    /// config keys, workers from the usual AWS environment variables: both ways are used.
    S3 {
        /// The server, alive as long as the farm (killed on drop).
        _moto: Moto,
        /// Where the farm reaches it: moto itself or a proxy before it.
        endpoint: String,
        objects: Box<ObjectStore>,
    },
    Dir(tempfile::TempDir),
}

impl SharedBodies {
    fn s3() -> SharedBodies {
        SharedBodies::s3_through(|moto| moto.endpoint.clone())
    }

    /// A bucket on a moto server that the farm reaches at `endpoint(&moto)` (a proxy).
    fn s3_through(endpoint: impl FnOnce(&Moto) -> String) -> SharedBodies {
        let moto = Moto::start();
        moto.create_bucket(BUCKET);
        let settings = ObjectSettings {
            bucket: BUCKET.to_string(),
            prefix: "farm/".to_string(),
            endpoint: Some(moto.endpoint.clone()),
            region: "us-east-1".to_string(),
            access_key_id: S3_KEY_ID.to_string(),
            secret_access_key: S3_SECRET.to_string(),
            session_token: None,
        };
        let objects = Box::new(ObjectStore::connect(&settings).expect("a client of the farm's bucket"));
        let endpoint = endpoint(&moto);
        SharedBodies::S3 { _moto: moto, endpoint, objects }
    }

    fn dir() -> SharedBodies {
        SharedBodies::Dir(tempfile::tempdir().unwrap())
    }

    /// `image_manager_args.bodies`.
    fn location(&self) -> PathBuf {
        match self {
            SharedBodies::S3 { .. } => PathBuf::from(BODIES_URL),
            SharedBodies::Dir(d) => d.path().to_path_buf(),
        }
    }

    /// `image_manager_args` of an API daemon on `pg`.
    fn daemon_args(&self, pg: &PgServer) -> Value {
        match self {
            SharedBodies::S3 { endpoint, .. } => json!({
                "url": pg.url(), "bodies": BODIES_URL, "s3_endpoint": endpoint,
                "s3_access_key_id": S3_KEY_ID, "s3_secret_access_key": S3_SECRET,
            }),
            SharedBodies::Dir(d) => json!({"url": pg.url(), "bodies": d.path()}),
        }
    }

    /// The environment of a worker.
    fn worker_env(&self) -> Vec<(String, String)> {
        match self {
            SharedBodies::S3 { endpoint, .. } => [
                ("AWS_ENDPOINT_URL_S3", endpoint.as_str()),
                ("AWS_ACCESS_KEY_ID", S3_KEY_ID),
                ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            SharedBodies::Dir(_) => Vec::new(),
        }
    }

    /// Whether the farm's bucket holds the object `name` (`<id>.body`, ...).
    fn has(&self, name: &str) -> bool {
        match self {
            SharedBodies::S3 { objects, .. } => {
                let keys = objects.list(name).unwrap_or_else(|e| panic!("listing {name} in the bucket: {e}"));
                keys.contains(&format!("farm/{name}"))
            }
            SharedBodies::Dir(_) => panic!("a look for {name} on a farm without object storage"),
        }
    }
}

/// An API daemon (`api_only`: it never works jobs) on the shared store, with both mock
/// plugins; `extra` adds config keys (e.g. `job_lease_seconds`).
fn api_daemon(pg: &PgServer, bodies: &SharedBodies, extra: Extra) -> Daemon {
    let mut config = to_map(extra);
    config.insert("image_manager".into(), json!("postgres"));
    config.insert("image_manager_args".into(), bodies.daemon_args(pg));
    config.insert("api_only".into(), json!(true));
    Daemon::start(DaemonOptions { extra_config: config, ..Default::default() })
}

/// The options of a worker named `name` on the shared store, with both mock plugins and
/// 2 slots.
fn worker_options(pg: &PgServer, bodies: &SharedBodies, name: &str) -> WorkerOptions {
    WorkerOptions { env: bodies.worker_env(), ..WorkerOptions::new(name, &pg.url(), &bodies.location()) }
}

/// A worker named `name` on the shared store with both mock plugins and 2 slots.
fn worker(pg: &PgServer, bodies: &SharedBodies, name: &str, extra: Extra) -> Worker {
    Worker::start(WorkerOptions { extra_config: to_map(extra), ..worker_options(pg, bodies, name) })
}

/// Asserts the S3 secret key shows in no log of the farm.
fn assert_no_secret(daemons: &[&Daemon], workers: &[&Worker]) {
    let all = logs(daemons, workers);
    assert!(!all.contains(S3_SECRET), "the S3 secret key is in a log:\n{all}");
}

/// Every log of the farm, for a failure message.
fn logs(daemons: &[&Daemon], workers: &[&Worker]) -> String {
    let mut out = String::new();
    for (i, d) in daemons.iter().enumerate() {
        out.push_str(&format!("--- API daemon {i} log:\n{}\n", d.log()));
    }
    for w in workers {
        out.push_str(&format!("--- worker {} log:\n{}\n", w.name(), w.log()));
    }
    out
}

/// An image's JSON with the daemon's own origin taken out of its links.
fn seen_by(d: &Daemon, collection: &str, id: &str) -> String {
    d.get(&format!("/imagefactory/{collection}/{id}")).expect(200).text().replace(&d.origin(), "ORIGIN")
}

/// Status and activity of an image, or the answer when it is not a 200.
fn status_of(d: &Daemon, collection: &str, id: &str) -> Result<Value, String> {
    let r = d.get(&format!("/imagefactory/{collection}/{id}"));
    if r.status != 200 {
        return Err(format!("answer {} {}", r.status, r.text()));
    }
    Ok(r.json()[imagefactory_blackbox::singular(collection)].clone())
}

/// Polls an image (and its build log) every 100 ms until `done` accepts them, or panics
/// after `timeout` with the last answer, the build log and the farm's logs.
fn wait_image<T>(
    d: &Daemon,
    collection: &str,
    id: &str,
    timeout: Duration,
    workers: &[&Worker],
    what: &str,
    mut done: impl FnMut(&Value, &str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let now = status_of(d, collection, id);
        let log = d.build_log(collection, id);
        if let Some(v) = now.as_ref().ok().and_then(|img| done(img, &log)) {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "{collection}/{id} did not {what} within {timeout:?}; last: {now:?}\nbuild log:\n{log}\n{}",
                logs(&[d], workers)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the image is BUILDING and its build log names the worker that took it;
/// returns that worker's name.
fn wait_taken(d: &Daemon, collection: &str, id: &str, workers: &[&Worker]) -> String {
    wait_image(d, collection, id, Duration::from_secs(60), workers, "build on a worker", |img, log| {
        (img["status"] == "BUILDING").then(|| taken_by(log).last().cloned()).flatten()
    })
}

/// Waits (up to `timeout`) for the image to end, COMPLETE or FAILED; returns it.
fn wait_final(d: &Daemon, collection: &str, id: &str, timeout: Duration, workers: &[&Worker]) -> Value {
    wait_image(d, collection, id, timeout, workers, "end", |img, _| {
        matches!(img["status"].as_str(), Some("COMPLETE") | Some("FAILED")).then(|| img.clone())
    })
}

/// Asserts the image ended COMPLETE, showing its build log and the farm's logs if not.
#[track_caller]
fn assert_complete(img: &Value, d: &Daemon, collection: &str, workers: &[&Worker]) {
    let id = img["id"].as_str().unwrap_or_default();
    assert_eq!(
        img["status"],
        "COMPLETE",
        "{collection}/{id} did not complete: {img}\nbuild log:\n{}\n{}",
        d.build_log(collection, id),
        logs(&[d], workers)
    );
}

/// One column of an image's jobs row, e.g. `state`; `NULL` shows as `NULL`, a missing
/// row as `(no jobs row)`.
fn job_column(pg: &PgServer, id: &str, column: &str) -> String {
    let value = pg
        .psql(&format!("SELECT coalesce({column}::text, 'NULL') FROM jobs WHERE image_id = '{id}'"))
        .trim()
        .to_string();
    if value.is_empty() {
        "(no jobs row)".to_string()
    } else {
        value
    }
}

#[test]
fn two_api_daemons_and_three_workers_build_100_images() {
    let pg = PgServer::start();
    let bodies = SharedBodies::s3();
    let a = api_daemon(&pg, &bodies, &[]);
    let b = api_daemon(&pg, &bodies, &[]);
    let workers: Vec<Worker> = ["w1", "w2", "w3"].iter().map(|n| worker(&pg, &bodies, n, &[])).collect();
    let all_workers: Vec<&Worker> = workers.iter().collect();
    for w in &workers {
        assert!(w.plugins().iter().any(|p| p == "MockOS"), "{} does not offer MockOS: {:?}", w.name(), w.plugins());
    }

    // A short sleep per operation: a worker's 2 slots are busy for a while, so no worker
    // can take all 100 before the others get any.
    let ids: Vec<String> = (0..100)
        .map(|i| {
            let d = if i % 2 == 0 { &a } else { &b };
            d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 0.2}))
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(300);
    for id in &ids {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let img = wait_final(&a, "base_images", id, left, &all_workers);
        assert_complete(&img, &a, "base_images", &all_workers);
    }

    let mut by_worker: std::collections::BTreeMap<String, usize> = Default::default();
    for id in &ids {
        assert_eq!(
            seen_by(&a, "base_images", id),
            seen_by(&b, "base_images", id),
            "the two API daemons disagree about {id}"
        );
        let log = a.build_log("base_images", id);
        let takers = taken_by(&log);
        assert!(!takers.is_empty(), "no `taken by worker` line in the build log of {id}:\n{log}");
        for t in &takers {
            assert!(
                ["w1", "w2", "w3"].contains(&t.as_str()),
                "{id} was taken by {t:?}, no worker of this test:\n{log}"
            );
            *by_worker.entry(t.clone()).or_default() += 1;
        }
    }
    for w in ["w1", "w2", "w3"] {
        assert!(by_worker.contains_key(w), "worker {w} built nothing; builds per worker: {by_worker:?}");
    }
    let done = pg.psql("SELECT count(*) FROM jobs WHERE state = 'done'");
    let states = pg.psql("SELECT state, count(*) FROM jobs GROUP BY state");
    assert_eq!(done.trim(), "100", "jobs done; all job states:\n{states}");

    // Every body is in object storage: both API daemons, which built none, serve it.
    for (i, id) in ids.iter().enumerate() {
        let d = if i % 2 == 0 { &b } else { &a };
        let r = d.get(&format!("/imagefactory/base_images/{id}/raw_image"));
        assert_eq!(r.status, 200, "raw_image of {id}: {}", r.text());
        assert_eq!(r.text(), format!("MockOS base_image file for id ({id})"), "the body of {id}");
        assert!(!seen_by(d, "base_images", id).contains(S3_SECRET), "the S3 secret key is in the answer for {id}");
    }
    let first = &ids[0];
    let raw = format!("/imagefactory/base_images/{first}/raw_image");
    let part = b.request("GET", &raw, &[("Range", "bytes=0-5")], None);
    assert_eq!((part.status, part.text()), (206, "MockOS".to_string()), "a ranged GET of {first}'s body");
    let size = format!("MockOS base_image file for id ({first})").len();
    assert_eq!(part.header("content-range"), Some(format!("bytes 0-5/{size}").as_str()), "{:?}", part.headers);
    let beyond = a.request("GET", &raw, &[("Range", "bytes=1000-")], None);
    assert_eq!(beyond.status, 416, "a range past the end: {}", beyond.text());

    // A delete on one daemon removes the objects; the other then has no body to serve.
    assert!(bodies.has(&format!("{first}.body")), "{first}'s body object before the delete");
    b.delete(&format!("/imagefactory/base_images/{first}")).expect(204);
    poll_until(Duration::from_secs(30), &format!("{first}'s body object to go"), || {
        if bodies.has(&format!("{first}.body")) {
            Err("still listed".to_string())
        } else {
            Ok(())
        }
    });
    assert_eq!(a.get(&raw).status, 404, "raw_image of the deleted {first} on the other daemon");
    let daemons = [&a, &b];
    assert_no_secret(&daemons, &all_workers);
}

#[test]
fn a_worker_killed_mid_build_loses_its_job_to_another() {
    let pg = PgServer::start();
    let bodies = SharedBodies::s3();
    let lease: &[(&str, Value)] = &[("job_lease_seconds", json!(2))];
    let d = api_daemon(&pg, &bodies, lease);
    let mut w1 = worker(&pg, &bodies, "w1", lease);
    let mut w2 = worker(&pg, &bodies, "w2", lease);

    let id = d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 8}));
    let taker = wait_taken(&d, "base_images", &id, &[&w1, &w2]);
    let other = match taker.as_str() {
        "w1" => {
            w1.kill9();
            "w2"
        }
        "w2" => {
            w2.kill9();
            "w1"
        }
        t => panic!("{id} was taken by {t:?}, no worker of this test"),
    };

    let img = wait_final(&d, "base_images", &id, Duration::from_secs(90), &[&w1, &w2]);
    assert_complete(&img, &d, "base_images", &[&w1, &w2]);
    let log = d.build_log("base_images", &id);
    let requeued = format!("Requeued: worker {taker} stopped renewing its lease");
    assert!(log.contains(&requeued), "no {requeued:?} in the build log:\n{log}\n{}", logs(&[&d], &[&w1, &w2]));
    let takers = taken_by(&log);
    assert_eq!(takers, vec![taker.clone(), other.to_string()], "who took {id}, in order; build log:\n{log}");
    assert_eq!(job_column(&pg, &id, "attempts"), "2", "attempts of {id}; build log:\n{log}");
    assert_eq!(job_column(&pg, &id, "state"), "done", "state of {id}'s job");
}

#[test]
fn a_job_whose_worker_is_lost_too_often_fails_as_worker_lost() {
    let pg = PgServer::start();
    let bodies = SharedBodies::dir();
    let settings: &[(&str, Value)] = &[("job_lease_seconds", json!(2)), ("job_max_attempts", json!(1))];
    let d = api_daemon(&pg, &bodies, settings);
    let mut w1 = worker(&pg, &bodies, "w1", settings);

    let id = d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 8}));
    let taker = wait_taken(&d, "base_images", &id, &[&w1]);
    assert_eq!(taker, "w1");
    w1.kill9();

    let img = wait_final(&d, "base_images", &id, Duration::from_secs(60), &[&w1]);
    let log = d.build_log("base_images", &id);
    assert_eq!(img["status"], "FAILED", "{img}\nbuild log:\n{log}\n{}", logs(&[&d], &[&w1]));
    let error = img["status_detail"]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("worker lost: worker w1 stopped renewing its lease"),
        "the error of {id}: {error:?}\nimage: {img}\nbuild log:\n{log}"
    );
    assert_eq!(job_column(&pg, &id, "state"), "done", "state of {id}'s job");
}

#[test]
fn a_worker_without_the_plugin_never_takes_the_job() {
    let pg = PgServer::start();
    let bodies = SharedBodies::s3();
    let d = api_daemon(&pg, &bodies, &[]);
    let w1 = Worker::start(WorkerOptions { mock_cloud: false, ..worker_options(&pg, &bodies, "w1") });
    assert!(!w1.plugins().iter().any(|p| p.contains("Cloud")), "w1 has no cloud plugin, yet offers {:?}", w1.plugins());

    // A 40 MiB sparse disk: more than one part of a multipart upload.
    let r = d.post_json(
        "/imagefactory/target_images",
        &json!({"target_image": {"template": mock_tdl(), "target": "mock", "parameters": {"mock_disk_mib": 40}}}),
    );
    r.expect(202);
    let tid = r.json()["target_image"]["id"].as_str().expect("a target image id").to_string();
    let bid = r.json()["target_image"]["base_image_id"].as_str().expect("the base image id").to_string();

    // The base needs only MockOS: w1 builds it.
    let base = wait_final(&d, "base_images", &bid, Duration::from_secs(60), &[&w1]);
    assert_complete(&base, &d, "base_images", &[&w1]);
    let base_log = d.build_log("base_images", &bid);
    assert_eq!(taken_by(&base_log), vec!["w1".to_string()], "who took the base {bid}:\n{base_log}");

    // The target needs MockCloud too: it waits, untaken.
    let queued = |img: &Value| {
        img["status"] == "PENDING"
            && img["status_detail"]["activity"]
                .as_str()
                .is_some_and(|a| a.starts_with("Queued: waiting for a worker with "))
    };
    poll_until(Duration::from_secs(10), &format!("target {tid} to be queued"), || {
        let img = status_of(&d, "target_images", &tid)?;
        if queued(&img) {
            Ok(())
        } else {
            Err(format!("{img}"))
        }
    });
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let img = status_of(&d, "target_images", &tid).unwrap_or_else(|e| panic!("target {tid}: {e}"));
        assert!(
            queued(&img),
            "target {tid} left the queue with only w1 (no MockCloud) running: {img}\nbuild log:\n{}\n{}",
            d.build_log("target_images", &tid),
            logs(&[&d], &[&w1])
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(job_column(&pg, &tid, "worker"), "NULL", "the worker of {tid}'s job");
    assert_eq!(job_column(&pg, &tid, "state"), "queued", "the state of {tid}'s job");

    // A worker with both plugins takes it.
    let w2 = worker(&pg, &bodies, "w2", &[]);
    let target = wait_final(&d, "target_images", &tid, Duration::from_secs(60), &[&w1, &w2]);
    assert_complete(&target, &d, "target_images", &[&w1, &w2]);
    let log = d.build_log("target_images", &tid);
    assert_eq!(taken_by(&log), vec!["w2".to_string()], "who took the target {tid}:\n{log}");

    // w2 shares no directory with w1: it fetched the base from object storage, sparse.
    assert!(log.contains("Fetching"), "no fetch from object storage in the target's build log:\n{log}");
    let fetched = w2.dir.path().join("storage").join(format!("{bid}.body"));
    let meta = std::fs::metadata(&fetched).unwrap_or_else(|e| panic!("w2's copy {}: {e}", fetched.display()));
    assert_eq!(meta.len(), 40 << 20, "the size of w2's copy of the base");
    use std::os::unix::fs::MetadataExt;
    assert!(meta.blocks() * 512 < 8 << 20, "w2's copy is not sparse: {} bytes allocated", meta.blocks() * 512);

    // The API daemon, which built nothing and shares no directory, serves both bodies
    // from object storage; the target is a copy of the base.
    let base_body = d.get(&format!("/imagefactory/base_images/{bid}/raw_image")).expect(200).body.clone();
    let target_body = d.get(&format!("/imagefactory/target_images/{tid}/raw_image")).expect(200).body.clone();
    assert_eq!(base_body.len(), 40 << 20, "the size of the base's raw_image");
    let header = format!("{MOCK_DISK_HEADER} ({bid})");
    assert!(base_body.starts_with(header.as_bytes()), "the base body starts with {header:?}");
    assert!(target_body == base_body, "the target's body differs from its base's");
    assert_no_secret(&[&d], &[&w1, &w2]);
}

/// The first words of a MockOS disk (`mock_disk_mib`; see the MockOS plugin).
const MOCK_DISK_HEADER: &str = "MockOS raw disk for id";

#[test]
fn postgres_stopped_for_10_seconds_mid_build_recovers_with_nothing_lost() {
    let mut pg = PgServer::start();
    let bodies = SharedBodies::s3();
    let d = api_daemon(&pg, &bodies, &[]);
    let w1 = worker(&pg, &bodies, "w1", &[]);

    let id = d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 20}));
    assert_eq!(wait_taken(&d, "base_images", &id, &[&w1]), "w1");
    let before = d.build_log("base_images", &id);

    pg.stop();
    let outage = Instant::now();
    let mut checks = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        let r = d.get(&format!("/imagefactory/base_images/{id}"));
        let text = r.text();
        assert_eq!(r.status, 503, "GET of {id} during the outage: {text}");
        assert!(!text.trim_end().is_empty() && !text.trim_end().contains('\n'), "one line: {text:?}");
        checks += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(checks >= 2, "only {checks} checks during the outage");
    pg.start_again();

    let img = wait_final(&d, "base_images", &id, Duration::from_secs(90), &[&w1]);
    assert_complete(&img, &d, "base_images", &[&w1]);
    let after = d.build_log("base_images", &id);
    assert!(taken_by(&after).contains(&"w1".to_string()), "the `taken by worker w1` line is gone:\n{after}");
    for line in before.lines().filter(|l| !l.trim().is_empty()) {
        assert!(after.contains(line), "the line {line:?} from before the outage is gone; build log now:\n{after}");
    }
    assert!(bodies.has(&format!("{id}.body")), "the body of {id} in object storage");
    assert_eq!(job_column(&pg, &id, "state"), "done", "state of {id}'s job");
}

#[test]
fn object_storage_down_mid_build_gives_503_and_the_build_waits_for_it() {
    let pg = PgServer::start();
    let mut proxy = None;
    let bodies = SharedBodies::s3_through(|moto| {
        let p = SwitchProxy::start(moto.port);
        let endpoint = p.endpoint.clone();
        proxy = Some(p);
        endpoint
    });
    let proxy = proxy.expect("the proxy");
    let d = api_daemon(&pg, &bodies, &[]);
    let w1 = worker(&pg, &bodies, "w1", &[]);
    let done = d.create_base(&mock_tdl(), json!({}));
    assert_complete(&wait_final(&d, "base_images", &done, Duration::from_secs(60), &[&w1]), &d, "base_images", &[&w1]);
    let id = d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 3}));
    assert_eq!(wait_taken(&d, "base_images", &id, &[&w1]), "w1");

    proxy.down();
    let raw = format!("/imagefactory/base_images/{done}/raw_image");
    let r = d.get(&raw);
    let text = r.text();
    assert_eq!(r.status, 503, "raw_image while object storage is away: {text}");
    assert!(!text.trim_end().is_empty() && !text.trim_end().contains('\n'), "one line: {text:?}");
    // The plugin's work ends; storing the body waits for object storage, not COMPLETE yet.
    let waiting = wait_image(&d, "base_images", &id, Duration::from_secs(60), &[&w1], "wait to store", |img, _| {
        (img["status_detail"]["activity"] == "Storing the image in object storage").then(|| img.clone())
    });
    std::thread::sleep(Duration::from_secs(3));
    let still = status_of(&d, "base_images", &id).expect("the image");
    assert_eq!(still["status"], "BUILDING", "while object storage is away: {still}\nfirst seen: {waiting}");

    proxy.up();
    let img = wait_final(&d, "base_images", &id, Duration::from_secs(60), &[&w1]);
    assert_complete(&img, &d, "base_images", &[&w1]);
    let body = d.get(&format!("/imagefactory/base_images/{id}/raw_image"));
    assert_eq!((body.status, body.text()), (200, format!("MockOS base_image file for id ({id})")), "after the outage");
    assert_eq!(d.get(&raw).status, 200, "the earlier body after the outage");
    assert_no_secret(&[&d], &[&w1]);
}

#[test]
fn deleting_a_running_job_stops_it_on_the_worker() {
    let pg = PgServer::start();
    let bodies = SharedBodies::s3();
    let d = api_daemon(&pg, &bodies, &[]);
    let w1 = worker(&pg, &bodies, "w1", &[]);

    let id = d.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 30}));
    assert_eq!(wait_taken(&d, "base_images", &id, &[&w1]), "w1");
    poll_until(Duration::from_secs(10), "a build process (__worker) under w1", || {
        if workers_of(w1.pid()).is_empty() {
            Err(format!("children of w1: {:?}", imagefactory_blackbox::children_of(w1.pid())))
        } else {
            Ok(())
        }
    });

    d.delete(&format!("/imagefactory/base_images/{id}")).expect(204);
    poll_until(Duration::from_secs(15), &format!("GET of the deleted {id} to give 404"), || {
        let r = d.get(&format!("/imagefactory/base_images/{id}"));
        if r.status == 404 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.text()))
        }
    });
    // The job went with its image (nothing of a deleted image stays in the database);
    // the worker must have let go of it first.
    poll_until(Duration::from_secs(15), "the build to stop on w1", || {
        let left = workers_of(w1.pid());
        let state = job_column(&pg, &id, "state");
        if left.is_empty() && state == "(no jobs row)" {
            Ok(())
        } else {
            Err(format!("build processes of w1: {left:?}; job state {state:?}\nw1 log:\n{}", w1.log()))
        }
    });
}

#[test]
fn an_api_daemon_streams_the_changes_a_worker_and_another_daemon_made() {
    let pg = PgServer::start();
    let bodies = SharedBodies::dir();
    let a = api_daemon(&pg, &bodies, &[]);
    let b = api_daemon(&pg, &bodies, &[]);
    let w1 = worker(&pg, &bodies, "w1", &[]);
    let mut stream = Subscriber::connect(&a, "", None);
    // Posted to B, built by w1: A wrote none of it.
    let id = b.create_base(&mock_tdl(), json!({"mock_sleep_seconds": 1}));
    let events = stream.until(|e| e.data["id"] == id.as_str() && e.data["status"] == "COMPLETE");
    let mine: Vec<_> = events.iter().filter(|e| e.data["id"] == id.as_str()).collect();
    let summary: Vec<String> = mine.iter().map(|e| format!("{} {}", e.event, e.data["status"])).collect();
    assert_eq!(mine.first().map(|e| e.event.as_str()), Some("created"), "{summary:?}");
    let statuses: Vec<&str> = mine.iter().filter_map(|e| e.data["status"].as_str()).collect();
    let position = |s: &str| statuses.iter().position(|x| *x == s);
    assert!(
        position("PENDING") < position("BUILDING") && position("BUILDING") < position("COMPLETE"),
        "A's stream shows the build in order: {summary:?}\n{}",
        logs(&[&a, &b], &[&w1])
    );
    let numbers: Vec<u64> = events.iter().filter_map(|e| e.id).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "numbered in order: {numbers:?}");

    b.delete(&format!("/imagefactory/base_images/{id}")).expect(204);
    let rest = stream.until(|e| e.data["id"] == id.as_str() && e.event == "deleted");
    assert!(
        rest.iter().any(|e| e.data["id"] == id.as_str() && e.data["status"] == "DELETING"),
        "A's stream shows the delete B ran: {:?}",
        rest.iter().map(|e| format!("{} {}", e.event, e.data["status"])).collect::<Vec<_>>()
    );
}

#[test]
fn a_debian_base_and_its_openstack_target_are_built_through_the_queue() {
    let pg = PgServer::start();
    let bodies = SharedBodies::s3();
    let real = ["libdebian_os.so", "libopenstack_cloud.so"];
    let mut config = to_map(&[("api_only", json!(true)), ("timeout", json!(1800))]);
    config.insert("image_manager".into(), json!("postgres"));
    config.insert("image_manager_args".into(), bodies.daemon_args(&pg));
    let d = Daemon::start(DaemonOptions {
        extra_config: config,
        extra_plugin_files: real
            .iter()
            .map(|so| (so.to_string(), imagefactory_blackbox::PluginSource::File(imagefactory_blackbox::plugin_so(so))))
            .collect(),
        ..Default::default()
    });
    let w1 = Worker::start(WorkerOptions {
        mock_os: false,
        mock_cloud: false,
        plugins: real.iter().map(|s| s.to_string()).collect(),
        max_concurrent: 1,
        extra_config: to_map(&[("timeout", json!(1800))]),
        ..worker_options(&pg, &bodies, "w1")
    });
    assert_eq!(w1.plugins(), ["Debian", "OpenStack"].map(String::from).to_vec().as_slice(), "w1's plugins");
    let tdl = std::fs::read_to_string(imagefactory_blackbox::workspace_dir().join("conf/examples/debian12.tdl"))
        .expect("conf/examples/debian12.tdl");
    // moto keeps objects in memory (a multipart upload twice over while it completes):
    // a 1.5 GiB disk rather than the example's 4 GiB keeps that small on a CI machine.
    assert!(tdl.contains("<size>4GiB</size>"), "the example's disk size changed:\n{tdl}");
    let tdl = tdl.replace("<size>4GiB</size>", "<size>1536MiB</size>");
    let r = d.post_json(
        "/imagefactory/target_images",
        &json!({"target_image": {"template": tdl, "target": "openstack-kvm"}}),
    );
    r.expect(202);
    let tid = r.json()["target_image"]["id"].as_str().expect("a target image id").to_string();
    let bid = r.json()["target_image"]["base_image_id"].as_str().expect("the base image id").to_string();
    let base = wait_final(&d, "base_images", &bid, Duration::from_secs(1500), &[&w1]);
    assert_complete(&base, &d, "base_images", &[&w1]);
    let target = wait_final(&d, "target_images", &tid, Duration::from_secs(900), &[&w1]);
    assert_complete(&target, &d, "target_images", &[&w1]);
    for (collection, id) in [("base_images", &bid), ("target_images", &tid)] {
        let log = d.build_log(collection, id);
        assert_eq!(taken_by(&log), vec!["w1".to_string()], "who built {id}:\n{log}");
    }
    // The API daemon, which built nothing, serves the worker's qcow2 from the shared store.
    let head =
        d.request("GET", &format!("/imagefactory/target_images/{tid}/raw_image"), &[("Range", "bytes=0-3")], None);
    assert_eq!(head.status, 206, "a ranged GET of the target's body: {}", head.text());
    assert_eq!(head.body, b"QFI\xfb", "the target body is a qcow2");
    for id in [&bid, &tid] {
        assert!(bodies.has(&format!("{id}.body")), "the body of {id} in object storage");
    }
    assert_no_secret(&[&d], &[&w1]);
    let root = tdl.contains("change-me");
    let secrets = pg.psql("SELECT count(*) FROM jobs WHERE secrets IS NOT NULL");
    assert!(root && secrets.trim() == "0", "secrets (the root password) cleared from done jobs: {secrets}");
}

#[test]
fn a_worker_refuses_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let storage = dir.path().join("storage");
    for config in [
        json!({"plugins": plugins, "image_manager_args": {"storage_path": storage}}),
        json!({"plugins": plugins, "image_manager": "file", "image_manager_args": {"storage_path": storage}}),
    ] {
        let path = dir.path().join("imagefactory.conf");
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        let mut cmd = Command::new(imagefactoryd_bin());
        cmd.arg("--worker").arg("--config").arg(&path).env_remove("RUST_LOG");
        let out = run_cmd(cmd, Duration::from_secs(30));
        assert_eq!(out.code, 1, "{config}: exit code; stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
        let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{config}: one line on stderr, got:\n{}", out.stderr);
        assert!(
            lines[0].contains("--worker needs \"image_manager\": \"postgres\""),
            "{config}: the line: {:?}",
            lines[0]
        );
        assert!(!out.stdout.contains("taking jobs"), "{config}: it said it was ready: {}", out.stdout);
    }
}
