//! What the bench binaries share: fixtures (a store of finished images, the API served on
//! loopback), a minimal keep-alive HTTP/1.1 client, and the A/B timing and reporting.
//!
//! Every figure is reported next to a baseline measured in the same process and the same
//! run, and the ratio between the two is the number to read: the machines these run on
//! are small and noisy, so absolute times move from run to run while ratios hold.

// Each bench binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

/// The release `imagefactoryd` as a process (API daemon or farm worker).
pub mod daemon;
/// Load phases of many HTTP clients against a daemon, timed against its API root.
pub mod load;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imagefactory::api::{self, ApiState};
use imagefactory::config::{Config, ImageManagerArgs};
use imagefactory::engine::Engine;
use imagefactory::image::{ImageKind, ImageRecord, Status};
use imagefactory::store::{FileStore, ImageStore};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A template of realistic size, so stored records cost what real ones cost to read,
/// parse and serialize.
const TEMPLATE: &str = "<template>\n  <name>mock-jeos</name>\n  <os>\n    <name>MockOS_A</name>\n    \
<version>1</version>\n    <arch>x86_64</arch>\n    <install type='url'>\n      \
<url>http://mirror.invalid/mock/</url>\n    </install>\n  </os>\n  \
<description>A template for the MockOS test plugin.</description>\n</template>\n";

/// A config for a host over `storage` with no plugin directories and OAuth off (the
/// benches measure the API, not request signing).
pub fn config(storage: &Path) -> Config {
    Config {
        no_oauth: true,
        plugins: Vec::new(),
        image_manager_args: ImageManagerArgs { storage_path: storage.to_path_buf(), ..ImageManagerArgs::default() },
        ..Config::default()
    }
}

/// The engine the daemon would build over `storage` (no plugins: nothing is built).
pub fn engine(storage: &Path) -> Engine {
    imagefactory::setup::engine(&config(storage), &[]).expect("cannot set up the engine over the bench store")
}

/// A finished base image, as a completed MockOS build leaves it.
pub fn complete_base_image(storage: &Path, n: usize) -> ImageRecord {
    let id = uuid::Uuid::new_v4().to_string();
    let body = storage.join(format!("{id}.body")).to_string_lossy().into_owned();
    let mut rec = ImageRecord::new(ImageKind::BaseImage, id, body);
    rec.template = Some(TEMPLATE.to_string());
    rec.status = Status::Complete;
    rec.percent_complete = 100;
    rec.status_detail.activity = "Base image build complete".to_string();
    rec.parameters.insert("bench_index".to_string(), serde_json::json!(n));
    rec
}

/// Stores `count` finished base images through the product's own write path
/// (`FileStore::add`: body file, then the atomic, fsynced `.meta`), and returns their ids.
pub fn populate(store: &dyn ImageStore, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            let rec = complete_base_image(store.dir(), n);
            store.add(&rec).expect("cannot add a bench image to the store");
            rec.identifier
        })
        .collect()
}

/// A temporary storage directory holding `count` finished base images, and their ids.
pub fn populated_dir(count: usize) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().expect("cannot make a temporary storage directory");
    let store = FileStore::open(dir.path()).expect("cannot open the bench store");
    let ids = populate(&store, count);
    (dir, ids)
}

/// Serves the real API router over `engine` on 127.0.0.1 (an ephemeral port) in the
/// current tokio runtime, as `imagefactoryd --no_ssl --no_oauth` does. The server lives
/// as long as the runtime.
pub async fn serve(engine: Engine, storage: &Path) -> SocketAddr {
    let state = ApiState::new(engine, Arc::new(config(storage)), false);
    let app = api::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("cannot bind a loopback port");
    let addr = listener.local_addr().expect("no local address");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("bench server stopped: {e}");
        }
    });
    addr
}

