//! diskformat against the real qemu-img, on small real files: a 64 MiB sparse raw disk
//! with some data, converted to qcow2, compressed qcow2, qcow2 compat 0.10 and
//! streamOptimized vmdk, read back and compared byte for byte.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use diskformat::{convert, info, verify, ConvertOptions, DiskFormatError};

const MIB: u64 = 1024 * 1024;
const SIZE: u64 = 64 * MIB;

/// Fails loudly when qemu-img is missing: these tests are the point of this crate.
fn require_qemu_img() {
    let ok = Command::new("qemu-img").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "qemu-img is not installed (Debian package qemu-utils): run scripts/setup.sh");
}

/// A 64 MiB sparse raw disk made by `qemu-img create`, with a compressible text block at
/// 1 MiB, a pseudo-random block at 20 MiB and a marker in the last sector.
fn sample_raw(dir: &Path) -> PathBuf {
    require_qemu_img();
    let path = dir.join("disk.raw");
    let st = Command::new("qemu-img").args(["create", "-q", "-f", "raw"]).arg(&path).arg("64M").status().unwrap();
    assert!(st.success(), "qemu-img create failed");
    let mut f = OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(MIB)).unwrap();
    let text = b"imagefactory diskformat test block. ".repeat(8 * 1024);
    f.write_all(&text).unwrap();
    f.seek(SeekFrom::Start(20 * MIB)).unwrap();
    f.write_all(&testkit::disk::pseudo_random(2 * MIB as usize, 7)).unwrap();
    f.seek(SeekFrom::Start(SIZE - 512)).unwrap();
    f.write_all(b"LAST-SECTOR").unwrap();
    f.sync_all().unwrap();
    path
}

/// Compares two files chunk by chunk (never holding either whole).
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

fn no_progress(_: f64) {}

fn never() -> bool {
    false
}

/// Converts `src` to `fmt` and back to raw, and checks the round trip kept every byte.
fn round_trip(dir: &Path, src: &Path, fmt: &str, opts: &ConvertOptions) -> (PathBuf, diskformat::ImageInfo) {
    let out = dir.join(format!("out.{fmt}.{}", opts.compress));
    let mut seen = Vec::new();
    convert(src, "raw", &out, fmt, opts, &mut |p| seen.push(p), &never).unwrap();
    assert_eq!(seen.last().copied(), Some(100.0), "progress ends at 100");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {seen:?}");
    let got = verify(&out, fmt, Some(SIZE)).unwrap();
    assert_eq!(got.format, fmt);
    assert_eq!(got.virtual_size, SIZE);
    let back = dir.join(format!("back.{fmt}.{}.raw", opts.compress));
    convert(&out, fmt, &back, "raw", &ConvertOptions::default(), &mut no_progress, &never).unwrap();
    assert!(same_bytes(src, &back), "{fmt} round trip changed the data");
    (out, got)
}

#[test]
fn raw_info_reads_sizes_of_a_sparse_file() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sample_raw(dir.path());
    let i = info(&raw).unwrap();
    assert_eq!(i.format, "raw");
    assert_eq!(i.virtual_size, SIZE);
    assert!(i.actual_size > 0 && i.actual_size < SIZE / 4, "sparse file occupies {} bytes", i.actual_size);
    assert_eq!(i.backing_file, None);
}

#[test]
fn qcow2_round_trip_and_compression_shrinks_it() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sample_raw(dir.path());
    let (plain, plain_info) = round_trip(dir.path(), &raw, "qcow2", &ConvertOptions::default());
    let (packed, packed_info) =
        round_trip(dir.path(), &raw, "qcow2", &ConvertOptions { compress: true, ..Default::default() });
    let (plain_len, packed_len) = (std::fs::metadata(&plain).unwrap().len(), std::fs::metadata(&packed).unwrap().len());
    assert!(packed_len < plain_len, "compressed qcow2 ({packed_len}) is not smaller than plain ({plain_len})");
    assert_eq!(plain_info.compat.as_deref(), Some("1.1"));
    assert_eq!(packed_info.virtual_size, SIZE);
}

#[test]
fn qcow2_compat_0_10_for_old_engines() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sample_raw(dir.path());
    let (_, got) =
        round_trip(dir.path(), &raw, "qcow2", &ConvertOptions { compat: Some("0.10".into()), ..Default::default() });
    assert_eq!(got.compat.as_deref(), Some("0.10"));
}

#[test]
fn vmdk_stream_optimized_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sample_raw(dir.path());
    let opts = ConvertOptions {
        subformat: Some("streamOptimized".into()),
        adapter_type: Some("lsilogic".into()),
        ..Default::default()
    };
    let (_, got) = round_trip(dir.path(), &raw, "vmdk", &opts);
    assert_eq!(got.subformat.as_deref(), Some("streamOptimized"));
}

