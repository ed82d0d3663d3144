//! The farm's job queue against a real PostgreSQL (a private cluster per test): taking
//! jobs by plugin and parent, never twice, leases that run out and requeue a limited
//! number of times, cancels, and the notices idle workers wait on.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imagefactory::image::{ImageKind, ImageRecord, Status};
use imagefactory::store::{CancelOutcome, ImageStore, JobQueue, NewJob, PgStore};
use testkit::postgres::PgServer;

fn job(id: &str, requires: &[&str], after: Option<&str>) -> NewJob {
    NewJob {
        image_id: id.to_string(),
        plan: format!("{{\"kind\":\"base\",\"os\":\"{}\"}}", requires[0]),
        secrets: Some("{\"credentials\":\"hunter2\"}".into()),
        requires: requires.iter().map(|s| s.to_string()).collect(),
        after_image: after.map(str::to_string),
        max_attempts: 2,
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn open(pg: &PgServer) -> (PgStore, JobQueue, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = PgStore::open(&pg.url(), dir.path()).expect("open the store");
    let queue = store.job_queue().expect("the postgres store has a job queue");
    (store, queue, dir)
}

const LEASE: Duration = Duration::from_secs(30);

#[test]
fn jobs_go_to_workers_with_their_plugins_once_their_parent_is_final() {
    let pg = PgServer::start();
    let (store, queue, _dir) = open(&pg);
    let base = ImageRecord::new(ImageKind::BaseImage, "b1".into(), "/x".into());
    store.add(&base).unwrap();
    queue.enqueue(&job("b1", &["MockOS"], None)).unwrap();
    queue.enqueue(&job("t1", &["MockOS", "MockCloud"], Some("b1"))).unwrap();

    assert!(queue.claim("w-none", &names(&["Debian"]), LEASE).unwrap().is_none(), "no plugin, no job");
    let only_os = names(&["MockOS"]);
    let taken = queue.claim("w-os", &only_os, LEASE).unwrap().expect("the base job");
    assert_eq!((taken.image_id.as_str(), taken.attempt, taken.max_attempts), ("b1", 1, 2));
    assert!(taken.secrets.as_deref().unwrap_or_default().contains("hunter2"));
    let both = names(&["MockOS", "MockCloud"]);
    assert!(queue.claim("w-both", &both, LEASE).unwrap().is_none(), "the target waits for its base");
    let mut done = base.clone();
    done.status = Status::Complete;
    store.save(&done).unwrap();
    assert!(queue.claim("w-os", &only_os, LEASE).unwrap().is_none(), "w-os lacks MockCloud");
    let t = queue.claim("w-both", &both, LEASE).unwrap().expect("the target, its base complete");
    assert_eq!(t.image_id, "t1");
    queue.finish("b1", "w-os").unwrap();
    assert_eq!(queue.state("b1").unwrap().as_deref(), Some("done"));
    assert_eq!(pg.psql("SELECT secrets IS NULL FROM jobs WHERE image_id = 'b1'").trim(), "t", "secrets go when done");
    assert_eq!(queue.active_images().unwrap(), HashSet::from(["t1".to_string()]));
}

#[test]
fn concurrent_workers_never_take_the_same_job() {
    let pg = PgServer::start();
    let (_store, queue, _dir) = open(&pg);
    for i in 0..60 {
        queue.enqueue(&job(&format!("j{i:02}"), &["MockOS"], None)).unwrap();
    }
    let queue = Arc::new(queue);
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let q = queue.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(j) = q.claim(&format!("w{w}"), &names(&["MockOS"]), LEASE).unwrap() {
                    got.push(j.image_id);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 60, "every job taken exactly once: {all:?}");
    assert_eq!(unique.len(), 60);
}

#[test]
fn a_lease_that_runs_out_requeues_the_job_then_ends_it_and_cancels_reach_workers() {
    let pg = PgServer::start();
    let (_store, queue, _dir) = open(&pg);
    let short = Duration::from_millis(300);
    queue.enqueue(&job("a", &["MockOS"], None)).unwrap();
    queue.claim("w1", &names(&["MockOS"]), short).unwrap().expect("taken");
    assert!(queue.reap().unwrap().is_empty(), "a live lease is left alone");
    std::thread::sleep(Duration::from_millis(500));
    let lost = queue.reap().unwrap();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].requeued && lost[0].worker == "w1" && lost[0].attempts == 1, "{lost:?}");
    assert!(queue.reap().unwrap().is_empty(), "each lost job is reaped once");
    assert!(queue.renew("w1", short).unwrap().is_empty(), "w1 no longer holds it");
    let again = queue.claim("w2", &names(&["MockOS"]), short).unwrap().expect("requeued");
    assert_eq!(again.attempt, 2);
    // Renewing keeps it.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(queue.renew("w2", short).unwrap(), vec![("a".to_string(), false)]);
        assert!(queue.reap().unwrap().is_empty());
    }
    assert_eq!(queue.cancel("a").unwrap(), CancelOutcome::Signalled);
    assert_eq!(queue.renew("w2", short).unwrap(), vec![("a".to_string(), true)], "the cancel reaches w2");
    std::thread::sleep(Duration::from_millis(500));
    let lost = queue.reap().unwrap();
    assert!(lost.len() == 1 && !lost[0].requeued && lost[0].attempts == 2, "out of attempts: {lost:?}");
    assert_eq!(queue.state("a").unwrap().as_deref(), Some("done"));

    queue.enqueue(&job("q", &["MockOS"], None)).unwrap();
    assert_eq!(queue.cancel("q").unwrap(), CancelOutcome::Dropped);
    assert!(queue.claim("w3", &names(&["MockOS"]), short).unwrap().is_none(), "a dropped job never runs");
    assert_eq!(queue.cancel("nothing").unwrap(), CancelOutcome::NoJob);
}

