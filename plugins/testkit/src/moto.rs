//! A moto server (PyPI `moto[server]`, installed by scripts/setup.sh into the services
//! directory) on a free loopback port: the AWS the EC2 plugin's tests and the host's
//! object-storage bodies talk to.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, service_path, ChildGuard};

/// A moto server, killed on drop.
pub struct Moto {
    _guard: ChildGuard,
    dir: tempfile::TempDir,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto (up to 3 tries on fresh ports); panics with its stderr if it does not
    /// answer within 30 s.
    pub fn start() -> Moto {
        let bin = service_path("moto-venv/bin/moto_server");
        let dir = tempfile::Builder::new().prefix("moto-").tempdir().expect("a temporary directory");
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.path().join("moto.out")).expect("log file"))
                .stderr(std::fs::File::create(dir.path().join("moto.err")).expect("log file"));
            let mut guard = ChildGuard::spawn(cmd, "moto_server");
            for _ in 0..600 {
                guard.assert_running();
                if http_status(port, "GET", "/moto-api/").is_some() {
                    return Moto { _guard: guard, dir, port, endpoint: format!("http://127.0.0.1:{port}") };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!(
            "moto_server did not answer within 30 s: {}",
            std::fs::read_to_string(dir.path().join("moto.err")).unwrap_or_default()
        );
    }

    /// Makes an S3 bucket (moto takes unsigned requests).
    pub fn create_bucket(&self, bucket: &str) {
        let status = http_status(self.port, "PUT", &format!("/{bucket}"));
        assert_eq!(status, Some(200), "moto did not create the bucket {bucket}: {}", self.stderr());
    }

    /// What moto wrote to stderr so far (its request log), for failure messages.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.err")).unwrap_or_default()
    }
}

/// One bodiless request on loopback; the status line's code, if anything answered.
pub fn http_status(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n").ok()?;
    let mut head = [0u8; 32];
    let n = s.read(&mut head).ok()?;
    std::str::from_utf8(&head[..n]).ok()?.split_whitespace().nth(1)?.parse().ok()
}