/// One keep-alive HTTP/1.1 connection that sends GETs one after another.
///
/// Hand-written rather than a client library so the client side stays as cheap and as
/// predictable as possible: it only has to read a status line, the Content-Length and
/// the body, which is all the API's answers need.
pub struct Client {
    stream: BufReader<TcpStream>,
    request_head: String,
    line: String,
    body: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("cannot connect to the bench server");
        stream.set_nodelay(true).expect("cannot set TCP_NODELAY");
        Client {
            stream: BufReader::new(stream),
            request_head: format!("Host: {addr}\r\nAccept: application/json\r\n\r\n"),
            line: String::new(),
            body: Vec::new(),
        }
    }

    /// GETs `path` and returns the body's length. Anything but 200 stops the bench: a
    /// figure measured over error answers would be meaningless.
    pub async fn get(&mut self, path: &str) -> usize {
        let request = format!("GET {path} HTTP/1.1\r\n{}", self.request_head);
        self.stream.get_mut().write_all(request.as_bytes()).await.expect("cannot send the request");
        self.line.clear();
        self.stream.read_line(&mut self.line).await.expect("cannot read the status line");
        let status = self.line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut length = None;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await.expect("cannot read a header") == 0 {
                panic!("GET {path}: the server closed the connection");
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    panic!("GET {path}: chunked answers are not expected from this API");
                }
            }
        }
        let length = length.unwrap_or_else(|| panic!("GET {path}: the answer has no Content-Length"));
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await.expect("cannot read the body");
        if status != "200" {
            panic!("GET {path}: status {status}: {}", String::from_utf8_lossy(&self.body));
        }
        length
    }
}

/// Times `subject` and `baseline` in alternating samples (so a slow spell of the machine
/// hits both alike) and returns the median time of one call of each. `iters` calls make
/// one sample; pick them so a sample lasts a few milliseconds at least.
pub fn compare(samples: usize, subject: (u32, &mut dyn FnMut()), baseline: (u32, &mut dyn FnMut())) -> Comparison {
    let (subject_iters, subject_fn) = subject;
    let (baseline_iters, baseline_fn) = baseline;
    let mut s = Vec::with_capacity(samples);
    let mut b = Vec::with_capacity(samples);
    // One untimed round of each: first-touch costs (page faults, lazy allocations) are
    // not what is measured.
    subject_fn();
    baseline_fn();
    for _ in 0..samples {
        s.push(time_per_call(subject_iters, subject_fn));
        b.push(time_per_call(baseline_iters, baseline_fn));
    }
    Comparison { subject: median(&mut s), baseline: median(&mut b) }
}

fn time_per_call(iters: u32, f: &mut dyn FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed() / iters.max(1)
}

/// The medians of one [`compare`].
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    pub subject: Duration,
    pub baseline: Duration,
}

impl Comparison {
    pub fn ratio(&self) -> f64 {
        ratio(self.subject, self.baseline)
    }
}

pub fn ratio(subject: Duration, baseline: Duration) -> f64 {
    subject.as_secs_f64() / baseline.as_secs_f64().max(1e-12)
}

pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    percentile(v, 0.5)
}

/// The nearest-rank percentile `q` (0..=1) of sorted samples.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A duration with a unit that keeps three significant digits readable.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// Prints the heading of a bench's table. Rows are `| measure | subject | baseline | ratio |`
/// so `scripts/bench.sh` can gather them from every bench's output.
pub fn print_header(bench: &str, subject: &str, baseline: &str) {
    println!();
    println!("## {bench}");
    println!("| {:<46} | {:>20} | {:>20} | {:>9} |", "measure", subject, baseline, "ratio");
}

pub fn print_row(measure: &str, subject: &str, baseline: &str, ratio: f64) {
    println!("| {measure:<46} | {subject:>20} | {baseline:>20} | {ratio:>8.2}x |");
}

/// Prints one [`Comparison`] as a table row.
pub fn print_comparison(measure: &str, c: Comparison) {
    print_row(measure, &fmt_duration(c.subject), &fmt_duration(c.baseline), c.ratio());
}

/// The directory of the build that made this bench binary (`<target>/release` for
/// `cargo bench`), where `cargo build --release --workspace` puts the plugins.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("cannot find the bench executable");
    // <target>/<profile>/deps/<bench>-<hash>
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).expect("the bench executable has no build directory")
}
