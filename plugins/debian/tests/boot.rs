//! End to end: the real CLI builds Debian 12 with the real plugin from the build host's
//! own apt mirror, and the image boots under qemu (TCG) from its disk through GRUB to a
//! marker a template command arranged to print on the serial console.
//!
//! Takes a few minutes. Prints its figures (`cargo test -p debian-os-plugin --test boot
//! -- --nocapture`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{debian_factory, template, token};
use diskimage::layout::{self, PARTITION_START};
use guest::{Accel, Guest, GuestConfig};

/// The bound on the boot, from qemu's start to the marker (measured: 15-60 s under TCG
/// depending on the host's load).
const BOOT_BOUND: Duration = Duration::from_secs(240);

/// A file of the image's root file system, read with debugfs through the partition's
/// offset (no mount, no loop device).
fn read_in_image(image: &Path, guest_path: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {guest_path}"))
        .arg(format!("{}?offset={PARTITION_START}", image.display()))
        .output()
        .expect("debugfs (Debian package e2fsprogs; run scripts/setup.sh)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exists_in_image(image: &Path, guest_path: &str) -> bool {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat {guest_path}"))
        .arg(format!("{}?offset={PARTITION_START}", image.display()))
        .output()
        .expect("debugfs");
    !String::from_utf8_lossy(&out.stderr).contains("File not found")
}

