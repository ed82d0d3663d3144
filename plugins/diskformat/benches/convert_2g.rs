//! Each cloud's conversion of a 2 GiB sparse base image, as a ratio to a plain
//! `qemu-img convert -O raw` of the same file in the same run (the baseline), and to the
//! same conversion done by plain qemu-img, without and with an fsync of the result (this
//! crate fsyncs a target body before it is renamed into place, so that an image marked
//! COMPLETE survives a power cut: most of its cost over plain qemu-img is that flush).
//!
//! `cargo bench -p diskformat --bench convert_2g` (release). The base image holds 256 MiB
//! of incompressible data, one MiB in every eight, holes between: the shape of a real
//! base image (about a third allocated) without the time of building one. Each
//! measurement is the median of `ROUNDS` runs, interleaved so that load from other jobs
//! on this shared machine touches every variant alike.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use diskformat::ConvertOptions;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const ROUNDS: usize = 3;

/// One conversion a cloud plugin makes.
struct Variant {
    name: &'static str,
    format: &'static str,
    opts: ConvertOptions,
    /// The same conversion as qemu-img arguments after `convert -f raw`.
    plain: &'static [&'static str],
}

fn variants() -> Vec<Variant> {
    let vmdk = ConvertOptions {
        subformat: Some("streamOptimized".into()),
        adapter_type: Some("lsilogic".into()),
        compat6: true,
        ..Default::default()
    };
    vec![
        Variant { name: "EC2 raw", format: "raw", opts: ConvertOptions::default(), plain: &["-O", "raw"] },
        Variant { name: "OpenStack qcow2", format: "qcow2", opts: ConvertOptions::default(), plain: &["-O", "qcow2"] },
        Variant {
            name: "OpenStack qcow2, compressed",
            format: "qcow2",
            opts: ConvertOptions { compress: true, ..Default::default() },
            plain: &["-c", "-O", "qcow2"],
        },
        Variant {
            name: "vSphere streamOptimized vmdk",
            format: "vmdk",
            opts: vmdk,
            plain: &["-O", "vmdk", "-o", "subformat=streamOptimized,adapter_type=lsilogic,compat6=on"],
        },
        Variant {
            name: "RHEV-M qcow2 compat 0.10",
            format: "qcow2",
            opts: ConvertOptions { compat: Some("0.10".into()), ..Default::default() },
            plain: &["-O", "qcow2", "-o", "compat=0.10"],
        },
    ]
}

fn plain_qemu_img(src: &Path, dst: &Path, args: &[&str], fsync: bool) -> Duration {
    let _ = std::fs::remove_file(dst);
    let t = Instant::now();
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "raw"])
        .args(args)
        .arg(src)
        .arg(dst)
        .status()
        .expect("qemu-img (Debian package qemu-utils; run scripts/setup.sh)");
    assert!(st.success(), "qemu-img convert {args:?} failed");
    if fsync {
        std::fs::File::open(dst).and_then(|f| f.sync_all()).expect("fsync the result");
    }
    t.elapsed()
}

fn ours(src: &Path, dst: &Path, v: &Variant) -> Duration {
    let _ = std::fs::remove_file(dst);
    let t = Instant::now();
    diskformat::convert(src, "raw", dst, v.format, &v.opts, &mut |_| {}, &|| false).expect("convert");
    let took = t.elapsed();
    let got = diskformat::verify(dst, v.format, Some(2 * GIB)).expect("verify");
    assert_eq!(got.virtual_size, 2 * GIB);
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::Builder::new().prefix("convert-bench-").tempdir_in(std::env::temp_dir()).expect("tempdir");
    let base = dir.path().join("base.raw");
    let out = dir.path().join("out");
    testkit::disk::SparseDisk::new(2048, 8).write(&base);
    let vs = variants();
    let mut baseline = Vec::new();
    let mut plain: Vec<Vec<Duration>> = vs.iter().map(|_| Vec::new()).collect();
    let mut synced: Vec<Vec<Duration>> = vs.iter().map(|_| Vec::new()).collect();
    let mut mine: Vec<Vec<Duration>> = vs.iter().map(|_| Vec::new()).collect();
    let mut sizes = vec![0u64; vs.len()];
    for _ in 0..ROUNDS {
        baseline.push(plain_qemu_img(&base, &out, &["-O", "raw"], false));
        for (i, v) in vs.iter().enumerate() {
            plain[i].push(plain_qemu_img(&base, &out, v.plain, false));
            synced[i].push(plain_qemu_img(&base, &out, v.plain, true));
            mine[i].push(ours(&base, &out, v));
            sizes[i] = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        }
    }
    let base_t = median(baseline);
    println!("2 GiB sparse base image (256 MiB of data), median of {ROUNDS} rounds");
    println!("baseline: plain `qemu-img convert -O raw`: {:.2} s", base_t.as_secs_f64());
    println!(
        "{:<30} {:>8} {:>12} {:>11} {:>15} {:>10}",
        "conversion", "time", "vs baseline", "vs plain", "vs plain+fsync", "file size"
    );
    for (i, v) in vs.iter().enumerate() {
        let m = median(mine[i].clone());
        let p = median(plain[i].clone());
        let ps = median(synced[i].clone());
        println!(
            "{:<30} {:>7.2}s {:>11.2}x {:>10.2}x {:>14.2}x {:>6.0} MiB",
            v.name,
            m.as_secs_f64(),
            m.as_secs_f64() / base_t.as_secs_f64(),
            m.as_secs_f64() / p.as_secs_f64(),
            m.as_secs_f64() / ps.as_secs_f64(),
            sizes[i] as f64 / MIB as f64
        );
    }
}
