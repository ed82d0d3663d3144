//! Load against a daemon over loopback: a keep-alive HTTP/1.1 client that reports errors
//! instead of stopping, phases of many such clients sending GETs back to back (every
//! request with a timeout, every phase with a deadline), and the alternation of a
//! subject with `GET /imagefactory` (the API root: same listener, HTTP stack, router and
//! middleware, a constant answer) measured against the same daemon.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::percentile;

/// No request may take longer; one that does is counted as a timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A phase stops at this deadline whatever it reached.
pub const PHASE_DEADLINE: Duration = Duration::from_secs(8);

/// The template of the builds the benches post: MockOS, a mirror that is never reached
/// (MockOS writes a small body) and whose state it cannot tell (never a cache hit).
pub const BUILD_TEMPLATE: &str = "<template><name>load</name><os><name>MockOS_A</name><version>1</version>\
<arch>x86_64</arch><install type='url'><url>http://mirror.invalid/mock/</url></install></os></template>";

/// A keep-alive HTTP/1.1 client that reports errors instead of stopping.
pub struct Client {
    stream: BufReader<TcpStream>,
    host: String,
    line: String,
    body: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("cannot connect to the daemon");
        stream.set_nodelay(true).expect("cannot set TCP_NODELAY");
        Client { stream: BufReader::new(stream), host: addr.to_string(), line: String::new(), body: Vec::new() }
    }

    pub async fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, usize), String> {
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

    /// The body of the last answer.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Posts a base build of [`BUILD_TEMPLATE`] with `parameters` (a JSON object) and
    /// returns the new image's id; anything but 202 is an error.
    pub async fn post_base_build(&mut self, parameters: serde_json::Value) -> Result<String, String> {
        let body = serde_json::json!({"base_image": {"template": BUILD_TEMPLATE, "parameters": parameters}});
        let body = serde_json::to_vec(&body).expect("json");
        let (status, _) =
            tokio::time::timeout(REQUEST_TIMEOUT, self.request("POST", "/imagefactory/base_images", Some(&body)))
                .await
                .map_err(|_| format!("POST took longer than {REQUEST_TIMEOUT:?}"))??;
        if status != 202 {
            return Err(format!("a build was not accepted: {status} {}", String::from_utf8_lossy(&self.body)));
        }
        let v: serde_json::Value = serde_json::from_slice(&self.body).map_err(|e| format!("not JSON: {e}"))?;
        v["base_image"]["id"].as_str().map(str::to_string).ok_or_else(|| format!("no id in {v}"))
    }
}

/// What one phase measured.
#[derive(Default)]
pub struct Phase {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    pub errors: usize,
    pub timeouts: usize,
}

impl Phase {
    pub fn absorb(&mut self, o: Phase) {
        self.latencies.extend(o.latencies);
        self.elapsed += o.elapsed;
        self.errors += o.errors;
        self.timeouts += o.timeouts;
    }
    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn p(&mut self, q: f64) -> Duration {
        self.latencies.sort();
        percentile(&self.latencies, q)
    }
}

/// Every client sends GETs of `paths` (client `c`'s `n`-th goes to `paths[(c + n*len) %
/// len]`) back to back, `per_client` of them or until `until` (a deadline) passes. A
/// client whose request failed or timed out reconnects.
pub async fn phase(
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

pub async fn connect_all(addr: SocketAddr, n: usize) -> Vec<Client> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(Client::connect(addr).await);
    }
    v
}

/// Alternates `rounds` root phases and subject phases; returns (subject, root).
pub async fn ab(
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
