//! GET of one image under 64 concurrent keep-alive clients, against the API root as the
//! baseline, both served by the same in-process server in the same run.
//!
//! The root (`GET /imagefactory`) goes through the same listener, HTTP stack, router and
//! middleware but answers a constant, so `image GET / root GET` is what reading an image
//! (a blocking-pool hop, the store lookup, the children query, the JSON) adds on top of
//! serving any request. Rounds alternate root and image phases so a slow spell of the
//! machine hits both alike.
//!
//! Bounded: a fixed number of requests per phase, and each phase stops at a deadline
//! whatever it reached. Loopback only.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fmt_duration, percentile, print_header, print_row, Client};

/// Concurrent clients, each on its own keep-alive connection.
const CLIENTS: usize = 64;
/// Finished base images in the store ("a few hundred").
const IMAGES: usize = 300;
/// Requests each client sends per measured phase.
const REQUESTS_PER_CLIENT: usize = 150;
/// Measured rounds; each runs one root phase and one image phase.
const ROUNDS: usize = 5;
/// A phase stops at this deadline even if its requests are not all sent.
const PHASE_DEADLINE: Duration = Duration::from_secs(20);

/// What one phase measured.
#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Phase {
    fn absorb(&mut self, other: Phase) {
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
    }

    fn requests_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs one phase: every client sends `per_client` GETs back to back, client `c`'s
/// `n`-th request going to `paths[(c + n * CLIENTS) % len]`, so the images are spread
/// over clients and time. Returns the clients (their connections stay open) and the
/// latencies.
async fn phase(clients: Vec<Client>, paths: Arc<Vec<String>>, per_client: usize) -> (Vec<Client>, Phase) {
    let start = Instant::now();
    let deadline = start + PHASE_DEADLINE;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            let paths = Arc::clone(&paths);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for n in 0..per_client {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let path = &paths[(c + n * CLIENTS) % paths.len()];
                    let sent = Instant::now();
                    client.get(path).await;
                    latencies.push(sent.elapsed());
                }
                (client, latencies)
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(CLIENTS);
    let mut latencies = Vec::with_capacity(CLIENTS * per_client);
    for task in tasks {
        let (client, l) = task.await.expect("a bench client panicked");
        clients.push(client);
        latencies.extend(l);
    }
    (clients, Phase { latencies, elapsed: start.elapsed() })
}

async fn connect_all(addr: SocketAddr) -> Vec<Client> {
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(Client::connect(addr).await);
    }
    clients
}

async fn run() {
    let storage = tempfile::tempdir().expect("cannot make a temporary storage directory");
    let engine = common::engine(storage.path());
    let ids = common::populate(engine.store(), IMAGES);
    let addr = common::serve(engine, storage.path()).await;

    let root = Arc::new(vec!["/imagefactory".to_string()]);
    let images = Arc::new(ids.iter().map(|id| format!("/imagefactory/base_images/{id}")).collect::<Vec<_>>());

    let mut clients = connect_all(addr).await;
    // Warm-up, not measured: connections established, blocking threads spawned,
    // allocator and caches settled.
    (clients, _) = phase(clients, Arc::clone(&root), 20).await;
    (clients, _) = phase(clients, Arc::clone(&images), 20).await;

    let (mut root_total, mut image_total) = (Phase::default(), Phase::default());
    for _ in 0..ROUNDS {
        let (c, p) = phase(clients, Arc::clone(&root), REQUESTS_PER_CLIENT).await;
        root_total.absorb(p);
        let (c, p) = phase(c, Arc::clone(&images), REQUESTS_PER_CLIENT).await;
        image_total.absorb(p);
        clients = c;
    }
    root_total.latencies.sort();
    image_total.latencies.sort();

    print_header(
        &format!("api_get: {CLIENTS} keep-alive clients, {IMAGES} stored images"),
        "GET base_images/<id>",
        "GET /imagefactory",
    );
    let (image_rps, root_rps) = (image_total.requests_per_second(), root_total.requests_per_second());
    print_row("requests/s", &format!("{image_rps:.0}"), &format!("{root_rps:.0}"), image_rps / root_rps);
    for (name, q) in [("latency p50", 0.50), ("latency p99", 0.99)] {
        let (image, root) = (percentile(&image_total.latencies, q), percentile(&root_total.latencies, q));
        print_row(name, &fmt_duration(image), &fmt_duration(root), common::ratio(image, root));
    }
    print_row(
        "requests measured",
        &image_total.latencies.len().to_string(),
        &root_total.latencies.len().to_string(),
        image_total.latencies.len() as f64 / root_total.latencies.len().max(1) as f64,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("cannot start tokio");
    runtime.block_on(run());
}
