//! Test support for the vSphere plugin: govmomi's vSphere simulator (built by
//! scripts/setup.d/45-vsphere.sh) on a free loopback port with fixed credentials, a proxy
//! that cuts the first datastore upload, and helpers around testkit's private factory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use testkit::Factory;
use vsphere_cloud::provider::Provider;
use vsphere_cloud::soap::MoRef;
use vsphere_cloud::vim::Vim;

pub const MIB: u64 = 1 << 20;
pub const TARGET: &str = "vsphere";
pub const USER: &str = "factory-user";
pub const DATASTORE: &str = "LocalDS_0";
pub const DATACENTER: &str = "DC0";

/// A running simulator; killed and reaped (and its datastore directory removed) on drop.
pub struct Vcsim {
    child: Option<Child>,
    pub endpoint: String,
    pub password: String,
    /// The CA of the simulator's certificate, when it serves HTTPS.
    pub ca_pem: Option<PathBuf>,
    _tmp: tempfile::TempDir,
}

impl Vcsim {
    /// Starts `$IMAGEFACTORY_SERVICES/vcsim/vcsim` accepting `USER` / `password`, over
    /// plain HTTP.
    pub fn start(password: &str) -> Vcsim {
        Vcsim::start_with(password, None)
    }

    /// The same over HTTPS, with the server certificate `ca` signed.
    pub fn start_tls(password: &str, ca: &testkit::tls::LocalCa) -> Vcsim {
        Vcsim::start_with(password, Some(ca))
    }

