//! Shared by the guest engine's tests: a real guest (Debian's kernel, a busybox
//! initramfs with the virtio modules and a test's own script) in a private directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use guest::{Boot, Disk, GuestConfig};
use testkit::guestkit::{kernel, Initramfs};

/// The modules a guest needs for its virtio disk.
pub const DISK_MODULES: &[&str] = &["virtio_pci", "virtio_blk"];

/// One test guest's files: an initramfs, an 8 MiB zeroed raw disk, a run directory.
pub struct Rig {
    /// Unique across concurrent tests and runs: it is qemu's `-name` too.
    pub name: String,
    pub dir: tempfile::TempDir,
    pub initramfs: PathBuf,
    pub disk: PathBuf,
}

impl Rig {
    /// A guest whose /init mounts /dev, loads the disk modules, waits for /dev/vda and
    /// runs `body` (a shell snippet).
    pub fn new(label: &str, body: &str) -> Rig {
        Rig::with_modules(label, body, DISK_MODULES)
    }

    pub fn with_modules(label: &str, body: &str, modules: &[&str]) -> Rig {
        let name = format!("if-guest-test-{label}-{}", &testkit::token()[..12]);
        let dir = tempfile::Builder::new().prefix("if-guest-").tempdir().unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        let init = format!(
            "#!/bin/sh\n\
             mount -t devtmpfs dev /dev; mount -t proc proc /proc; mount -t sysfs sys /sys\n\
             for m in $(cat /lib/modules/load-order); do insmod /lib/modules/$m; done\n\
             i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done\n\
             echo GUEST-INIT-READY\n\
             {body}\n\
             echo GUEST-BODY-ENDED; while true; do sleep 1; done\n"
        );
        let initramfs = dir.path().join("initramfs.cpio");
        Initramfs::busybox().modules(&kernel(), modules).init_script(&init).write(&initramfs);
        let disk = dir.path().join("disk.raw");
        std::fs::File::create(&disk).unwrap().set_len(8 << 20).unwrap();
        Rig { name, dir, initramfs, disk }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
}

/// The rig's guest: direct kernel boot, the disk on virtio, TCG.
pub fn guest_config(rig: &Rig, timeout: Duration, inactivity: Option<Duration>) -> GuestConfig {
    let boot = Boot::Kernel {
        kernel: kernel().vmlinuz,
        initrd: Some(rig.initramfs.clone()),
        append: "console=ttyS0 quiet".into(),
    };
    let mut c = GuestConfig::new(rig.name.clone(), rig.run_dir(), boot);
    c.disks.push(Disk::raw(&rig.disk));
    c.memory_mib = 256;
    c.timeout = timeout;
    c.inactivity = inactivity;
    c
}

pub fn never() -> bool {
    false
}

/// Pids of the qemu processes whose command line carries `name`.
pub fn qemu_processes(name: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_qemu = args.first().is_some_and(|a| a.ends_with(b"qemu-system-x86_64"));
        if is_qemu && args.contains(&name.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// No qemu of this guest runs, and its run directory holds nothing but the serial log.
pub fn assert_no_leftovers(rig: &Rig, name: &str) {
    assert!(qemu_processes(name).is_empty(), "a qemu process of {name} is still running");
    let left: Vec<String> = std::fs::read_dir(rig.run_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "serial.log")
        .collect();
    assert!(left.is_empty(), "left in the run directory: {left:?}");
}

/// Checks the PNG signature and decodes the image; returns its size.
pub fn assert_valid_png(p: &Path) -> (u32, u32) {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    let mut r = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().expect("a decodable PNG");
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).expect("PNG pixel data");
    (info.width, info.height)
}

/// Runs the `hold_guest` example (which starts this rig's guest and sleeps), waits until
/// the guest runs, then kills the example with SIGKILL (no `Drop` runs) and returns.
pub fn start_in_a_process_then_kill_it(rig: &Rig, libvirt_uri: Option<&str>) {
    use std::io::BufRead;
    let exe = testkit::target_dir().join("debug/examples/hold_guest");
    assert!(exe.is_file(), "{} is missing: run `cargo build -p imagefactory-guest --examples`", exe.display());
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(&rig.name).arg(rig.run_dir()).arg(kernel().vmlinuz).arg(&rig.initramfs).arg(&rig.disk);
    if let Some(uri) = libvirt_uri {
        cmd.arg(uri);
    }
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().expect("run hold_guest");
    let stdout = child.stdout.take().expect("its stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(120));
    let _ = child.kill();
    let status = child.wait().expect("reap hold_guest");
    let line = line.unwrap_or_else(|_| panic!("hold_guest did not start its guest ({status})"));
    assert!(line.starts_with("STARTED"), "{line}");
}
