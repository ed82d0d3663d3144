//! Push throughput and peak memory: a 2 GiB raw image (256 MiB of data between holes; a
//! raw upload sends every byte, holes too) uploaded by the plugin's Glance client to a
//! real local Glance, against a baseline in the same run: `curl -T` of the same file to
//! another image of the same Glance. Peak memory is this process's VmHWM (the client
//! streams; it should not grow with the image).
//!
//! `cargo bench -p openstack-cloud-plugin --bench push_2g` (needs scripts/setup.sh's Glance).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::process::Command;
use std::time::Instant;

use openstack_cloud::glance::{self, Glance, RetryPolicy};
use serde_json::json;

const MIB: u64 = 1 << 20;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("base.raw");
    testkit::disk::SparseDisk::new(2048, 8).write(&image);
    let server = support::GlanceServer::start();
    let g = Glance::new(
        glance::agent(&Default::default()).expect("an agent"),
        &server.endpoint,
        None,
        RetryPolicy::default(),
    );
    let create = |name: &str| {
        let body = json!({"name": name, "disk_format": "raw", "container_format": "bare"});
        let v = g.create_image(&body, &|| false, &mut |_| {}).expect("create an image");
        v["id"].as_str().expect("an id").to_string()
    };

    let before = cloudkit::report::peak_rss_kib().unwrap_or(0);
    let id = create("bench-plugin");
    let t = Instant::now();
    let stats = g.upload(&id, &image, &mut |_| {}, &|| false, &mut |l| eprintln!("{l}")).expect("upload");
    let ours = t.elapsed();
    let after = cloudkit::report::peak_rss_kib().unwrap_or(0);

    let id2 = create("bench-curl");
    let t = Instant::now();
    let st = Command::new("curl")
        .args(["-sS", "-f", "-o", "/dev/null", "-X", "PUT", "-H", "Content-Type: application/octet-stream", "-T"])
        .arg(&image)
        .arg(format!("{}/v2/images/{id2}/file", server.endpoint))
        .status()
        .expect("curl (Debian package curl)");
    assert!(st.success(), "curl upload failed");
    let baseline = t.elapsed();

    let mib = stats.bytes as f64 / MIB as f64;
    println!("2 GiB raw image to a local Glance (gunicorn, file store)");
    println!("plugin client: {:.1} s, {:.1} MiB/s", ours.as_secs_f64(), mib / ours.as_secs_f64());
    println!("baseline curl -T: {:.1} s, {:.1} MiB/s", baseline.as_secs_f64(), mib / baseline.as_secs_f64());
    println!("ratio (plugin time / curl time): {:.2}x", ours.as_secs_f64() / baseline.as_secs_f64());
    println!("peak memory of this process: {} KiB before the push, {} KiB after", before, after);
}