    fn start_with(password: &str, ca: Option<&testkit::tls::LocalCa>) -> Vcsim {
        let bin = testkit::service_path("vcsim/vcsim");
        let tmp = tempfile::Builder::new().prefix("vcsim-").tempdir().expect("a temp dir");
        let port = testkit::free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["-listen", &format!("127.0.0.1:{port}"), "-username", USER, "-password", password, "-exit-on-eof"]);
        if let Some(ca) = ca {
            cmd.arg("-cert").arg(&ca.server_pem).arg("-key").arg(&ca.server_key);
        }
        let mut child = cmd
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("VCSIM_DEBUG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("start vcsim (run scripts/setup.sh)");
        let stdout = child.stdout.take().expect("vcsim stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(l)) = lines.next() {
                if let Some(url) = l.strip_prefix("VCSIM_READY ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let ca_pem = ca.map(|c| c.ca_pem.clone());
        let mut sim =
            Vcsim { child: Some(child), endpoint: String::new(), password: password.into(), ca_pem, _tmp: tmp };
        let url = rx.recv_timeout(Duration::from_secs(20)).expect("vcsim did not start within 20 s");
        let scheme = if ca.is_some() { "https" } else { "http" };
        assert!(url.starts_with(&format!("{scheme}://127.0.0.1:{port}")), "vcsim answered {url}");
        sim.endpoint = format!("{scheme}://127.0.0.1:{port}");
        sim
    }

    /// A provider definition file pointing at the simulator (or at `endpoint`).
    /// Over HTTPS it names the simulator's CA as `ca_certificate`.
    pub fn provider_json(&self, endpoint: Option<&str>) -> String {
        let mut p = serde_json::json!({
            "api-url": "https://vcenter.invalid/sdk",
            "endpoint": endpoint.unwrap_or(&self.endpoint),
            "datastore": DATASTORE,
            "network_name": "VM Network",
            "compute_resource": "DC0_C0",
        });
        if let Some(ca) = &self.ca_pem {
            p[cloudkit::http::CA_FIELD] = ca.display().to_string().into();
        }
        p.to_string()
    }

    /// A logged-in API connection for the test's own checks.
    pub fn api(&self) -> Vim {
        let vim = Vim::connect(&self.endpoint, &self.provider().trust).expect("connect to vcsim");
        vim.login(USER, &self.password).expect("log in to vcsim");
        vim
    }

    /// The VM named `name` in DC0, if any.
    pub fn find_vm(&self, name: &str) -> Option<MoRef> {
        let vim = self.api();
        let (dc, _) = vsphere_cloud::push::find_datacenter(&vim, Some(DATACENTER)).expect("DC0");
        let vm = vim.find_by_name(&dc, &["VirtualMachine"], name).expect("find VMs");
        let _ = vim.logout();
        vm
    }

    /// GET of a datastore file: `Some(bytes)` or `None` for 404.
    pub fn datastore_file(&self, rel: &str) -> Option<Vec<u8>> {
        let url = format!("{}/folder/{rel}?dcPath={DATACENTER}&dsName={DATASTORE}", self.endpoint);
        let agent = cloudkit::http::agent("vsphere-test", &self.provider().trust).expect("an agent");
        match agent.get(&url).call() {
            Ok(r) => {
                let mut v = Vec::new();
                r.into_reader().read_to_end(&mut v).expect("read the datastore file");
                Some(v)
            }
            Err(ureq::Error::Status(404, _)) => None,
            Err(e) => panic!("GET {url}: {e}"),
        }
    }

    pub fn provider(&self) -> Provider {
        vsphere_cloud::provider::parse(&self.provider_json(None)).expect("provider")
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Credentials XML.
pub fn credentials(user: &str, password: &str) -> String {
    format!(
        "<provider_credentials>\n  <vsphere_credentials>\n    <username>{user}</username>\n    \
         <password>{password}</password>\n  </vsphere_credentials>\n</provider_credentials>\n"
    )
}

/// A secret no other test uses.
pub fn unique_secret(tag: &str) -> String {
    format!("S3cr3t-{tag}-{}", testkit::token())
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A factory with MockOS and this plugin.
pub fn factory() -> Factory {
    Factory::new(&["libmock_os.so", "libvsphere_cloud.so"], serde_json::json!({"max_concurrent_local_sessions": 2}))
}

/// Runs the CLI (at most 5 minutes).
pub fn run(f: &Factory, args: &[&str]) -> testkit::Run {
    f.run(args, Duration::from_secs(300))
}

#[track_caller]
pub fn expect_success(r: &testkit::Run) {
    assert!(
        r.code == Some(0) && r.stdout.contains("completed SUCCESSFULLY"),
        "the command failed:\nstdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
}

pub fn uuid(r: &testkit::Run) -> String {
    r.field("UUID:").unwrap_or_else(|| panic!("no UUID line:\n{}\n{}", r.stdout, r.stderr))
}

/// A MockOS base image: a sparse raw disk of `mib` MiB with data.
pub fn mock_base(f: &Factory, mib: u64) -> String {
    let tdl = f.file("mock.tdl", include_str!("../../../../conf/examples/mock.tdl"));
    let r = run(f, &["base_image", "--parameter", "mock_disk_mib", &mib.to_string(), path_str(&tdl)]);
    expect_success(&r);
    uuid(&r)
}

/// Builds a vsphere target image with extra parameters.
pub fn target(f: &Factory, base: &str, params: &[(&str, &str)]) -> testkit::Run {
    let mut args = vec!["target_image", "--id", base];
    for (k, v) in params {
        args.extend(["--parameter", k, v]);
    }
    args.push(TARGET);
    run(f, &args)
}

/// Every `.log` and `.meta` file of the store, concatenated.
pub fn store_text(f: &Factory) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(f.storage()).expect("list the store").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") || name.ends_with(".meta") {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all
}

/// Asserts `secret` is in none of the store's logs and records nor the CLI output.
#[track_caller]
pub fn assert_secret_nowhere(f: &Factory, runs: &[&testkit::Run], secret: &str) {
    assert!(!store_text(f).contains(secret), "the secret is in the store's .log/.meta files");
    for r in runs {
        assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret), "the secret is in the CLI output");
    }
}

/// The path of a file in the factory's dir.
pub fn in_dir(f: &Factory, name: &str) -> PathBuf {
    f.dir.path().join(name)
}
