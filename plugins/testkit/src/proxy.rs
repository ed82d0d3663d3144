//! A loopback TCP proxy that breaks one upload, as a flaky network would: the tests of
//! every push path use it to show a failed part is retried.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Forwards connections to a loopback port; the first connection whose request bytes
/// contain `trigger` (say `PUT /v2/images/`) is cut after `cut_after` more bytes.
/// Connections are reused by clients, so the trigger may follow other requests.
pub struct CuttingProxy {
    /// `http://127.0.0.1:<port>` of the proxy.
    pub endpoint: String,
    pub port: u16,
    /// How many connections were cut (0 or 1).
    pub cuts: Arc<AtomicUsize>,
}

impl CuttingProxy {
    pub fn start(upstream_port: u16, trigger: &'static [u8], cut_after: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("the proxy's address").port();
        let cuts = Arc::new(AtomicUsize::new(0));
        let c = cuts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let cuts = c.clone();
                std::thread::spawn(move || forward(client, upstream_port, trigger, cut_after, &cuts));
            }
        });
        CuttingProxy { endpoint: format!("http://127.0.0.1:{port}"), port, cuts }
    }

    /// How many connections were cut so far.
    pub fn cut_count(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

fn forward(mut client: TcpStream, upstream_port: u16, trigger: &[u8], cut_after: usize, cuts: &AtomicUsize) {
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else { return };
    let (Ok(mut up_read), Ok(mut client_write)) = (upstream.try_clone(), client.try_clone()) else { return };
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client_write);
        let _ = client_write.shutdown(std::net::Shutdown::Both);
    });
    let mut buf = vec![0u8; 64 * 1024];
    let (mut seen, mut cutting) = (0usize, false);
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let starts = buf[..n].windows(trigger.len()).any(|w| w == trigger);
        if !cutting && starts && cuts.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            cutting = true;
            seen = 0;
        }
        seen += n;
        if upstream.write_all(&buf[..n]).is_err() || (cutting && seen >= cut_after) {
            break;
        }
    }
    let _ = upstream.shutdown(std::net::Shutdown::Both);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = back.join();
}

/// Forwards connections to a loopback port while it is up; [`SwitchProxy::down`] closes
/// every open connection and refuses new ones (accepted, then closed at once), as a
/// server that went away would; [`SwitchProxy::up`] lets them through again.
pub struct SwitchProxy {
    /// `http://127.0.0.1:<port>` of the proxy.
    pub endpoint: String,
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl SwitchProxy {
    pub fn start(upstream_port: u16) -> SwitchProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("the proxy's address").port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open: Arc<std::sync::Mutex<Vec<TcpStream>>> = Arc::default();
        let (u, o) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if !u.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else { continue };
                if let (Ok(c), Ok(s)) = (client.try_clone(), upstream.try_clone()) {
                    o.lock().unwrap_or_else(|p| p.into_inner()).extend([c, s]);
                }
                pipe(client, upstream);
            }
        });
        SwitchProxy { endpoint: format!("http://127.0.0.1:{port}"), port, up, open }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Copies both ways between two streams, each way on a thread of its own.
fn pipe(client: TcpStream, upstream: TcpStream) {
    let (Ok(mut c_read), Ok(mut u_write)) = (client.try_clone(), upstream.try_clone()) else { return };
    let (mut u_read, mut c_write) = (upstream, client);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(std::net::Shutdown::Both);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut u_read, &mut c_write);
        let _ = c_write.shutdown(std::net::Shutdown::Both);
    });
}
