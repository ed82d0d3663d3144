//! The farm (`"image_manager": "postgres"`: builds become rows of the `jobs` table that
//! `imagefactoryd --worker` processes take), against the file store in the same run.
//! Real release `imagefactoryd` processes on loopback, a private PostgreSQL server
//! (`testkit::postgres::PgServer`), MockOS base builds (a small body, no VM).
//!
//! - **Dispatch.** 60 MockOS base builds posted at once (4 clients) to an `api_only`
//!   daemon and worked by 1, then by 3 workers (processes of their own, each with its
//!   own work dir and 2 slots): the queue's dispatch latency per job (`taken - created`
//!   of its jobs row) and jobs dispatched per second (jobs / (last taken - first
//!   created)); the start latency a client sees (POST sent to the `BUILDING` line the
//!   build writes to the image's build log), builds started per second, and the time
//!   from the first POST to all 60 COMPLETE. Baseline: the same 60 builds on one daemon
//!   over the file store (no queue, 2 slots), measured the same way (the same log line
//!   and clock; COMPLETE from its `/imagefactory/events` stream). Ratios: 1 worker
//!   against the file store, 3 workers against 1. Each setup runs 3 times, in turn.
//! - **Idle dispatch.** Before each burst, 10 builds one after another (each posted once
//!   the last is COMPLETE), so a job never waits for a slot: its latency is the worker's
//!   wake-up (the `LISTEN imagefactory_jobs` notice, else its 2 s poll). Same baseline.
//! - **Reads over 10,000 images.** 10,000 finished MockOS base images in PostgreSQL
//!   (written through `PgStore`'s `ImageStore::add`) against the same 10,000 in the file
//!   store, one daemon on each (the PostgreSQL one `api_only`), in alternating rounds:
//!   GET by id under 64 clients, the listing of every base image alone and under 4
//!   clients, errors and timeouts counted; each daemon's `GET /imagefactory` (the API
//!   root, in the same phases) as its own baseline.
//!
//! Bounded: fixed counts, every wait and phase stops at a deadline, every request has a
//! timeout. Loopback only.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::daemon::{spawn_logged, spawn_worker, write_config, Daemon, Worker};
use common::load::{ab, connect_all, Client, Phase, REQUEST_TIMEOUT};
use common::{fmt_duration, percentile, print_header, print_row, ratio};
use imagefactory::store::{FileStore, ImageStore, PgStore};
use serde_json::{json, Value};
use testkit::postgres::PgServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// Builds posted at once.
const BUILDS: usize = 60;
/// Clients posting them.
const POSTERS: usize = 4;
/// Builds posted one after another (idle dispatch).
const IDLE_BUILDS: usize = 10;
/// `max_concurrent_local_sessions` of every worker and of the file-store daemon.
const SLOTS: usize = 2;
/// All builds of one run must end within this.
const BUILD_DEADLINE: Duration = Duration::from_secs(120);
/// How often the bench looks at the database for finished images.
const POLL: Duration = Duration::from_millis(10);
const IMAGES: usize = 10_000;
const CLIENTS: usize = 64;
const LIST_CLIENTS: usize = 4;
/// Rounds of the reads, alternating between the two daemons.
const ROUNDS: usize = 3;
/// Dispatch runs of each setup (file store, 1 worker, 3 workers), in turn.
const DISPATCH_ROUNDS: usize = 3;

/// Latencies of one kind, with the seconds (summed over runs) from the first POST or
/// job of a burst to its last start: per second is `latencies.len() / span`.
#[derive(Default)]
struct Starts {
    latencies: Vec<Duration>,
    span: f64,
}

impl Starts {
    fn absorb(&mut self, o: Starts) {
        self.latencies.extend(o.latencies);
        self.span += o.span;
    }
    fn p(&mut self, q: f64) -> Duration {
        self.latencies.sort();
        percentile(&self.latencies, q)
    }
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.span.max(1e-9)
    }
}

