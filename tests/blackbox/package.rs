//! The Debian package, installed the way an operator would install it.
//!
//! `scripts/package-deb.sh` packages the workspace's debug build; mmdebstrap makes a
//! fresh Debian root (minbase and systemd, from this host's own apt mirror) and apt
//! installs the .deb into it with its dependencies. Inside that root: the maintainer
//! scripts made the system user and its directories, `systemd-analyze verify` accepts
//! both units, the farm's worker unit is installed but never enabled (not even by the
//! maintainer scripts run as where systemd runs, through a logging `systemctl`), its `ExecStart` run as its `User` with the
//! shipped file-store config refuses in one line (the binary and the unit agree on
//! `--worker`), and the daemon, started exactly as the unit's `ExecStart` says and as the
//! unit's `User`, serves the shipped config (HTTPS with a certificate made at start,
//! OAuth on). The operator's steps are the test's: a client key in the config, a free
//! port on loopback, and the MockOS plugin dropped into /etc/imagefactory/plugins.d
//! (the package never ships it). A MockOS image is then built over the signed API.
//!
//! Needs root, mmdebstrap and the host's Debian mirror (scripts/setup.sh); about two
//! minutes, most of it apt downloading qemu. `-- --nocapture` prints the figures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imagefactory_blackbox::{mock_tdl, plugin_so, require_tool, unique, wait_for, workspace_dir};
use serde_json::Value;

/// Runs `cmd`, panicking with its output unless it succeeds; returns its stdout.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command run in `root` as in a booted system: its own mount namespace (gone when
/// the command ends) with /proc, /sys and /dev mounted, then chroot.
fn in_root(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "set -e; R=$1; shift; mount -t proc proc \"$R/proc\"; mount -t sysfs sysfs \"$R/sys\"; \
             mount --rbind /dev \"$R/dev\"; exec chroot \"$R\" \"$@\"",
        )
        .arg("sh")
        .arg(root)
        .args(args);
    c
}

