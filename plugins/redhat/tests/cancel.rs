//! Cancelling an install through the daemon: DELETE of a base image whose installer is
//! running stops the build, and afterwards no qemu process of it is alive and nothing of
//! it is left in the work area or the store.
//!
//! Needs `cargo build -p imagefactory -p fedora-os-plugin`.

mod fixture;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{built, free_port, wait_until, ChildGuard, Factory};

/// Pids of qemu processes whose command line mentions `dir` (their files live there).
fn qemu_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.first().is_some_and(|a| a.contains("qemu-system")) && args.iter().any(|a| a.contains(&needle)) {
            pids.push(pid);
        }
    }
    pids
}

fn json_of(r: ureq::Response) -> Value {
    serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null)
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    match agent.get(url).call() {
        Ok(r) => (r.status(), json_of(r)),
        Err(ureq::Error::Status(code, r)) => (code, json_of(r)),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

#[test]
fn deleting_an_installing_image_stops_its_guest_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fixture::write_tree(dir.path(), true);
    let served = fixture::serve(dir.path());
    // The installer hangs idle: only the cancel can end this build in time.
    let tdl = fixture::template(
        "Fedora",
        "40",
        &format!("<install type='url'><url>{}</url></install>", served.url),
        "<rootpw>pw</rootpw><kernelparam>fixture.mode=hang</kernelparam>",
        "",
    );
    let f = Factory::new(&["libfedora_os.so"], json!({"inactivity_timeout": 600, "timeout": 900}));
    let port = free_port();
    let mut cmd = Command::new(built("imagefactoryd"));
    cmd.args(["--foreground", "--no_ssl", "--no_oauth", "--address", "127.0.0.1", "--port", &port.to_string()])
        .arg("--config")
        .arg(&f.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _daemon = ChildGuard::spawn(cmd, "imagefactoryd");
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    let base = format!("http://127.0.0.1:{port}/imagefactory");
    wait_until(Duration::from_secs(30), "the daemon to answer", || agent.get(&base).call().is_ok());

    let created = json_of(
        agent
            .post(&format!("{base}/base_images"))
            .set("Content-Type", "application/json")
            .send_string(&json!({"base_image": {"template": tdl}}).to_string())
            .expect("POST a base image"),
    );
    let id = created["base_image"]["id"].as_str().expect("an id").to_string();
    wait_until(Duration::from_secs(300), "the installer guest to start", || !qemu_under(f.dir.path()).is_empty());
    let (_, img) = get(&agent, &format!("{base}/base_images/{id}"));
    assert_eq!(img["base_image"]["status"], "BUILDING", "{img}");

    let started = Instant::now();
    let r = agent.delete(&format!("{base}/base_images/{id}")).call().expect("DELETE");
    assert_eq!(r.status(), 204);
    wait_until(Duration::from_secs(60), "the image to be gone", || {
        get(&agent, &format!("{base}/base_images/{id}")).0 == 404
    });
    wait_until(Duration::from_secs(30), "its qemu to be gone", || qemu_under(f.dir.path()).is_empty());
    println!("cancel to nothing left: {:?}", started.elapsed());
    let left: Vec<_> = std::fs::read_dir(f.dir.path().join("tmp")).expect("tmp").flatten().collect();
    assert!(left.is_empty(), "left in the work area: {left:?}");
    let stored: Vec<_> = std::fs::read_dir(f.storage())
        .expect("storage")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(&id))
        .collect();
    assert!(stored.is_empty(), "left in the store: {stored:?}");
}