/// What the dispatch runs of one setup measured.
#[derive(Default)]
struct Run {
    /// Burst: from the POST sent to the `BUILDING` line of the image's build log.
    start: Starts,
    /// One build at a time: the same.
    idle: Starts,
    /// Farm, burst: `taken - created` of the jobs rows.
    dispatch: Starts,
    /// Farm, one build at a time: the same.
    idle_dispatch: Starts,
    /// First POST of a burst to all of it final, per run.
    totals: Vec<Duration>,
    failed: usize,
    unfinished: usize,
    /// Jobs of the bursts each worker took.
    shares: std::collections::BTreeMap<String, i64>,
    /// Farm bursts: from a job's end (`finished`) to the next job its worker took.
    handoffs: Vec<Duration>,
}

impl Run {
    fn absorb(&mut self, o: Run) {
        self.start.absorb(o.start);
        self.idle.absorb(o.idle);
        self.dispatch.absorb(o.dispatch);
        self.idle_dispatch.absorb(o.idle_dispatch);
        self.totals.extend(o.totals);
        self.failed += o.failed;
        self.unfinished += o.unfinished;
        self.handoffs.extend(o.handoffs);
        for (w, n) in o.shares {
            *self.shares.entry(w).or_default() += n;
        }
    }
    fn total(&mut self) -> Duration {
        common::median(&mut self.totals)
    }
}

/// Now, in seconds since the epoch (the clock build logs are stamped with).
fn epoch_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Posts `n` base builds from [`POSTERS`] clients at once; returns each id with the time
/// (seconds since the epoch) its POST was sent.
async fn post_all(addr: SocketAddr, n: usize) -> Vec<(String, f64)> {
    let tasks: Vec<_> = (0..POSTERS)
        .map(|p| {
            let count = n / POSTERS + usize::from(p < n % POSTERS);
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                let mut posted = Vec::with_capacity(count);
                for _ in 0..count {
                    let sent = epoch_now();
                    let id = c.post_base_build(json!({})).await.unwrap_or_else(|e| panic!("POST: {e}"));
                    posted.push((id, sent));
                }
                posted
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.expect("a poster panicked"));
    }
    all
}

/// From each POST sent to the line its build writes to the image's build log as it turns
/// BUILDING (`<epoch s, ms> INFO Building base image with MockOS`), read over the API
/// once the builds are over. The same line, the same clock, in both stores.
async fn starts(addr: SocketAddr, posted: &[(String, f64)]) -> Starts {
    let mut c = Client::connect(addr).await;
    let (mut latencies, mut last) = (Vec::with_capacity(posted.len()), f64::NEG_INFINITY);
    for (id, sent) in posted {
        let path = format!("/imagefactory/base_images/{id}/build_log");
        match tokio::time::timeout(REQUEST_TIMEOUT, c.request("GET", &path, None)).await {
            Ok(Ok((200, _))) => {}
            other => {
                eprintln!("farm: GET {path}: {:?}", other.map(|r| r.map(|(status, _)| status)));
                c = Client::connect(addr).await;
                continue;
            }
        }
        let log = String::from_utf8_lossy(c.body());
        let at = log
            .lines()
            .find(|l| l.contains(" INFO Building base image with "))
            .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok());
        if let Some(at) = at {
            latencies.push(Duration::from_secs_f64((at - sent).max(0.0)));
            last = last.max(at);
        }
    }
    if latencies.len() < posted.len() {
        eprintln!("farm: {} of {} build logs have no BUILDING line", posted.len() - latencies.len(), posted.len());
    }
    let first = posted.iter().map(|(_, sent)| *sent).fold(f64::INFINITY, f64::min);
    Starts { latencies, span: (last - first).max(0.0) }
}

