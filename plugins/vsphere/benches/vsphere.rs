//! vSphere benchmarks (figures, not timed tests): `cargo bench -p vsphere-cloud-plugin`.
//!
//! A 2 GiB sparse raw disk with 320 MiB of data (half pseudo-random, half text) is
//! converted to a streamOptimized VMDK and to an OVA by the plugin's own code, each
//! against plain `qemu-img convert -O raw` of the same file in the same run; then the
//! VMDK is pushed to govmomi's simulator (scripts/setup.sh builds it) and the upload's
//! throughput and this process's peak RSS (VmHWM) are printed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vsphere_cloud::provider::{Credentials, Provider};
use vsphere_cloud::report::Stderr;
use vsphere_cloud::target::{OvaParams, TargetSpec, VmdkFormat};

const MIB: u64 = 1 << 20;

fn timed(what: &str, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    let s = t.elapsed().as_secs_f64();
    eprintln!("{what}: {s:.2} s");
    s
}

fn main() {
    let dir = tempfile::Builder::new().prefix("vsphere-bench-").tempdir().expect("temp dir");
    let src = dir.path().join("base.raw");
    testkit::disk::SparseDisk::new(2048, 6).blocks(320).alternate_text("vsphere bench").write(&src);
    let r = Stderr { verbose: false };

    let raw_out = dir.path().join("plain.raw");
    let base = timed("qemu-img convert -O raw (baseline)", || {
        let st = Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw"])
            .arg(&src)
            .arg(&raw_out)
            .status()
            .expect("qemu-img (scripts/setup.sh)");
        assert!(st.success());
    });
    let _ = std::fs::remove_file(&raw_out);

    let vmdk = dir.path().join("t.vmdk");
    let spec = TargetSpec { vmdk: VmdkFormat::Streaming, ova: None };
    let stream = timed("streamOptimized VMDK (plugin)", || {
        vsphere_cloud::target::make_body(&r, &src, &vmdk, &spec, "bench").expect("convert");
    });
    let ova = dir.path().join("t.ova");
    let ova_spec = TargetSpec {
        vmdk: VmdkFormat::Streaming,
        ova: Some(OvaParams {
            name: None,
            cpus: 1,
            memory_mb: 512,
            os_type: "otherLinux64Guest".into(),
            network: "VM Network".into(),
        }),
    };
    let ova_s = timed("OVA (plugin)", || {
        vsphere_cloud::target::make_body(&r, &src, &ova, &ova_spec, "bench").expect("convert");
    });
    let vmdk_len = std::fs::metadata(&vmdk).expect("vmdk").len();
    println!("convert 2 GiB sparse (320 MiB data): raw baseline {base:.2} s");
    println!(
        "  streamOptimized VMDK: {stream:.2} s = {:.2}x baseline ({:.1} MiB)",
        stream / base,
        vmdk_len as f64 / MIB as f64
    );
    println!("  OVA:                  {ova_s:.2} s = {:.2}x baseline", ova_s / base);
    let _ = std::fs::remove_file(&ova);

    // Push to the simulator.
    let bin = testkit::service_path("vcsim/vcsim");
    let port = testkit::free_port();
    let password = testkit::token();
    let mut child = Command::new(bin)
        .args(["-listen", &format!("127.0.0.1:{port}"), "-username", "bench", "-password", &password, "-exit-on-eof"])
        .env("TMPDIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vcsim");
    let endpoint = format!("http://127.0.0.1:{port}");
    testkit::wait_until(Duration::from_secs(20), "vcsim answering", || {
        ureq::get(&format!("{endpoint}/about")).call().is_ok()
    });
    let provider: Provider = vsphere_cloud::provider::parse(
        &serde_json::json!({"endpoint": endpoint, "datastore": "LocalDS_0", "network_name": "VM Network",
                            "compute_resource": "DC0_C0"})
        .to_string(),
    )
    .expect("provider");
    let creds = vsphere_cloud::provider::credentials(
        &format!("<provider_credentials><vsphere_credentials><username>bench</username><password>{password}</password></vsphere_credentials></provider_credentials>"),
        &provider,
    )
    .expect("creds");
    let creds: Credentials = creds;
    let before = cloudkit::report::peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    let spec = vsphere_cloud::push::PushSpec::new("factory-image-bench");
    let pushed = vsphere_cloud::push::push(&r, &provider, &creds, &vmdk, &spec).expect("push");
    let after = cloudkit::report::peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    let secs = pushed.elapsed.as_secs_f64();
    println!(
        "push {:.1} MiB to the simulator: {secs:.2} s = {:.1} MiB/s; peak RSS {before:.1} MiB before, {after:.1} MiB after",
        pushed.bytes as f64 / MIB as f64,
        pushed.bytes as f64 / MIB as f64 / secs
    );
    let _ = child.kill();
    let _ = child.wait();
}
