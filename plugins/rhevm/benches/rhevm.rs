//! RHEV-M benchmarks (figures, not timed tests): `cargo bench -p rhevm-cloud-plugin`.
//!
//! A 2 GiB sparse raw disk with 320 MiB of data is converted to qcow2 compat 0.10 by the
//! plugin's code and, as the baseline in the same run, by plain `qemu-img convert -O
//! qcow2`; then the qcow2 is laid out in an export domain (volume, .meta, OVF) in a
//! temporary directory, with its copy throughput and this process's peak RSS (VmHWM).

use std::process::Command;
use std::time::Instant;

use rhevm_cloud::report::Stderr;
use rhevm_cloud::target::TargetSpec;

const MIB: u64 = 1 << 20;

fn main() {
    let dir = tempfile::Builder::new().prefix("rhevm-bench-").tempdir().expect("temp dir");
    let src = dir.path().join("base.raw");
    testkit::disk::SparseDisk::new(2048, 6).blocks(320).alternate_text("rhevm bench").write(&src);
    let r = Stderr { verbose: false };

    let plain = dir.path().join("plain.qcow2");
    let t = Instant::now();
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&src)
        .arg(&plain)
        .status()
        .expect("qemu-img (scripts/setup.sh)");
    assert!(st.success());
    let base = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&plain);

    let out = dir.path().join("t.qcow2");
    let t = Instant::now();
    rhevm_cloud::target::make_body(&r, &src, &out, &TargetSpec { format: "qcow2", compat: Some("0.10") })
        .expect("convert");
    let conv = t.elapsed().as_secs_f64();

    let export = dir.path().join("export");
    std::fs::create_dir(&export).expect("mkdir");
    let provider =
        rhevm_cloud::provider::parse(&serde_json::json!({ "nfs-dir": export }).to_string()).expect("provider");
    let spec = rhevm_cloud::domain::TemplateSpec {
        name: "bench".into(),
        description: "benchmark".into(),
        cpus: 1,
        memory_mb: 512,
    };
    let before = cloudkit::report::peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    let t = Instant::now();
    let (_, placed) = rhevm_cloud::push_body(&r, &provider, &out, &spec).expect("layout");
    let layout = t.elapsed().as_secs_f64();
    let after = cloudkit::report::peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    let c = placed.copy;
    println!("convert 2 GiB sparse (320 MiB data): qemu-img convert -O qcow2 baseline {base:.2} s");
    println!("  RHEV qcow2 compat 0.10 (plugin, with read-back and check): {conv:.2} s = {:.2}x baseline", conv / base);
    println!(
        "  export-domain layout (copy {:.1} MiB + .meta + OVF + qemu-img read-back): {layout:.2} s, copy {:.1} MiB/s",
        c.bytes as f64 / MIB as f64,
        c.bytes as f64 / MIB as f64 / c.secs.max(1e-6)
    );
    println!(
        "  conversion + layout = {:.2}x baseline; peak RSS {before:.1} MiB before, {after:.1} MiB after",
        (conv + layout) / base
    );
}
