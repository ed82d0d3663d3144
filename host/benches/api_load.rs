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

use std::io::{BufRead, BufReader as StdBufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fmt_duration, percentile, print_header, print_row};
use imagefactory::store::FileStore;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const IMAGES: usize = 10_000;
const CLIENTS: usize = 64;
const POLLERS: usize = 500;
const BUILDS: usize = 4;
/// No request may take longer; one that does is counted as a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A phase stops at this deadline whatever it reached.
const PHASE_DEADLINE: Duration = Duration::from_secs(8);

/// A daemon over a directory with `storage/`, `plugins/` (the mock plugins) and a config.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    started_in: Duration,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, storage: &Path) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("cannot make the plugin directory");
    let build = std::env::var_os("IMAGEFACTORY_BENCH_PLUGIN_DIR").map(PathBuf::from).unwrap_or_else(common::build_dir);
    for so in ["libmock_os.so", "libmock_cloud.so"] {
        std::fs::copy(build.join(so), plugins.join(so))
            .unwrap_or_else(|e| panic!("cannot copy {so} from {}: {e}", build.display()));
    }
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).expect("cannot make the tmp directory");
    let config = serde_json::json!({
        "plugins": plugins,
        "image_manager_args": {"storage_path": storage},
        "max_concurrent_local_sessions": BUILDS,
        "tmpdir": tmp,
    });
    let path = dir.join("imagefactory.conf");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("config")).expect("cannot write the config");
    path
}

fn spawn(config: &Path) -> Daemon {
    let bin = common::build_dir().join("imagefactoryd");
    let start = Instant::now();
    let mut child = Command::new(&bin)
        .args(["--foreground", "--no_ssl", "--no_oauth", "--port", "0", "--address", "127.0.0.1", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = StdBufReader::new(stdout).lines();
    let prefix = "imagefactoryd listening on http://";
    let addr = loop {
        let line = lines.next().expect("imagefactoryd exited before listening").expect("cannot read its stdout");
        if let Some(rest) = line.strip_prefix(prefix) {
            break rest.trim_end_matches("/imagefactory").parse::<SocketAddr>().expect("a listening address");
        }
    };
    let started_in = start.elapsed();
    // Keep draining stdout so the daemon never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Daemon { child, addr, started_in }
}

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

/// A keep-alive HTTP/1.1 client that reports errors instead of stopping.
struct Client {
    stream: BufReader<TcpStream>,
    host: String,
    line: String,
    body: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("cannot connect to the daemon");
        stream.set_nodelay(true).expect("cannot set TCP_NODELAY");
        Client { stream: BufReader::new(stream), host: addr.to_string(), line: String::new(), body: Vec::new() }
    }

    async fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, usize), String> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n", self.host);
        if let Some(b) = body {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
        if let Some(b) = body {
            s.write_all(b).await.map_err(|e| e.to_string())?;
        }
        self.line.clear();
        self.stream.read_line(&mut self.line).await.map_err(|e| e.to_string())?;
        let status = self.line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).ok_or("no status line")?;
        let mut length = None;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await.map_err(|e| e.to_string())? == 0 {
                return Err("the daemon closed the connection".into());
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let length = length.ok_or("no Content-Length")?;
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await.map_err(|e| e.to_string())?;
        Ok((status, length))
    }
}

/// What one phase measured.
#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    elapsed: Duration,
    errors: usize,
    timeouts: usize,
}

impl Phase {
    fn absorb(&mut self, o: Phase) {
        self.latencies.extend(o.latencies);
        self.elapsed += o.elapsed;
        self.errors += o.errors;
        self.timeouts += o.timeouts;
    }
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn p(&mut self, q: f64) -> Duration {
        self.latencies.sort();
        percentile(&self.latencies, q)
    }
}

