//! The guest engine with qemu run directly, under TCG, with real guests: Debian's kernel
//! and a busybox initramfs whose /init does what each test needs.
//!
//! Figures: `cargo test -p imagefactory-guest --test direct -- --nocapture`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_no_leftovers, assert_valid_png, guest_config, never, Rig};
use guest::{Guest, GuestError, Network};

/// Writes 1 MiB to the disk, then powers off (the same guest as the libvirt test's, for
/// comparable figures).
const WRITE_AND_POWEROFF: &str =
    "dd if=/dev/urandom of=/dev/vda bs=64k count=16 2>/dev/null; sync; echo GUEST-WROTE; sleep 1; poweroff -f";

/// Prints, then idles forever.
const IDLE: &str = "echo GUEST-IDLE; while true; do sleep 1; done";

#[test]
fn a_guest_that_writes_and_powers_off_succeeds() {
    let rig = Rig::new("poweroff", WRITE_AND_POWEROFF);
    let cfg = guest_config(&rig, Duration::from_secs(180), Some(Duration::from_secs(60)));
    let files = rig.dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let t0 = Instant::now();
    let mut g = Guest::start(&cfg).expect("start qemu");
    let report = g.wait_for_poweroff(&never, Some(&files)).expect("the guest powers off");
    drop(g);
    println!(
        "FIGURES: direct qemu, TCG: busybox guest from Guest::start to power-off {:.1} s (qemu start to power-off {:.1} s)",
        t0.elapsed().as_secs_f64(),
        report.elapsed.as_secs_f64()
    );
    assert!(report.disk_bytes_written >= 1 << 20, "{report:?}");
    assert_eq!(report.net_bytes, 0);
    let log = std::fs::read_to_string(cfg.serial_log()).unwrap();
    assert!(log.contains("GUEST-WROTE"), "{log}");
    // The disk holds what the guest wrote (it started as zeros).
    let disk = std::fs::read(&cfg.disks[0].path).unwrap();
    assert!(disk[..1 << 20].iter().any(|b| *b != 0));
    assert!(std::fs::read_dir(&files).unwrap().next().is_none(), "files kept for a successful run");
    assert_no_leftovers(&rig, &cfg.name);
}

