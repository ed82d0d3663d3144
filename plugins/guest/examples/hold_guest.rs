//! Starts one guest and holds it until killed (at most 10 minutes): the tests kill this
//! process with SIGKILL, so no `Drop` runs, and check that the guest went with it
//! (PR_SET_PDEATHSIG for direct qemu, autodestroy under libvirt).
//!
//! Usage: hold_guest NAME RUN_DIR KERNEL INITRD DISK [LIBVIRT_URI]

use std::time::Duration;

use guest::{Boot, Disk, Guest, GuestConfig};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 5 {
        eprintln!("usage: hold_guest NAME RUN_DIR KERNEL INITRD DISK [LIBVIRT_URI]");
        std::process::exit(2);
    }
    let boot = Boot::Kernel {
        kernel: a[2].clone().into(),
        initrd: Some(a[3].clone().into()),
        append: "console=ttyS0 quiet".into(),
    };
    let mut cfg = GuestConfig::new(a[0].clone(), a[1].clone(), boot);
    cfg.disks.push(Disk::raw(&a[4]));
    cfg.memory_mib = 256;
    cfg.libvirt_uri = a.get(5).cloned();
    match Guest::start(&cfg) {
        Ok(g) => {
            println!("STARTED {:?}", g.pid());
            std::thread::sleep(Duration::from_secs(600));
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