/// The daemon's `/imagefactory/events` stream, read as it comes: when each image first
/// showed each status.
struct Events {
    seen: Arc<Mutex<HashMap<(String, String), Instant>>>,
    closed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Events {
    async fn follow(addr: SocketAddr) -> Events {
        let mut stream = TcpStream::connect(addr).await.expect("cannot connect for the events");
        stream.set_nodelay(true).expect("cannot set TCP_NODELAY");
        let head = format!("GET /imagefactory/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("cannot ask for the events");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            loop {
                line.clear();
                reader.read_line(&mut line).await.expect("cannot read the events' head");
                if line.trim_end().is_empty() {
                    break;
                }
                assert!(!line.starts_with("HTTP/") || line.contains(" 200 "), "events: {line}");
            }
        })
        .await
        .expect("the events stream did not start within the request timeout");
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let (s, c) = (Arc::clone(&seen), Arc::clone(&closed));
        // Chunk-size lines and keep-alive comments are not `data:` lines; each event is
        // one chunk, so a `data:` line is never split.
        let task = tokio::spawn(async move {
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let at = Instant::now();
                let Some(data) = line.trim_end().strip_prefix("data:") else { continue };
                let Ok(v) = serde_json::from_str::<Value>(data.trim()) else { continue };
                if let (Some(id), Some(status)) = (v["id"].as_str(), v["status"].as_str()) {
                    s.lock().unwrap().entry((id.to_string(), status.to_string())).or_insert(at);
                }
            }
            c.store(true, Ordering::SeqCst);
        });
        Events { seen, closed, task }
    }

    /// When the first event with `status` for `id` arrived.
    fn first(&self, id: &str, status: &str) -> Option<Instant> {
        self.seen.lock().unwrap().get(&(id.to_string(), status.to_string())).copied()
    }

    /// Waits until every one of `ids` had a COMPLETE or FAILED event, or the deadline;
    /// returns (complete, failed, unfinished).
    async fn wait_final(&self, ids: &[String], deadline: Instant) -> (usize, usize, usize) {
        loop {
            let (mut complete, mut failed) = (0, 0);
            for id in ids {
                if self.first(id, "COMPLETE").is_some() {
                    complete += 1;
                } else if self.first(id, "FAILED").is_some() {
                    failed += 1;
                }
            }
            let unfinished = ids.len() - complete - failed;
            if unfinished == 0 || Instant::now() >= deadline || self.closed.load(Ordering::SeqCst) {
                if self.closed.load(Ordering::SeqCst) && unfinished > 0 {
                    eprintln!("farm: the events stream closed with {unfinished} builds unfinished");
                }
                return (complete, failed, unfinished);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// The dispatch runs on one daemon over the file store.
fn file_run(rt: &Runtime, dir: &Path) -> Run {
    let storage = dir.join("storage");
    let conf = write_config(
        dir,
        json!({"image_manager_args": {"storage_path": storage}, "max_concurrent_local_sessions": SLOTS}),
    );
    let daemon = spawn_logged(&conf, Some(&dir.join("daemon.log")));
    let addr = daemon.addr;
    let mut run = Run::default();
    rt.block_on(async {
        let events = Events::follow(addr).await;
        let mut c = Client::connect(addr).await;
        let mut idle = Vec::new();
        for _ in 0..IDLE_BUILDS {
            let sent = epoch_now();
            let id = c.post_base_build(json!({})).await.unwrap_or_else(|e| panic!("POST: {e}"));
            let deadline = Instant::now() + BUILD_DEADLINE;
            let (_, failed, unfinished) = events.wait_final(std::slice::from_ref(&id), deadline).await;
            run.failed += failed;
            run.unfinished += unfinished;
            idle.push((id, sent));
        }
        run.idle = starts(addr, &idle).await;
        let start = Instant::now();
        let posted = post_all(addr, BUILDS).await;
        let ids: Vec<String> = posted.iter().map(|(id, _)| id.clone()).collect();
        let (_, failed, unfinished) = events.wait_final(&ids, start + BUILD_DEADLINE).await;
        // To the last COMPLETE event, not to the end of the wait (unless some never came).
        let last_complete = ids.iter().filter_map(|id| events.first(id, "COMPLETE")).max();
        run.totals.push(last_complete.filter(|_| unfinished == 0).map_or(start.elapsed(), |at| at - start));
        run.failed += failed;
        run.unfinished += unfinished;
        run.start = starts(addr, &posted).await;
    });
    report_problems(&run, &[&dir.join("daemon.log")]);
    drop(daemon);
    run
}

/// A database of its own on the bench's server; returns its URL.
fn database(pg: &PgServer, name: &str) -> String {
    pg.psql(&format!("CREATE DATABASE {name}"));
    let url = pg.url();
    let base = url.strip_suffix("/imagefactory").expect("the testkit URL names database imagefactory");
    format!("{base}/{name}")
}

/// The config keys of the PostgreSQL store on `url` with bodies in `bodies`.
fn pg_store(url: &str, bodies: &Path, more: Value) -> Value {
    let mut v = json!({"image_manager": "postgres", "image_manager_args": {"url": url, "bodies": bodies}});
    if let (Some(o), Value::Object(more)) = (v.as_object_mut(), more) {
        o.extend(more);
    }
    v
}

/// Waits until every one of `ids` is COMPLETE or FAILED in the database, or the deadline;
/// returns (complete, failed, unfinished) and when it saw that.
fn wait_final_pg(db: &mut postgres::Client, ids: &[String], deadline: Instant) -> (usize, usize, usize, Instant) {
    loop {
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETE'), count(*) FILTER (WHERE status = 'FAILED') \
                 FROM images WHERE id = ANY($1)",
                &[&ids],
            )
            .expect("cannot read the images' states");
        let now = Instant::now();
        let (complete, failed) = (row.get::<_, i64>(0) as usize, row.get::<_, i64>(1) as usize);
        let unfinished = ids.len() - complete - failed;
        if unfinished == 0 || now >= deadline {
            return (complete, failed, unfinished, now);
        }
        std::thread::sleep(POLL);
    }
}

/// `taken - created` of each job of `ids`, over the span from the first created to the
/// last taken (the database's clock).
fn dispatch_times(db: &mut postgres::Client, ids: &[String]) -> Starts {
    let row = db
        .query_one(
            "SELECT coalesce(array_agg(extract(epoch FROM taken - created)::float8), '{}'), \
                 coalesce(extract(epoch FROM max(taken) - min(created))::float8, 0) \
             FROM jobs WHERE image_id = ANY($1) AND taken IS NOT NULL",
            &[&ids],
        )
        .expect("cannot read the jobs");
    let latencies: Vec<f64> = row.get(0);
    Starts {
        latencies: latencies.into_iter().map(|s| Duration::from_secs_f64(s.max(0.0))).collect(),
        span: row.get::<_, f64>(1).max(0.0),
    }
}

/// For each job of `ids` a worker took after one of its jobs had ended: `taken` minus
/// the latest `finished` of that worker before it (how soon a freed slot is used again).
fn handoffs(db: &mut postgres::Client, ids: &[String]) -> Vec<Duration> {
    let rows = db
        .query(
            "SELECT extract(epoch FROM j.taken - (SELECT max(p.finished) FROM jobs p \
                 WHERE p.worker = j.worker AND p.finished <= j.taken AND p.image_id = ANY($1)))::float8 \
             FROM jobs j WHERE j.image_id = ANY($1) AND j.taken IS NOT NULL",
            &[&ids],
        )
        .expect("cannot read the jobs");
    rows.iter().filter_map(|r| r.get::<_, Option<f64>>(0)).map(|s| Duration::from_secs_f64(s.max(0.0))).collect()
}

/// The dispatch runs on an `api_only` daemon and `workers` workers over a new database.
fn farm_run(rt: &Runtime, pg: &PgServer, dir: &Path, workers: usize, round: usize) -> Run {
    let url = database(pg, &format!("farm{workers}_{round}"));
    let bodies = dir.join("bodies");
    std::fs::create_dir_all(&bodies).expect("cannot make the bodies directory");
    let api_conf = write_config(&dir.join("api"), pg_store(&url, &bodies, json!({"api_only": true})));
    let api_log = dir.join("api.log");
    let daemon: Daemon = spawn_logged(&api_conf, Some(&api_log));
    let mut logs = vec![api_log];
    let farm: Vec<Worker> = (0..workers)
        .map(|i| {
            let wdir = dir.join(format!("worker{i}"));
            let settings = json!({"worker_name": format!("bench-worker-{i}"), "max_concurrent_local_sessions": SLOTS});
            let conf = write_config(&wdir, pg_store(&url, &bodies, settings));
            logs.push(wdir.join("worker.log"));
            let w = spawn_worker(&conf, &wdir.join("worker.log"));
            assert!(w.plugins.contains("MockOS"), "worker {i} has no MockOS: {}", w.plugins);
            w
        })
        .collect();
    let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("cannot connect to the bench database");
    let addr = daemon.addr;
    let mut run = Run::default();

    let mut poster = rt.block_on(Client::connect(addr));
    let mut idle = Vec::new();
    for _ in 0..IDLE_BUILDS {
        let sent = epoch_now();
        let id = rt.block_on(poster.post_base_build(json!({}))).unwrap_or_else(|e| panic!("POST: {e}"));
        let (_, failed, unfinished, _) =
            wait_final_pg(&mut db, std::slice::from_ref(&id), Instant::now() + BUILD_DEADLINE);
        run.failed += failed;
        run.unfinished += unfinished;
        idle.push((id, sent));
    }
    let idle_ids: Vec<String> = idle.iter().map(|(id, _)| id.clone()).collect();
    run.idle_dispatch = dispatch_times(&mut db, &idle_ids);
    run.idle = rt.block_on(starts(addr, &idle));

    let start = Instant::now();
    let posted = rt.block_on(post_all(addr, BUILDS));
    let ids: Vec<String> = posted.iter().map(|(id, _)| id.clone()).collect();
    let (_, failed, unfinished, done) = wait_final_pg(&mut db, &ids, start + BUILD_DEADLINE);
    run.totals.push(done - start);
    run.failed += failed;
    run.unfinished += unfinished;
    run.dispatch = dispatch_times(&mut db, &ids);
    run.start = rt.block_on(starts(addr, &posted));
    // Who took what, to show the work was shared.
    let shares = db
        .query("SELECT worker, count(*) FROM jobs WHERE image_id = ANY($1) GROUP BY worker", &[&ids])
        .expect("cannot read the jobs");
    run.handoffs = handoffs(&mut db, &ids);
    run.shares = shares.iter().map(|r| (r.get::<_, Option<String>>(0).unwrap_or_default(), r.get(1))).collect();
    let paths: Vec<&Path> = logs.iter().map(|p| p.as_path()).collect();
    report_problems(&run, &paths);
    drop(farm);
    drop(daemon);
    run
}

/// Failed or unfinished builds, and the warnings and errors of the logs, on stderr.
fn report_problems(run: &Run, logs: &[&Path]) {
    if run.failed + run.unfinished == 0 {
        return;
    }
    eprintln!("farm: {} builds FAILED, {} unfinished at the deadline", run.failed, run.unfinished);
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let bad: Vec<&str> = text.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
        eprintln!("--- {} ({} warning/error lines; last 20):", log.display(), bad.len());
        for l in bad.iter().rev().take(20).rev() {
            eprintln!("{l}");
        }
    }
}

/// Rows of `subject` against `baseline`: the queue's own figures when both are farms,
/// then what a client sees.
fn dispatch_rows(label: &str, subject: &mut Run, baseline: &mut Run) {
    let durations = |measure: &str, a: &mut Starts, b: &mut Starts, qs: [(&str, f64); 2]| {
        for (name, q) in qs {
            let (a, b) = (a.p(q), b.p(q));
            print_row(&format!("{label}: {measure} {name}"), &fmt_duration(a), &fmt_duration(b), ratio(a, b));
        }
    };
    let per_second = |measure: &str, a: &Starts, b: &Starts| {
        let (a, b) = (a.rate(), b.rate());
        print_row(&format!("{label}: {measure}"), &format!("{a:.1}"), &format!("{b:.1}"), a / b.max(1e-9));
    };
    const TAILS: [(&str, f64); 2] = [("p50", 0.5), ("p99", 0.99)];
    const IDLE: [(&str, f64); 2] = [("p50", 0.5), ("max", 1.0)];
    if !subject.dispatch.latencies.is_empty() && !baseline.dispatch.latencies.is_empty() {
        durations("dispatch", &mut subject.dispatch, &mut baseline.dispatch, TAILS);
        per_second("jobs dispatched/s", &subject.dispatch, &baseline.dispatch);
        durations("idle dispatch", &mut subject.idle_dispatch, &mut baseline.idle_dispatch, IDLE);
    }
    durations("start", &mut subject.start, &mut baseline.start, TAILS);
    per_second("builds started/s", &subject.start, &baseline.start);
    let (a, b) = (subject.total(), baseline.total());
    print_row(&format!("{label}: {BUILDS} POSTs to all COMPLETE"), &fmt_duration(a), &fmt_duration(b), ratio(a, b));
    durations("idle start", &mut subject.idle, &mut baseline.idle, IDLE);
    let (a, b) = (subject.failed + subject.unfinished, baseline.failed + baseline.unfinished);
    print_row(
        &format!("{label}: FAILED + unfinished"),
        &format!("{} + {}", subject.failed, subject.unfinished),
        &format!("{} + {}", baseline.failed, baseline.unfinished),
        a as f64 / b.max(1) as f64,
    );
}

/// One measure's subject and root phases on each daemon.
#[derive(Default)]
struct Pair {
    pg: (Phase, Phase),
    file: (Phase, Phase),
}

impl Pair {
    fn absorb(&mut self, pg: (Phase, Phase), file: (Phase, Phase)) {
        self.pg.0.absorb(pg.0);
        self.pg.1.absorb(pg.1);
        self.file.0.absorb(file.0);
        self.file.1.absorb(file.1);
    }

    fn rows(&mut self, measure: &str) {
        let (pg, file) = (&mut self.pg, &mut self.file);
        for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
            let (a, b) = (pg.0.p(q), file.0.p(q));
            print_row(&format!("{measure} {name}"), &fmt_duration(a), &fmt_duration(b), ratio(a, b));
        }
        let (a, b) = (pg.0.rps(), file.0.rps());
        print_row(&format!("{measure} requests/s"), &format!("{a:.0}"), &format!("{b:.0}"), a / b.max(1e-9));
        let (a, b) = (pg.0.errors + pg.0.timeouts, file.0.errors + file.0.timeouts);
        print_row(
            &format!("{measure} errors + timeouts"),
            &format!("{} + {}", pg.0.errors, pg.0.timeouts),
            &format!("{} + {}", file.0.errors, file.0.timeouts),
            a as f64 / b.max(1) as f64,
        );
        let (a, b) = (pg.1.p(0.5), file.1.p(0.5));
        print_row(&format!("{measure}: root p50"), &fmt_duration(a), &fmt_duration(b), ratio(a, b));
        let (a, b) = (ratio(pg.0.p(0.5), a), ratio(file.0.p(0.5), b));
        print_row(&format!("{measure}: p50 / root p50"), &format!("{a:.2}x"), &format!("{b:.2}x"), a / b.max(1e-9));
    }
}

