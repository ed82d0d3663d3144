//! The build cache: a cache hit against a full build of the same template, in one run.
//!
//! An engine over a fresh store with the release MockOS plugin, whose template reads a
//! `file://` "mirror" (so the plugin reports a source state and builds are cacheable).
//! Each build makes a 256 MiB sparse raw disk (16 MiB of data, as the mock's disks do)
//! and its SBOM (a SHA-256 over the whole disk). The full build is the same template
//! with `no_cache` (baseline); the subject is the same request without it, which the
//! cache serves. Samples alternate, medians reported:
//! `bash scripts/bench.sh cache`.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use imagefactory::config::{Config, ImageManagerArgs};
use imagefactory::image::Status;
use serde_json::{json, Map, Value};

const SAMPLES: usize = 7;

fn main() {
    // The engine runs plugin operations in worker processes started from this very
    // executable, as the daemon does from its own.
    if std::env::args().nth(1).as_deref() == Some(imagefactory::worker::WORKER_ARG) {
        std::process::exit(imagefactory::worker::worker_main());
    }
    let work = tempfile::tempdir().expect("cannot make a work directory");
    let (storage, plugins, tmp, mirror) =
        (work.path().join("storage"), work.path().join("plugins"), work.path().join("tmp"), work.path().join("mirror"));
    for d in [&storage, &plugins, &tmp, &mirror] {
        std::fs::create_dir_all(d).expect("cannot make a directory");
    }
    let build = std::env::var_os("IMAGEFACTORY_BENCH_PLUGIN_DIR").map(Into::into).unwrap_or_else(common::build_dir);
    std::fs::copy(build.join("libmock_os.so"), plugins.join("libmock_os.so"))
        .unwrap_or_else(|e| panic!("cannot copy libmock_os.so from {}: {e}", build.display()));
    std::fs::write(mirror.join("Release"), "Suite: mock\nDate: Sat, 05 Dec 2026 10:00:00 UTC\n").expect("Release");
    let config = Config {
        no_oauth: true,
        plugins: vec![plugins],
        tmpdir: tmp,
        image_manager_args: ImageManagerArgs { storage_path: storage, ..ImageManagerArgs::default() },
        ..Config::default()
    };
    let engine = imagefactory::setup::engine(&config, &[]).expect("cannot set up the engine");
    let template = format!(
        "<template><name>bench</name><os><name>MockOS_A</name><version>1</version><arch>x86_64</arch>\
         <install type='url'><url>file://{}/</url></install></os></template>",
        mirror.display()
    );
    let run = |no_cache: bool| -> (Duration, bool) {
        let mut params = Map::new();
        params.insert("mock_disk_mib".into(), json!(256));
        if no_cache {
            params.insert("no_cache".into(), Value::Bool(true));
        }
        let start = Instant::now();
        let rec = engine.create_base_image(&template, params).expect("cannot start a build");
        let done = engine.wait_final(&rec.identifier, &mut |_| {}).expect("the build's record");
        assert_eq!(done.status, Status::Complete, "a bench build failed: {:?}", done.status_detail);
        (start.elapsed(), done.properties.contains_key("cached_from"))
    };
    // The first build makes the cache entry; it is not counted.
    let (_, hit) = run(true);
    assert!(!hit, "a no_cache build came from the cache");
    let (mut hits, mut fulls) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        let (t, hit) = run(false);
        assert!(hit, "the cache did not serve an equal build");
        hits.push(t);
        let (t, hit) = run(true);
        assert!(!hit, "a no_cache build came from the cache");
        fulls.push(t);
    }
    common::print_header("cache: MockOS base image, 256 MiB sparse disk", "cache hit", "full build");
    let (hit, full) = (common::median(&mut hits), common::median(&mut fulls));
    common::print_row(
        "base image, request to COMPLETE (median)",
        &common::fmt_duration(hit),
        &common::fmt_duration(full),
        common::ratio(hit, full),
    );
}
