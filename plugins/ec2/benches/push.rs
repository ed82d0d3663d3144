//! Benchmark (not a test): push a 2 GiB sparse raw image holding about 290 MiB of real
//! data to a local moto server with the EBS direct APIs, and compare with a baseline
//! from the same run: reading the same data blocks and hashing them (SHA-256), without
//! sending anything. Each side runs in a child process of its own, so its peak RSS
//! (`VmHWM`) is its own.
//!
//!     cargo bench -p ec2-cloud-plugin --bench push
//!
//! Needs scripts/setup.sh (the moto venv). Environment: `EC2_BENCH_MIB` (image size,
//! default 2048), `EC2_BENCH_CONCURRENCY` (default 8).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Children: `push PROVIDER_JSON FILE CONCURRENCY` or `baseline FILE`.
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        child(&args[pos + 1..]);
        return;
    }
    let size_mib: u64 = std::env::var("EC2_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
    let concurrency: usize = std::env::var("EC2_BENCH_CONCURRENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(8);

    let dir = tempfile::Builder::new().prefix("ec2-bench-").tempdir().expect("a temporary directory");
    let image = dir.path().join("disk.raw");
    let data_mib = testkit::disk::SparseDisk::new(size_mib, 7).write(&image);
    println!("image: {size_mib} MiB sparse raw, {data_mib} MiB of non-zero data");

    let moto = start_moto(dir.path());
    let provider = format!(r#"{{"name": "ec2-us-east-1", "endpoint": "http://127.0.0.1:{}"}}"#, moto.1);

    let path = image.to_str().expect("utf-8 path");
    // moto loads a service's code at its first request (seconds): warm EBS up first.
    let empty = dir.path().join("empty.raw");
    std::fs::File::create(&empty).expect("create").set_len(MIB).expect("size");
    run_child(&["rawput", &moto.1.to_string(), empty.to_str().expect("utf-8 path"), "1"]);
    let base = run_child(&["baseline", path]);
    let raw = run_child(&["rawput", &moto.1.to_string(), path, &concurrency.to_string()]);
    let push = run_child(&["push", &provider, path, &concurrency.to_string()]);

    let base_rate = base.mib / base.secs;
    let push_rate = push.mib / push.secs;
    println!("baseline (read data blocks + SHA-256, nothing sent): {:.1} MiB in {:.2} s = {base_rate:.1} MiB/s, peak RSS {:.1} MiB", base.mib, base.secs, base.rss_mib);
    println!("push (EBS direct APIs to moto, concurrency {concurrency}): {:.1} MiB in {:.2} s = {push_rate:.1} MiB/s, peak RSS {:.1} MiB", push.mib, push.secs, push.rss_mib);
    let raw_rate = raw.mib / raw.secs;
    println!("plain HTTP PUTs of the same blocks to moto (no SDK, {concurrency} threads): {:.1} MiB in {:.2} s = {raw_rate:.1} MiB/s, peak RSS {:.1} MiB", raw.mib, raw.secs, raw.rss_mib);
    println!("ratio push/baseline throughput: {:.3}", push_rate / base_rate);
    println!("ratio push/plain-HTTP throughput: {:.3}", push_rate / raw_rate);
    println!("ratio push/baseline peak RSS: {:.2}", push.rss_mib / base.rss_mib);
    drop(moto);
}

/// What a child measured.
struct Figures {
    mib: f64,
    secs: f64,
    rss_mib: f64,
}

fn run_child(args: &[&str]) -> Figures {
    let me = std::env::current_exe().expect("own path");
    let out = Command::new(me).arg("--child").args(args).stderr(Stdio::inherit()).output().expect("run a child");
    assert!(out.status.success(), "the {} child failed: {}", args[0], String::from_utf8_lossy(&out.stdout));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("FIGURES ")).expect("a FIGURES line");
    let v: Vec<f64> = line.split_whitespace().skip(1).map(|x| x.parse().expect("a number")).collect();
    Figures { mib: v[0], secs: v[1], rss_mib: v[2] }
}

fn child(args: &[String]) {
    match args.first().map(String::as_str) {
        Some("baseline") => {
            let path = Path::new(&args[1]);
            let started = Instant::now();
            let mut r = ec2_cloud::blocks::DataBlocks::open(path, ec2_cloud::blocks::EBS_BLOCK_SIZE).expect("open");
            let mut buf = Vec::new();
            let mut bytes = 0u64;
            let mut h = 0u8;
            while r.next_block(&mut buf).expect("read").is_some() {
                bytes += buf.len() as u64;
                h ^= Sha256::digest(&buf)[0];
            }
            let secs = started.elapsed().as_secs_f64();
            eprintln!("baseline digest byte {h}");
            println!("FIGURES {} {secs} {}", bytes as f64 / MIB as f64, rss_mib());
        }
        Some("push") => {
            let creds = "<provider_credentials><ec2_credentials><access_key>AKIDBENCH</access_key>\
                         <secret_access_key>bench-secret</secret_access_key></ec2_credentials></provider_credentials>";
            let concurrency: usize = args[3].parse().expect("concurrency");
            let stats =
                ec2_cloud::bench_push(&args[1], creds, Path::new(&args[2]), concurrency).expect("the push failed");
            println!("FIGURES {} {} {}", stats.bytes as f64 / MIB as f64, stats.elapsed.as_secs_f64(), rss_mib());
            eprintln!(
                "pushed {} blocks of {} into {} ({} retries)",
                stats.blocks, stats.total_blocks, stats.snapshot_id, stats.retries
            );
        }
        Some("rawput") => {
            let port: u16 = args[1].parse().expect("port");
            let threads: usize = args[3].parse().expect("threads");
            let (bytes, secs) = raw_put(port, Path::new(&args[2]), threads);
            println!("FIGURES {} {secs} {}", bytes as f64 / MIB as f64, rss_mib());
        }
        other => panic!("unknown child {other:?}"),
    }
}

fn rss_mib() -> f64 {
    cloudkit::report::peak_rss_kib().map_or(0.0, |k| k as f64 / 1024.0)
}

/// moto_server on a free port (killed and reaped on drop).
struct MotoGuard(std::process::Child, u16);

impl Drop for MotoGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto(dir: &Path) -> MotoGuard {
    let bin = testkit::service_path("moto-venv/bin/moto_server");
    let port = testkit::free_port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("moto.out")).expect("log"))
        .stderr(std::fs::File::create(dir.join("moto.err")).expect("log"))
        .spawn()
        .expect("start moto_server");
    let guard = MotoGuard(child, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /moto-api/ HTTP/1.0\r\n\r\n");
            let mut b = [0u8; 12];
            if s.read(&mut b).map(|n| n > 0).unwrap_or(false) {
                return guard;
            }
        }
        assert!(Instant::now() < deadline, "moto_server did not answer within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The same StartSnapshot + PutSnapshotBlock requests as the plugin's, written by hand
/// over HTTP/1.1, a connection per request like the SDK's with moto (moto checks no signatures; the Authorization
/// header only routes the request to EBS): what sending costs without the SDK.
fn raw_put(port: u16, image: &Path, threads: usize) -> (u64, f64) {
    use base64::Engine as _;
    use std::io::BufRead;
    use std::sync::Mutex;
    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/ebs/aws4_request, \
                        SignedHeaders=host, Signature=0";
    fn request(conn: &mut std::io::BufReader<std::net::TcpStream>, head: &str, body: &[u8]) -> Vec<u8> {
        let s = conn.get_mut();
        s.write_all(head.as_bytes()).expect("send");
        s.write_all(body).expect("send");
        let mut status = String::new();
        conn.read_line(&mut status).expect("status");
        assert!(status.contains(" 200 ") || status.contains(" 201 "), "moto answered {status}");
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).expect("header");
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().expect("length");
                }
            }
        }
        let mut out = vec![0u8; len];
        conn.read_exact(&mut out).expect("body");
        out
    }
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        std::io::BufReader::new(s)
    };
    let started = Instant::now();
    let size = std::fs::metadata(image).expect("image").len();
    let body = format!(r#"{{"VolumeSize": {}}}"#, size.div_ceil(1 << 30).max(1));
    let head = format!(
        "POST /snapshots HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {AUTH}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let answer = request(&mut connect(), &head, body.as_bytes());
    let v: serde_json::Value = serde_json::from_slice(&answer).expect("StartSnapshot JSON");
    let snap = v["SnapshotId"].as_str().expect("a snapshot id").to_string();
    let reader = Mutex::new(
        ec2_cloud::blocks::DataBlocks::open(image, ec2_cloud::blocks::EBS_BLOCK_SIZE).expect("open the image"),
    );
    let sent = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    let Some(i) = reader.lock().expect("lock").next_block(&mut buf).expect("read") else { break };
                    let sum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&buf));
                    let head = format!(
                        "PUT /snapshots/{snap}/blocks/{i} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                         Authorization: {AUTH}\r\nx-amz-Data-Length: {}\r\nx-amz-Checksum: {sum}\r\n\
                         x-amz-Checksum-Algorithm: SHA256\r\nContent-Type: application/octet-stream\r\n\
                         Content-Length: {}\r\n\r\n",
                        buf.len(),
                        buf.len()
                    );
                    // moto's server closes every connection after its answer, as it does the SDK's.
                    request(&mut connect(), &head, &buf);
                    sent.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    (sent.into_inner(), started.elapsed().as_secs_f64())
}