#[test]
fn an_idle_worker_wakes_when_a_job_is_queued() {
    let pg = PgServer::start();
    let (_store, queue, _dir) = open(&pg);
    let mut listener = queue.listener();
    listener.wait(Duration::from_millis(100)); // connects and listens
    assert!(!listener.wait(Duration::from_millis(200)), "nothing queued yet");
    let q = queue.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        q.enqueue(&job("n", &["MockOS"], None)).unwrap();
    });
    let start = Instant::now();
    assert!(listener.wait(Duration::from_secs(10)), "woken by the queued job");
    assert!(start.elapsed() < Duration::from_secs(5), "woken at once, not by a poll: {:?}", start.elapsed());
    t.join().unwrap();
}

#[test]
fn releasing_one_job_requeues_it_alone_without_counting_the_attempt() {
    let pg = PgServer::start();
    let (_store, queue, _dir) = open(&pg);
    queue.enqueue(&job("r1", &["MockOS"], None)).unwrap();
    queue.enqueue(&job("r2", &["MockOS"], None)).unwrap();
    let os = names(&["MockOS"]);
    let a = queue.claim("w1", &os, LEASE).unwrap().expect("a first job");
    let b = queue.claim("w1", &os, LEASE).unwrap().expect("a second job");
    queue.release(&a.image_id, "w1").unwrap();
    assert_eq!(queue.state(&a.image_id).unwrap().as_deref(), Some("queued"));
    assert_eq!(queue.state(&b.image_id).unwrap().as_deref(), Some("running"), "the worker's other job runs on");
    // The worker's next renewal keeps only the job it still runs.
    let renewed = queue.renew("w1", LEASE).unwrap();
    assert_eq!(renewed.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), vec![b.image_id.as_str()]);
    let again = queue.claim("w2", &os, LEASE).unwrap().expect("the released job, for another worker");
    assert_eq!((again.image_id.as_str(), again.attempt), (a.image_id.as_str(), 1), "the release was not an attempt");
}