/// GET by id and the listings over 10,000 images, PostgreSQL against the file store.
fn reads(rt: &Runtime, pg: &PgServer, dir: &Path) {
    let url = database(pg, "images10k");
    let bodies = dir.join("pg-bodies");
    let started = Instant::now();
    let pg_ids = {
        let store = PgStore::open(&url, &bodies).expect("cannot open the PostgreSQL bench store");
        common::populate(&store as &dyn ImageStore, IMAGES)
    };
    let pg_fill = started.elapsed();
    let storage = dir.join("file-storage");
    let started = Instant::now();
    let file_ids = {
        let store = FileStore::open(&storage).expect("cannot open the file bench store");
        common::populate(&store as &dyn ImageStore, IMAGES)
    };
    let file_fill = started.elapsed();
    let pg_conf = write_config(&dir.join("pgd"), pg_store(&url, &bodies, json!({"api_only": true})));
    let file_conf = write_config(&dir.join("filed"), json!({"image_manager_args": {"storage_path": storage}}));
    let pgd = spawn_logged(&pg_conf, Some(&dir.join("pgd.log")));
    let filed = spawn_logged(&file_conf, Some(&dir.join("filed.log")));

    print_header(
        &format!("farm: GET and list over {IMAGES} stored images, loopback, PostgreSQL vs file store"),
        "postgres",
        "file store",
    );
    print_row(
        &format!("add {IMAGES} records (ImageStore::add)"),
        &fmt_duration(pg_fill),
        &fmt_duration(file_fill),
        ratio(pg_fill, file_fill),
    );
    let paths =
        |ids: &[String]| Arc::new(ids.iter().map(|id| format!("/imagefactory/base_images/{id}")).collect::<Vec<_>>());
    let (pg_by_id, file_by_id) = (paths(&pg_ids), paths(&file_ids));
    let list = Arc::new(vec!["/imagefactory/base_images".to_string()]);
    let (pa, fa) = (pgd.addr, filed.addr);
    let sizes =
        rt.block_on(async {
            let mut sizes = Vec::new();
            for addr in [pa, fa] {
                let got = Client::connect(addr).await.request("GET", &list[0], None).await;
                sizes.push(got.map_or_else(|e| e, |(status, len)| format!("{status}, {:.2} MB", len as f64 / 1e6)));
            }
            // Rounds alternate between the two daemons, so a slow spell hits both alike.
            let measure = move |clients: usize,
                                pg_paths: Arc<Vec<String>>,
                                file_paths: Arc<Vec<String>>,
                                per_client| async move {
                let mut pair = Pair::default();
                let (mut pc, mut fc) = (connect_all(pa, clients).await, connect_all(fa, clients).await);
                for _ in 0..ROUNDS {
                    let (c, s, r) = ab(pa, pc, &pg_paths, per_client, 1).await;
                    pc = c;
                    let (c, fs, fr) = ab(fa, fc, &file_paths, per_client, 1).await;
                    fc = c;
                    pair.absorb((s, r), (fs, fr));
                }
                pair
            };
            measure(CLIENTS, pg_by_id, file_by_id, 100).await.rows(&format!("GET by id, {CLIENTS} clients"));
            measure(1, Arc::clone(&list), Arc::clone(&list), 20).await.rows("list base images, 1 client");
            measure(LIST_CLIENTS, Arc::clone(&list), Arc::clone(&list), 5)
                .await
                .rows(&format!("list base images, {LIST_CLIENTS} clients"));
            sizes
        });
    println!("(the listing of every base image: postgres {}, file store {})", sizes[0], sizes[1]);
    drop(pgd);
    drop(filed);
}

