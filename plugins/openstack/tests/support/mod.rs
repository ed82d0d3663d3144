//! Test support for the OpenStack plugin: a real Glance (PyPI glance under gunicorn,
//! sqlite, no Keystone) on a free loopback port, a small stand-in for Keystone's token
//! endpoint, and the real `imagefactory` CLI over a private config and store.
//!
//! Every wait has a deadline, a missing tool or build product fails loudly (naming
//! scripts/setup.sh or `cargo build --workspace`), and every child process is killed and
//! reaped when its owner is dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha512};

pub const MIB: u64 = 1024 * 1024;

pub use testkit::proxy::CuttingProxy;
pub use testkit::{built, free_port};

/// The Glance venv scripts/setup.sh installs: `$IMAGEFACTORY_GLANCE_VENV`, else
/// `${IMAGEFACTORY_SERVICES:-$HOME/.cache/imagefactory}/glance-venv`.
pub fn glance_venv() -> PathBuf {
    let venv = match std::env::var_os("IMAGEFACTORY_GLANCE_VENV").filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => {
            let services =
                std::env::var_os("IMAGEFACTORY_SERVICES").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(
                    || PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/imagefactory"),
                );
            services.join("glance-venv")
        }
    };
    for need in ["bin/gunicorn", "bin/glance-manage", "etc/glance/glance-api-paste.ini"] {
        assert!(
            venv.join(need).exists(),
            "Glance is not installed ({} is missing): run scripts/setup.sh",
            venv.join(need).display()
        );
    }
    venv
}

/// Fails loudly when qemu-img is missing.
pub fn require_qemu_img() {
    let ok = Command::new("qemu-img").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "qemu-img is not installed (Debian package qemu-utils): run scripts/setup.sh");
}

