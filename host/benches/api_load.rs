//! The API at load, against a real `imagefactoryd` (the release binary, spawned with
//! `--no_ssl --no_oauth` on loopback) over a store of 10,000 finished MockOS base
//! images. Every latency figure has `GET /imagefactory` (the API root: same listener,
//! HTTP stack, router and middleware, a constant answer) as its baseline, measured
//! against the same daemon in the same run, in alternating phases.
//!
//! - GET of one image by id under 64 keep-alive clients;
//! - the listing of every base image under 64 clients and alone, with timeouts counted;
//! - 500 clients polling image status while 4 MockOS builds run, with errors counted;
//! - the daemon's memory (VmRSS idle, VmHWM at the end), against a daemon over an empty
//!   store;
//! - start-up (spawn to the listening line) with 10,000 images, against an empty store.
//!
//! Bounded: fixed request counts, every phase stops at a deadline, every request has a
//! timeout. Loopback only.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{spawn, write_config};
use common::load::{ab, connect_all, phase, Client, Phase};
use common::{fmt_duration, print_header, print_row};
use imagefactory::store::FileStore;

const IMAGES: usize = 10_000;
const CLIENTS: usize = 64;
const POLLERS: usize = 500;
const BUILDS: usize = 4;

/// VmRSS and VmHWM of a process, in kB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("cannot read /proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn rows(measure: &str, subject: &mut Phase, root: &mut Phase) {
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        let (a, b) = (subject.p(q), root.p(q));
        print_row(&format!("{measure} latency {name}"), &fmt_duration(a), &fmt_duration(b), common::ratio(a, b));
    }
    let (a, b) = (subject.rps(), root.rps());
    print_row(&format!("{measure} requests/s"), &format!("{a:.0}"), &format!("{b:.0}"), a / b.max(1e-9));
    print_row(
        &format!("{measure} errors + timeouts"),
        &format!("{} + {}", subject.errors, subject.timeouts),
        &format!("{} + {}", root.errors, root.timeouts),
        (subject.errors + subject.timeouts) as f64 / (root.errors + root.timeouts).max(1) as f64,
    );
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn main() {
    let work = tempfile::tempdir().expect("cannot make a temporary directory");
    let (full_storage, empty_storage) = (work.path().join("storage"), work.path().join("empty"));
    let ids = {
        let store = FileStore::open(&full_storage).expect("cannot open the bench store");
        common::populate(&store as &dyn imagefactory::store::ImageStore, IMAGES)
    };
    std::fs::create_dir_all(&empty_storage).expect("cannot make the empty store");
    let config = |dir: &str, storage: &std::path::Path| {
        let settings = serde_json::json!({
            "image_manager_args": {"storage_path": storage},
            "max_concurrent_local_sessions": BUILDS,
        });
        write_config(&work.path().join(dir), settings)
    };
    let full_conf = config("full", &full_storage);
    let empty_conf = config("emptyd", &empty_storage);

    // Start-up, alternating a daemon over 10,000 images and one over none; the first of
    // each is not counted (the page cache is warm for both after it).
    drop(spawn(&full_conf));
    drop(spawn(&empty_conf));
    let (mut full_t, mut empty_t) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        full_t.push(spawn(&full_conf).started_in);
        empty_t.push(spawn(&empty_conf).started_in);
    }
    let (full_t, empty_t) = (common::median(&mut full_t), common::median(&mut empty_t));

    let empty = spawn(&empty_conf);
    let daemon = spawn(&full_conf);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("cannot start tokio");
    let addr = daemon.addr;
    // Idle: after start and one request of each kind.
    let idle = runtime.block_on(async {
        let mut c = Client::connect(addr).await;
        let _ = c.request("GET", "/imagefactory", None).await;
        let _ = c.request("GET", &format!("/imagefactory/base_images/{}", ids[0]), None).await;
        let mut e = Client::connect(empty.addr).await;
        let _ = e.request("GET", "/imagefactory", None).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        (memory(daemon.child.id()), memory(empty.child.id()))
    });

    print_header(
        &format!("api_load: imagefactoryd over {IMAGES} stored images, loopback"),
        "subject",
        "GET /imagefactory",
    );
    // The daemon's peak so far after each phase, to tell which one sets it.
    let mut peaks: Vec<(&str, u64)> = Vec::new();
    runtime.block_on(async {
        let by_id = Arc::new(ids.iter().map(|id| format!("/imagefactory/base_images/{id}")).collect::<Vec<_>>());
        let clients = connect_all(addr, CLIENTS).await;
        let (clients, mut s, mut r) = ab(addr, clients, &by_id, 100, 3).await;
        rows(&format!("GET by id, {CLIENTS} clients"), &mut s, &mut r);
        peaks.push(("GET by id", memory(daemon.child.id()).1));

        let list = Arc::new(vec!["/imagefactory/base_images".to_string()]);
        let (clients, mut s, mut r) = ab(addr, clients, &list, 5, 3).await;
        rows(&format!("GET all base images, {CLIENTS} clients"), &mut s, &mut r);
        drop(clients);
        peaks.push(("listings", memory(daemon.child.id()).1));

        let alone = connect_all(addr, 1).await;
        let (_, mut s, mut r) = ab(addr, alone, &list, 30, 3).await;
        rows("GET all base images, 1 client", &mut s, &mut r);

        // 500 pollers: the status of the 4 builds while they run, then the root for as
        // long, through the same connections.
        let mut poster = Client::connect(addr).await;
        let mut builds = Vec::new();
        for _ in 0..BUILDS {
            let id = poster.post_base_build(serde_json::json!({"mock_sleep_seconds": 3})).await.expect("POST");
            builds.push(format!("/imagefactory/base_images/{id}"));
        }
        let pollers = connect_all(addr, POLLERS).await;
        let builds = Arc::new(builds);
        let (pollers, mut s) =
            phase(addr, pollers, builds, usize::MAX, Some(Instant::now() + Duration::from_secs(3))).await;
        let root = Arc::new(vec!["/imagefactory".to_string()]);
        let (_, mut r) = phase(addr, pollers, root, usize::MAX, Some(Instant::now() + Duration::from_secs(3))).await;
        rows(&format!("{POLLERS} pollers, {BUILDS} builds running"), &mut s, &mut r);
    });
    let (_, peak) = memory(daemon.child.id());
    let ((idle_rss, _), (empty_rss, _)) = idle;
    for (after, kb) in peaks {
        print_row(
            &format!("VmHWM after {after} (baseline: empty, idle)"),
            &mb(kb),
            &mb(empty_rss),
            kb as f64 / empty_rss.max(1) as f64,
        );
    }
    print_row(
        "VmRSS idle (baseline: empty store)",
        &mb(idle_rss),
        &mb(empty_rss),
        idle_rss as f64 / empty_rss.max(1) as f64,
    );
    print_row(
        "VmHWM after all of it (baseline: empty, idle)",
        &mb(peak),
        &mb(empty_rss),
        peak as f64 / empty_rss.max(1) as f64,
    );
    print_row(
        "start-up to listening (baseline: empty store)",
        &fmt_duration(full_t),
        &fmt_duration(empty_t),
        common::ratio(full_t, empty_t),
    );
}
