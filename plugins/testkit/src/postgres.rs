//! A private PostgreSQL server for a test: its own cluster in a temporary directory,
//! listening on a free loopback port, with trust authentication for the `postgres` user.
//!
//! The server binaries come from Debian's `postgresql` package (installed by
//! `scripts/setup.d/60-postgres.sh`); a test that needs one fails loudly without them.
//! PostgreSQL refuses to run as root, so when the test runs as root the cluster belongs to
//! the package's `postgres` system user and every server command runs as it (`runuser`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A running private cluster; stopped (immediately) and removed on drop.
pub struct PgServer {
    /// Holds the cluster's directory (`data/`, `server.log`).
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    running: bool,
}

/// The newest `/usr/lib/postgresql/<major>/bin` that has `initdb`.
fn server_bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no PostgreSQL server under /usr/lib/postgresql (Debian package postgresql): run scripts/setup.sh")
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

impl PgServer {
    /// Makes a cluster and starts it, with a database named `imagefactory`.
    pub fn start() -> PgServer {
        let bin = server_bin_dir();
        let dir = tempfile::Builder::new().prefix("imagefactory-pg-").tempdir().expect("a temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("create the data dir");
        if running_as_root() {
            // The server's user must reach its directory.
            run(Command::new("chmod").arg("755").arg(dir.path()), "chmod the cluster dir");
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()), "chown the cluster dir");
        }
        let mut pg = PgServer { dir, bin, port: crate::free_port(), running: false };
        let mut initdb = pg.command("initdb");
        initdb.args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync", "-D"]).arg(&data);
        run(&mut initdb, "initdb");
        // Settings for a test server: no fsync (a crash of the test machine loses nothing
        // a test needs; a killed server loses nothing either, its WAL is in the page
        // cache), TCP on loopback only, no Unix socket outside the test's own dir.
        // synchronous_commit stays on: without it a commit acknowledged just before an
        // immediate stop could be lost, which the outage tests would see.
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\n\
             full_page_writes = off\nmax_connections = 300\nshared_buffers = 32MB\n",
            pg.port,
            pg.dir.path().display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&conf_path, text).expect("write postgresql.conf");
        pg.start_again();
        let mut create = pg.command("createdb");
        create.args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "imagefactory"]);
        run(&mut create, "createdb");
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/imagefactory`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/imagefactory", self.port)
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server at once (`-m immediate`: as if the machine lost it).
    pub fn stop(&mut self) {
        if self.running {
            let data = self.data();
            let mut stop = self.command("pg_ctl");
            stop.args(["stop", "-m", "immediate", "-w", "-D"]).arg(&data);
            run(&mut stop, "pg_ctl stop");
            self.running = false;
        }
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn start_again(&mut self) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let mut start = self.command("pg_ctl");
        start.args(["start", "-w", "-t", "60", "-D"]).arg(&data).arg("-l").arg(&log);
        let out = start.output().expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        self.running = true;
        crate::process::wait_until(Duration::from_secs(30), "PostgreSQL accepting connections", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A server program, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// Runs SQL through `psql` and returns its unaligned output (one line per row).
    pub fn psql(&self, sql: &str) -> String {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() { psql } else { Path::new("psql").to_path_buf() };
        let out = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url(), "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let _ = self
                .command("pg_ctl")
                .args(["stop", "-m", "immediate", "-D"])
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