/// Waits for a child with a deadline; kills and reaps it when the deadline passes.
pub fn wait_with_deadline(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("wait for a child") {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP request on loopback with a plain TcpStream-free client (ureq), any status.
pub fn http(method: &str, url: &str) -> (u16, Vec<u8>) {
    request(&ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build(), method, url)
}

/// One HTTP request through `agent`, any status.
pub fn request(agent: &ureq::Agent, method: &str, url: &str) -> (u16, Vec<u8>) {
    let resp = match agent.request(method, url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).expect("read an answer");
    (status, body)
}

/// sha512 (hex) of everything `r` yields, read in 1 MiB pieces.
pub fn sha512_of(mut r: impl Read) -> (String, u64) {
    let mut h = Sha512::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).expect("read data to hash");
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    (h.finalize().iter().map(|b| format!("{b:02x}")).collect(), total)
}

/// Streams an image's data back from Glance and hashes it.
pub fn download_sha512(endpoint: &str, id: &str) -> (String, u64) {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build();
    let resp = agent.get(&format!("{endpoint}/v2/images/{id}/file")).call().expect("download the image");
    assert_eq!(resp.status(), 200);
    sha512_of(resp.into_reader())
}

// -------------------------------------------------------------------------------------
// Glance

/// A running Glance API on 127.0.0.1 over a temporary directory. Killed on drop.
pub struct GlanceServer {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    pub endpoint: String,
    /// The CA of the server's certificate, when it serves HTTPS.
    pub ca_pem: Option<PathBuf>,
}

impl GlanceServer {
    /// Glance over plain HTTP.
    pub fn start() -> GlanceServer {
        GlanceServer::start_with(None)
    }

    /// Glance over HTTPS, with a server certificate `ca` signed.
    pub fn start_tls(ca: &testkit::tls::LocalCa) -> GlanceServer {
        GlanceServer::start_with(Some(ca))
    }

    fn start_with(ca: Option<&testkit::tls::LocalCa>) -> GlanceServer {
        let venv = glance_venv();
        let mut dir = tempfile::Builder::new().prefix("glance-").tempdir().expect("temp dir");
        let base = dir.path().to_path_buf();
        let d = base.as_path();
        for sub in ["images", "staging", "tasks"] {
            std::fs::create_dir_all(d.join(sub)).expect("create Glance dirs");
        }
        std::fs::copy(venv.join("etc/glance/glance-api-paste.ini"), d.join("glance-api-paste.ini"))
            .expect("copy glance-api-paste.ini");
        // No Keystone: an empty paste flavor selects the unauthenticated pipeline, and
        // the old policy defaults let that anonymous context create images.
        let conf = format!(
            "[DEFAULT]\nenabled_backends = fs:file\n\n[database]\nconnection = sqlite:///{db}\n\n\
             [paste_deploy]\nflavor =\n\n[glance_store]\ndefault_backend = fs\n\n\
             [fs]\nfilesystem_store_datadir = {images}\n\n\
             [os_glance_staging_store]\nfilesystem_store_datadir = {staging}\n\n\
             [os_glance_tasks_store]\nfilesystem_store_datadir = {tasks}\n\n\
             [oslo_policy]\nenforce_new_defaults = false\n",
            db = d.join("glance.sqlite").display(),
            images = d.join("images").display(),
            staging = d.join("staging").display(),
            tasks = d.join("tasks").display(),
        );
        std::fs::write(d.join("glance-api.conf"), conf).expect("write glance-api.conf");
        let log = |name: &str| std::fs::File::create(d.join(name)).expect("create a log file");
        let mut sync = Command::new(venv.join("bin/glance-manage"))
            .arg("--config-file")
            .arg(d.join("glance-api.conf"))
            .arg("db_sync")
            .stdin(Stdio::null())
            .stdout(log("db_sync.log"))
            .stderr(log("db_sync.err"))
            .spawn()
            .expect("run glance-manage");
        let st = wait_with_deadline(&mut sync, Duration::from_secs(180), "glance-manage db_sync");
        assert!(
            st.success(),
            "glance-manage db_sync failed: {}",
            std::fs::read_to_string(d.join("db_sync.err")).unwrap_or_default()
        );

        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(venv.join("bin/gunicorn"));
            cmd.args(["-b", &format!("127.0.0.1:{port}"), "-w", "1", "--threads", "4", "--graceful-timeout", "5"])
                .arg("glance.wsgi.api:application")
                .env("OS_GLANCE_CONFIG_DIR", d)
                .current_dir(d)
                .stdin(Stdio::null())
                .stdout(log("gunicorn.out"))
                .stderr(log("gunicorn.log"));
            if let Some(ca) = ca {
                cmd.arg("--certfile").arg(&ca.server_pem).arg("--keyfile").arg(&ca.server_key);
            }
            // Its own process group, so the workers can be killed with the master.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let child = cmd.spawn().expect("start gunicorn");
            let scheme = if ca.is_some() { "https" } else { "http" };
            let mut server = GlanceServer {
                dir,
                child: Some(child),
                port,
                endpoint: format!("{scheme}://127.0.0.1:{port}"),
                ca_pem: ca.map(|c| c.ca_pem.clone()),
            };
            if server.wait_ready(Duration::from_secs(90)) {
                return server;
            }
            last_log = std::fs::read_to_string(server.dir.path().join("gunicorn.log")).unwrap_or_default();
            server.stop();
            dir = std::mem::replace(&mut server.dir, tempfile::tempdir().expect("temp dir"));
        }
        panic!("Glance did not start; gunicorn's log:\n{last_log}");
    }

    /// Polls `/versions` until Glance answers; false if gunicorn died or time ran out.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let agent = self.agent();
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    return false;
                }
            }
            match agent.get(&format!("{}/versions", self.endpoint)).call() {
                Ok(_) | Err(ureq::Error::Status(_, _)) => return true,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        false
    }

    /// An agent that trusts this server's certificate.
    pub fn agent(&self) -> ureq::Agent {
        let ca = self.ca_pem.as_ref().map(|p| serde_json::Value::from(p.display().to_string()));
        let trust = cloudkit::http::TlsTrust::from_fields(ca.as_ref(), None).expect("the test CA");
        cloudkit::http::agent("openstack-test", &trust).expect("an agent")
    }

    /// The image record, or `None` on 404.
    pub fn image(&self, id: &str) -> Option<serde_json::Value> {
        let (status, body) = request(&self.agent(), "GET", &format!("{}/v2/images/{id}", self.endpoint));
        match status {
            200 => Some(serde_json::from_slice(&body).expect("image JSON")),
            404 => None,
            other => panic!("GET image {id}: HTTP {other}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// Stops gunicorn: SIGTERM to the master (it reaps its workers), SIGKILL to the
    /// whole group if it has not gone within 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process (group) this test started; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; the group id is the master's pid (process_group(0)).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for GlanceServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// -------------------------------------------------------------------------------------
// A stand-in for Keystone's token endpoint

/// Answers `POST /v3/auth/tokens` with a token when the password matches, 401 otherwise.
/// No real Keystone runs here; this checks the request the plugin builds and lets the
/// password flow run end to end against the real Glance (which ignores the token).
pub struct FakeKeystone {
    pub url: String,
    pub issued: Arc<AtomicUsize>,
    pub rejected: Arc<AtomicUsize>,
    pub token: String,
}

impl FakeKeystone {
    pub fn start(user: &str, password: &str, project: &str, token: &str) -> FakeKeystone {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://127.0.0.1:{}/v3", listener.local_addr().expect("addr").port());
        let issued = Arc::new(AtomicUsize::new(0));
        let rejected = Arc::new(AtomicUsize::new(0));
        let (i, r) = (issued.clone(), rejected.clone());
        let (user, password, project, tok) =
            (user.to_string(), password.to_string(), project.to_string(), token.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let ok = answer_keystone(stream, &user, &password, &project, &tok);
                if ok { &i } else { &r }.fetch_add(1, Ordering::SeqCst);
            }
        });
        FakeKeystone { url, issued, rejected, token: token.to_string() }
    }
}

fn answer_keystone(stream: TcpStream, user: &str, password: &str, project: &str, token: &str) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return false,
    });
    let mut request_line = String::new();
    let _ = reader.read_line(&mut request_line);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    let _ = reader.read_exact(&mut body);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let ok = request_line.starts_with("POST /v3/auth/tokens ")
        && v.pointer("/auth/identity/methods/0").and_then(|m| m.as_str()) == Some("password")
        && v.pointer("/auth/identity/password/user/name").and_then(|m| m.as_str()) == Some(user)
        && v.pointer("/auth/identity/password/user/password").and_then(|m| m.as_str()) == Some(password)
        && v.pointer("/auth/scope/project/name").and_then(|m| m.as_str()) == Some(project);
    let mut out = stream;
    let resp = if ok {
        let body = r#"{"token": {"methods": ["password"]}}"#;
        format!(
            "HTTP/1.1 201 Created\r\nX-Subject-Token: {token}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        let body = r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#;
        format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = out.write_all(resp.as_bytes());
    ok
}

// -------------------------------------------------------------------------------------
// The CLI

/// A private imagefactory setup: config, store, plugin dir with MockOS, MockCloud and
/// the OpenStack plugin from the target dir.
pub struct Factory {
    pub dir: tempfile::TempDir,
}

/// What one CLI run printed.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The image id from the "UUID: ..." line.
    pub fn uuid(&self) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("UUID: "))
            .unwrap_or_else(|| panic!("no UUID line in the output:\n{}\n{}", self.stdout, self.stderr))
            .trim()
            .to_string()
    }

    /// The provider's image id from the "Image ID on provider: ..." line.
    #[track_caller]
    pub fn provider_id(&self) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("Image ID on provider: "))
            .unwrap_or_else(|| panic!("no 'Image ID on provider' line in the output:\n{}", self.stdout))
            .trim()
            .to_string()
    }

    #[track_caller]
    pub fn expect_success(&self) -> &Run {
        assert!(
            self.status.success() && self.stdout.contains("completed SUCCESSFULLY"),
            "the command failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The text after "Image build FAILED with error: ".
    #[track_caller]
    pub fn failure(&self) -> String {
        assert!(!self.status.success(), "expected a failure:\n{}", self.stdout);
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("Image build FAILED with error: "))
            .unwrap_or_else(|| panic!("no FAILED line:\n{}\n{}", self.stdout, self.stderr))
            .to_string()
    }
}