#[test]
fn debian12_builds_from_the_host_mirror_and_boots_to_its_marker() {
    let host_mirror = debian_os::mirror::host_mirror().expect("this host's apt sources name no Debian mirror");
    let marker = format!("IMAGEFACTORY-BOOT-MARKER-{}", token());
    let rootpw = format!("pw-{}", token());
    let unit = format!(
        "printf '[Unit]\\nDescription=imagefactory boot marker\\n\\n[Service]\\nType=oneshot\\n\
ExecStart=/bin/sh -c \"echo {marker} > /dev/ttyS0\"\\n\\n[Install]\\nWantedBy=multi-user.target\\n' \
> /etc/systemd/system/imagefactory-boot-marker.service\nsystemctl enable imagefactory-boot-marker.service"
    );
    let body = format!(
        "<description>boot test</description>\
<packages><package name='less'/></packages>\
<repositories><repository name='extra'><url>{host_mirror} bookworm-updates main</url><persisted>no</persisted></repository></repositories>\
<files><file name='/etc/motd'>built by the imagefactory boot test</file></files>\
<precommands><command name='pre'>echo pre > /etc/imagefactory-pre</command></precommands>\
<commands><command name='check-order'>test -f /etc/imagefactory-pre &amp;&amp; command -v less</command>\
<command name='boot-marker'>{unit}</command></commands>"
    );
    let tdl = template("Boot Test", "12", "x86_64", &format!("<rootpw>{rootpw}</rootpw>"), &body);
    let f = debian_factory();
    let t = f.file("debian12.tdl", &tdl);

    // Build.
    let run = f.run(&["base_image", t.to_str().expect("utf-8 path")], Duration::from_secs(1800));
    if !run.stdout.contains("Image build completed SUCCESSFULLY!") {
        let log = run.field("UUID:").map(|id| f.build_log(&id)).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        panic!(
            "build failed:\n{}\nbuild log (tail):\n{}",
            run.stdout,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert_eq!(run.code, Some(0));
    assert_eq!(run.field("Type:").as_deref(), Some("base_image"));
    let id = run.field("UUID:").expect("a UUID line");
    let image = std::path::PathBuf::from(run.field("Image filename:").expect("an image filename"));
    assert!(!run.stderr.contains(&rootpw) && !run.stdout.contains(&rootpw), "the root password reached the output");
    let build_time = run.elapsed;
    let log = f.build_log(&id);
    assert!(log.contains("mmdebstrap"), "the build log does not show the bootstrap:\n{log}");
    assert!(!log.contains(&rootpw), "the root password reached the build log");

    // The host removed the work directory (a gigabyte of tree) and nothing else is left.
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path().join("tmp")).expect("tmp").flatten().collect();
    assert!(leftovers.is_empty(), "left in the work area: {leftovers:?}");

    // ICICLE.
    let q = f.run(&["images", &format!("{{\"identifier\": \"{id}\"}}")], Duration::from_secs(60));
    let rec: serde_json::Value = serde_json::from_str(&q.stdout).expect("images prints JSON");
    let icicle = rec["icicle"].as_str().expect("an ICICLE");
    assert!(icicle.starts_with("<icicle><description>boot test</description><packages>"), "{icicle}");
    assert!(icicle.contains("<package name=\"linux-image-amd64-"), "{icicle}");
    assert!(icicle.contains("<package name=\"less-"), "{icicle}");
    assert!(icicle.contains(".amd64\"/>"), "{icicle}");

    // The disk: MBR, one Linux partition at 1 MiB holding ext4.
    let table = layout::read(&image).expect("sfdisk -J");
    assert_eq!(table.label, "dos");
    assert_eq!(table.partitions.len(), 1);
    assert_eq!(table.partitions[0].start * 512, PARTITION_START);
    assert_eq!(table.partitions[0].kind, "83");
    assert!(table.partitions[0].bootable);
    let file_out = Command::new("file").arg("-b").arg(&image).output().expect("file");
    let described = String::from_utf8_lossy(&file_out.stdout);
    assert!(described.contains("DOS/MBR boot sector"), "{described}");
    // GRUB 2's boot.img (which `file` does not name): its message strings in the MBR's
    // code area, the boot signature kept.
    let mut mbr = [0u8; 512];
    std::io::Read::read_exact(&mut std::fs::File::open(&image).expect("open the image"), &mut mbr)
        .expect("read the MBR");
    assert_eq!(&mbr[0x180..0x184], b"GRUB");
    assert_eq!(&mbr[510..], &[0x55, 0xaa]);
    let fs = Command::new("dumpe2fs")
        .arg("-h")
        .arg(format!("{}?offset={PARTITION_START}", image.display()))
        .output()
        .expect("dumpe2fs");
    let fs = String::from_utf8_lossy(&fs.stdout);
    assert!(fs.contains("Filesystem magic number:  0xEF53"), "{fs}");
    assert!(fs.contains("Filesystem volume name:   root"), "{fs}");

    // The content: password hashed, template files and repositories as asked.
    let shadow = read_in_image(&image, "/etc/shadow");
    let root_entry = shadow.lines().find(|l| l.starts_with("root:")).unwrap_or_else(|| panic!("no root in {shadow}"));
    assert!(root_entry.starts_with("root:$6$"), "{root_entry}");
    assert!(!shadow.contains(&rootpw));
    assert_eq!(read_in_image(&image, "/etc/motd"), "built by the imagefactory boot test");
    assert_eq!(read_in_image(&image, "/etc/hostname"), "boot-test\n");
    assert_eq!(read_in_image(&image, "/etc/apt/sources.list"), format!("deb {host_mirror} bookworm main\n"));
    assert!(!exists_in_image(&image, "/etc/apt/sources.list.d/imagefactory-extra.list"), "unpersisted repo kept");
    assert!(!exists_in_image(&image, "/usr/sbin/policy-rc.d"), "services are still held in the image");
    assert!(exists_in_image(&image, "/etc/imagefactory-pre"));
    assert!(read_in_image(&image, "/boot/grub/grub.cfg").contains("console=ttyS0,115200n8"));

    // Boot from the disk, through GRUB, under TCG.
    let run_dir = f.dir.path().join("guest");
    std::fs::create_dir(&run_dir).expect("a run directory");
    let cfg =
        GuestConfig::boot_disk("debian-boot-test", &image, &run_dir, Accel::Tcg, BOOT_BOUND + Duration::from_secs(30));
    let serial = cfg.serial_log();
    let mut g = Guest::start(&cfg).expect("start qemu");
    let pid = g.pid().expect("qemu's pid");
    let booted = g.wait_for_serial(&marker, BOOT_BOUND);
    drop(g);
    // SAFETY: signal 0 only checks whether the process exists.
    assert!(unsafe { libc::kill(pid as libc::pid_t, 0) } != 0, "qemu {pid} outlived its Guest");
    let boot_time = match booted {
        Ok(t) => t,
        Err(e) => {
            let log = std::fs::read_to_string(&serial).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!("{e}\nserial log tail:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
    };
    let log = std::fs::read_to_string(&serial).expect("serial log");
    assert!(log.contains("Linux version"), "the kernel did not log to the serial console");

    let md = std::fs::metadata(&image).expect("image metadata");
    let allocated = diskimage::size::allocated(&image).expect("allocated size");
    println!("FIGURES: base build wall time {:.1} s (CLI, end to end)", build_time.as_secs_f64());
    println!(
        "FIGURES: boot to marker under TCG {:.1} s (qemu start to marker, via GRUB from disk)",
        boot_time.as_secs_f64()
    );
    println!(
        "FIGURES: image size {} bytes apparent ({:.2} GiB), {} bytes allocated ({:.2} GiB)",
        md.len(),
        md.len() as f64 / (1u64 << 30) as f64,
        allocated,
        allocated as f64 / (1u64 << 30) as f64
    );
    println!("FIGURES: ICICLE lists {} packages", icicle.matches("<package ").count());
}