/// Every client sends GETs of `paths` (client `c`'s `n`-th goes to `paths[(c + n*len) %
/// len]`) back to back, `per_client` of them or until `until` (a deadline) passes. A
/// client whose request failed or timed out reconnects.
async fn phase(
    addr: SocketAddr,
    clients: Vec<Client>,
    paths: Arc<Vec<String>>,
    per_client: usize,
    until: Option<Instant>,
) -> (Vec<Client>, Phase) {
    let start = Instant::now();
    let deadline = until.unwrap_or(start + PHASE_DEADLINE);
    let n_clients = clients.len();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            let paths = Arc::clone(&paths);
            tokio::spawn(async move {
                let mut p = Phase::default();
                for n in 0..per_client {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let path = &paths[(c + n * n_clients) % paths.len()];
                    let sent = Instant::now();
                    match tokio::time::timeout(REQUEST_TIMEOUT, client.request("GET", path, None)).await {
                        Ok(Ok((200, _))) => p.latencies.push(sent.elapsed()),
                        Ok(_) => {
                            p.errors += 1;
                            client = Client::connect(addr).await;
                        }
                        Err(_) => {
                            p.timeouts += 1;
                            client = Client::connect(addr).await;
                        }
                    }
                }
                (client, p)
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(n_clients);
    let mut total = Phase::default();
    for t in tasks {
        let (client, p) = t.await.expect("a bench client panicked");
        clients.push(client);
        total.absorb(p);
    }
    total.elapsed = start.elapsed();
    (clients, total)
}

async fn connect_all(addr: SocketAddr, n: usize) -> Vec<Client> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(Client::connect(addr).await);
    }
    v
}

/// Alternates `rounds` root phases and subject phases; returns (subject, root).
async fn ab(
    addr: SocketAddr,
    mut clients: Vec<Client>,
    subject: &Arc<Vec<String>>,
    per_client: usize,
    rounds: usize,
) -> (Vec<Client>, Phase, Phase) {
    let root = Arc::new(vec!["/imagefactory".to_string()]);
    (clients, _) = phase(addr, clients, Arc::clone(subject), 2, None).await;
    let (mut s, mut r) = (Phase::default(), Phase::default());
    for _ in 0..rounds {
        let (c, p) = phase(addr, clients, Arc::clone(&root), per_client, None).await;
        r.absorb(p);
        let (c, p) = phase(addr, c, Arc::clone(subject), per_client, None).await;
        s.absorb(p);
        clients = c;
    }
    (clients, s, r)
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
    let full_conf = write_config(&work.path().join("full"), &full_storage);
    let empty_conf = write_config(&work.path().join("emptyd"), &empty_storage);

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
    runtime.block_on(async {
        let by_id = Arc::new(ids.iter().map(|id| format!("/imagefactory/base_images/{id}")).collect::<Vec<_>>());
        let clients = connect_all(addr, CLIENTS).await;
        let (clients, mut s, mut r) = ab(addr, clients, &by_id, 100, 3).await;
        rows(&format!("GET by id, {CLIENTS} clients"), &mut s, &mut r);

        let list = Arc::new(vec!["/imagefactory/base_images".to_string()]);
        let (clients, mut s, mut r) = ab(addr, clients, &list, 5, 3).await;
        rows(&format!("GET all base images, {CLIENTS} clients"), &mut s, &mut r);
        drop(clients);

        let alone = connect_all(addr, 1).await;
        let (_, mut s, mut r) = ab(addr, alone, &list, 30, 3).await;
        rows("GET all base images, 1 client", &mut s, &mut r);

        // 500 pollers: the status of the 4 builds while they run, then the root for as
        // long, through the same connections.
        let mut poster = Client::connect(addr).await;
        let mut builds = Vec::new();
        for _ in 0..BUILDS {
            let body = serde_json::json!({"base_image": {
                "template": TEMPLATE, "parameters": {"mock_sleep_seconds": 3}}});
            let body = serde_json::to_vec(&body).expect("json");
            let (status, _) = poster.request("POST", "/imagefactory/base_images", Some(&body)).await.expect("POST");
            assert_eq!(status, 202, "a build was not accepted");
            let v: serde_json::Value = serde_json::from_slice(&poster.body).expect("a JSON answer");
            builds.push(format!("/imagefactory/base_images/{}", v["base_image"]["id"].as_str().expect("an id")));
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

const TEMPLATE: &str = "<template><name>load</name><os><name>MockOS_A</name><version>1</version>\
<arch>x86_64</arch><install type='url'><url>http://mirror.invalid/mock/</url></install></os></template>";