impl Factory {
    pub fn new() -> Factory {
        let dir = tempfile::Builder::new().prefix("imagefactory-os-").tempdir().expect("temp dir");
        let d = dir.path();
        for sub in ["storage", "plugins", "tmp"] {
            std::fs::create_dir_all(d.join(sub)).expect("create dirs");
        }
        for so in ["libmock_os.so", "libmock_cloud.so", "libopenstack_cloud.so"] {
            std::fs::copy(built(so), d.join("plugins").join(so)).expect("copy a plugin");
        }
        let config = serde_json::json!({
            "plugins": d.join("plugins"),
            "image_manager_args": {"storage_path": d.join("storage")},
            "tmpdir": d.join("tmp"),
            "max_concurrent_local_sessions": 2,
        });
        std::fs::write(d.join("imagefactory.conf"), config.to_string()).expect("write the config");
        Factory { dir }
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    pub fn body(&self, id: &str) -> PathBuf {
        self.storage().join(format!("{id}.body"))
    }

    /// Writes a file into the factory's directory and returns its path.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write a file");
        p
    }

    /// Runs `imagefactory --config C ARGS...` to the end (at most 5 minutes).
    pub fn run(&self, args: &[&str]) -> Run {
        let out_path = self.dir.path().join("cli.out");
        let err_path = self.dir.path().join("cli.err");
        let mut child = Command::new(built("imagefactory"))
            .arg("--config")
            .arg(self.dir.path().join("imagefactory.conf"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .spawn()
            .expect("run imagefactory");
        let status = wait_with_deadline(&mut child, Duration::from_secs(300), "imagefactory");
        Run {
            status,
            stdout: std::fs::read_to_string(out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(err_path).unwrap_or_default(),
        }
    }

    /// Imports a 64 MiB sparse raw disk with data as a MockOS_A base image.
    pub fn import_base(&self) -> String {
        let disk = make_disk(self.dir.path(), "disk.raw");
        let run = self.run(&["import_base_image", "--parameter", "os_name", "MockOS_A", path_str(&disk)]);
        run.expect_success();
        run.uuid()
    }

    /// Builds a target image for `target` from `base` with extra `--parameter` pairs.
    pub fn target(&self, base: &str, target: &str, params: &[(&str, &str)]) -> Run {
        let mut args = vec!["target_image", "--id", base];
        for (k, v) in params {
            args.extend(["--parameter", k, v]);
        }
        args.push(target);
        self.run(&args)
    }

    /// Every `.log` and `.meta` file of the store, concatenated.
    pub fn store_text(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(self.storage()).expect("list the store").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") || name.ends_with(".meta") {
                all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        all
    }

    /// One image's build log.
    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.storage().join(format!("{id}.log"))).unwrap_or_default()
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A 64 MiB sparse raw disk made by `qemu-img create`, with a compressible block at
/// 1 MiB, 8 MiB of pseudo-random data at 16 MiB, and a marker in the last sector.
pub fn make_disk(dir: &Path, name: &str) -> PathBuf {
    require_qemu_img();
    let path = dir.join(name);
    let st =
        Command::new("qemu-img").args(["create", "-q", "-f", "raw"]).arg(&path).arg("64M").status().expect("qemu-img");
    assert!(st.success(), "qemu-img create failed");
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).expect("open the disk");
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(MIB)).expect("seek");
    f.write_all(&b"imagefactory openstack plugin test. ".repeat(50_000)).expect("write");
    f.seek(SeekFrom::Start(16 * MIB)).expect("seek");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = Vec::with_capacity(8 * MIB as usize);
    while block.len() < 8 * MIB as usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        block.extend_from_slice(&x.to_le_bytes());
    }
    f.write_all(&block).expect("write");
    f.seek(SeekFrom::Start(64 * MIB - 512)).expect("seek");
    f.write_all(b"LAST-SECTOR").expect("write");
    f.sync_all().expect("sync");
    path
}

/// Credentials XML for Keystone password auth.
pub fn keystone_credentials(auth_url: &str, user: &str, password: &str, project: &str) -> String {
    format!(
        "<provider_credentials>\n  <openstack_credentials>\n    <username>{user}</username>\n    \
         <password>{password}</password>\n    <tenant>{project}</tenant>\n    <auth_url>{auth_url}</auth_url>\n  \
         </openstack_credentials>\n</provider_credentials>\n"
    )
}

/// Credentials XML for a Glance without Keystone (still carrying a password, which must
/// go nowhere).
pub fn noauth_credentials(password: &str) -> String {
    format!(
        "<provider_credentials><openstack_credentials><username>tester</username><password>{password}</password>\
         <strategy>noauth</strategy></openstack_credentials></provider_credentials>"
    )
}

/// A secret no other test uses.
pub fn unique_secret(tag: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("S3cr3t-{tag}-{}-{t}", std::process::id())
}
