//! Cancelling an install through the daemon: DELETE of a base image whose installer is
//! running stops the build, and afterwards no qemu process of it is alive and nothing of
//! it is left in the work area or the store.
//!
//! Needs `cargo build -p imagefactory -p fedora-os-plugin`.

mod fixture;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::process::qemu_processes_under as qemu_under;
use testkit::{wait_until, Factory};

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
    // The installer hangs idle: only the cancel can end this build in time.
    let (_dir, _served, tdl) = fixture::fedora_url_install("hang", "", "");
    let f = Factory::new(&["libfedora_os.so"], json!({"inactivity_timeout": 600, "timeout": 900}));
    let (_daemon, base) = f.start_daemon();
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();

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
    let stored = f.stored_entries_of(&id);
    assert!(stored.is_empty(), "left in the store: {stored:?}");
}