#[test]
fn a_guest_that_never_powers_off_hits_the_hard_timeout_and_keeps_its_files() {
    let rig = Rig::new("hung", IDLE);
    let cfg = guest_config(&rig, Duration::from_secs(60), None);
    let files = rig.dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let mut g = Guest::start(&cfg).expect("start qemu");
    // Booted (so the console has something to keep), then left to hang.
    g.wait_for_serial("GUEST-IDLE", Duration::from_secs(60)).expect("the guest boots");
    let err = g.wait_for_poweroff(&never, Some(&files)).unwrap_err();
    assert!(g.elapsed() < Duration::from_secs(75), "{:?}", g.elapsed());
    drop(g);
    assert!(matches!(err, GuestError::Hung { seconds: 60, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "the install did not finish within 60 s and was stopped; see files console.log and screenshot.png of this image"
    );
    let console = std::fs::read_to_string(files.join("console.log")).unwrap();
    assert!(console.contains("GUEST-IDLE"), "{console}");
    let (w, h) = assert_valid_png(&files.join("screenshot.png"));
    assert!(w >= 320 && h >= 200, "{w}x{h}");
    assert_no_leftovers(&rig, &cfg.name);
}

#[test]
fn an_idle_guest_is_stopped_by_the_watchdog() {
    let rig = Rig::new("idle", IDLE);
    let cfg = guest_config(&rig, Duration::from_secs(120), Some(Duration::from_secs(5)));
    let files = rig.dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let mut g = Guest::start(&cfg).expect("start qemu");
    // The watchdog's clock starts with the wait: boot first, then idle.
    g.wait_for_serial("GUEST-IDLE", Duration::from_secs(100)).expect("the guest boots");
    let t = Instant::now();
    let err = g.wait_for_poweroff(&never, Some(&files)).unwrap_err();
    drop(g);
    assert!(matches!(err, GuestError::Inactive { seconds: 5, .. }), "{err}");
    assert!(t.elapsed() >= Duration::from_secs(5) && t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(err.to_string().starts_with("the install showed no disk or network activity for 5 s"), "{err}");
    assert!(files.join("console.log").is_file() && files.join("screenshot.png").is_file());
    assert_no_leftovers(&rig, &cfg.name);
}

#[test]
fn a_guest_that_keeps_writing_outlives_the_watchdog() {
    // Writes for about 30 s, much longer than the 6 s watchdog.
    let rig = Rig::new(
        "busy",
        "echo GUEST-BUSY; i=0; while [ $i -lt 60 ]; do dd if=/dev/urandom of=/dev/vda bs=4k count=1 seek=$i conv=fsync 2>/dev/null; \
         usleep 500000; i=$((i+1)); done; echo GUEST-BUSY-DONE; poweroff -f",
    );
    let cfg = guest_config(&rig, Duration::from_secs(240), Some(Duration::from_secs(6)));
    let mut g = Guest::start(&cfg).expect("start qemu");
    let booted = g.wait_for_serial("GUEST-BUSY", Duration::from_secs(100)).expect("the guest boots");
    let report = g.wait_for_poweroff(&never, None).expect("a busy guest is not stopped by the watchdog");
    assert!(report.elapsed > booted + Duration::from_secs(24), "{report:?}");
    assert!(report.disk_bytes_written >= 60 * 4096, "{report:?}");
}

#[test]
fn cancel_stops_the_guest_and_leaves_nothing() {
    let rig = Rig::new("cancel", IDLE);
    let cfg = guest_config(&rig, Duration::from_secs(120), None);
    let mut g = Guest::start(&cfg).expect("start qemu");
    let pid = g.pid().expect("a qemu pid");
    assert!(common::qemu_processes(&cfg.name).contains(&pid));
    assert!(rig.run_dir().join("qmp.sock").exists());
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = cancelled.clone();
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        flag.store(true, Ordering::SeqCst);
    });
    let t = Instant::now();
    let err = g.wait_for_poweroff(&|| cancelled.load(Ordering::SeqCst), Some(rig.dir.path())).unwrap_err();
    let reaction = t.elapsed();
    setter.join().unwrap();
    assert!(matches!(err, GuestError::Cancelled), "{err}");
    assert!(reaction < Duration::from_secs(5), "cancel took {reaction:?}");
    // Stopped at once, not at drop.
    assert!(common::qemu_processes(&cfg.name).is_empty(), "qemu still runs after cancel");
    drop(g);
    assert_no_leftovers(&rig, &cfg.name);
}

#[test]
fn two_guests_at_once_do_not_collide() {
    let rigs = [Rig::new("twin-a", WRITE_AND_POWEROFF), Rig::new("twin-b", WRITE_AND_POWEROFF)];
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = rigs
            .iter()
            .map(|rig| {
                s.spawn(move || {
                    let cfg = guest_config(rig, Duration::from_secs(240), None);
                    let mut g = Guest::start(&cfg)?;
                    g.wait_for_poweroff(&never, None)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rig, r) in rigs.iter().zip(results) {
        let report = r.unwrap_or_else(|e| panic!("{}: {e}", rig.name));
        assert!(report.disk_bytes_written >= 1 << 20);
        assert_no_leftovers(rig, &rig.name);
    }
}

#[test]
fn user_networking_traffic_is_counted() {
    // The guest asks slirp's DHCP server for an address: traffic on the network card.
    let rig = Rig::with_modules(
        "net",
        "ip link set eth0 up; udhcpc -i eth0 -n -q -t 3 -s /bin/true >/dev/null 2>&1; echo GUEST-DHCP-DONE; poweroff -f",
        &["virtio_pci", "virtio_blk", "virtio_net"],
    );
    let mut cfg = guest_config(&rig, Duration::from_secs(180), None);
    cfg.network = Network::User;
    let mut g = Guest::start(&cfg).expect("start qemu");
    let report = g.wait_for_poweroff(&never, None).expect("the guest powers off");
    drop(g);
    assert!(report.net_bytes > 300, "{report:?}");
    println!("FIGURES: DHCP exchange counted as {} bytes", report.net_bytes);
    assert_no_leftovers(&rig, &cfg.name);
}

#[test]
fn qemu_refusing_the_config_fails_start_with_its_reason() {
    let rig = Rig::new("refused", IDLE);
    let mut cfg = guest_config(&rig, Duration::from_secs(60), None);
    cfg.disks[0].path = rig.dir.path().join("missing.raw");
    let err = Guest::start(&cfg).unwrap_err();
    assert!(matches!(err, GuestError::Crashed { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("missing.raw") && !msg.contains('\n'), "{msg}");
    assert_no_leftovers(&rig, &cfg.name);
}

#[test]
fn dropping_a_running_guest_kills_qemu_and_cleans_up() {
    let rig = Rig::new("drop", IDLE);
    let cfg = guest_config(&rig, Duration::from_secs(120), None);
    let g = Guest::start(&cfg).expect("start qemu");
    let pid = g.pid().expect("a qemu pid");
    assert_eq!(common::qemu_processes(&cfg.name), [pid]);
    drop(g);
    assert_no_leftovers(&rig, &cfg.name);
}

#[test]
fn qemu_dying_mid_run_is_a_failure_that_keeps_the_console() {
    let rig = Rig::new("killed", IDLE);
    let cfg = guest_config(&rig, Duration::from_secs(120), None);
    let files = rig.dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let mut g = Guest::start(&cfg).expect("start qemu");
    g.wait_for_serial("GUEST-IDLE", Duration::from_secs(100)).expect("the guest boots");
    let pid = g.pid().expect("a qemu pid");
    // SAFETY: sends a signal to the qemu this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    let err = g.wait_for_poweroff(&never, Some(&files)).unwrap_err();
    drop(g);
    assert_eq!(err.to_string(), "the guest failed: qemu killed by signal 9; see file console.log of this image");
    assert!(std::fs::read_to_string(files.join("console.log")).unwrap().contains("GUEST-IDLE"));
    assert_no_leftovers(&rig, &cfg.name);
}

#[test]
fn a_killed_owner_takes_its_qemu_with_it() {
    let rig = Rig::new("orphan", IDLE);
    common::start_in_a_process_then_kill_it(&rig, None);
    // PR_SET_PDEATHSIG: the kernel kills qemu when its parent dies.
    testkit::wait_until(Duration::from_secs(10), "qemu ending with its parent", || {
        common::qemu_processes(&rig.name).is_empty()
    });
}
