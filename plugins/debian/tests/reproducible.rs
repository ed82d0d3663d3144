//! Reproducible images: the shipped example template
//! (`conf/examples/debian12-boot-marker.tdl`), built twice (uncached) from the same
//! mirror state, makes the same raw disk byte for byte, and an `openstack-kvm` target
//! made from each base is the same qcow2 byte for byte. One target image boots to the
//! template's marker, showing its cloud-info: what is pinned (empty machine-id, clamped
//! times, fixed UUIDs) still makes a working system.
//!
//! The first base derives its build key from the template and the source state; the
//! second is given that key as its `build_key` parameter, as a host would: both ways
//! must come to the same image. Two base builds, two targets and one boot, a few
//! minutes in all; figures print with
//! `cargo test -p debian-os-plugin --test reproducible -- --nocapture`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::boot::Boot;
use testkit::Factory;

const MARKER: &str = "IMAGEFACTORY-BOOT-MARKER";

/// A boot under TCG beside a build on two cores: allow for it.
const BOOT_BOUND: Duration = Duration::from_secs(600);

const BUILD_DEADLINE: Duration = Duration::from_secs(1800);

/// The shipped example template.
fn marker_template() -> String {
    let path = testkit::workspace_dir().join("conf/examples/debian12-boot-marker.tdl");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Builds with the CLI and returns the new image's id; panics with the build log's tail.
/// Every build here is a real one: `no_cache` keeps the host from serving an equal
/// earlier build's body, which would make the comparison prove nothing.
fn build(f: &Factory, args: &[&str]) -> String {
    let (command, rest) = args.split_first().expect("a subcommand");
    let mut args = vec![*command, "--parameter", "no_cache", "true"];
    args.extend_from_slice(rest);
    common::build(f, &args, BUILD_DEADLINE)
}

/// A build as a user runs it (the cache may serve it); returns the new image's id.
fn plain_build(f: &Factory, args: &[&str]) -> String {
    common::build(f, args, BUILD_DEADLINE)
}

/// The stored record of an image, as `imagefactory images` prints it.
fn image_record(f: &Factory, id: &str) -> serde_json::Value {
    let q = f.run(&["images", &format!("{{\"identifier\": \"{id}\"}}")], Duration::from_secs(60));
    serde_json::from_str(&q.stdout).unwrap_or_else(|e| panic!("images printed no JSON ({e}): {}", q.stdout))
}

fn sha256(path: &Path) -> String {
    let d = testkit::spdx::digest("sha256sum", path);
    assert_eq!(d.len(), 64, "sha256sum of {} printed no digest", path.display());
    d
}

/// Where two files differ, for the failure message: `cmp -l`'s first lines and count.
fn differences(a: &Path, b: &Path) -> String {
    let out = Command::new("cmp").arg("-l").arg(a).arg(b).output().expect("cmp (diffutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    let first: Vec<&str> = text.lines().take(10).collect();
    format!("{} bytes differ; the first (offset, octal bytes):\n{}", text.lines().count(), first.join("\n"))
}

/// The build key a build logged ("Build key <64 hex digits> (...)").
fn logged_build_key(log: &str) -> String {
    let key = log
        .lines()
        .find_map(|l| l.split("Build key ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the build log names no build key:\n{}", testkit::boot::tail(log, 40)));
    assert!(key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()), "not a build key: {key}");
    key.to_string()
}

#[test]
fn the_same_template_and_mirror_state_make_the_same_raw_and_qcow2_images() {
    let tdl = marker_template();
    // The mirror may move on while the test runs (a live mirror does, a few times a
    // day): the state before and after tells that apart from a build that is not
    // reproducible.
    let state_before = debian_os::source_state(&tdl).expect("the source state of the template");
    assert!(state_before[0].0.ends_with("/dists/bookworm/InRelease") || state_before[0].0.ends_with("/Release"));
    assert!(state_before[0].1.starts_with("sha256:") && state_before[0].1.len() == 71, "{state_before:?}");

    let f = Factory::new(&["libdebian_os.so", "libopenstack_cloud.so"], serde_json::json!({}));
    let t = f.file("debian12-boot-marker.tdl", &tdl);
    let t = t.to_str().expect("utf-8");
    let started = Instant::now();
    let first = build(&f, &["base_image", t]);
    let first_took = started.elapsed();
    let key = logged_build_key(&f.build_log(&first));
    let started = Instant::now();
    let second = build(&f, &["base_image", "--parameter", "build_key", &key, t]);
    let second_took = started.elapsed();
    let state_after = debian_os::source_state(&tdl).expect("the source state of the template");
    assert_ne!(first, second);
    let second_log = f.build_log(&second);
    assert!(
        second_log.contains("Bootstrapping Debian 12") && second_log.contains("the request's build_key parameter"),
        "the second base was not built from scratch with the given key:\n{}",
        testkit::boot::tail(&second_log, 40)
    );
    println!(
        "FIGURES: two Debian 12 bases built in {:.0} s and {:.0} s",
        first_took.as_secs_f64(),
        second_took.as_secs_f64()
    );

    let (raw_a, raw_b) = (f.body(&first), f.body(&second));
    let (sum_a, sum_b) = (sha256(&raw_a), sha256(&raw_b));
    assert!(
        sum_a == sum_b || state_before == state_after,
        "the mirror changed between the two builds ({state_before:?} then {state_after:?}): \
         reproducibility cannot be judged, run the test again"
    );
    assert_eq!(
        sum_a,
        sum_b,
        "two builds of the same template and mirror state differ: {}",
        differences(&raw_a, &raw_b)
    );
    println!("FIGURES: both raw bodies have SHA-256 {sum_a}");
    let sum_raw = sum_a.clone();

    std::thread::scope(|s| {
        let t0 = Instant::now();
        let target_a = build(&f, &["target_image", "--id", &first, "openstack-kvm"]);
        let made_a = t0.elapsed();
        let qcow_a = f.body(&target_a);
        // The boot runs while the second target is made.
        let boot = s.spawn(move || Boot::disk(qcow_a).within(BOOT_BOUND).until(MARKER));
        let t0 = Instant::now();
        let target_b = build(&f, &["target_image", "--id", &second, "openstack-kvm"]);
        let made_b = t0.elapsed();
        println!(
            "FIGURES: openstack-kvm targets made in {:.0} s and {:.0} s",
            made_a.as_secs_f64(),
            made_b.as_secs_f64()
        );

        let (qcow_a, qcow_b) = (f.body(&target_a), f.body(&target_b));
        let (sum_a, sum_b) = (sha256(&qcow_a), sha256(&qcow_b));
        assert_eq!(sum_a, sum_b, "the two openstack-kvm targets differ: {}", differences(&qcow_a, &qcow_b));
        println!("FIGURES: both qcow2 bodies have SHA-256 {sum_a}");
        let log = f.build_log(&target_a);
        assert!(
            !log.contains("is not reproducible"),
            "the target stage fell back to changing the base in place:\n{log}"
        );

        // The build cache: the same template again, without no_cache, is served from
        // the first build within 2 s, and so is its target.
        let t0 = Instant::now();
        let cached = plain_build(&f, &["base_image", t]);
        let hit_took = t0.elapsed();
        let rec = image_record(&f, &cached);
        assert_eq!(rec["properties"]["cached_from"], first.as_str(), "not served from the cache: {rec}");
        assert!(hit_took < Duration::from_secs(2), "a cache hit took {hit_took:?}");
        assert_eq!(sha256(&f.body(&cached)), sum_raw, "the cache hit's body is not the first build's");
        let t0 = Instant::now();
        let cached_target = plain_build(&f, &["target_image", "--id", &cached, "openstack-kvm"]);
        let target_hit_took = t0.elapsed();
        let rec = image_record(&f, &cached_target);
        assert_eq!(rec["properties"]["cached_from"], target_a.as_str(), "the target was built again: {rec}");
        testkit::spdx::assert_valid(&f.storage().join(format!("{cached_target}.files/sbom.spdx.json")));
        println!(
            "FIGURES: cache hits: base {:.2} s (full build {:.0} s, ratio {:.4}), openstack-kvm target {:.2} s \
             (made in {:.0} s)",
            hit_took.as_secs_f64(),
            first_took.as_secs_f64(),
            hit_took.as_secs_f64() / first_took.as_secs_f64(),
            target_hit_took.as_secs_f64(),
            made_a.as_secs_f64()
        );

        let b = boot.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        assert_eq!(b.format, "qcow2");
        assert!(
            b.program_output().contains("cloud-info: CLOUD_TYPE=\"openstack-kvm\""),
            "the target booted without its cloud-info:\n{}",
            testkit::boot::tail(&b.console, 30)
        );
        println!("FIGURES: the openstack-kvm target booted to the marker in {:.0} s", b.elapsed.as_secs_f64());
    });
}