#[test]
fn converting_in_place_replaces_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sample_raw(dir.path());
    let copy = dir.path().join("body");
    std::fs::copy(&raw, &copy).unwrap();
    convert(&copy, "raw", &copy, "qcow2", &ConvertOptions::default(), &mut no_progress, &never).unwrap();
    verify(&copy, "qcow2", Some(SIZE)).unwrap();
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
}

/// Hidden temporary files left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn bad_input_is_a_one_line_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    require_qemu_img();
    let missing = dir.path().join("missing.raw");
    let e = info(&missing).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("No such file"), "{msg}");
    assert!(!msg.contains('\n'), "not one line: {msg:?}");

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "this is not a disk image\n").unwrap();
    let dst = dir.path().join("out.raw");
    let e = convert(&text, "qcow2", &dst, "raw", &ConvertOptions::default(), &mut no_progress, &never).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DiskFormatError::Failed { op: "convert", .. }), "{e:?}");
    assert!(msg.contains("not in qcow2 format"), "{msg}");
    assert!(!msg.contains('\n'), "not one line: {msg:?}");
    assert!(!dst.exists(), "a failed conversion left its destination");
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
}

#[test]
fn verify_rejects_wrong_format_size_and_backing_files() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sample_raw(dir.path());
    assert!(matches!(verify(&raw, "qcow2", None), Err(DiskFormatError::FormatMismatch { .. })));
    assert!(matches!(verify(&raw, "raw", Some(SIZE + 512)), Err(DiskFormatError::SizeMismatch { .. })));
    let overlay = dir.path().join("overlay.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&raw)
        .arg(&overlay)
        .status()
        .unwrap();
    assert!(st.success());
    let e = verify(&overlay, "qcow2", Some(SIZE)).unwrap_err();
    assert!(matches!(e, DiskFormatError::BackingFile { .. }), "{e:?}");
}

#[test]
fn verify_finds_a_corrupt_qcow2() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sample_raw(dir.path());
    let q = dir.path().join("c.qcow2");
    convert(&raw, "raw", &q, "qcow2", &ConvertOptions::default(), &mut no_progress, &never).unwrap();
    // Point the L1 table's first entry at an offset far past the end of the file.
    let mut f = OpenOptions::new().read(true).write(true).open(&q).unwrap();
    let mut hdr = [0u8; 48];
    f.read_exact(&mut hdr).unwrap();
    let l1_offset = u64::from_be_bytes(hdr[40..48].try_into().unwrap());
    f.seek(SeekFrom::Start(l1_offset)).unwrap();
    f.write_all(&(0x8000_0000_0000_0000u64 | (1u64 << 40)).to_be_bytes()).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let e = verify(&q, "qcow2", Some(SIZE)).unwrap_err();
    assert!(matches!(e, DiskFormatError::Check { .. } | DiskFormatError::Failed { .. }), "{e:?}");
}

#[test]
fn cancel_kills_qemu_img_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    require_qemu_img();
    // 256 MiB of incompressible data compressed with zlib takes seconds: long enough to
    // be cancelled while qemu-img runs.
    let src = dir.path().join("big.raw");
    let mut f = File::create(&src).unwrap();
    for i in 0..64 {
        f.write_all(&testkit::disk::pseudo_random(4 * MIB as usize, i + 1)).unwrap();
    }
    drop(f);
    let dst = dir.path().join("cancelled-dst.qcow2");
    let started = Instant::now();
    let cancel_at = started + Duration::from_millis(300);
    let mut seen = 0usize;
    let e = convert(
        &src,
        "raw",
        &dst,
        "qcow2",
        &ConvertOptions { compress: true, ..Default::default() },
        &mut |_| seen += 1,
        &|| Instant::now() >= cancel_at,
    )
    .unwrap_err();
    assert!(matches!(e, DiskFormatError::Cancelled), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "cancellation took {:?}", started.elapsed());
    assert!(seen > 0, "no progress was reported before the cancel");
    assert!(!dst.exists());
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    // No qemu-img writing the temporary beside our destination is still alive.
    let still_running: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("cancelled-dst.qcow2") && c.contains("qemu-img"))
        .collect();
    assert!(still_running.is_empty(), "qemu-img survived the cancel: {still_running:?}");
}

#[test]
fn format_names_cannot_inject_options() {
    let dir = tempfile::tempdir().unwrap();
    let e = convert(
        Path::new("/nonexistent"),
        "raw,backing_file=/etc/passwd",
        &dir.path().join("x"),
        "qcow2",
        &ConvertOptions::default(),
        &mut no_progress,
        &never,
    )
    .unwrap_err();
    assert!(matches!(e, DiskFormatError::InvalidOption { .. }), "{e:?}");
}