fn main() {
    let work = tempfile::tempdir().expect("cannot make a temporary directory");
    let pg = PgServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("cannot start tokio");

    let (mut file, mut one, mut three) = (Run::default(), Run::default(), Run::default());
    for round in 0..DISPATCH_ROUNDS {
        let dir = work.path().join(format!("round{round}"));
        file.absorb(file_run(&rt, &dir.join("file")));
        one.absorb(farm_run(&rt, &pg, &dir.join("farm1"), 1, round));
        three.absorb(farm_run(&rt, &pg, &dir.join("farm3"), 3, round));
    }
    print_header(
        &format!("farm: {BUILDS} MockOS base builds posted at once ({POSTERS} clients), {SLOTS} slots per process"),
        "subject",
        "baseline",
    );
    dispatch_rows("1 worker vs file", &mut one, &mut file);
    dispatch_rows("3 vs 1 worker", &mut three, &mut one);
    println!(
        "(dispatch: taken - created of the jobs rows; jobs dispatched/s: jobs / (last taken - first created). \
         start: POST sent to the BUILDING line of the build log (ms stamps); builds started/s: builds / \
         (last such line - first POST). idle: {IDLE_BUILDS} builds one at a time. {DISPATCH_ROUNDS} runs of \
         each, in turn: latencies pooled, the total is the median run's)"
    );
    for (label, run) in [("1 worker", &one), ("3 workers", &three)] {
        let shares: Vec<String> = run.shares.iter().map(|(w, n)| format!("{w} {n}")).collect();
        let mut h = run.handoffs.clone();
        h.sort();
        println!(
            "({label}: jobs of the bursts taken by {}; a freed slot was used again (taken - the worker's \
             previous finished) after p50 {}, p99 {}, max {})",
            shares.join(", "),
            fmt_duration(percentile(&h, 0.5)),
            fmt_duration(percentile(&h, 0.99)),
            fmt_duration(percentile(&h, 1.0)),
        );
    }

    reads(&rt, &pg, work.path());
}