/// The daemon in the root, killed on drop (its mount namespace goes with it).
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One signed request with curl (`-k`: the daemon's certificate is made at its start).
fn request(port: u16, key: &str, secret: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let url = format!("https://127.0.0.1:{port}{path}");
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let auth = imagefactory::api::oauth::sign(method, &url, None, key, secret, &unique("nonce"), ts);
    let mut c = Command::new("curl");
    c.args(["-sk", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg("-H")
        .arg(format!("Authorization: {auth}"));
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    // Not `run`: before the daemon listens, curl fails to connect (status 0 here).
    let out = c.arg(&url).output().expect("curl (Debian package curl)");
    let out = String::from_utf8_lossy(&out.stdout);
    let (text, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), text.to_string())
}

/// A value of the unit file: the first `Key=` line of its [Service] part.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}=:\n{unit}"))
        .to_string()
}

#[test]
fn the_deb_installs_into_a_fresh_debian_and_its_service_builds_an_image() {
    assert_eq!(run(Command::new("id").arg("-u"), "id").trim(), "0", "installing a package into a root needs root");
    require_tool("mmdebstrap");
    require_tool("dpkg-deb");
    require_tool("unshare");
    let dir = tempfile::Builder::new().prefix("if-deb-").tempdir().expect("a temporary directory");

    // The package.
    let t0 = Instant::now();
    let out = run(
        Command::new("bash")
            .arg(workspace_dir().join("scripts/package-deb.sh"))
            .args(["--profile", "dev", "--no-build", "--out"])
            .arg(dir.path()),
        "scripts/package-deb.sh",
    );
    let deb = PathBuf::from(out.lines().last().expect("the .deb's path"));
    assert!(deb.file_name().is_some_and(|n| n.to_string_lossy().starts_with("imagefactory_")), "{deb:?}");
    let field = |f: &str| run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f), "dpkg-deb -f").trim().to_string();
    assert_eq!(field("Package"), "imagefactory");
    let depends = field("Depends");
    for dep in ["qemu-system-x86", "qemu-utils", "mmdebstrap", "libvirt0", "libc6"] {
        assert!(depends.split(", ").any(|d| d == dep), "Depends lacks {dep}: {depends}");
    }
    let files = run(Command::new("dpkg-deb").arg("-c").arg(&deb), "dpkg-deb -c");
    for f in [
        "./usr/bin/imagefactoryd",
        "./usr/bin/imagefactory",
        "./usr/lib/imagefactory/plugins/libdebian_os.so",
        "./usr/lib/imagefactory/plugins/libec2_cloud.so",
        "./lib/systemd/system/imagefactoryd.service",
        "./lib/systemd/system/imagefactoryd-worker.service",
        "./etc/imagefactory/imagefactory.conf",
    ] {
        assert!(files.lines().any(|l| l.ends_with(f)), "the package lacks {f}:\n{files}");
    }
    let plugins: Vec<&str> = files.lines().filter(|l| l.contains("/usr/lib/imagefactory/plugins/")).collect();
    assert_eq!(plugins.iter().filter(|l| l.ends_with(".so")).count(), 8, "not the 8 production plugins: {plugins:?}");
    assert!(!files.contains("mock"), "the package holds a mock plugin or its example:\n{files}");
    let conffiles = run(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("conffiles"), "dpkg-deb -I conffiles");
    assert!(conffiles.lines().any(|l| l == "/etc/imagefactory/imagefactory.conf"), "{conffiles}");
    let packaged = t0.elapsed();

    // A fresh Debian root of this host's release, the package installed by apt.
    let mirror = debian_os::mirror::host_mirror().expect("this host's apt sources name no Debian mirror");
    let os_release = std::fs::read_to_string("/etc/os-release").expect("/etc/os-release");
    let suite = os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .expect("VERSION_CODENAME in /etc/os-release")
        .trim_matches('"')
        .to_string();
    let root = dir.path().join("root");
    let deb_name = deb.file_name().expect("a file name").to_string_lossy().into_owned();
    let t1 = Instant::now();
    run(
        Command::new("mmdebstrap")
            .args(["--quiet", "--variant=minbase", "--include=systemd"])
            .arg(format!("--customize-hook=copy-in {} /tmp", deb.display()))
            .arg(format!(
                "--customize-hook=chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/{deb_name}"
            ))
            .arg(&suite)
            .arg(&root)
            .arg(&mirror),
        "mmdebstrap with the package",
    );
    let installed = t1.elapsed();

    // What the maintainer scripts made.
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("the root's passwd");
    let entry = passwd.lines().find(|l| l.starts_with("imagefactory:")).unwrap_or_else(|| panic!("no user:\n{passwd}"));
    let uid: u32 = entry.split(':').nth(2).and_then(|u| u.parse().ok()).expect("a uid");
    assert!(uid < 1000, "imagefactory is not a system user: {entry}");
    assert!(entry.ends_with(":/var/lib/imagefactory:/usr/sbin/nologin"), "{entry}");
    for d in ["var/lib/imagefactory", "var/lib/imagefactory/storage", "var/lib/imagefactory/tmp"] {
        let md = std::fs::metadata(root.join(d)).unwrap_or_else(|e| panic!("{d}: {e}"));
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), uid, "{d} is not the service user's");
    }

    // The units: systemd's own check, then their ExecStart and User.
    for name in ["imagefactoryd.service", "imagefactoryd-worker.service"] {
        let verify = in_root(&root, &["systemd-analyze", "verify", &format!("/lib/systemd/system/{name}")])
            .output()
            .expect("systemd-analyze");
        let complaints = String::from_utf8_lossy(&verify.stderr).into_owned();
        assert!(verify.status.success(), "systemd-analyze verify {name} failed:\n{complaints}");
        assert!(!complaints.contains(name), "systemd-analyze verify complains about {name}:\n{complaints}");
    }
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/imagefactoryd.service")).expect("the unit");
    let exec_start = unit_value(&unit, "ExecStart");
    let user = unit_value(&unit, "User");
    assert_eq!(user, "imagefactory");

    // The worker unit: the --worker command, the API unit's user, stopped by SIGTERM.
    let worker_unit =
        std::fs::read_to_string(root.join("lib/systemd/system/imagefactoryd-worker.service")).expect("the worker unit");
    let worker_exec = unit_value(&worker_unit, "ExecStart");
    assert_eq!(worker_exec, "/usr/bin/imagefactoryd --worker --config /etc/imagefactory/imagefactory.conf");
    assert_eq!(unit_value(&worker_unit, "User"), user, "the worker unit's user is not the API unit's");
    assert_eq!(unit_value(&worker_unit, "Group"), unit_value(&unit, "Group"));
    assert_eq!(unit_value(&worker_unit, "Restart"), "on-failure");
    assert_eq!(unit_value(&worker_unit, "KillSignal"), "SIGTERM");

    // Never enabled: not by the install above (no systemd ran), and not by the maintainer
    // scripts run again as where systemd runs (/run/systemd/system present). systemd
    // cannot run here, so a stand-in `systemctl` first in PATH logs each call and makes
    // the unit-file changes with the real one offline (`--root=/`); the units listed in
    // $ACTIVE count as running.
    let run_systemd = root.join("run/systemd/system");
    let made_run_systemd = !run_systemd.exists();
    std::fs::create_dir_all(&run_systemd).expect("/run/systemd/system in the root");
    let shim_dir = root.join("tmp/systemctl-shim");
    std::fs::create_dir_all(&shim_dir).expect("a directory for the systemctl stand-in");
    std::fs::write(
        shim_dir.join("systemctl"),
        "#!/bin/sh\necho \"$*\" >>/tmp/systemctl-shim/calls\ncase \"$1\" in\n  \
         enable | disable) exec /usr/bin/systemctl --root=/ \"$@\" ;;\n  \
         is-active) for u in $ACTIVE; do [ \"$u\" = \"$3\" ] && exit 0; done; exit 3 ;;\nesac\nexit 0\n",
    )
    .expect("the systemctl stand-in");
    run(Command::new("chmod").arg("0755").arg(shim_dir.join("systemctl")), "chmod");
    let maintainer_script = |script: &str, args: &[&str], active: &str| -> Vec<String> {
        let _ = std::fs::remove_file(shim_dir.join("calls"));
        let path = "PATH=/tmp/systemctl-shim:/usr/sbin:/usr/bin:/sbin:/bin".to_string();
        let active = format!("ACTIVE={active}");
        let script = format!("/var/lib/dpkg/info/imagefactory.{script}");
        let mut argv = vec!["env", path.as_str(), active.as_str(), script.as_str()];
        argv.extend_from_slice(args);
        run(&mut in_root(&root, &argv), &format!("{script} {args:?}"));
        std::fs::read_to_string(shim_dir.join("calls")).unwrap_or_default().lines().map(str::to_string).collect()
    };
    let calls = maintainer_script("postinst", &["configure", ""], "");
    assert!(calls.iter().any(|c| c == "daemon-reload"), "the postinst did not reload systemd: {calls:?}");
    assert!(
        calls.iter().any(|c| c == "enable imagefactoryd.service"),
        "the postinst did not enable the API unit: {calls:?}"
    );
    let worker_calls: Vec<&String> = calls.iter().filter(|c| c.contains("imagefactoryd-worker")).collect();
    assert_eq!(worker_calls, ["try-restart imagefactoryd-worker.service"], "the postinst's calls for the worker");
    // An upgrade (a version in $2) enables nothing.
    let calls = maintainer_script("postinst", &["configure", "0.0.1"], "");
    assert!(!calls.iter().any(|c| c.starts_with("enable")), "an upgrade enabled a unit: {calls:?}");
    let wants_links = |unit_name: &str| -> Vec<PathBuf> {
        std::fs::read_dir(root.join("etc/systemd/system"))
            .expect("the root's /etc/systemd/system")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".wants"))
            .map(|e| e.path().join(unit_name))
            .filter(|p| p.symlink_metadata().is_ok())
            .collect()
    };
    assert_eq!(
        wants_links("imagefactoryd.service"),
        vec![root.join("etc/systemd/system/multi-user.target.wants/imagefactoryd.service")],
        "the postinst did not enable the API unit (so the next check proves nothing)"
    );
    let worker_links = wants_links("imagefactoryd-worker.service");
    assert!(worker_links.is_empty(), "the package enabled the worker unit: {worker_links:?}");
    let enabled = in_root(&root, &["systemctl", "--root=/", "is-enabled", "imagefactoryd-worker.service"])
        .output()
        .expect("systemctl is-enabled");
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled", "systemctl is-enabled of the worker unit");
    // prerm on remove stops the worker only if it runs (and the API daemon always).
    let calls = maintainer_script("prerm", &["remove"], "imagefactoryd-worker.service");
    assert!(calls.iter().any(|c| c == "stop imagefactoryd-worker.service"), "prerm left the worker running: {calls:?}");
    assert!(calls.iter().any(|c| c == "stop imagefactoryd.service"), "prerm left the API daemon running: {calls:?}");
    let calls = maintainer_script("prerm", &["remove"], "");
    assert!(
        !calls.iter().any(|c| c.starts_with("stop imagefactoryd-worker")),
        "prerm stopped a stopped worker: {calls:?}"
    );
    std::fs::remove_dir_all(&shim_dir).expect("remove the systemctl stand-in");
    if made_run_systemd {
        std::fs::remove_dir(&run_systemd).expect("remove /run/systemd/system from the root");
    }

    // The worker's ExecStart as its user with the shipped config (the file store):
    // refused in one line, exit 1, never taking jobs.
    let mut args: Vec<String> =
        vec!["setpriv".into(), format!("--reuid={user}"), format!("--regid={user}"), "--init-groups".into()];
    args.extend(worker_exec.split_whitespace().map(str::to_string));
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let worker_log = dir.path().join("worker.log");
    let worker_out = dir.path().join("worker.out");
    let mut worker = Service(
        in_root(&root, &arg_refs)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&worker_out).expect("a file for the worker's stdout"))
            .stderr(std::fs::File::create(&worker_log).expect("a file for the worker's stderr"))
            .spawn()
            .expect("start the worker in the root"),
    );
    let status = wait_for(Duration::from_secs(60), "the worker with a file-store config to exit", || {
        worker.0.try_wait().expect("the worker's status")
    });
    drop(worker);
    let stderr = std::fs::read_to_string(&worker_log).unwrap_or_default();
    let stdout = std::fs::read_to_string(&worker_out).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "the worker with a file-store config: {status}\n{stdout}\n{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>(),
        vec![r#"imagefactoryd: --worker needs "image_manager": "postgres" (the job queue is in the database)"#],
        "not the one-line refusal:\n{stderr}"
    );
    assert!(!stdout.contains("taking jobs"), "the worker took jobs with a file-store config:\n{stdout}");

    // The operator's steps: a client, a loopback port, the MockOS plugin in plugins.d.
    let conf_path = root.join("etc/imagefactory/imagefactory.conf");
    let mut conf: Value =
        serde_json::from_str(&std::fs::read_to_string(&conf_path).expect("the conffile")).expect("JSON");
    assert_eq!(conf["clients"], serde_json::json!({}), "the shipped config must hold no client secret");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("its address").port()
    };
    let (key, secret) = ("pkg-key".to_string(), unique("secret"));
    conf["clients"] = serde_json::json!({ key.clone(): secret.clone() });
    conf["port"] = port.into();
    conf["address"] = "127.0.0.1".into();
    std::fs::write(&conf_path, serde_json::to_vec_pretty(&conf).expect("JSON")).expect("write the config");
    std::fs::copy(plugin_so("libmock_os.so"), root.join("etc/imagefactory/plugins.d/libmock_os.so"))
        .expect("drop the MockOS plugin into plugins.d");

    // The daemon as the unit starts it.
    let mut args: Vec<String> =
        vec!["setpriv".into(), format!("--reuid={user}"), format!("--regid={user}"), "--init-groups".into()];
    args.extend(exec_start.split_whitespace().map(str::to_string));
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("a log file");
    let mut service = Service(
        in_root(&root, &arg_refs)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .spawn()
            .expect("start the daemon in the root"),
    );
    let daemon_log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    wait_for(Duration::from_secs(60), "the packaged daemon to answer", || {
        if let Ok(Some(st)) = service.0.try_wait() {
            panic!("the packaged daemon exited ({st}):\n{}", daemon_log());
        }
        let (code, _) = request(port, &key, &secret, "GET", "/imagefactory", None);
        (code == 200).then_some(())
    });
    let uid_line = std::fs::read_to_string(format!("/proc/{}/status", service.0.id()))
        .expect("the daemon's status")
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(str::to_string)
        .expect("a Uid line");
    assert_eq!(uid_line.split_whitespace().nth(2), Some(uid.to_string().as_str()), "not run as {user}: {uid_line}");

    // OAuth is on: unsigned is refused, signed builds.
    let unsigned = run(
        Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .arg(format!("https://127.0.0.1:{port}/imagefactory/base_images")),
        "curl",
    );
    assert_eq!(unsigned, "401", "an unsigned POST to the packaged daemon was not refused");
    let body = serde_json::json!({"base_image": {"template": mock_tdl()}}).to_string();
    let (code, text) = request(port, &key, &secret, "POST", "/imagefactory/base_images", Some(&body));
    assert_eq!(code, 202, "{text}\n{}", daemon_log());
    let id =
        serde_json::from_str::<Value>(&text).expect("JSON")["base_image"]["id"].as_str().expect("an id").to_string();
    let rec = wait_for(Duration::from_secs(60), "the MockOS build to end", || {
        let (_, text) = request(port, &key, &secret, "GET", &format!("/imagefactory/base_images/{id}"), None);
        let v: Value = serde_json::from_str(&text).ok()?;
        let status = v["base_image"]["status"].as_str()?.to_string();
        (status == "COMPLETE" || status == "FAILED").then_some(v)
    });
    assert_eq!(rec["base_image"]["status"], "COMPLETE", "{rec}\n{}", daemon_log());
    let stored = root.join(format!("var/lib/imagefactory/storage/{id}.body"));
    let md = std::fs::metadata(&stored).unwrap_or_else(|e| panic!("{}: {e}", stored.display()));
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), uid, "the body is not the service user's");
    drop(service);

    println!(
        "FIGURES: package built in {:.1} s ({} bytes); fresh root with the package installed by apt in {:.0} s",
        packaged.as_secs_f64(),
        std::fs::metadata(&deb).map(|m| m.len()).unwrap_or(0),
        installed.as_secs_f64()
    );
}
